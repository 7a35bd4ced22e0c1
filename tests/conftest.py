"""Shared fixtures: a tiny real dataset (scikit-learn digits) and tiny configs.

The tests mirror the package (tests/data/ for src/kdkit/data/, ...); the suites that span it stand
apart (robustness/: bad input, fuzzing, the generated grids, file safety; bench/: the benchmark
scripts at toy size). Test modules import a few helpers from each other by name (module names are
unique across the folders), so every folder is put on sys.path here, before any of them is imported.
"""
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS)] + [str(p) for p in sorted(TESTS.iterdir()) if p.is_dir() and p.name[0] not in "._"]

from kdkit.data import load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny(tmp_path):
    """Config overrides for seconds-long runs."""
    return {"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.05, "progress": False,
            "log_every": 5, "out": str(tmp_path / "run")}


def need_tool(missing: bool, reason: str):
    """A test that needs a tool .ci/run installs (Chromium, PostgreSQL): skipped on a developer's
    machine without it, but a failure under CI=true, where a silent skip would be a check that
    cannot fail."""
    if not missing:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so this is a broken CI machine, not a skip)")
    pytest.skip(reason)
