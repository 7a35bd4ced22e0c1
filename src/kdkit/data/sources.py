"""`as_dataset`: a kdkit Dataset from wherever the user's data is (docs/data.md).

    data = as_dataset(train_frame, label_column="target")              # val and test carved from train
    data = as_dataset(torch_dataset, hf_dataset.with_format("torch"))  # train and val

Each of train, val and test may be:
    (x, y)                    a tuple or list of two arrays (numpy, torch, nested lists), as from_arrays takes
    a kdkit Dataset           train only: returned as it is
    a pandas DataFrame        feature columns and the label column (label_column, default "label"); text
                              columns one-hot encoded with the training table's categories (tables.py)
    a map-style dataset       len() and [i] give samples: a torch Dataset, a Hugging Face
                              datasets.Dataset, a list of samples
    a torch DataLoader        iterated once; its batches are split back into samples
    any other iterable        of samples (a generator)
A sample is (x, y) (more items are ignored) or a dict: the input under input_ids (token ids; where
an attention_mask is 0 the id becomes 0, the padding id), pixel_values (images), x or features (as
given); the label under label or labels (or label_column when given). Token ids of different lengths
are padded with 0 to the longest of all splits; any other sample must have the first one's shape.

Everything is read once into arrays (N, ...), per-sample tensors stacked, and goes through
from_arrays (arrays.py): the in-memory path every run uses. Labels that are text ("cat") become
class indices, classes sorted (or in the order of `classes` when given); numbers are used as given.
Validation is carved from train when val is None (val_fraction, stratified, seed); with no val and no
test, test is carved first, a fixed 20% (TEST_FRACTION, TEST_SEED), as for digits; a val without a
test also serves as test.
"""
import dataclasses
import sys
from collections.abc import Mapping

import numpy as np
import torch

from kdkit.data.arrays import KINDS, as_numpy, from_arrays
from kdkit.data.dataset import Dataset
from kdkit.data.tables import encode, is_frame, learn_columns
from kdkit.data.text import is_sentences, text_dataset
from kdkit.errors import KdkitError, shown, unknown

# Where a dict sample keeps its input, and the input kind each key means (None: as given).
INPUT_KEYS = {"input_ids": "tokens", "pixel_values": "image", "x": None, "features": None}
LABEL_KEYS = ("label", "labels")
_ACCEPTED = ("give (x, y) arrays, a DataFrame, a torch or Hugging Face dataset, a DataLoader, "
             "or an iterable of (x, y) or dict samples")


def as_dataset(train, val=None, test=None, *, classes=None, kind: str = "auto", label_column: str | None = None,
               augment: str = "none", val_fraction: float = 0.1, seed: int = 0, name: str = "arrays") -> Dataset:
    """A Dataset from any accepted source per split (see the module docstring)."""
    if isinstance(train, Dataset):
        if val is not None or test is not None:
            raise KdkitError("train is a kdkit Dataset, which carries its own val and test splits; pass it alone")
        return train
    if kind not in KINDS:
        raise unknown("kind", kind, KINDS)
    if is_sentences(train):  # (sentences, labels): a text dataset, words tokenised (text.py; docs/text.md)
        return text_dataset(train, val, test, classes=classes, val_fraction=val_fraction, seed=seed, name=name)
    if train is None:
        raise KdkitError(f"train is None; {_ACCEPTED}")
    columns = learn_columns(train, label_column or "label", "the training table") if is_frame(train) else None
    if columns is not None and columns.categories:
        print(f"{name}: one-hot encoded {columns.describe()}", file=sys.stderr)
    splits = {what: _arrays(source, what, label_column, columns, kind)
              for what, source in (("train", train), ("val", val), ("test", test)) if source is not None}
    kind = kind if kind != "auto" else splits["train"][2] or "auto"
    xs = {what: as_numpy(x, f"x_{what}") for what, (x, _, _) in splits.items()}
    if kind == "tokens":
        xs = _padded(xs)
    ys, classes = _class_indices({what: y for what, (_, y, _) in splits.items()}, classes)
    options = dict(classes=classes, seed=seed, name=name, augment=augment, kind=kind)
    if val is None:
        return from_arrays(xs["train"], ys["train"], xs.get("test"), ys.get("test"), val_fraction=val_fraction, **options)
    data = from_arrays(xs["train"], ys["train"], xs["val"], ys["val"], val_fraction=0.0, **options)
    # the user's val array is not part of the training array: no position there to key saved outputs by
    data.val = dataclasses.replace(data.test, index=None)
    if test is not None:
        data.test = from_arrays(xs["train"], ys["train"], xs["test"], ys["test"], val_fraction=0.0,
                                **(options | {"classes": data.classes})).test
    return data


