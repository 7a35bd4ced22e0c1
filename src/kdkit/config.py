"""Run configuration: typed dataclasses; YAML is only their serialised form.

Every field is a YAML key and can be set on the command line with `--set key=value` (the common
ones also have their own flag). Precedence: defaults < `--config FILE.yaml` < flags < `--set`.
Unknown keys are errors with the closest valid key; values are checked against the field type and
against the schema below the dataclasses (RANGES, CHOICES, TEXT), one check for every way in.
The resolved config is written into every run directory as `config.yaml`.
Reading and writing the YAML itself is config_yaml.py.
"""
import collections
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field

from kdkit.config_yaml import ConfigLoader, _cut, dump_yaml, keyword_arguments, load_yaml, parse_set, save_yaml
from kdkit.errors import KdkitError, shown
from kdkit.methods import declared_keys
from kdkit.methods.hyper import INT_MAX


@dataclass
class TrainConfig:
    """Everything `kdkit train` needs: data, model, optimisation, run bookkeeping."""

    # data
    dataset: str = "fashion-mnist"  # named dataset (`kdkit datasets`), ImageFolder path, or table (.csv, .parquet; label_column)
    data_dir: str | None = None  # where the dataset files are; else $KDKIT_DATA, ~/.cache/kdkit, ...
    val_fraction: float = 0.1  # validation split carved from train (seeded); test is never used for selection
    label_column: str = "label"  # a table dataset (.csv, .parquet): the column holding the labels; every other column is a feature (docs/data.md)
    text_column: str | None = None  # a table file of sentences (.csv, .tsv, .parquet): the column holding them (label_column the labels); empty = a table of features. A folder of train.txt (SST-2's `label sentence` lines) or a .txt file is text without it (docs/text.md)
    tokenizer: str = "auto"  # text: words (a vocabulary built on the training split), hf:DIR (DIR/tokenizer.json), or auto (the student's hf:DIR when it is one, else words); a teacher hf:DIR always reads its own
    max_length: int = 128  # text: ids per sentence at most (longer ones are cut)
    vocab_min_count: int = 1  # text, tokenizer words: a word is in the vocabulary when the training split holds it this often
    vocab_max_size: int = 30000  # text, tokenizer words: the most frequent words kept (ids 0 and 1 are padding and unknown)
    image_size: int = 0  # an ImageFolder dataset: N > 0 resizes every image to N x N (bilinear) as it is read, so folders of mixed sizes load; 0 = keep the size (all images must share it)
    normalize: str = "auto"  # what the trained models see: auto (images and table rows standardised per channel / feature with the training split's mean and std; token ids as they are), per-feature (the same, explicitly), none (the stored values as float32); a teacher trained elsewhere always sees the inputs as given
    augment: str = "auto"  # auto (the dataset's standard), none, flip, crop (translate by 2), crop_flip (pad 4 + flip)
    mix: str = "none"  # mix each training image with another of its batch after augmentation: none, mixup (blend) or cutmix (paste a box); the teacher labels the mixed image (Beyer et al. 2022's function matching), hard labels are mixed by lam
    mix_alpha: float = 1.0  # mix: lam ~ Beta(mix_alpha, mix_alpha); 1.0 (uniform) as in Beyer et al. 2022's distillation, CutMix (Yun et al. 2019) and mixup on CIFAR-10 (Zhang et al. 2018; 0.2 on ImageNet)
    download: bool = True  # download from the official source when the files are not found and online
    imbalance: str | None = None  # long-tailed train and val splits: exp:100 (exponential, factor 100) or step:10; test stays balanced
    sampler: str = "none"  # none, class_balanced (every class equally often) or sqrt (classes drawn ~ sqrt of their counts)
    train_per_class: float = 0.0  # a quick trial on fewer training samples: N >= 1 keeps N samples per class of the training split, a fraction in (0, 1) that share of each class, the rest dropped (drawn with seed, after validation is carved and before imbalance; validation and test stay whole); 0 = all samples
    labels_per_class: float = 0.0  # label-scarce training: N >= 1 keeps N labels per class of the training split, a fraction in (0, 1) that share of each class, the rest unlabelled (drawn with seed, after validation is carved; validation keeps its labels); 0 = all labels
    unlabeled_rest: bool = True  # labels_per_class: the training samples whose labels are left out stay as unlabelled inputs (true), or are dropped (false: the student distils on the labelled samples only, repeated to the split's size like the scratch row; the comparison that shows what the unlabelled inputs add)
    unlabeled: str | None = None  # inputs without labels added to the distilled student's training split: a folder of images (flat or nested), an .npy/.npz/.safetensors array, or DATASET:train or DATASET:test of a registered dataset (e.g. mnist:train); normalised with the labelled data's statistics; a text dataset: a .txt file of sentences, one per line
    text_augment: int = 0  # text: Tang et al. 2019's transfer set, N augmented copies of each training sentence (words masked, replaced, an n-gram cut; duplicates dropped) added unlabelled for the distilled student, labelled by the teacher; 0 = off (docs/text.md)
    text_augment_p_mask: float = 0.1  # text_augment: a word becomes [MASK] (the word vocabulary's unknown word) with this probability (Tang et al.: 0.1)
    text_augment_p_replace: float = 0.1  # text_augment: else a word is replaced by a training word of its kind (word, number, mark) drawn by frequency, with this probability (Tang et al.'s part-of-speech replacement, 0.1, without a tagger)
    text_augment_p_ngram: float = 0.25  # text_augment: a copy is cut to an n-gram of 1 to 5 of its words with this probability (Tang et al.: 0.25)
    workers: int = 0  # threads that gather and augment the next batches when the images stay on the CPU (larger than device memory, memory-mapped from disk, CPU training); same batches as 0
    # model
    model: str = "cnn"  # architecture (`kdkit models`) or my_pkg.my_module:make_net
    model_kwargs: dict = field(default_factory=dict)  # keyword arguments for the model's factory, e.g. {model_name: resnet18} for timm:create_model (a module:function gets num_classes, in_channels, image_size only where its signature names them); distill: for every model it builds, teacher_kwargs / student_kwargs add to it per side
    # optimisation
    epochs: int = 10  # training epochs
    batch_size: int = 128  # samples per optimizer step
    optimizer: str = "sgd"  # sgd (nesterov momentum) or adamw
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum (nesterov when > 0)
    weight_decay: float = 5e-4  # on weights only, not on biases and norm parameters
    schedule: str = "cosine"  # cosine, multistep or constant (after warmup)
    milestones: list[int] = field(default_factory=list)  # epochs where multistep multiplies lr by gamma
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: float = 0.0  # linear warmup from 0, in epochs (fractions allowed)
    label_smoothing: float = 0.0  # on the hard-label cross-entropy
    balance: str = "none"  # hard-label loss for long tails: none (CE), class_balanced, balanced_softmax, logit_adjusted
    tau: float = 1.0  # logit adjustment strength (Menon et al. 2021: 1.0), for balance=logit_adjusted and lakd
    cb_beta: float = 0.9999  # effective-number beta of the class-balanced weights (Cui et al. 2019)
    posthoc_tau: float = 0.0  # > 0: test metrics on logits - posthoc_tau * log(train prior) (post-hoc logit adjustment)
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    max_norm: float = 0.0  # > 0: after each step, each unit's incoming weights (rows of the Linear weights) are rescaled to L2 norm <= max_norm
    nan_policy: str = "stop"  # NaN/inf loss or gradient: stop (naming the step and the last good checkpoint) or skip the step and count it
    amp: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with native bf16, else off), bf16, off
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    channels_last: str = "auto"  # channels_last (NHWC) layout of the models and image batches while training: auto (CUDA and CPU; off on MPS), on, off (e.g. shufflenetv2 in bf16 on CPU)
    compile: str = "off"  # torch.compile the student and teacher: off, default, reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs
    # run
    seed: int = 0  # initialisation, shuffling, augmentation and the validation split
    out: str = "runs/train"  # run directory
    log_every: int = 50  # steps between logged scalars (and NaN checks)
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0 = end of each epoch only
    max_steps: int = 0  # stop (with a checkpoint) after this many steps of this invocation; --resume continues; 0 = off
    step_budget: int = 0  # a quick trial: the whole run trains at most this many optimizer steps, shared by its phases (teacher trained here, scratch and student of each seed) in proportion to their epochs; each runs its schedule compressed into its share and the run ends with its summary, marked budget-limited; 0 = off
    resume: bool = False  # continue from the run directory's last checkpoint
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on CPU)
    progress: bool = True  # show progress: a bar in a terminal, else one line per epoch (and every 30 s) on stderr
    overwrite: bool = False  # write into an --out folder that holds files kdkit did not write (files of the same name are replaced)
    trust_hooks: list[str] = field(default_factory=list)  # module:function model hooks that a weights sidecar may name (kdkit never imports a name read from a file otherwise)


