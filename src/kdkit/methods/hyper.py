"""A method's hyper-parameters, declared once, beside the method.

A method class lists its `hyperparameters`: `Hyper` declarations (valid values, one-line doc,
search range) and, as plain strings, the training keys it also reads (label_smoothing, tau, ...:
TrainConfig declares those). Its constructor's signature gives each declared one its type and the
method's default. From these alone come the config keys of `kdkit distill` (config.DistillConfig),
their `--set` validation, docs/config.md, `kdkit methods` and `kdkit tune`'s search space.
"""
from dataclasses import dataclass

INT_MAX = 2**31 - 1  # counts: a larger one is a typo, and overflows torch's 32-bit index paths
COUNT = f"[1, {INT_MAX}]"
WEIGHT = "[0, inf)"


@dataclass(frozen=True)
class Search:
    """Where `kdkit tune` looks: `low`..`high` (log-uniform when `log`); `factor` > 0: the value / factor
    .. value * factor, log-uniform, around the config's value or else the method's default; or `choices`."""

    low: float = 0.0
    high: float = 0.0
    log: bool = False
    factor: float = 0.0
    choices: tuple = ()

    def bounds(self, centre: float) -> tuple[float, float]:
        return (centre / self.factor, centre * self.factor) if self.factor else (self.low, self.high)

    def describe(self) -> str:
        """As the docs show it: '1 .. 8, log', 'value / 10 .. value * 10, log', '64, 128, 256'."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        span = f"value / {self.factor:g} .. value * {self.factor:g}" if self.factor else f"{self.low:g} .. {self.high:g}"
        return span + (", log" if self.log else "")


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter: its config key, valid values, meaning and search range.

    valid: a range written as in config.RANGES ("[0, 1]", "(0, inf)"), a tuple of the words it
    takes, or (for text such as layer names) what it takes, in words.
    search: None only for what no search varies (layer names). tuned: searched by default by
    `kdkit tune` (the others when named with --search).
    """

    name: str
    valid: str | tuple[str, ...]
    doc: str
    search: Search | None = None
    tuned: bool = False

    def describe_search(self) -> str:
        """The search range as the docs show it, '*' first when `kdkit tune` searches it by default."""
        if self.search is None:
            return "not searched"
        return ("* " if self.tuned else "") + self.search.describe()


def around(factor: float = 10.0) -> Search:
    return Search(factor=factor, log=True)


# Shared by several methods: declared here once.
TEMPERATURE = Hyper("temperature", "(0, inf)", "softmax temperature T of the distillation term",
                    Search(1.0, 8.0, log=True), tuned=True)
ALPHA = Hyper("alpha", "[0, 1]", "weight of the KD term; (1 - alpha) weights the hard-label cross-entropy",
              Search(0.0, 1.0), tuned=True)
CE_WEIGHT = Hyper("ce_weight", WEIGHT, "weight of the hard-label cross-entropy (the distillation parts have their "
                  "own weights)", around())
FEATURE_WEIGHT = Hyper("feature_weight", WEIGHT, "weight of the feature term, in the unit feature_scale sets (first_step: "
                       "the term starts at this value; paper: this many times the paper's weight)", around(), tuned=True)
FEATURE_SCALES = ("first_step", "paper")
FEATURE_SCALE = Hyper("feature_scale", FEATURE_SCALES, "first_step: each feature term divided by its value at the first "
                      "training step (scale-free); paper: the raw loss times the paper's CIFAR-100 weight (fitnet 100, "
                      "at 1000, sp 3000, rkd 1, pkt 30000, nst 50, crd 0.8, vector 1)", Search(choices=FEATURE_SCALES))
LOGIT_STANDARDIZE = Hyper("logit_standardize", "true, false", "z-score each sample's teacher and student logits over "
                          "the classes before the temperature (Sun et al., CVPR 2024)", Search(choices=(False, True)))
STUDENT_LAYERS = Hyper("student_layers", "checked when the layers are tapped", "student layers to tap (`kdkit models "
                       "--layers`); empty = the method's pick of its stage outputs")
TEACHER_LAYERS = Hyper("teacher_layers", "checked when the layers are tapped",
                       "teacher layers, paired with student_layers by position")
