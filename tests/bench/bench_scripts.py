"""Load a script of benchmarks/ as a module, for the toy-size tests of tests/bench/."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    """benchmarks/NAME.py, imported under NAME (its main() runs only when called)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
