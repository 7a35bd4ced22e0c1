"""Teacher sources: torch models, predict_proba estimators and saved outputs, as log-probabilities
with their class names (see kdkit.teachers for the whole picture)."""
import json
import numbers
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdkit.errors import KdkitError
from kdkit.models.outputs import logits_of

PROB_FLOOR = 1e-8  # smallest probability kept from estimators and files
PROB_ROW_TOLERANCE = 1e-3  # rows within this of 1 (all values in [0, 1]) are read as probabilities
PREDICT_CHUNK = 4096  # rows per predict_proba call, so no float copy of a whole split is made
SPLITS = ("train", "val")
OUTPUT_SUFFIXES = (".npy", ".parquet", ".safetensors")  # the formats FileTeacher reads
TEXT_SUFFIXES = {".csv": ", delimiter=','", ".tsv": ", delimiter='\\t'", ".txt": ""}  # refused, with how to convert

# ---------------------------------------------------------------- sources


class TorchTeacher:
    """An nn.Module mapping the normalised batch x (B, C, H, W) to logits (B, K); run per batch."""

    kind = "torch"
    index_keyed = False

    def __init__(self, model: nn.Module, classes=None, name: str | None = None):
        if not isinstance(model, nn.Module):
            raise KdkitError(f"TorchTeacher needs an nn.Module, got {type(model).__name__}; "
                             "wrap estimators with ProbaTeacher and saved outputs with FileTeacher")
        self.model = model.eval().requires_grad_(False)
        self.classes = _names(classes)
        self.name = name or type(model).__name__

    def column_names(self, dataset_classes: list[str]) -> list[str] | None:
        return self.classes

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K') float32 log-probabilities, columns in the model's own order."""
        logits = logits_of(self.model(x), f"teacher '{self.name}'", len(x))  # (B, K')
        return logits.float().log_softmax(dim=1)

    def device(self) -> torch.device:
        tensor = next(iter(self.model.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.model.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")


class ProbaTeacher:
    """Anything with predict_proba(X); evaluated once per split on the raw split arrays.

    Column names: `classes` when given; else the estimator's `classes_`, read as class indices
    into the dataset's names when they are integers, as names when they are strings; else unknown.
    """

    kind = "proba"
    index_keyed = True

    def __init__(self, estimator, classes=None, name: str | None = None, transform=None):
        if not callable(getattr(estimator, "predict_proba", None)):
            raise KdkitError(f"ProbaTeacher needs an object with predict_proba(X), got "
                             f"{type(estimator).__name__}; fit a probabilistic classifier")
        self.estimator = estimator
        self.classes = _names(classes)
        self.name = name or type(estimator).__name__
        self.transform = transform or flatten_raw

    def column_names(self, dataset_classes: list[str]) -> list[str] | None:
        if self.classes is not None:
            return self.classes
        raw = getattr(self.estimator, "classes_", None)
        if raw is None:
            return None
        values = list(np.asarray(raw).ravel())
        if not all(_is_integral(v) for v in values):
            return [str(v) for v in values]
        k = len(dataset_classes)
        bad = [int(v) for v in values if not 0 <= int(v) < k]
        if bad:
            raise KdkitError(f"teacher '{self.name}' has classes_ {bad[:5]} outside 0..{k - 1} "
                             f"(the dataset has {k} classes); train it on the dataset's labels")
        return [dataset_classes[int(v)] for v in values]

    def split_table(self, split, split_name: str) -> torch.Tensor:
        """(N, K') float32 log-probabilities for every sample of `split`, in split order."""
        images = split.images.numpy()  # (N, C, H, W)
        chunks = [self._predict(images[start:start + PREDICT_CHUNK])
                  for start in range(0, len(images), PREDICT_CHUNK)]
        if not chunks:
            return torch.empty(0, 0)
        return probabilities_to_log(np.concatenate(chunks), f"teacher '{self.name}'")

    def _predict(self, images: np.ndarray) -> np.ndarray:
        probs = np.asarray(self.estimator.predict_proba(self.transform(images)), dtype=np.float64)
        if probs.ndim != 2 or len(probs) != len(images):
            raise KdkitError(f"teacher '{self.name}': predict_proba returned shape {probs.shape} "
                             f"for {len(images)} samples; it must return (N, K)")
        return probs  # (n, K')


def flatten_raw(images: np.ndarray) -> np.ndarray:
    """ProbaTeacher's default input: (N, C, H, W) images as float32 (N, C*H*W), units unchanged."""
    return images.astype(np.float32).reshape(len(images), -1)


class FileTeacher:
    """Saved logits or probabilities, one row per sample of the original training array.

    .npy          an (N, K) float array; row i = position i of the source's training array
    .safetensors  one (N, K) tensor named "logits" or "probs", rows as for .npy; optional metadata
                  key "classes": a JSON list of the column names
    .parquet      one row per sample: an integer column `index` (optional, defaults to row order)
                  and one float column per class, named by class name (needs pyarrow)
    An array whose values are all in [0, 1] with every row summing to 1 (within 1e-3) is read as
    probabilities, anything else as logits; both are stored as log-probabilities.
    """

    kind = "file"
    index_keyed = True

    def __init__(self, path, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise KdkitError(f"teacher file '{self.path}' not found; check the path")
        readers = {".npy": _read_npy, ".safetensors": _read_safetensors, ".parquet": _read_parquet}
        reader = readers.get(self.path.suffix.lower())
        if self.path.suffix.lower() in TEXT_SUFFIXES:
            raise _text_outputs(self.path)
        if reader is None:
            raise KdkitError(f"teacher file '{self.path}' has an unknown format; save outputs as "
                             ".npy, .safetensors or .parquet")
        keys, values, classes = reader(self.path)  # (R,) int64 sorted, (R, K) float64, names
        self.keys = keys
        self.table = probabilities_to_log(values, f"teacher file '{self.path}'")  # (R, K)
        self.classes = classes
        self.name = name or self.path.stem

    def column_names(self, dataset_classes: list[str]) -> list[str] | None:
        return self.classes

    def check_rows(self, source_size: int | None) -> None:
        """Refuse rows beyond the source's training array: they mean the file was saved for other
        data (another dataset, train and test together), so its rows may belong to other samples."""
        if source_size is None or not len(self.keys):
            return
        fix = f"save exactly one row per sample of the original training set (positions 0..{source_size - 1})"
        if len(self.keys) > source_size:
            raise KdkitError(f"teacher file '{self.path}' has {len(self.keys)} rows but the dataset's original "
                             f"training set has {source_size} samples; {fix}")
        if self.keys[-1] >= source_size:  # keys are sorted: only a parquet 'index' column can get here
            raise KdkitError(f"teacher file '{self.path}': column 'index' goes up to {int(self.keys[-1])} but the "
                             f"dataset's original training set has {source_size} samples; {fix}")

    def split_table(self, split, split_name: str) -> torch.Tensor:
        """(N, K) float32 log-probabilities for `split`, looked up by its source positions."""
        if split.index is None:
            raise KdkitError(f"the {split_name} split has no sample index, so teacher file "
                             f"'{self.path}' cannot be matched to it; build the dataset with "
                             "kdkit.data (load_dataset or from_arrays)")
        wanted = split.index.numpy()  # (N,) positions in the source's training array
        rows = np.searchsorted(self.keys, wanted)  # (N,)
        rows = np.minimum(rows, max(len(self.keys) - 1, 0))
        found = self.keys[rows] == wanted if len(self.keys) else np.zeros(len(wanted), bool)
        if not found.all():
            missing = wanted[~found]
            raise KdkitError(f"teacher file '{self.path}' lacks {len(missing)} of the "
                             f"{len(wanted)} samples of the {split_name} split (e.g. position "
                             f"{int(missing[0])}); save one row per sample of the original "
                             "training set")
        return self.table[torch.from_numpy(rows)]


def _text_outputs(path: Path) -> KdkitError:
    """Text tables are not read: their float precision and header row are guesses kdkit would get wrong."""
    suffix = path.suffix.lower()
    return KdkitError(f"teacher file '{path}' is text ({suffix}); saved outputs are read from .npy, .parquet or "
                      f".safetensors: convert it with np.save('{path.stem}.npy', np.loadtxt('{path.name}'"
                      f"{TEXT_SUFFIXES[suffix]})) (add skiprows=1 for a header row)")


def _read_npy(path: Path):
    try:
        values = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- also EOFError, tokenize.TokenError, ... from a damaged header
        if isinstance(e, ValueError) and "pickle" in str(e):  # object arrays need pickle, which kdkit never uses
            raise KdkitError(f"teacher file '{path}' cannot be read without unpickling ({str(e)[:60]}); "
                             "save a plain float array with np.save") from None
        why = " ".join(str(e).split())[:60] or type(e).__name__
        raise KdkitError(f"teacher file '{path}' is damaged or not a .npy file ({why}); "
                         "save the outputs again with np.save") from None
    values = _check_table(values, path)
    return np.arange(len(values)), values, None


def _read_safetensors(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = [n for n in ("logits", "probs") if n in f.keys()]
            if len(names) != 1:
                found = ", ".join(sorted(f.keys())[:5]) or "nothing"
                raise KdkitError(f"teacher file '{path}' must hold one tensor named 'logits' or "
                                 f"'probs', it holds {found}; save exactly one of them")
            values = f.get_tensor(names[0]).double().numpy()
            metadata = f.metadata() or {}
    except SafetensorError as e:
        raise KdkitError(f"teacher file '{path}' is not a readable safetensors file "
                         f"({str(e)[:80]}); save it with safetensors.torch.save_file") from None
    values = _check_table(values, path)
    if names[0] == "probs" and not looks_like_probabilities(values):
        raise KdkitError(f"teacher file '{path}': tensor 'probs' is not probabilities (values "
                         "outside [0, 1] or rows not summing to 1); save logits as 'logits'")
    return np.arange(len(values)), values, _metadata_classes(metadata, path)


def _metadata_classes(metadata: dict, path: Path) -> list[str] | None:
    if "classes" not in metadata:
        return None
    try:
        classes = json.loads(metadata["classes"])
    except json.JSONDecodeError:
        classes = None
    if not isinstance(classes, list):
        raise KdkitError(f"teacher file '{path}': metadata 'classes' must be a JSON list of "
                         "class names, e.g. '[\"cat\", \"dog\"]'")
    return _names(classes)


def _read_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise KdkitError(f"reading teacher file '{path}' needs pyarrow; pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        raise KdkitError(f"teacher file '{path}' is not a readable parquet file ({type(e).__name__}: {str(e)[:60]}); "
                         "save it again, e.g. with pandas.DataFrame.to_parquet") from None
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    keys = columns.pop("index", None)
    if not columns:
        raise KdkitError(f"teacher file '{path}' has no class columns; add one float column per class")
    bad = [name for name, column in columns.items() if column.dtype.kind not in "iuf"]
    if bad:
        raise KdkitError(f"teacher file '{path}': columns {bad[:5]} are not numeric; keep only "
                         "'index' and one float column per class")
    values = _check_table(np.stack(list(columns.values()), axis=1), path)  # (R, K)
    if keys is None:
        return np.arange(len(values)), values, list(columns)
    if keys.dtype.kind not in "iu" or len(np.unique(keys)) != len(keys) or (keys < 0).any():
        raise KdkitError(f"teacher file '{path}': column 'index' must hold distinct non-negative "
                         "integers (positions in the original training set)")
    order = np.argsort(keys)
    return keys[order].astype(np.int64), values[order], list(columns)


def _check_table(values: np.ndarray, path: Path) -> np.ndarray:
    """(R, K) float64, or a KdkitError naming what is wrong with the file's array."""
    if values.ndim != 2 or values.shape[1] < 2 or values.dtype.kind not in "iuf":
        raise KdkitError(f"teacher file '{path}' holds {values.dtype} of shape {values.shape}; "
                         "save an (N, K) float array, one row per sample, K >= 2 classes")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise KdkitError(f"teacher file '{path}' contains NaN or inf; recompute the outputs")
    return values


# ---------------------------------------------------------------- probabilities and classes


def looks_like_probabilities(values: np.ndarray) -> bool:
    """True when every value is in [0, 1] and every row sums to 1 within PROB_ROW_TOLERANCE."""
    in_range = bool(((values >= 0) & (values <= 1)).all())
    return in_range and bool((np.abs(values.sum(axis=1) - 1) <= PROB_ROW_TOLERANCE).all())


def probabilities_to_log(values: np.ndarray, what: str) -> torch.Tensor:
    """(N, K) float32 log-probabilities from probabilities or logits (see looks_like_probabilities).

    Probabilities are floored at PROB_FLOOR and renormalised, so every entry is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise KdkitError(f"{what} gave NaN or inf outputs; check its inputs")
    table = torch.from_numpy(values)  # (N, K) float64
    if looks_like_probabilities(values):
        table = table.clamp_min(PROB_FLOOR).log()
    return table.log_softmax(dim=1).float()


def class_order(source, dataset_classes: list[str]) -> torch.Tensor | None:
    """(K,) int64 column of the source for each dataset class, or None when it names none."""
    names = source.column_names(dataset_classes)
    if names is None:
        return None
    if len(set(names)) != len(names):
        raise KdkitError(f"teacher '{source.name}' names a class twice in {_show(names)}; "
                         "give each column a distinct class name")
    missing = [c for c in dataset_classes if c not in names]
    extra = [c for c in names if c not in set(dataset_classes)]
    if missing or extra:
        parts = [f"missing {_show(missing, brackets=False)}" if missing else "",
                 f"extra {_show(extra, brackets=False)}" if extra else ""]
        raise KdkitError(f"teacher '{source.name}' has classes {_show(names)} but the dataset has "
                         f"{_show(dataset_classes)}: {'; '.join(p for p in parts if p)}; "
                         "use a teacher trained on exactly the dataset's classes")
    position = {name: j for j, name in enumerate(names)}
    return torch.tensor([position[c] for c in dataset_classes], dtype=torch.int64)


def align(log_probs: torch.Tensor, order: torch.Tensor | None, k: int, name: str) -> torch.Tensor:
    """(B, K) columns in dataset order from the source's (B, K') columns."""
    width = log_probs.shape[1]
    if order is None:
        if width != k:
            raise KdkitError(f"teacher '{name}' gives {width} columns but the dataset has {k} "
                             "classes; pass classes=[...] naming its columns, or use a teacher "
                             f"with {k} outputs")
        return log_probs
    if width != len(order):
        raise KdkitError(f"teacher '{name}' gives {width} columns but names {len(order)} "
                         "classes; give one class name per column")
    return log_probs.index_select(1, order.to(log_probs.device))


# ---------------------------------------------------------------- the CLI's entry point


def teacher_from_spec(spec: str, data=None):
    """A FileTeacher when `spec` names saved outputs, else None (the caller handles weights).

    Saved outputs: a path ending .npy or .parquet, or a .safetensors file holding a tensor named
    "logits" or "probs"; a .csv, .tsv or .txt path is refused with how to convert it. With `data` (a Dataset) the file is checked against it at once: its
    classes and that it covers every train and validation sample.
    """
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".safetensors" and not (path.is_file() and _holds_outputs(path)):
        return None
    if suffix not in OUTPUT_SUFFIXES + tuple(TEXT_SUFFIXES):  # text: FileTeacher says how to convert it
        return None
    teacher = FileTeacher(path)
    if data is not None:
        teacher.check_rows(data.source_size)
        order = class_order(teacher, list(data.classes))
        for split_name in SPLITS:
            split = getattr(data, split_name)
            if len(split):
                align(teacher.split_table(split, split_name), order, data.num_classes, teacher.name)
    return teacher


def _holds_outputs(path: Path) -> bool:
    """True when a safetensors file holds a tensor named "logits" or "probs" (header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return bool({"logits", "probs"} & set(f.keys()))
    except (SafetensorError, OSError):
        return False


# ---------------------------------------------------------------- small helpers




def _names(classes) -> list[str] | None:
    return None if classes is None else [str(c) for c in classes]


def _is_integral(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and float(value).is_integer()




def _show(names: list[str], brackets: bool = True, limit: int = 10) -> str:
    """['a', 'b'] (or 'a', 'b'), cut after `limit` names."""
    shown = ", ".join(repr(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")
    return f"[{shown}]" if brackets else shown

