"""Every hyper-parameter a method declares is settable with --set, validated, documented and tunable,
from its one declaration (kdkit.methods.hyper): walks METHODS, so a new method is checked too."""
import inspect
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdkit.cli import app
from kdkit.config import METHOD_KEYS, DistillConfig, TrainConfig, fields_of, resolve
from kdkit.errors import KdkitError
from kdkit.methods import METHODS, Hyper, declared_keys, names, used_hyperparameters
from kdkit.recipes import method_kwargs
from kdkit.tune import check_searched, search_space

DOC = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
DECLARED = [(method, h) for method, cls in METHODS.items() for h in cls.hyperparameters]


def reader(key: str) -> str:
    """A method that reads `key` with the default settings (fitnet reads temperature only in two stages)."""
    return next(m for m in METHODS if key in used_hyperparameters(m, DistillConfig(method=m)))


def valid_value(hyper: Hyper):
    """A valid value other than every method's default, as --set text and as the config then holds it."""
    if isinstance(hyper.valid, tuple):
        return hyper.valid[0], hyper.valid[0]  # vector_loss: mse (its default is cosine)
    if hyper.valid == "true, false":
        return "true", True
    if hyper.valid[0] not in "[(":
        return "conv1,conv2", ["conv1", "conv2"]  # layer names
    number = 3 if fields_of(DistillConfig)[hyper.name].type in (int, int | None) else 0.375
    return str(number), number


def invalid_value(hyper: Hyper) -> str:
    if isinstance(hyper.valid, tuple):
        return "nonsense"
    if hyper.valid == "true, false":
        return "maybe"
    if hyper.valid[0] not in "[(":
        return "conv1,\x01"  # a control character in a layer name
    low, high = hyper.valid[1:-1].split(", ")
    return str(float(high) + 1) if high != "inf" else ("-1" if hyper.valid[0] == "[" else low)


@pytest.mark.parametrize("method,hyper", DECLARED, ids=[f"{m}-{h if isinstance(h, str) else h.name}" for m, h in DECLARED])
def test_declaration_is_a_typed_constructor_argument(method, hyper):
    name = hyper if isinstance(hyper, str) else hyper.name
    param = inspect.signature(METHODS[method].__init__).parameters[name]
    assert param.default is not inspect.Parameter.empty, f"{method}.{name} has no default"
    assert name in typing.get_type_hints(METHODS[method].__init__), f"{method}.{name} has no type"
    if isinstance(hyper, str):  # a training key: TrainConfig declares it
        assert name in fields_of(TrainConfig)
    else:  # one declaration per key, whichever methods share it
        assert declared_keys()[name].hyper is hyper


@pytest.mark.parametrize("name", list(METHOD_KEYS))
def test_every_declared_key_is_settable_validated_documented_and_tunable(name):
    key, method = METHOD_KEYS[name], reader(name)
    text, value = valid_value(key.hyper)
    cfg = resolve(DistillConfig, sets=[f"method={method}", f"{name}={text}"])
    assert getattr(cfg, name) == value
    assert method_kwargs(cfg)[name] == value  # it reaches the method's constructor
    with pytest.raises(KdkitError, match=name):
        resolve(DistillConfig, sets=[f"method={method}", f"{name}={invalid_value(key.hyper)}"])
    assert f"| `{name}` |" in DOC and key.hyper.doc in DOC, "run docs/make_config_doc.py"
    shown = CliRunner().invoke(app, ["methods", method], env={"COLUMNS": "400"})
    assert shown.exit_code == 0 and f"│ {name} " in shown.output
    search = key.hyper.search
    if search is None:  # only names (layers) go unsearched
        assert key.type == list[str]
        return
    check_searched(cfg, [name])
    space = search_space(cfg, searched=[name])
    assert name in space
    points = space[name].choices if search.choices else (space[name].low, space[name].high)
    for point in points:
        resolve(DistillConfig, sets=[f"method={method}", f"{name}={point}"])  # every point of the range is valid
    assert name not in search_space(cfg, fixed=[name], searched=[name])  # --set pins it


def test_tune_searches_the_tuned_keys_by_default():
    for method in METHODS:
        cfg = DistillConfig(method=method)
        expected = {k for k in used_hyperparameters(method, cfg) if k in METHOD_KEYS and METHOD_KEYS[k].hyper.tuned}
        assert set(search_space(cfg)) == expected | {"lr", "weight_decay"}, method


def test_search_names_only_what_the_method_can_search():
    cfg = DistillConfig(method="kd")
    with pytest.raises(KdkitError, match="--search 'temprature' is not a searchable hyper-parameter of method kd; "
                                         "did you mean 'temperature'"):
        check_searched(cfg, ["temprature"])
    with pytest.raises(KdkitError, match="method kd can search: temperature, alpha, rebalance_tau"):
        check_searched(cfg, ["dkd_beta"])


def test_a_key_the_methods_default_differently_is_empty_and_each_uses_its_own():
    assert DistillConfig().temperature is None
    # feature_weight is in the unit of feature_scale, 1 for every feature method (methods/features.py)
    assert DistillConfig().feature_weight == 1.0 and DistillConfig().feature_scale == "first_step"
    assert METHOD_KEYS["temperature"].defaults["dist"] == 1.0 and METHOD_KEYS["temperature"].defaults["kd"] == 4.0
    assert DistillConfig().alpha == 0.9 and all(d == 0.9 for d in METHOD_KEYS["alpha"].defaults.values())
    assert all(set(names(cls)) <= set(fields_of(DistillConfig)) for cls in METHODS.values())
