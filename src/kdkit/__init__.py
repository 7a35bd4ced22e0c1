"""kdkit: knowledge distillation toolkit.

    import kdkit
    data = kdkit.load_dataset("fashion-mnist")
    result = kdkit.distill(teacher, "cnn-tiny", data, method="kd", epochs=5)
"""
from kdkit.version import __version__  # noqa: F401  (kdkit.__version__)

from kdkit.data import from_arrays, load_dataset  # noqa: E402
from kdkit.distill import DistillResult, distill  # noqa: E402
from kdkit.errors import KdkitError  # noqa: E402
from kdkit.methods import METHODS  # noqa: E402
from kdkit.models import create_model  # noqa: E402

__all__ = ["__version__", "DistillResult", "KdkitError", "METHODS", "create_model", "distill", "from_arrays", "load_dataset"]