def _arrays(source, what: str, label_column: str | None, columns, kind: str) -> tuple:
    """(x, y, the input kind the source says or None) of one split's source; samples are padded as token
    ids when they are dicts with input_ids or `kind` is tokens."""
    if is_frame(source):
        if columns is None:
            raise KdkitError(f"{what} is a DataFrame but train is not; give train as a DataFrame too")
        return (*encode(source, columns, what), "table")
    if _is_pair(source):
        return source[0], source[1], None
    return _stacked(_samples(source, what), what, label_column, kind)


def _is_pair(source) -> bool:
    """(x, y): a tuple or list of two arrays; a list of two samples is not one."""
    return (isinstance(source, (tuple, list)) and len(source) == 2
            and all(isinstance(part, (np.ndarray, torch.Tensor, list)) for part in source))


def _samples(source, what: str):
    """The samples of a source that is not arrays: one pass over it."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        raise KdkitError(f"{what} is one array of shape {tuple(source.shape)}; give (x, y): the inputs and their labels")
    if isinstance(source, (str, bytes, Mapping)):
        raise KdkitError(f"{what} is a {type(source).__name__}; {_ACCEPTED}")
    if isinstance(source, torch.utils.data.DataLoader):
        return _unbatched(source, what)
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        return (source[i] for i in range(len(source)))  # map-style: a torch or Hugging Face dataset, a list
    if hasattr(source, "__iter__"):
        return iter(source)
    raise KdkitError(f"{what} is a {type(source).__name__}, which kdkit cannot read; {_ACCEPTED}")


def _unbatched(loader, what: str):
    """The samples of a DataLoader's batches, (x, y) pairs or dicts of batched values."""
    for b, batch in enumerate(loader):
        if isinstance(batch, Mapping):
            size = len(next(iter(batch.values())))
            yield from ({key: value[i] for key, value in batch.items()} for i in range(size))
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            yield from zip(batch[0], batch[1])
        else:
            raise KdkitError(f"{what}: batch {b} of the DataLoader is a {type(batch).__name__}; a batch must be "
                             "(x, y) or a dict (the default collate of (x, y) or dict samples)")


def _stacked(samples, what: str, label_column: str | None, wanted: str) -> tuple:
    """(x (N, ...), y (N,), input kind or None) from samples: stacked, token ids padded with 0."""
    inputs, labels, kinds = [], [], set()
    for i, sample in enumerate(samples):
        x, y, kind = _parts(sample, i, what, label_column)
        inputs.append(x)
        labels.append(y)
        kinds.add(kind)
    if not inputs:
        raise KdkitError(f"{what} holds no samples; check the source")
    kind = kinds.pop() if len(kinds) == 1 else None
    if "tokens" in (kind, wanted):
        return _padded_ids(inputs, what), np.asarray(labels), kind
    for i, x in enumerate(inputs):
        if x.shape != inputs[0].shape:
            raise KdkitError(f"{what}: sample {i} has shape {x.shape} but sample 0 has {inputs[0].shape}; give every "
                             "sample one shape (resize the images first; token ids of any length are padded with kind='tokens')")
    return np.stack(inputs), np.asarray(labels), kind


def _parts(sample, i: int, what: str, label_column: str | None) -> tuple:
    """(x as numpy, the label as a Python scalar, the input kind its key says) of sample i."""
    if isinstance(sample, Mapping):
        key = next((k for k in INPUT_KEYS if k in sample), None)
        if key is None:
            raise KdkitError(f"{what}: sample {i} has keys {_seen(list(sample))}, none of input_ids, pixel_values, "
                             "x or features; put the input under one of them")
        label_key = next((k for k in ((label_column,) if label_column else LABEL_KEYS) if k in sample), None)
        if label_key is None:
            names = f"'{label_column}'" if label_column else "label or labels"
            raise KdkitError(f"{what}: sample {i} has keys {_seen(list(sample))}, none of them {names}; put the label "
                             "under label, or name its key with label_column=NAME")
        x = _input(sample[key], f"{what}: the {key} of sample {i}")
        if key == "input_ids" and "attention_mask" in sample:
            mask = _input(sample["attention_mask"], f"{what}: the attention_mask of sample {i}")
            if mask.shape != x.shape:
                raise KdkitError(f"{what}: the attention_mask of sample {i} has shape {mask.shape} but its input_ids "
                                 f"{x.shape}; give one mask value per id")
            x = np.where(mask == 0, 0, x)  # masked positions are padding: id 0
        return x, _label(sample[label_key], i, what), INPUT_KEYS[key]
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        return _input(sample[0], f"{what}: the input of sample {i}"), _label(sample[1], i, what), None
    raise KdkitError(f"{what}: sample {i} is a {type(sample).__name__}; a sample must be (x, y) or a dict "
                     "with input_ids, pixel_values, x or features and a label")


