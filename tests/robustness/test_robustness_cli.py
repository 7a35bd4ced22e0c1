"""The command-line robustness grid (benchmarks/robustness_cli.py): every option and argument of every
`kdkit` command with probe values and probe paths, run in process. Every cell ends with exit code 2
and one `error:` line under 300 characters (the listing commands may exit 0 for a value they can
use); no traceback, no invalid value taken silently, no probe file changed.

    KDKIT_ROBUSTNESS=full python -m pytest -q tests/robustness/test_robustness_cli.py   # every probe (about 20 s more)
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import robustness_cli  # noqa: E402


def test_cli_grid():
    result = robustness_cli.run(quick=os.environ.get("KDKIT_ROBUSTNESS") != "full")
    assert result["cells"] >= 300 and result["refused_cleanly"] > 0.9 * result["cells"]
    assert result["tracebacks"] == result["bad_messages"] == result["silent_accepts"] == 0, result["failures"]
    assert result["files_changed"] == []


def test_every_command_but_demo_is_in_the_grid():
    import typer.main

    from kdkit.cli import app

    commands = set(typer.main.get_command(app).commands)
    assert set(robustness_cli.parameters()) == commands - {"demo"}


def test_the_grid_catches_a_traceback(monkeypatch):
    """A check that cannot fail is no check: an option whose command raises a plain exception counts."""
    import kdkit.cli.results

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(kdkit.cli.results, "check_dataset_option", broken)
    verdict, detail = robustness_cli.cell("evaluate", ["nowhere", "--dataset", "x"])
    assert verdict == "traceback" and "ValueError: a bug" in detail
