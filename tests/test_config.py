"""Config resolution: precedence, type checks, unknown keys with suggestions, YAML round trip."""
import pytest

from kdkit.config import DistillConfig, TrainConfig, resolve, save_yaml
from kdkit.errors import KdkitError


def test_precedence_defaults_file_flags_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.2\nepochs: 3\nseeds: [0, 1]\n")
    cfg = resolve(DistillConfig, f, {"epochs": 5, "lr": None}, ["temperature=2", "seeds=0,1,2"])
    assert (cfg.lr, cfg.epochs, cfg.temperature, cfg.seeds) == (0.2, 5, 2.0, [0, 1, 2])


def test_resolved_config_round_trips(tmp_path):
    cfg = resolve(DistillConfig, None, {"student": "resnet8x4"}, ["alpha=0.5"])
    save_yaml(cfg, tmp_path / "config.yaml")
    assert resolve(DistillConfig, tmp_path / "config.yaml") == cfg


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(KdkitError, match="unknown config key 'temprature'; did you mean 'temperature'"):
        resolve(DistillConfig, None, None, ["temprature=4"])
    f = tmp_path / "c.yaml"
    f.write_text("batchsize: 64\n")
    with pytest.raises(KdkitError, match="did you mean 'batch_size'"):
        resolve(TrainConfig, f)


def test_wrong_value_type():
    with pytest.raises(KdkitError, match="config key 'epochs' expects an integer, got 'ten'"):
        resolve(DistillConfig, None, None, ["epochs=ten"])
    with pytest.raises(KdkitError, match="'alpha' must be in \\[0, 1\\]"):
        resolve(DistillConfig, None, None, ["alpha=1.5"])
    with pytest.raises(KdkitError, match="'optimizer' must be one of sgd, adamw, got 'adam'"):
        resolve(DistillConfig, None, None, ["optimizer=adam"])


def test_bad_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: [0.1\n")
    with pytest.raises(KdkitError, match="not valid YAML"):
        resolve(TrainConfig, f)
    with pytest.raises(KdkitError, match="not found"):
        resolve(TrainConfig, tmp_path / "missing.yaml")


def test_every_key_documented():
    import dataclasses
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    for f in dataclasses.fields(DistillConfig):
        assert f"| `{f.name}` |" in doc, f"{f.name} missing from docs/config.md (run docs/make_config_doc.py)"


def test_unset_temperature_takes_the_methods_default():
    from kdkit.recipes import method_kwargs, with_method_defaults

    assert with_method_defaults(DistillConfig(method="dist")).temperature == 1.0
    assert with_method_defaults(DistillConfig(method="kd")).temperature == 4.0
    assert with_method_defaults(DistillConfig(method="dkd", temperature=2.0)).temperature == 2.0
    assert "temperature" not in method_kwargs(DistillConfig(method="dist"))


def test_yaml_booleans_keep_their_words():
    """`--set amp=off` and `amp: off` in a config file mean the word off (YAML 1.1 reads it as false)."""
    from kdkit.config import TrainConfig, resolve

    assert resolve(TrainConfig, sets=["amp=off"]).amp == "off"
    assert resolve(TrainConfig, sets=["deterministic=yes", "progress=off"]).deterministic is True
    assert resolve(TrainConfig, flags={"amp": False}).amp == "off"


# ---- the schema: every key's valid values in one place (issue 20) ------------------------------------------

def base_type(typ):
    """int for `int`, `int | None` and `list[int]`."""
    import typing

    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return base_type(args[0]) if args else typ


def test_every_key_has_a_rule_and_every_number_a_range():
    """A new key cannot be added without saying what it accepts (docs/config.md shows it)."""
    import typing

    from kdkit.config import CHOICES, RANGES, TEXT

    hints = typing.get_type_hints(DistillConfig)
    for name, typ in hints.items():
        kind = base_type(typ)
        if kind in (int, float):
            assert name in RANGES, f"numeric config key '{name}' has no entry in RANGES (src/kdkit/config.py)"
        rules = [name in RANGES, name in CHOICES, name in TEXT, kind is bool]
        assert sum(rules) == 1, f"config key '{name}' needs exactly one rule (RANGES, CHOICES, TEXT or bool), has {sum(rules)}"
    assert set(RANGES) | set(CHOICES) | set(TEXT) <= set(hints), "a schema entry names no config key"


RANGE_CASES = [
    ("seed=1180591620717411303424", "config key 'seed' must be in [0, 4294967295], got 1180591620717411303424; e.g. --set seed=0"),
    ("seed=-1", "config key 'seed' must be in [0, 4294967295], got -1; e.g. --set seed=0"),
    ("log_every=0", "config key 'log_every' must be in [1, 2147483647], got 0; e.g. --set log_every=50"),
    ("momentum=-1", "config key 'momentum' must be in [0, 1), got -1.0; e.g. --set momentum=0.9"),
    ("label_smoothing=5", "config key 'label_smoothing' must be in [0, 1), got 5.0; e.g. --set label_smoothing=0.0"),
    ("teacher_epochs=-1", "config key 'teacher_epochs' must be in [0, 2147483647], got -1; e.g. --set teacher_epochs=0"),
    ("crd_dim=0", "config key 'crd_dim' must be in [1, 2147483647], got 0; e.g. --set crd_dim=128"),
    ("weight_decay=-1", "config key 'weight_decay' must be in [0, inf), got -1.0; e.g. --set weight_decay=0.0005"),
    ("max_steps=-1", "config key 'max_steps' must be in [0, 2147483647], got -1; e.g. --set max_steps=0"),
    ("feature_weight=-3", "config key 'feature_weight' must be in [0, inf), got -3.0; e.g. --set feature_weight=1.0"),
    ("cb_beta=1", "config key 'cb_beta' must be in [0, 1), got 1.0; e.g. --set cb_beta=0.9999"),
    ("seeds=0,-1", "config key 'seeds' must be in [0, 4294967295], got -1; e.g. --set seeds=0"),
    ("teacher_weights=0.5,-1", "config key 'teacher_weights' must be in [0, inf), got -1.0; e.g. --set teacher_weights=0.5,0.5"),
    ("nce_k=0", "config key 'nce_k' must be in [1, 2147483647], got 0; e.g. --set nce_k=16384"),
    ("gamma=0", "config key 'gamma' must be in (0, inf), got 0.0; e.g. --set gamma=0.1"),
    ("workers=-1", "config key 'workers' must be in [0, 2147483647], got -1; e.g. --set workers=0"),
    ("alpha=1.5", "config key 'alpha' must be in [0, 1], got 1.5; e.g. --set alpha=0.9"),
    ("cache_views=0", "config key 'cache_views' must be in [1, 2147483647], got 0; e.g. --set cache_views=8"),
    ("compile=fast", "config key 'compile' must be one of off, default, reduce-overhead, max-autotune, "
                     "max-autotune-no-cudagraphs, got 'fast'; did you mean 'default'?"),
    ("epochs=99999999999999999999", "config key 'epochs' must be in [1, 2147483647], got 99999999999999999999; e.g. --set epochs=10"),
]


@pytest.mark.parametrize("pair,expected", RANGE_CASES, ids=[pair.split("=")[0] for pair, _ in RANGE_CASES])
def test_values_out_of_range(pair, expected):
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, None, [pair])
    assert str(error.value) == expected


