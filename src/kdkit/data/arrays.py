"""Datasets that are already in memory: user arrays (`from_arrays`) and scikit-learn's digits.

Layouts `from_arrays` accepts (numpy arrays or torch tensors), and the input kind each gives
(`kind="auto"` reads it from the layout; name it to be sure):
    (N, F) float    a table: rows of F features, stored as float32 (N, F); normalize=auto
                    standardises each feature (column) with the training split's mean and std
    (N, L) integer  token ids (kind="tokens"): stored as int64 (N, L), never made float, never
                    normalised (0 is the padding id by convention, as in Hugging Face tokenizers);
                    integer features are a table (kind="table"); kind="auto" asks which
    (N, H, W)       uint8 or float images, grey: stored as (N, 1, H, W)
    (N, C, H, W)    channels first when dim 1 is 1, 3 or 4
    (N, H, W, C)    channels last when dim 3 is 1, 3 or 4 (and dim 1 is not): transposed
uint8 images stay uint8 (mean/std in [0, 1] units); float images are stored as float32 and are
used as given (mean/std in their own units).
"""
import numpy as np
import torch

from kdkit.data.dataset import Dataset, RawData, build_dataset, classes_from_labels
from kdkit.errors import KdkitError, unknown

_CHANNELS = (1, 3, 4)


KINDS = ("auto", "image", "table", "tokens")


def from_arrays(x_train, y_train, x_test=None, y_test=None, classes: list[str] | None = None,
                val_fraction: float = 0.1, seed: int = 0, name: str = "arrays",
                augment: str = "none", kind: str = "auto") -> Dataset:
    """A Dataset from in-memory arrays; validation is carved from train (stratified, `seed`), and test
    too when x_test is None (a fixed 20%, as for digits). kind: auto, image, table or tokens (see the
    module docstring)."""
    x_train, y_train = as_inputs(x_train, "x_train", kind), as_numpy(y_train, "y_train")
    if (x_test is None) != (y_test is None):
        raise KdkitError("give both x_test and y_test, or neither (a test split is then carved from train)")
    if x_test is not None:
        x_test, y_test = as_inputs(x_test, "x_test", kind), as_numpy(y_test, "y_test")
    if classes is None:
        classes = classes_from_labels([y_train, y_test], name, " (or pass classes=[...] naming all K)")
    raw = RawData(x_train, y_train, x_test, y_test, list(classes), origin=name)
    return build_dataset(raw, name=name, augment=augment, val_fraction=val_fraction, seed=seed)


def load_digits_raw() -> RawData:
    """scikit-learn's 1,797 8x8 digits, rescaled from 0..16 to uint8 0..255; no test split
    (build_dataset carves a fixed stratified 20% with seed 0)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return RawData(images, digits.target.astype(np.int64), None, None,
                   classes=[str(i) for i in range(10)], origin="sklearn.datasets.load_digits")


def as_numpy(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise KdkitError(f"{what}: cannot make one array of it ({str(error).split('.')[0]}); "
                         "give a numpy array or torch tensor") from None


def as_inputs(x, what: str, kind: str = "auto") -> np.ndarray:
    """(N, C, H, W) uint8 or float32 images, (N, F) float32 table rows or (N, L) int64 token ids
    from any accepted layout (see the module docstring)."""
    if kind not in KINDS:
        raise unknown("kind", kind, KINDS)
    x = as_numpy(x, what)
    if x.ndim == 2 and x.dtype.kind in "iub" and kind == "auto":
        raise KdkitError(f"{what} is {x.shape[0]} rows of {x.shape[1]} integers: token ids or table features? "
                         "pass kind='tokens' (kept as integer ids) or kind='table' (standardised floats)")
    if kind == "tokens":
        if x.ndim != 2 or x.dtype.kind not in "iu":
            raise KdkitError(f"{what}: token ids must be (N, L) integers, got {x.shape} {x.dtype}; pad every "
                             "sequence to one length L (with 0) and give integer ids")
        if len(x) and x.min() < 0:
            raise KdkitError(f"{what}: token ids must be 0 or more, got {x.min()}; pad with 0, not negative ids")
        return np.ascontiguousarray(x, dtype=np.int64)
    if x.dtype.kind == "f":
        _check_finite(x, what)
    if x.ndim == 2 and x.dtype.kind in "iubf" and kind != "image":
        return np.ascontiguousarray(x, dtype=np.float32)  # (N, F) table rows
    if kind == "table":
        raise KdkitError(f"{what}: a table must be (N, F) numbers, got {x.shape} {x.dtype}; "
                         "flatten each row to F features, or pass kind='image' for images")
    return as_images(x, what)


def as_images(x, what: str) -> np.ndarray:
    """(N, C, H, W) uint8 or float32 from any accepted image layout (see module docstring)."""
    x = as_numpy(x, what)
    if x.dtype.kind == "f":
        _check_finite(x, what)
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise KdkitError(f"{what}: images must be uint8 (0..255) or float, got {x.dtype}; "
                         "convert with .astype(np.uint8) or .astype(np.float32)")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[1] not in _CHANNELS and x.shape[3] in _CHANNELS:
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    elif x.ndim != 4 or x.shape[1] not in _CHANNELS:
        raise KdkitError(f"{what}: cannot read shape {x.shape}; give (N, F) table rows, (N, L) token ids, (N, H, W), "
                         "(N, C, H, W) or (N, H, W, C) with C in 1, 3, 4")
    return np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)


def _check_finite(x: np.ndarray, what: str) -> None:
    """One NaN sample makes the channel mean NaN, and so every normalised input: refuse it here,
    where the user can still see which array and sample it is."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = finite.reshape(len(x), -1).all(axis=1) if x.ndim else finite
        first = int(np.argmin(bad)) if x.ndim else 0
        raise KdkitError(f"{what} has {int(x.size - finite.sum())} NaN/inf values (first in sample {first}); "
                         "replace them (impute missing values, or np.nan_to_num) or drop those samples")