@dataclass
class DistillConfig(TrainConfig):
    """`kdkit distill`: a teacher, a student architecture, a method, and the scratch baseline."""

    teacher: str = "cnn"  # run dir or .safetensors from `kdkit train`, an architecture to train first, saved outputs (.npy, .parquet, .safetensors), sklearn:logistic|forest|hgb; several: comma-separated
    teacher_kwargs: dict = field(default_factory=dict)  # keyword arguments for the teacher's factory (an architecture or module:function named by --teacher), over model_kwargs
    teacher_state_dict: str | None = None  # a .safetensors state dict (model.state_dict(), e.g. from safetensors.torch.save_file) loaded into the teacher that --teacher builds; the teacher is then used as it is, not trained here
    teacher_epochs: int = 0  # epochs when the teacher is trained here; 0 = same as epochs
    teacher_lr: float = 0.0  # peak learning rate when the teacher is trained here (e.g. 3e-5 to fine-tune a pretrained transformer, hf:DIR); 0 = same as lr
    student: str = "cnn-tiny"  # student architecture (`kdkit models`) or my_pkg.my_module:make_net
    student_kwargs: dict = field(default_factory=dict)  # keyword arguments for the student's factory (and the peer's, when it is the student's architecture), over model_kwargs
    student_state_dict: str | None = None  # a .safetensors state dict the student starts from (scratch and distilled students alike) instead of a random initialisation
    method: str = "kd"  # distillation method (`kdkit methods`)
    # other teachers
    peer: str | None = None  # dml: the peer's architecture; empty = the student's
    generations: int = 1  # born-again networks: > 1 = each generation's student teaches the next (same architecture)
    combine: str = "mean"  # several teachers (--teacher a,b,...): mean, weights, entropy or stacker
    teacher_weights: list[float] = field(default_factory=list)  # combine=weights: one weight per teacher
    teacher_folds: int = 5  # sklearn:NAME teachers: train rows labelled out of fold, each of K stratified folds by a model fit on the others (val, test: the model fit on all of train); 0 or 1 = in-sample
    teacher_sampler: str | None = None  # sampler of a teacher trained here; empty = sampler (e.g. class_balanced teacher, natural student)
    bootstrap: bool = False  # several teachers trained here: each on its own bootstrap resample of train (bagging)
    teacher_cache: bool = False  # offline KD: label the training set once per recorded view, then distill from the stored outputs (logit methods; crd, rkd, pkt, vector from pooled features)
    cache_views: int = 8  # teacher_cache with augmentation: recorded views per sample (K); epoch e replays view e % K
    cache_dtype: str = "float16"  # teacher_cache: float16 or float32 logits
    cache_topk: int = 0  # teacher_cache: > 0 stores only the k largest probabilities per sample (+ the rest's mass); 0 = every logit
    transfer_exclude: list[int] = field(default_factory=list)  # class indices left out of the distilled student's train and val splits (the transfer set); teacher, scratch and test keep every class (Hinton et al. 2015: MNIST without 3s)
    seeds: list[int] = field(default_factory=lambda: [0])  # scratch and student repeat per seed
    baseline: bool = True  # also train the scratch student (same architecture and budget, no teacher)
    report: bool = True  # write report.html (plots, importance of the distillation vector) at the end of the run
    out: str = "runs/distill"  # run directory
    # ... and, after these, one key per hyper-parameter the methods declare (see the end of the schema below)