def test_the_range_holds_for_every_way_in(tmp_path):
    """flags, a YAML file, --set and the Python API's keywords go through the same check."""
    from kdkit.config import apply_overrides

    message = "config key 'momentum' must be in [0, 1), got -1.0; e.g. --set momentum=0.9"
    (tmp_path / "c.yaml").write_text("momentum: -1\n")
    for call in (lambda: resolve(DistillConfig, None, {"momentum": -1}),
                 lambda: resolve(DistillConfig, None, None, ["momentum=-1"]),
                 lambda: apply_overrides(DistillConfig(), {"momentum": -1})):
        with pytest.raises(KdkitError) as error:
            call()
        assert str(error.value) == message
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, tmp_path / "c.yaml")
    assert str(error.value) == f"config file '{tmp_path / 'c.yaml'}': {message}"


def test_the_python_api_checks_method_and_out_too():
    import numpy as np
    import torch

    import kdkit

    x, y = np.zeros((8, 1, 4, 4), np.float32), np.arange(8) % 2
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(KdkitError, match="unknown method 'kdd'; did you mean 'kd'"):
        kdkit.distill(teacher, "cnn-tiny", (x, y), (x, y), method="kdd")
    with pytest.raises(KdkitError, match="config key 'momentum' must be in"):
        kdkit.distill(teacher, "cnn-tiny", (x, y), (x, y), momentum=-1)


def test_seeds_must_be_distinct():
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, {"seeds": [0, 0]})
    assert str(error.value) == "seeds repeat 0; give distinct seeds, e.g. --seeds 0,1"
    with pytest.raises(KdkitError, match="^seeds repeat 1, 2; "):
        resolve(DistillConfig, None, None, ["seeds=1,2,1,2,3"])


LONG = "'" + "x" * 27 + "..." + "x" * 28 + "'"  # a long text as messages show it: 60 characters


