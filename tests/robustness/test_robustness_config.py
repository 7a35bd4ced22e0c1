"""The config robustness grid (benchmarks/robustness.py): every config key x every probe value, through
`--set` and a YAML file in process (a few seconds), and a sample through the real CLI in a subprocess.
Each cell is accepted as a value the key can really use, or refused with one line under 300 characters;
never a traceback, never an invalid value taken silently.

    KDKIT_ROBUSTNESS=full python -m pytest -q tests/robustness/test_robustness_config.py   # every cell through the CLI too
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import robustness  # noqa: E402

FULL = os.environ.get("KDKIT_ROBUSTNESS") == "full"
GOOD = ("valid", "checked later", "refused")


def failing(cells) -> list:
    """The (key, value, verdict, detail) cells that are neither a usable value nor a clean refusal."""
    return [cell for cell in cells if cell[2] not in GOOD]


@pytest.mark.parametrize("key", robustness.KEYS)
def test_set_grid(key):
    cells = [(key, probe[:40], *robustness.set_cell(key, probe)) for probe in robustness.PROBES]
    assert not failing(cells), failing(cells)


@pytest.mark.parametrize("key", robustness.KEYS)
def test_yaml_grid(key, tmp_path):
    cells = [(key, probe[:40], *robustness.yaml_cell(key, probe, tmp_path)) for probe in robustness.PROBES]
    assert not failing(cells), failing(cells)


@pytest.mark.parametrize("command,key,probe", robustness.cli_cells(FULL),
                         ids=lambda v: v[:12] if isinstance(v, str) else None)
def test_cli_cell(command, key, probe, tmp_path):
    verdict, detail = robustness.cli_cell(command, key, probe, tmp_path)
    assert verdict == "refused", detail
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_grid_judges_honestly():
    """The judge itself: an invalid accepted value is a silent accept, another exception a traceback."""
    assert robustness.accepted("momentum", 0.5) == "valid"
    assert robustness.accepted("momentum", 1.0) == "silent accept"
    assert robustness.accepted("seeds", [0, 0]) == "silent accept"
    assert robustness.accepted("dataset", "ünïcødé") == "checked later"
    assert robustness.accepted("dataset", None) == "silent accept"
    assert robustness.accepted("method", "kd+kdd") == "silent accept"
    assert robustness.judge("lr", lambda: 1 / 0)[0] == "traceback"
    assert robustness.refused("x" * 300) == "bad message" and robustness.refused("a\nb") == "bad message"