# ---- what every key accepts, in one place ----------------------------------------------------------
# validate() checks it for flags, YAML files, --set and kdkit.distill(**config) alike; docs/config.md
# shows it; tests/test_config.py fails when a key has no entry here.
SEED_MAX = 2**32 - 1  # np.random.seed and torch's generators both take any seed in [0, 2**32 - 1]
TEXT_MAX = 4096  # characters of any text value: longer than any path the OS takes

# Numbers (list keys: each item). [ ] includes a bound, ( ) excludes it; "inf)" = finite, no upper bound.
RANGES = {
    "val_fraction": "[0, 1)", "image_size": "[0, 4096]", "max_length": f"[1, {INT_MAX}]", "vocab_min_count": f"[1, {INT_MAX}]",
    "vocab_max_size": f"[1, {INT_MAX}]", "mix_alpha": "(0, inf)", "train_per_class": f"[0, {INT_MAX}]", "labels_per_class": f"[0, {INT_MAX}]",
    "text_augment": "[0, 1000]", "text_augment_p_mask": "[0, 1]", "text_augment_p_replace": "[0, 1]", "text_augment_p_ngram": "[0, 1]", "workers": f"[0, {INT_MAX}]", "epochs": f"[1, {INT_MAX}]",
    "batch_size": f"[1, {INT_MAX}]", "lr": "(0, inf)", "momentum": "[0, 1)", "weight_decay": "[0, inf)",
    "milestones": f"[0, {INT_MAX}]", "gamma": "(0, inf)", "warmup_epochs": "[0, inf)", "label_smoothing": "[0, 1)",
    "tau": "[0, inf)", "cb_beta": "[0, 1)", "posthoc_tau": "[0, inf)", "grad_clip": "[0, inf)", "max_norm": "[0, inf)",
    "seed": f"[0, {SEED_MAX}]", "log_every": f"[1, {INT_MAX}]", "checkpoint_every": f"[0, {INT_MAX}]",
    "max_steps": f"[0, {INT_MAX}]", "step_budget": f"[0, {INT_MAX}]",  # distill:
    "teacher_epochs": f"[0, {INT_MAX}]", "teacher_lr": "[0, inf)", "generations": f"[1, {INT_MAX}]", "teacher_weights": "[0, inf)",
    "cache_views": f"[1, {INT_MAX}]",
    "cache_topk": f"[0, {INT_MAX}]", "transfer_exclude": f"[0, {INT_MAX}]", "seeds": f"[0, {SEED_MAX}]",
    "teacher_folds": f"[0, {INT_MAX}]",
}
# Words from a fixed list.
CHOICES = {
    "optimizer": ("sgd", "adamw"), "schedule": ("cosine", "multistep", "constant"), "amp": ("auto", "bf16", "off"),
    "channels_last": ("auto", "on", "off"), "augment": ("auto", "none", "flip", "crop", "crop_flip"),
    "mix": ("none", "mixup", "cutmix"),
    "combine": ("mean", "weights", "entropy", "stacker"),
    "balance": ("none", "class_balanced", "balanced_softmax", "logit_adjusted"),
    "normalize": ("auto", "none", "per-feature"),
    "sampler": ("none", "class_balanced", "sqrt"), "teacher_sampler": ("none", "class_balanced", "sqrt"),
    "nan_policy": ("stop", "skip"), "cache_dtype": ("float16", "float32"),
    "compile": ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")}
# Other text: what it takes. Checked here: device, imbalance, method; the rest names things (datasets,
# models, files, layers) that only the run can look up, so it is checked when the run starts.
TEXT = {
    "device": "auto, cpu, cuda, cuda:N or mps", "imbalance": "exp:F or step:F, F >= 1",
    "method": "a method (`kdkit methods`) or several joined by +",
    "dataset": "checked when the data loads", "data_dir": "checked when the data loads",
    "unlabeled": "checked when the data loads", "label_column": "checked when the data loads",
    "text_column": "checked when the data loads", "tokenizer": "words, auto or hf:DIR, checked when the data loads",
    "model": "checked when the model is built", "student": "checked when the model is built",
    "model_kwargs": "a mapping", "teacher_kwargs": "a mapping", "student_kwargs": "a mapping",
    "teacher_state_dict": "checked when the run starts (a .safetensors state dict)",
    "student_state_dict": "checked when the run starts (a .safetensors state dict)",
    "peer": "checked when the model is built", "teacher": "checked when the teacher loads", "out": "checked when the run starts",
    "trust_hooks": "module:function hooks, checked when a sidecar names one"}
EXAMPLES = {"milestones": "30,60", "teacher_weights": "0.5,0.5",
            "transfer_exclude": "3", "imbalance": "exp:100", "data_dir": "data",
            "unlabeled": "mnist:train", "text_column": "sentence"}  # for messages: the default is empty
# The methods' hyper-parameters: declared once, by each method (kdkit.methods.hyper); each becomes a
# DistillConfig key with its type, default (empty where the methods' own defaults differ) and valid values.
METHOD_KEYS = declared_keys()


def _with_method_keys(cls):
    """`cls` with one more field per key of METHOD_KEYS (after its own), and those keys in the schema."""
    fields = []
    for name, key in METHOD_KEYS.items():
        if isinstance(key.default, (list, tuple)):
            fields.append((name, key.type, field(default_factory=lambda d=key.default: list(d))))
        else:
            fields.append((name, key.type if key.default is not None else key.type | None, field(default=key.default)))
        valid = key.hyper.valid
        if key.type is not bool:  # (a bool's rule is its type)
            (CHOICES if isinstance(valid, tuple) else RANGES if valid[0] in "[(" else TEXT)[name] = valid
    new = dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), namespace={"__doc__": cls.__doc__})
    new.__module__, new.__qualname__ = cls.__module__, cls.__qualname__
    return new


