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
    from kdkit.pipeline import method_kwargs, with_method_defaults

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
