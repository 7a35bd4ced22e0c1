"""Files kdkit reads never run code and never pass unchecked (issue 20, items 1, 6 and the sidecar
probes of 9): a sidecar can only name a registered architecture unless the user trusts a hook;
both the tensors and the sidecar itself are under a checksum; every field is checked."""
import hashlib
import json
import sys
from pathlib import Path

import pytest

from kdkit import checkpoint as ckpt
from kdkit.errors import KdkitError

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_inputs import cli, train_run  # noqa: E402,F401  (train_run: a fixture)

FAST = ["--epochs", "1", "--set", "progress=false", "--set", "batch_size=64", "--set", "amp=off"]


def error_of(result) -> str:
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip() and not line.lstrip().startswith("warnings.warn")]
    lines = [line for line in lines if "Warning" not in line]
    assert code == 2, (code, out, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 400, err
    return lines[0][len("error: "):]


def copy_run(train_run, tmp_path, name="run"):
    import shutil

    target = tmp_path / name
    shutil.copytree(train_run, target)
    return target


def rewrite(side, **changes):
    """Edit a sidecar as a person would: change fields, keep everything else (checksums included)."""
    meta = json.loads(side.read_text())
    for key, value in changes.items():
        if value is ...:
            meta.pop(key, None)
        else:
            meta[key] = value
    side.write_text(json.dumps(meta))


def foreign(side, **changes):
    """A sidecar not under kdkit's own checksum (as another tool or an older kdkit writes it)."""
    rewrite(side, format=..., meta_sha256=..., **changes)


# ---------------------------------------------------------------- item 1: no code runs from a file

HOOK = """import pathlib
def make(num_classes=10, in_channels=1, image_size=8):
    pathlib.Path(__file__).with_name("RAN").write_text("the sidecar's code ran")
    import torch
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size * image_size, num_classes))
"""


def plant_hook(run, arch="teacher_hooks:make"):
    """A run directory shipped with a module beside it and a sidecar naming it; the folder is on
    sys.path (as `python -m kdkit` run from there puts it), so only kdkit's rule stops the import."""
    (run / "teacher_hooks.py").write_text(HOOK)
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    meta = ckpt.load_meta(run / "best.safetensors") | {"arch": arch}
    ckpt.save_weights(run / "best.safetensors", model.state_dict(), meta)  # a well-formed, checksummed sidecar
    sys.path.insert(0, str(run))


def test_a_sidecar_cannot_make_kdkit_import_code(train_run, tmp_path, monkeypatch, capsys):
    run = copy_run(train_run, tmp_path)
    plant_hook(run)
    for command in (["evaluate", run], ["export", run], ["distill", "--dataset", "digits", "--teacher", run, "--student",
                                                          "cnn-tiny", *FAST, "--out", tmp_path / "d"]):
        message = error_of(cli(*command, monkeypatch=monkeypatch, capsys=capsys, cwd=run))
        assert message == (f"'{run / 'best.json'}' names the user model hook 'teacher_hooks:make'; kdkit never imports "
                           "code named by a file. If you trust that code, allow it: --trust-hook teacher_hooks:make "
                           "(Python: trusted_hooks=['teacher_hooks:make'])")
        assert not (run / "RAN").exists()
        assert "teacher_hooks" not in sys.modules


@pytest.mark.parametrize("arch", ["sys:exit", "os:abort", "builtins:print"])
def test_standard_library_functions_named_by_a_sidecar_are_refused(train_run, tmp_path, monkeypatch, capsys, arch):
    run = copy_run(train_run, tmp_path)
    rewrite_meta = ckpt.load_meta(run / "best.safetensors") | {"arch": arch}
    tensors, _ = ckpt.load_weights(run / "best.safetensors")
    ckpt.save_weights(run / "best.safetensors", tensors, rewrite_meta)
    message = error_of(cli("evaluate", run, monkeypatch=monkeypatch, capsys=capsys))
    assert f"names the user model hook '{arch}'; kdkit never imports code named by a file" in message


def test_a_trusted_hook_runs(train_run, tmp_path, monkeypatch, capsys):
    run = copy_run(train_run, tmp_path)
    plant_hook(run)
    code, out, err = cli("evaluate", run, "--trust-hook", "teacher_hooks:make", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert (run / "RAN").exists() and "accuracy" in out
    sys.modules.pop("teacher_hooks", None)


def test_cli_does_not_put_the_working_directory_on_sys_path(monkeypatch, tmp_path):
    from kdkit import cli

    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    monkeypatch.setattr(sys, "argv", ["kdkit", "methods"])
    with pytest.raises(SystemExit):
        cli.main()
    assert sys.path == before


def test_a_name_from_a_file_selects_only_registered_architectures():
    from kdkit.models.registry import create_model_from_file

    assert create_model_from_file("cnn-tiny", "x.json", num_classes=10, in_channels=1, image_size=8) is not None
    with pytest.raises(KdkitError, match="unknown model 'cnn-tinyy'; did you mean 'cnn-tiny'"):
        create_model_from_file("cnn-tinyy", "x.json", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(KdkitError, match="names no architecture"):
        create_model_from_file(["cnn"], "x.json", num_classes=10, in_channels=1, image_size=8)


# ---------------------------------------------------------------- item 6: the checksum covers the sidecar


def test_an_edited_weights_sidecar_is_refused(train_run, tmp_path, monkeypatch, capsys):
    run = copy_run(train_run, tmp_path)
    rewrite(run / "best.json", mean=[0.9])
    message = error_of(cli("evaluate", run, monkeypatch=monkeypatch, capsys=capsys))
    assert message == (f"sidecar '{run / 'best.json'}' was changed after kdkit wrote it (its checksum does not match); "
                       "restore it, use another checkpoint or retrain")


def test_a_sidecar_without_the_weights_checksum_is_refused(train_run, tmp_path, monkeypatch, capsys):
    """Without sha256, a flipped exponent bit in the weights went unnoticed: now an error."""
    run = copy_run(train_run, tmp_path)
    foreign(run / "best.json", sha256=...)
    data = bytearray((run / "best.safetensors").read_bytes())
    data[-3] ^= 0x40  # an exponent bit of the last weight
    (run / "best.safetensors").write_bytes(bytes(data))
    message = error_of(cli("evaluate", run, monkeypatch=monkeypatch, capsys=capsys))
    assert message == (f"sidecar '{run / 'best.json'}' has no sha256 of its weights, so they cannot be verified; "
                       "restore the sidecar kdkit wrote, use another checkpoint or retrain")


@pytest.fixture
def checkpointed(tmp_path, digits):
    """A train run stopped after 3 steps by max_steps with two checkpoints (steps 2 and 3)."""
    from kdkit.config import TrainConfig, apply_overrides
    from kdkit.recipes import run_train

    cfg = apply_overrides(TrainConfig(), {"dataset": "digits", "model": "cnn-tiny", "epochs": 2, "batch_size": 64,
                                          "progress": False, "amp": "off", "out": str(tmp_path / "run"),
                                          "checkpoint_every": 2, "max_steps": 3})
    run_train(cfg, digits)
    states = sorted((tmp_path / "run" / "checkpoints").glob("state-*.safetensors"))
    assert len(states) == 2
    return cfg, states


def resume(cfg, digits):
    import dataclasses

    from kdkit.recipes import run_train

    return run_train(dataclasses.replace(cfg, resume=True, max_steps=0), digits)


EDITS = [dict(step=1), dict(best_val_accuracy=0.99), dict(sha256=...), dict(config=...), dict(optimizer=...),
         dict(format=..., meta_sha256=...)]


@pytest.mark.parametrize("edit", EDITS)
def test_a_tampered_checkpoint_sidecar_is_skipped(checkpointed, digits, edit):
    """The newest checkpoint's sidecar edited, or missing a field: skipped with a warning, and the
    one before it is resumed from (never the edited position)."""
    cfg, (older, newer) = checkpointed
    rewrite(ckpt.sidecar(newer), **edit)
    with pytest.warns(UserWarning, match="resuming from the checkpoint before it"):
        summary = resume(cfg, digits)
    assert summary["fit"]["best_epoch"] in (1, 2) and summary["metrics"]["accuracy"] > 0


@pytest.mark.parametrize("edit", EDITS)
def test_resume_refuses_when_every_checkpoint_was_tampered_with(checkpointed, digits, edit):
    cfg, states = checkpointed
    for state in states:
        rewrite(ckpt.sidecar(state), **edit)
    with pytest.raises(KdkitError, match="none of the 2 checkpoints in .* is intact"), pytest.warns(UserWarning):
        resume(cfg, digits)


def test_the_sidecar_checksum_is_over_its_content():
    meta = {"b": 1, "a": [1, 2]}
    expected = hashlib.sha256(json.dumps({"a": [1, 2], "b": 1}, sort_keys=True).encode()).hexdigest()
    assert ckpt.meta_checksum(meta) == expected
    assert ckpt.meta_checksum(dict(meta, meta_sha256="x")) == expected


# ---------------------------------------------------------------- item 9: every sidecar field is checked

@pytest.mark.parametrize("changes,message", [
    (dict(num_classes="10"), "has num_classes '10'; it must be an integer in [2, 1000000]"),
    (dict(num_classes=1e9), "has num_classes '1000000000.0'; it must be an integer in [2, 1000000]"),
    (dict(num_classes=...), "has num_classes missing; it must be an integer in [2, 1000000]"),
    (dict(in_channels=0), "has in_channels '0'; it must be an integer in [1, 1024]"),
    (dict(classes=5), "has classes '5'; it must list 10 class names (num_classes)"),
    (dict(std=[0.0]), "has std '[0.0]'; it must list 1 finite numbers (one per channel, > 0)"),
])
def test_sidecar_fields_are_checked(train_run, tmp_path, monkeypatch, capsys, changes, message):
    run = copy_run(train_run, tmp_path)
    foreign(run / "best.json", **changes)
    assert error_of(cli("evaluate", run, monkeypatch=monkeypatch, capsys=capsys)) == \
        f"sidecar '{run / 'best.json'}' {message}: restore the sidecar kdkit wrote"


def test_a_sidecar_that_is_a_json_list(train_run, tmp_path, monkeypatch, capsys):
    run = copy_run(train_run, tmp_path)
    (run / "best.json").write_text("[1, 2]")
    assert error_of(cli("evaluate", run, monkeypatch=monkeypatch, capsys=capsys)) == \
        f"sidecar '{run / 'best.json'}' is a JSON list, not an object; restore the sidecar kdkit wrote or retrain"


def test_evaluate_on_a_checkpoint_says_what_it_is(train_run, tmp_path, monkeypatch, capsys, checkpointed):
    _, states = checkpointed
    assert error_of(cli("evaluate", states[-1], monkeypatch=monkeypatch, capsys=capsys)).startswith(
        f"'{states[-1]}' is a training checkpoint (the state --resume continues from), not model weights")


def test_python_m_kdkit_does_not_import_from_the_working_directory(tmp_path):
    """`python -m` puts the working directory on sys.path; kdkit's __main__ takes it off again."""
    import subprocess

    (tmp_path / "kdkit_cwd_hook.py").write_text(HOOK)
    args = [sys.executable, "-m", "kdkit", "train", "--dataset", "digits", "--model", "kdkit_cwd_hook:make", *FAST,
            "--out", str(tmp_path / "o")]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and not (tmp_path / "RAN").exists(), result.stderr
    assert "kdkit does not import from the working directory on its own: run with PYTHONPATH=." in result.stderr