DistillConfig = _with_method_keys(DistillConfig)


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(key: str, value, typ):
    """Convert a YAML or `--set` value to the field type, or raise a one-line KdkitError."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):  # `X | None`
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
        origin = typing.get_origin(typ)
    if typ is dict:
        return keyword_arguments(key, value)
    if origin is list:
        (inner,) = typing.get_args(typ)
        if value is None:  # `key:` with nothing after it: an empty list
            return []
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").strip("[]").split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(key, v, inner) for v in value]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value)) if not isinstance(value, float) else int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if value is None or isinstance(value, (dict, list)):  # None: `key:` or `null` for a key that needs a value
                raise ValueError
            if isinstance(value, bool):  # YAML 1.1 reads `amp: off` as false: the word meant was off/on
                return "on" if value else "off"
            return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float() of an over-large integer
        pass
    name = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(typ, str(typ))
    raise KdkitError(f"config key '{key}' expects {name}, got {shown(value)}; fix it in the config or with --set {key}=...")


def apply_overrides(cfg, overrides: dict):
    """Return a copy of `cfg` with `overrides` (key -> raw value) applied, type-checked and validated."""
    known = fields_of(type(cfg))
    values, given = {}, {}
    for raw_key, value in overrides.items():
        key = str(raw_key).replace("-", "_")  # YAML keys can be numbers, true, null
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "`kdkit docs config` lists the keys"
            raise KdkitError(f"unknown config key {shown(key)}; {hint}")
        if key in values:
            raise KdkitError(f"config key '{key}' is given twice (as {shown(given[key])} and {shown(raw_key)}); keep one")
        values[key], given[key] = _coerce(key, value, typing.get_type_hints(type(cfg))[key]), raw_key
    return validate(dataclasses.replace(cfg, **values))


def load_config(cfg, path):
    """`cfg` with the keys of the YAML file `path` applied; every error names the file."""
    data = load_yaml(path)
    try:
        return apply_overrides(cfg, data)
    except KdkitError as e:
        raise KdkitError(f"config file '{_cut(path)}': {e}") from None


def resolve(cls, config_file=None, flags: dict | None = None, sets: list[str] | None = None):
    """defaults < config file < flags (None = not given) < --set."""
    cfg = cls()
    if config_file:
        cfg = load_config(cfg, config_file)
    cfg = apply_overrides(cfg, {k: v for k, v in (flags or {}).items() if v is not None})
    return apply_overrides(cfg, parse_set(sets))


def in_range(value, interval: str) -> bool:
    """Whether the number `value` lies in `interval`, written as in RANGES ("[0, 1)"). NaN never does."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    low, high = (float(bound) for bound in interval[1:-1].split(", "))
    return (value >= low if interval[0] == "[" else value > low) and (value <= high if interval[-1] == "]" else value < high)