@pytest.mark.parametrize("pair,expected", [
    ("dataset=", "config key 'dataset' is empty; give a value, e.g. --set dataset=fashion-mnist"),
    ("teacher=,", "no teacher given; --teacher names weights, an architecture, saved outputs or sklearn:NAME"),
    ("dataset=" + "x" * 5000, "config key 'dataset' is 5000 characters long, more than 4096; check the value"),
    ("out=run\x00s", "config key 'out' holds the control character '\\x00'; remove it"),
    ("method=kd+kdd", "unknown method 'kdd'; did you mean 'kd'?"),
    ("epochs=" + "x" * 10000, f"config key 'epochs' expects an integer, got {LONG}; fix it in the config or with --set epochs=..."),
    ("x" * 10000 + "=1", f"unknown config key {LONG}; `kdkit docs config` lists the keys"),
    ("optimizer=" + "é" * 500, f"config key 'optimizer' must be one of sgd, adamw, got {LONG.replace('x', 'é')}"),
    ("optimizer=adam", "config key 'optimizer' must be one of sgd, adamw, got 'adam'; did you mean 'adamw'?"),
    ("imbalance=" + "x" * 4000, f"imbalance {LONG} is not profile:factor; write it as exp:100 or step:10"),
], ids=["empty", "no-teacher", "too-long", "control-character", "method", "long-value", "long-key", "long-choice",
        "choice", "long-imbalance"])
def test_text_values(pair, expected):
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, None, [pair])
    assert str(error.value) == expected


def test_null_values(tmp_path):
    """`key:` with nothing after it: None where the key allows it, an empty list for a list, else an error."""
    f = tmp_path / "c.yaml"
    f.write_text("data_dir:\nstudent_layers:\n")
    cfg = resolve(DistillConfig, f)
    assert (cfg.data_dir, cfg.student_layers) == (None, [])
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, None, ["dataset=null"])
    assert str(error.value) == "config key 'dataset' expects a string, got None; fix it in the config or with --set dataset=..."


def test_teacher_weights_need_a_positive_finite_sum():
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, None, ["teacher_weights=0,0"])
    assert str(error.value) == ("teacher_weights [0.0, 0.0] sum to 0.0; they are normalised by their sum: give weights "
                                "whose sum is above 0 and finite, e.g. 0.5,0.5")


def test_a_key_given_twice_in_one_mapping():
    from kdkit.config import apply_overrides

    with pytest.raises(KdkitError) as error:
        apply_overrides(DistillConfig(), {"batch-size": 32, "batch_size": 64})
    assert str(error.value) == "config key 'batch_size' is given twice (as 'batch-size' and 'batch_size'); keep one"


def test_yaml_file_with_a_repeated_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.1\nepochs: 3\nlr: 0.2\n")
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, f)
    assert str(error.value) == f"config file '{f}' repeats key 'lr' (lines 1 and 3); keep one"


BILLION_LAUGHS = ('dataset: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' +
                  "".join(f"x{i}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)))


def test_billion_laughs_is_refused_quickly_in_little_memory(tmp_path):
    """Nested aliases (~300 bytes) once gave a 351 MB message and 1.27 GB of memory."""
    import tracemalloc

    f = tmp_path / "laughs.yaml"
    f.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400
    tracemalloc.start()
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, f)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    message = str(error.value)
    assert message == (f"config file '{f}' uses the YAML alias '*a' at line 2; write the value out "
                       "(kdkit takes no YAML aliases: a few bytes of them can expand to gigabytes)")
    assert len(message) < 300 and "\n" not in message and peak < 5 * 2**20  # nothing was expanded


def test_an_alias_in_a_set_value_is_refused():
    laughs = "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], [*b,*b,*b,*b,*b,*b,*b,*b,*b]]"
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, None, ["seeds=" + laughs])
    assert str(error.value) == ("--set seeds: the value uses the YAML alias '*a'; write the value out "
                                "(kdkit takes no YAML aliases: a few bytes of them can expand to gigabytes)")


def test_a_nested_value_is_shown_short():
    """Values echoed in a message are cut to 60 characters, however large (a deep list, a huge number)."""
    from kdkit.config import apply_overrides

    deep = [[["lol"] * 9] * 9] * 9
    with pytest.raises(KdkitError) as error:
        apply_overrides(DistillConfig(), {"dataset": deep})
    assert str(error.value) == ("config key 'dataset' expects a string, got [[[...], [...], [...], [...], ...], [[...], [...], "
                                "[...],...; fix it in the config or with --set dataset=...")


def test_errors_from_a_config_file_name_the_file(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("wandb: {entity: lab}\n")
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, f)
    assert str(error.value) == f"config file '{f}': unknown config key 'wandb'; `kdkit docs config` lists the keys"
    with pytest.raises(KdkitError) as error:
        resolve(DistillConfig, None, None, ["wandb=1"])
    assert str(error.value) == "unknown config key 'wandb'; `kdkit docs config` lists the keys"
