"""What a built package holds: pyproject's extras and package data, py.typed, the MIT LICENSE, the
docs pages (kdkit/docs/*.md, copied by setup.py), and a wheel built from a copy of the source tree."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kdkit.cli.listings import doc_pages, docs_folder

ROOT = Path(__file__).parents[1]
tomllib = pytest.importorskip("tomllib")  # (Python >= 3.11)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_metadata_declares_torch_as_a_range_and_the_extras():
    project = PYPROJECT["project"]
    assert "torch>=2.4" in project["dependencies"]
    core = " ".join(project["dependencies"])
    for optional in ("optuna", "matplotlib", "tensorboard", "onnx", "transformers", "pandas"):
        assert optional not in core, optional
    extras = project["optional-dependencies"]
    assert {"tune", "report", "tensorboard", "tables", "onnx", "hf", "all", "test"} <= set(extras)
    assert extras["all"] == ["kdkit[tune,report,tensorboard,tables,onnx,hf,postgres]"] and "kdkit[all]" in extras["test"]
    # the Makefile installs the local CPU torch first, then everything the tests need
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index('pip install -q "$(TORCH)"') < makefile.index('pip install -q -e ".[test]"')
    assert "TORCH ?= torch==2.13.0" in makefile


def test_package_data_and_license_are_declared():
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["kdkit"]
    assert (ROOT / "src" / "kdkit" / "py.typed").is_file()
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "kdkit developers" in license_text
    assert "include docs/*.md" in (ROOT / "MANIFEST.in").read_text()  # the sdist carries the pages setup.py copies


def test_docs_pages_are_found_in_a_source_tree():
    assert Path(str(docs_folder())) == ROOT / "docs"
    assert set(doc_pages()) == {page.stem for page in (ROOT / "docs").glob("*.md")} >= {"config", "errors", "methods"}


def test_a_wheel_holds_py_typed_license_and_docs(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "docs", source / "docs", ignore=shutil.ignore_patterns("*.png"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "LICENSE", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheel").glob("kdkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kdkit/py.typed" in names and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {f"kdkit/docs/{page.name}" for page in (ROOT / "docs").glob("*.md")} <= names
    assert "kdkit/cli/listings.py" in names and not any("make_config_doc" in n for n in names)
