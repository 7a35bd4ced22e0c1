"""Hybrid teachers: an ensemble of teachers of different kinds, combined into one target distribution.

    from kdkit.teachers import FileTeacher, HybridTeacher, ProbaTeacher, TorchTeacher
    teacher = HybridTeacher([
        TorchTeacher(resnet, name="resnet"),          # nn.Module: normalised x (B, C, H, W) -> logits (B, K)
        ProbaTeacher(gbm, name="gbm"),                # anything with predict_proba (scikit-learn, XGBoost, ...)
        FileTeacher("outputs/bert_logits.npy"),       # saved logits or probabilities, one row per sample
    ], combine="entropy")
    teacher.prepare(data)                             # data: the kdkit Dataset; once, before training
    log_p = teacher(x, idx)                           # (B, K) log-probabilities; idx from the BatchLoader
    teacher.report()                                  # each teacher's and the combination's val accuracy

Kinds of teacher:
  TorchTeacher  evaluated per batch, on the same (normalised, augmented) view the student sees;
                kept frozen and in eval mode.
  ProbaTeacher  evaluated once per split, in prepare(), on the RAW split arrays: Split.images as
                float32, flattened to (N, C*H*W). uint8 images stay in 0..255 units (not divided by
                255, not normalised); tabular data (from_arrays with (N, F)) gives the original
                (N, F) features. The estimator must have been trained on that same representation;
                pass `transform=` (a function of the (N, C, H, W) numpy images) to build another.
  FileTeacher   saved outputs read from .npy, .safetensors or .parquet (formats: see FileTeacher).

Saved outputs are keyed by sample index: row i of a file belongs to the sample at position i of
the user's original training array (Split.index), so one file serves the train and validation
splits whatever val_fraction or seed a run uses. The training batch is located by `idx`, its
positions in kdkit's train split (what BatchLoader yields), which map to rows of tables
precomputed in prepare().

Classes: the ensemble predicts the dataset's classes in the dataset's order. A teacher that names
its classes has its columns reordered by name; one that does not must have exactly K columns,
assumed to be in the dataset's order.

Combiners (`combine=`):
  mean      average of the teachers' probabilities
  weights   weighted average of probabilities, `weights` one non-negative number per teacher
  entropy   per-sample weights from confidence: w_m(x) = (log K - H(p_m(x))) / sum over teachers
            (uniform when every teacher is maximally uncertain)
  stacker   multinomial logistic regression from the concatenated teacher log-probabilities
            (B, M*K) to the K classes, fitted on the validation split (full-batch L-BFGS, float64,
            L2 penalty 1e-3 on the weights, at most 200 iterations, deterministic). Validation is
            the only data the teachers did not train on, so it is the only honest place to fit
            the stacker; the price is that validation accuracy of the combination (in-sample) and
            of the distilled student (model selection) is then mildly optimistic. Test stays
            untouched.
Averages are taken in log space (logsumexp of log-probabilities plus log weights), in float32.
Probabilities read from estimators or files are floored at PROB_FLOOR and renormalised, so every
log-probability is finite (a hard 0 would turn a KL loss into NaN).
"""
import copy
import json
import math
import numbers
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdkit.data import BatchLoader
from kdkit.errors import KdkitError, unknown

COMBINERS = ("mean", "weights", "entropy", "stacker")
PROB_FLOOR = 1e-8  # smallest probability kept from estimators and files
PROB_ROW_TOLERANCE = 1e-3  # rows within this of 1 (all values in [0, 1]) are read as probabilities
ENTROPY_EPS = 1e-6  # total confidence (nats) below which entropy weights fall back to uniform
STACKER_L2 = 1e-3
STACKER_MAX_ITER = 200
STACKER_FEATURE_FLOOR = math.log(PROB_FLOOR)  # stacker inputs clipped here: one overconfident
# teacher (log-probabilities of -500) cannot dominate the scale of the regression
BATCH_SIZE = 512  # torch teachers over a whole split
PREDICT_CHUNK = 4096  # rows per predict_proba call, so no float copy of a whole split is made
SPLITS = ("train", "val")


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
        logits = self.model(x)  # (B, K')
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise KdkitError(f"teacher '{self.name}' must return a (B, K) logits tensor, got "
                             f"{_describe(logits)}; wrap the model so forward returns the logits")
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


