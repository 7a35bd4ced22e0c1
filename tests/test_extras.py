"""The extras (src/kdkit/extras.py): kdkit imports and distills without any of them, and each one
missing at the moment it is needed is one line naming the extra. An absent package is simulated with
`sys.modules[name] = None`, which makes its import raise ImportError."""
import json
import subprocess
import sys

import pytest

from kdkit.errors import KdkitError
from kdkit.extras import EXTRA_OF, need
from test_cli import one_line_error

# Every optional package, and torch's module that imports tensorboard.
OPTIONAL = (*EXTRA_OF, "torch.utils.tensorboard")


def without_extras(*args) -> subprocess.CompletedProcess:
    """`kdkit ARGS` in a fresh interpreter where no optional package can be imported."""
    code = (f"import sys\nfor name in {OPTIONAL!r}:\n    sys.modules[name] = None\n"
            f"from kdkit.cli import main\nsys.argv = ['kdkit', *{[str(a) for a in args]!r}]\nmain()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def forget(monkeypatch, *modules):
    """Drop kdkit modules already imported here, so the next import runs them again."""
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_import_kdkit_loads_no_optional_package():
    code = ("import sys, kdkit, kdkit.cli, kdkit.recipes, kdkit.train\n"
            f"print([m for m in {OPTIONAL!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_need_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(KdkitError, match=r"^kdkit tune needs optuna: pip install 'kdkit\[tune\]'$"):
        need("optuna", "kdkit tune")
    assert need("json", "a test") is json  # an installed module comes back imported


def test_need_says_when_an_installed_extra_is_broken(monkeypatch, tmp_path):
    (tmp_path / "fake_extra.py").write_text("import fake_extra_dependency\n")  # its own import fails
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRA_OF, "fake_extra", "report")
    with pytest.raises(KdkitError, match=r"^a plot needs fake_extra, which is installed but cannot be imported "
                                         r"\(No module named 'fake_extra_dependency'\); reinstall it: "
                                         r"pip install --force-reinstall 'kdkit\[report\]'$"):
        need("fake_extra", "a plot")


def test_tune_without_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    forget(monkeypatch, "kdkit.tune")
    with pytest.raises(KdkitError, match=r"^kdkit tune needs optuna: pip install 'kdkit\[tune\]'$"):
        import kdkit.tune  # noqa: F401
    result = without_extras("tune", "--dataset", "digits", "--trials", "2")
    one_line_error(result, r"^error: kdkit tune needs optuna: pip install 'kdkit\[tune\]'$")


def test_report_without_matplotlib(monkeypatch, tmp_path, capsys):
    from kdkit.recipes import write_run_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    forget(monkeypatch, "kdkit.report", "kdkit.report.html", "kdkit.report.plots", "kdkit.report.comparison")
    with pytest.raises(KdkitError, match=r"^report.html needs matplotlib: pip install 'kdkit\[report\]'$"):
        import kdkit.report  # noqa: F401
    # at the end of a run the report is skipped with the same line; the run's results stand
    assert write_run_report(tmp_path, None, "cpu") is None
    printed = capsys.readouterr().out.strip()
    assert printed == (f"report not written (report.html needs matplotlib: pip install 'kdkit[report]'); "
                       f"retry with `kdkit report {tmp_path}`")
    one_line_error(without_extras("report", tmp_path), r"needs matplotlib: pip install 'kdkit\[report\]'$")


def test_logger_without_tensorboard_writes_metrics_and_says_so_once(monkeypatch, tmp_path, capsys):
    from kdkit.train import meters

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(meters._TENSORBOARD_NOTICE, "said", False)
    for run in ("a", "b"):  # two runs in one process (scratch and student): one notice
        (tmp_path / run).mkdir()
        with meters.Logger(tmp_path / run, resume=False) as logger:
            logger.log(1, 0, {"train/loss": 0.5})
        assert logger.tb is None and not (tmp_path / run / "tb").exists()
        assert json.loads((tmp_path / run / "metrics.jsonl").read_text()) == {"step": 1, "epoch": 0, "train/loss": 0.5}
    assert capsys.readouterr().err.splitlines() == [
        "note: no TensorBoard logs (tb/): TensorBoard logging needs tensorboard: pip install 'kdkit[tensorboard]'; "
        "metrics.jsonl has every scalar"]


def test_distill_without_any_extra(tmp_path):
    out = tmp_path / "d"
    result = without_extras("distill", "--dataset", "digits", "--teacher", "cnn-x0.25", "--teacher-epochs", "1",
                            "--student", "cnn-tiny", "--epochs", "1", "--no-baseline", "--no-report", "--out", out,
                            "--set", "progress=false", "--set", "batch_size=64")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["rows"]["student"]["metrics"]["accuracy"]["mean"] > 0
    assert not list(out.rglob("tb")) and list(out.rglob("metrics.jsonl"))  # metrics.jsonl only
    assert result.stderr.count("pip install 'kdkit[tensorboard]'") == 1