def valid_values(cls, key: str) -> str:
    """What `key` accepts, in words, from the schema (RANGES, CHOICES, TEXT)."""
    if key in RANGES:
        return RANGES[key]
    if key in CHOICES:
        return ", ".join(CHOICES[key])
    return "true, false" if fields_of(cls)[key].type is bool else TEXT[key]


def example(cls, key: str) -> str:
    """A valid value of `key` for the messages: its default, or EXAMPLES where the default is empty."""
    f = fields_of(cls)[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default in (None, []) and key in METHOD_KEYS and METHOD_KEYS[key].default is None:
        return f"{next(iter(METHOD_KEYS[key].defaults.values())):g}"  # the first method's own
    if default in (None, []):
        return EXAMPLES.get(key, "...")
    return ",".join(map(str, default)) if isinstance(default, list) else str(default).lower() if isinstance(default, bool) else str(default)


def check_value(cls, key: str, value) -> None:
    """One value (a list key: one item) against the schema; a one-line KdkitError when it does not fit."""
    if value is None:  # an optional key left empty (_coerce let None through only for those)
        return
    if isinstance(value, str):
        if not value:
            raise KdkitError(f"config key '{key}' is empty; give a value, e.g. --set {key}={example(cls, key)}")
        if len(value) > TEXT_MAX:
            raise KdkitError(f"config key '{key}' is {len(value)} characters long, more than {TEXT_MAX}; check the value")
        control = re.search(r"[\x00-\x1f\x7f]", value)
        if control:
            raise KdkitError(f"config key '{key}' holds the control character {shown(control.group())}; remove it")
    if key in CHOICES and value not in CHOICES[key]:
        close = difflib.get_close_matches(str(value), CHOICES[key], n=1, cutoff=0.5)  # (the choices are listed)
        raise KdkitError(f"config key '{key}' must be one of {', '.join(CHOICES[key])}, got {shown(value)}"
                         + (f"; did you mean '{close[0]}'?" if close else ""))
    if key in RANGES and not in_range(value, RANGES[key]):
        raise KdkitError(f"config key '{key}' must be in {RANGES[key]}, got {shown(value)}; "
                         f"e.g. --set {key}={example(cls, key)}")


def validate(cfg):
    """Every value against the schema (RANGES, CHOICES, TEXT), then the checks that need more than one."""
    if hasattr(cfg, "teacher") and not cfg.teacher.replace(",", "").strip():  # says more than "is empty"
        raise KdkitError("no teacher given; --teacher names weights, an architecture, saved outputs or sklearn:NAME")
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for item in value if isinstance(value, list) else [value]:
            check_value(type(cfg), f.name, item)
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise KdkitError(f"unknown device {shown(cfg.device)}; use auto, cpu, cuda, cuda:N or mps, e.g. --device cpu")
    if cfg.imbalance:
        from kdkit.data.longtail import parse_imbalance

        parse_imbalance(cfg.imbalance)
    _check_label_scarce(cfg)
    if hasattr(cfg, "method"):
        from kdkit.methods import method_parts

        method_parts(cfg.method)
    if hasattr(cfg, "seeds"):
        if not cfg.seeds:
            raise KdkitError("config key 'seeds' is empty; give at least one seed, e.g. --seeds 0,1,2")
        repeated = [str(seed) for seed, n in collections.Counter(cfg.seeds).items() if n > 1]
        if repeated:  # one run reported as two seeds
            listed = ", ".join(repeated[:5]) + (", ..." if len(repeated) > 5 else "")
            raise KdkitError(f"seeds repeat {listed}; give distinct seeds, e.g. --seeds 0,1")
    if getattr(cfg, "teacher_weights", None) and not 0 < sum(cfg.teacher_weights) < float("inf"):
        raise KdkitError(f"teacher_weights {shown(cfg.teacher_weights)} sum to {sum(cfg.teacher_weights)}; they are "
                         "normalised by their sum: give weights whose sum is above 0 and finite, e.g. 0.5,0.5")
    return cfg


def _check_label_scarce(cfg):
    """train_per_class, labels_per_class and unlabeled against the keys they cannot go with (kdkit.data.labels)."""
    for key, what in (("train_per_class", "samples"), ("labels_per_class", "labels")):
        if getattr(cfg, key) >= 1 and not float(getattr(cfg, key)).is_integer():
            raise KdkitError(f"{key} must be a fraction in (0, 1) or a whole number of {what} per class, "
                             f"got {shown(getattr(cfg, key))}; e.g. 100 or 0.1")
    unlabelled = "unlabeled inputs" if cfg.unlabeled else "text_augment's sentences" if cfg.text_augment else ""
    if unlabelled and not hasattr(cfg, "teacher"):
        raise KdkitError(f"kdkit train fits hard labels only, so {unlabelled} would go unused; drop "
                         f"{'unlabeled' if cfg.unlabeled else 'text_augment'}, or learn from them with kdkit distill")
    if cfg.text_augment_p_mask + cfg.text_augment_p_replace > 1:
        raise KdkitError("text_augment_p_mask + text_augment_p_replace is above 1, but a word is masked or replaced, "
                         "not both; lower one of them")
    if not cfg.unlabeled_rest and not cfg.labels_per_class:
        raise KdkitError("unlabeled_rest=false drops the training samples labels_per_class leaves unlabelled, but "
                         "labels_per_class is 0 (every label kept); set labels_per_class, e.g. 100, or drop unlabeled_rest")
    scarce = next((key for key in ("labels_per_class", "unlabeled", "text_augment") if getattr(cfg, key)), "")
    if scarce and hasattr(cfg, "teacher") and cfg.sampler != "none":
        raise KdkitError(f"sampler={cfg.sampler} draws by class, but with {scarce} the student's training split holds "
                         "samples without a class; use sampler=none (teacher_sampler still applies to a teacher trained here)")
    if scarce and getattr(cfg, "transfer_exclude", None):
        raise KdkitError(f"transfer_exclude drops classes by label, but with {scarce} the student's training split holds "
                         "samples without one; use one or the other")


__all__ = ["CHOICES", "ConfigLoader", "DistillConfig", "EXAMPLES", "METHOD_KEYS", "RANGES", "SEED_MAX", "TEXT",
           "TEXT_MAX", "TrainConfig", "apply_overrides", "check_value", "dump_yaml", "example", "fields_of",
           "in_range", "load_config", "load_yaml", "parse_set", "resolve", "save_yaml", "valid_values",
           "validate"]