def _read_npy(path: Path):
    try:
        values = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle, which kdkit never uses
        raise KdkitError(f"teacher file '{path}' cannot be read without unpickling ({str(e)[:60]}); "
                         "save a plain float array with np.save") from None
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
    table = pq.read_table(path)
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


# ---------------------------------------------------------------- the ensemble


class HybridTeacher(nn.Module):
    """Teachers of different kinds combined into one (B, K) log-probability target; see module doc."""

    needs_index = True

    def __init__(self, teachers: list, combine: str = "mean", weights=None):
        super().__init__()
        self.sources = list(teachers)
        if not self.sources:
            raise KdkitError("HybridTeacher needs at least one teacher; pass a list of "
                             "TorchTeacher / ProbaTeacher / FileTeacher")
        for source in self.sources:
            if not isinstance(source, (TorchTeacher, ProbaTeacher, FileTeacher)):
                raise KdkitError(f"HybridTeacher got a {type(source).__name__}; wrap models in "
                                 "TorchTeacher, estimators in ProbaTeacher, saved outputs in FileTeacher")
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise KdkitError(f"two teachers are named '{twice[0]}'; give each a distinct name=")
        if combine not in COMBINERS:
            raise unknown("combine", combine, COMBINERS)
        self.combine = combine
        self.weights = _check_weights(weights, combine, len(self.sources))  # (M,) or None
        # registered so .to() / .eval() reach the torch teachers
        self.models = nn.ModuleList([s.model for s in self.sources if isinstance(s, TorchTeacher)])
        self.data = None  # the Dataset, set by prepare()
        self._orders = []  # per source: (K,) column order or None
        self._tables = {}  # split name -> per source: (N, K) CPU float32 log-probs, None for torch
        self._stacker = None  # (W (M*K, K), b (K,)) float32, for combine="stacker"
        self._on_device = {}  # (key, device) -> tensor moved there, filled lazily
        self._report = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.models.eval()  # teachers stay frozen, whatever the caller asks
        return self

    # ------------------------------------------------------------ preparation

    def prepare(self, data) -> "HybridTeacher":
        """Align classes, precompute index-keyed tables, fit the stacker, measure on validation."""
        self.data = data
        try:
            self._prepare()
        except BaseException:
            self.data = None  # a failed prepare leaves the teacher unprepared
            raise
        return self

    def _prepare(self) -> None:
        data = self.data
        self._on_device = {}
        self._orders = [class_order(s, list(data.classes)) for s in self.sources]
        self._tables = {name: [self._index_table(i, name) for i in range(len(self.sources))]
                        for name in SPLITS}
        val_parts = [self.source_log_probs(i, "val") for i in range(len(self.sources))]  # M x (N, K)
        labels = data.val.labels  # (N,)
        self._stacker = None
        if self.combine == "stacker":
            if len(labels) == 0:
                raise KdkitError("combine='stacker' is fitted on the validation split, which is "
                                 "empty; set val_fraction > 0 or use another combiner")
            self._stacker = fit_stacker(torch.stack(val_parts), labels, data.num_classes)
        combined = self._combine(torch.stack(val_parts))  # (N, K)
        self._report = {
            "combine": self.combine,
            "weights": None if self.weights is None else self.weights.tolist(),
            "teachers": [{"name": s.name, "kind": s.kind, "val_accuracy": _accuracy(part, labels)}
                         for s, part in zip(self.sources, val_parts)],
            "val_accuracy": _accuracy(combined, labels),
            "val_samples": len(labels),
        }
        if self.combine == "stacker":
            self._report["note"] = ("stacker fitted on the validation split: its val_accuracy is "
                                    "in-sample, and the student's validation accuracy is mildly "
                                    "optimistic; test is untouched")

    def _index_table(self, i: int, split_name: str) -> torch.Tensor | None:
        source = self.sources[i]
        if not source.index_keyed:
            return None
        split = getattr(self.data, split_name)
        table = source.split_table(split, split_name)  # (N, K')
        if len(split) == 0:
            return torch.empty(0, self.data.num_classes)
        return align(table, self._orders[i], self.data.num_classes, source.name)

    def _require_prepared(self) -> None:
        if self.data is None:
            raise KdkitError("HybridTeacher is not prepared; call teacher.prepare(dataset) once "
                             "before using it")

    # ------------------------------------------------------------ outputs

    @torch.no_grad()
    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) log-probabilities for the training batch x (normalised) at train positions `index`."""
        self._require_prepared()
        if index is None and any(s.index_keyed for s in self.sources):
            raise KdkitError("HybridTeacher needs the batch's positions in the train split: call "
                             "teacher(x, idx) with the idx the BatchLoader yields")
        if index is not None and len(index) != len(x):
            raise KdkitError(f"index has {len(index)} positions for a batch of {len(x)}; pass the "
                             "idx yielded with this batch")
        parts = [self._source_batch(i, x, index) for i in range(len(self.sources))]  # M x (B, K)
        return self._combine(torch.stack(parts))

    def _source_batch(self, i: int, x: torch.Tensor, index) -> torch.Tensor:
        source = self.sources[i]
        if not source.index_keyed:
            return align(source.log_probs(x), self._orders[i], self.data.num_classes, source.name)
        table = self._moved(("train", i), self._tables["train"][i], x.device)  # (N_train, K)
        index = index.to(device=x.device, dtype=torch.int64)
        if bool(((index < 0) | (index >= len(table))).any()):
            raise KdkitError(f"index values must be positions 0..{len(table) - 1} in the train "
                             "split; pass the idx the train BatchLoader yields")
        return table.index_select(0, index)

    def _moved(self, key, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        if tensor.device == device:
            return tensor
        cached = self._on_device.get((key, device))
        if cached is None:
            cached = self._on_device[(key, device)] = tensor.to(device)
        return cached

    @torch.no_grad()
    def split_log_probs(self, split_name: str) -> torch.Tensor:
        """(N, K) combined log-probabilities over a whole split ("train", "val", or "test" when no
        teacher is a file of saved outputs), on CPU."""
        self._require_prepared()
        parts = [self.source_log_probs(i, split_name) for i in range(len(self.sources))]
        return self._combine(torch.stack(parts))

    def source_log_probs(self, i: int, split_name: str) -> torch.Tensor:
        """(N, K) aligned CPU log-probabilities of one source over a split (no augmentation)."""
        if split_name not in SPLITS + ("test",):
            raise KdkitError(f"split must be train, val or test, got '{split_name}'")
        source, split = self.sources[i], getattr(self.data, split_name)
        if split_name == "test" and isinstance(source, FileTeacher):
            raise KdkitError(f"teacher file '{source.path}' holds outputs for the training data only, "
                             "so the combination cannot be measured on the test split")
        if split_name == "test" and source.index_keyed:  # an estimator: predicted now, once
            return align(source.split_table(split, "test"), self._orders[i], self.data.num_classes, source.name)
        if source.index_keyed:
            return self._tables[split_name][i]
        if len(split) == 0:
            return torch.empty(0, self.data.num_classes)
        loader = BatchLoader(split, BATCH_SIZE, shuffle=False, mean=self.data.mean,
                             std=self.data.std, device=source.device())
        with torch.no_grad():
            parts = [align(source.log_probs(x), self._orders[i], self.data.num_classes,
                           source.name).cpu() for x, _, _ in loader]
        return torch.cat(parts)

    def report(self) -> dict:
        """Each teacher's name, kind and validation accuracy, and the combination's; from prepare()."""
        self._require_prepared()
        return copy.deepcopy(self._report)

    # ------------------------------------------------------------ combining

    def _combine(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(M, B, K) teacher log-probabilities -> (B, K) combined log-probabilities, float32."""
        with torch.autocast(log_probs.device.type, enabled=False):
            log_probs = log_probs.float()
            if self.combine == "stacker":
                return self._stack(log_probs)
            log_weights = self._log_weights(log_probs)  # (M, B)
            combined = torch.logsumexp(log_probs + log_weights[:, :, None], dim=0)  # (B, K)
            return combined.log_softmax(dim=1)  # exact renormalisation

    def _log_weights(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(M, B) log of each teacher's weight for each sample."""
        m, b, k = log_probs.shape
        if self.combine == "mean":
            return torch.full((m, b), -math.log(m), device=log_probs.device)
        if self.combine == "weights":
            weights = self._moved("weights", self.weights, log_probs.device)  # (M,)
            return weights.log()[:, None].expand(m, b)
        return entropy_log_weights(log_probs)

    def _stack(self, log_probs: torch.Tensor) -> torch.Tensor:
        weight = self._moved("stacker_w", self._stacker[0], log_probs.device)  # (M*K, K)
        bias = self._moved("stacker_b", self._stacker[1], log_probs.device)  # (K,)
        features = stacker_features(log_probs)  # (B, M*K)
        return (features @ weight + bias).log_softmax(dim=1)


def entropy_log_weights(log_probs: torch.Tensor) -> torch.Tensor:
    """(M, B) log w_m(x), w_m(x) = (log K - H(p_m(x))) / sum_m (log K - H(p_m(x))); uniform when
    every teacher is maximally uncertain about x."""
    m, b, k = log_probs.shape
    entropy = torch.special.entr(log_probs.exp()).sum(dim=2)  # (M, B), entr(0) = 0
    confidence = (math.log(k) - entropy).clamp_min(0)  # (M, B)
    total = confidence.sum(dim=0, keepdim=True)  # (1, B)
    uniform = torch.full_like(confidence, 1.0 / m)
    certain = total > ENTROPY_EPS  # (1, B); below it every teacher is uniform up to rounding
    weights = torch.where(certain, confidence / total.clamp_min(ENTROPY_EPS), uniform)  # (M, B)
    return weights.log()


def stacker_features(log_probs: torch.Tensor) -> torch.Tensor:
    """(M, B, K) -> (B, M*K): teacher log-probabilities side by side, clipped from below."""
    m, b, k = log_probs.shape
    return log_probs.clamp_min(STACKER_FEATURE_FLOOR).permute(1, 0, 2).reshape(b, m * k)


def fit_stacker(log_probs: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Multinomial logistic regression (B, M*K) -> K by full-batch L-BFGS in float64 on CPU.

    Minimises mean cross-entropy + STACKER_L2 * sum(W^2) (bias not penalised) from zero weights,
    at most STACKER_MAX_ITER iterations. Returns (W (M*K, K), b (K,)) as float32.
    """
    with torch.inference_mode(False), torch.enable_grad():
        features = stacker_features(log_probs.detach().cpu().double()).clone()  # (N, M*K)
        labels = labels.detach().cpu().long().clone()  # (N,)
        weight = torch.zeros(features.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=STACKER_MAX_ITER,
                                      tolerance_grad=1e-10, tolerance_change=1e-12,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(features @ weight + bias, labels)
            loss = loss + STACKER_L2 * (weight * weight).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


# ---------------------------------------------------------------- the CLI's entry point


def teacher_from_spec(spec: str, data=None):
    """A FileTeacher when `spec` names saved outputs, else None (the caller handles weights).

    Saved outputs: a path ending .npy or .parquet, or a .safetensors file holding a tensor named
    "logits" or "probs". With `data` (a Dataset) the file is checked against it at once: its
    classes and that it covers every train and validation sample.
    """
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".safetensors" and not (path.is_file() and _holds_outputs(path)):
        return None
    if suffix not in (".npy", ".parquet", ".safetensors"):
        return None
    teacher = FileTeacher(path)
    if data is not None:
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


def _check_weights(weights, combine: str, count: int) -> torch.Tensor | None:
    """(M,) float32 weights summing to 1 for combine='weights'; None otherwise."""
    if combine != "weights":
        if weights is not None:
            raise KdkitError(f"weights are only used with combine='weights', not '{combine}'; "
                             "pass combine='weights' or drop weights")
        return None
    if weights is None:
        raise KdkitError(f"combine='weights' needs weights, one per teacher ({count}); "
                         "e.g. weights=[0.7, 0.3]")
    values = [float(w) for w in weights]
    if len(values) != count:
        raise KdkitError(f"got {len(values)} weights for {count} teachers; give one weight per teacher")
    if any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise KdkitError(f"weights must be non-negative numbers, not all zero; got {values}")
    return torch.tensor(values, dtype=torch.float32) / sum(values)


def _names(classes) -> list[str] | None:
    return None if classes is None else [str(c) for c in classes]


def _is_integral(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and float(value).is_integer()


def _accuracy(log_probs: torch.Tensor, labels: torch.Tensor) -> float | None:
    if len(labels) == 0:
        return None
    return (log_probs.argmax(dim=1) == labels.to(log_probs.device)).double().mean().item()


def _show(names: list[str], brackets: bool = True, limit: int = 10) -> str:
    """['a', 'b'] (or 'a', 'b'), cut after `limit` names."""
    shown = ", ".join(repr(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")
    return f"[{shown}]" if brackets else shown


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
