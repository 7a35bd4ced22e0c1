"""Shared fixtures: a tiny real dataset (scikit-learn digits) and tiny configs."""
import pytest

from kdkit.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny(tmp_path):
    """Config overrides for seconds-long runs."""
    return {"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.05, "progress": False,
            "log_every": 5, "out": str(tmp_path / "run")}
