"""The optional packages behind kdkit's extras (pyproject.toml's [project.optional-dependencies]) and
the one line said when one is missing at the moment it is needed.

    optuna = need("optuna", "kdkit tune")   # else: kdkit tune needs optuna: pip install 'kdkit[tune]'

`import kdkit`, `kdkit train` and `kdkit distill --no-report` need none of them.
"""
import importlib

from kdkit.errors import KdkitError

# module -> the extra that installs it
EXTRA_OF = {"optuna": "tune", "matplotlib": "report", "tensorboard": "tensorboard", "onnx": "onnx",
            "onnxruntime": "onnx", "transformers": "hf", "tokenizers": "hf"}


def missing(module: str, what: str) -> str:
    """The one line naming what needs `module` and the extra that installs it."""
    return f"{what} needs {module}: pip install 'kdkit[{EXTRA_OF[module]}]'"


def need(module: str, what: str):
    """`module` imported, or a KdkitError naming the extra that installs it (`what` needs it)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name and e.name.split(".")[0] != module:  # installed, but a package it imports is not
            raise KdkitError(f"{what} needs {module}, which is installed but cannot be imported ({e}); reinstall it: "
                             f"pip install --force-reinstall 'kdkit[{EXTRA_OF[module]}]'") from None
        raise KdkitError(missing(module, what)) from None