def _input(value, what: str) -> np.ndarray:
    """A sample's input as a numpy array of numbers (a tensor, an array, a nested list, a PIL image)."""
    try:
        x = as_numpy(value, what)
    except KdkitError:
        x = None
    if x is None or x.dtype.kind not in "biuf":
        raise KdkitError(f"{what} is {_seen(value)}, not an array of numbers; give a tensor, a numpy array, "
                         "a (nested) list of numbers or a PIL image")
    return x


def _label(value, i: int, what: str):
    """One label as a Python int, float, bool or str."""
    if isinstance(value, (str, int, float)):  # (bool is an int)
        return value
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, dtype=object)
    if array.size != 1 or isinstance(array.item(), (list, tuple, dict)) or array.item() is None:
        raise KdkitError(f"{what}: the label of sample {i} is {_seen(value)}; give one class index or name per "
                         "sample (not one-hot rows)")
    item = array.item()
    return item.item() if isinstance(item, np.generic) else item


def _seen(value) -> str:
    """A value as a message shows it: arrays by their shape, anything else cut short, on one line."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    return " ".join(shown(value).split())


def _padded_ids(inputs: list, what: str) -> np.ndarray:
    """(N, L) int64 of N 1-D id sequences, each padded with 0 to the longest, L."""
    for i, x in enumerate(inputs):
        if x.ndim != 1 or x.dtype.kind not in "iu":
            raise KdkitError(f"{what}: the token ids of sample {i} are {x.shape} {x.dtype}; give each sample one "
                             "sequence of integer ids (L,)")
    out = np.zeros((len(inputs), max(len(x) for x in inputs)), dtype=np.int64)
    for row, x in zip(out, inputs):
        row[:len(x)] = x
    return out


def _padded(xs: dict) -> dict:
    """Token ids of every split padded with 0 to the longest split's length."""
    length = max((x.shape[1] for x in xs.values() if x.ndim == 2), default=0)  # other layouts: from_arrays refuses them
    return {what: np.pad(x, ((0, 0), (0, length - x.shape[1]))) if x.ndim == 2 else x for what, x in xs.items()}


def _class_indices(ys: dict, classes) -> tuple[dict, list | None]:
    """Labels of every split as class indices, and the classes: text labels are looked up in `classes`
    (sorted names of every label when not given); numbers are left as they are."""
    ys = {what: as_numpy(y, f"y_{what}") for what, y in ys.items()}
    # booleans (a table's True/False column) are names too: classes 'False', 'True'
    text = {what: y.dtype.kind in "USb" or (y.dtype.kind == "O" and any(isinstance(v, str) for v in y.ravel()))
            for what, y in ys.items()}
    if not any(text.values()):
        return ys, classes
    if not all(text.values()):
        raise KdkitError(f"the labels of {', '.join(w for w in ys if text[w])} are text but those of "
                         f"{', '.join(w for w in ys if not text[w])} are numbers; give labels of one kind")
    names = [str(c) for c in classes] if classes is not None else sorted({str(v) for y in ys.values() for v in y.ravel()})
    index = {name: k for k, name in enumerate(names)}
    for what, y in ys.items():
        unknown_label = next((str(v) for v in y.ravel() if str(v) not in index), None)
        if unknown_label is not None:
            raise KdkitError(f"{what} has the label {_seen(unknown_label)}, which is not in classes; add it to "
                             "classes=[...] or fix the label")
    return {what: np.array([index[str(v)] for v in y.ravel()], dtype=np.int64).reshape(y.shape)
            for what, y in ys.items()}, names
