"""HybridTeacher: teachers of different kinds combined into one target distribution, and the
combiners (mean, weights, entropy, stacker). See kdkit.teachers for the whole picture."""
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from kdkit.data import BatchLoader
from kdkit.errors import KdkitError, unknown
from kdkit.teachers.sources import PROB_FLOOR, SPLITS, FileTeacher, ProbaTeacher, TorchTeacher, align, class_order

COMBINERS = ("mean", "weights", "entropy", "stacker")
ENTROPY_EPS = 1e-6  # total confidence (nats) below which entropy weights fall back to uniform
STACKER_L2 = 1e-3
STACKER_MAX_ITER = 200
STACKER_FEATURE_FLOOR = math.log(PROB_FLOOR)  # stacker inputs clipped here: one overconfident
# teacher (log-probabilities of -500) cannot dominate the scale of the regression
BATCH_SIZE = 512  # torch teachers over a whole split


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

    @property
    def index_keyed(self) -> bool:
        """Some member's outputs are stored per train-split position (saved outputs, an estimator's
        table) rather than computed from the batch: they never see a mixed image."""
        return any(s.index_keyed for s in self.sources)

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
        for source in self.sources:
            if isinstance(source, FileTeacher):
                source.check_rows(data.source_size)
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


def _accuracy(log_probs: torch.Tensor, labels: torch.Tensor) -> float | None:
    if len(labels) == 0:
        return None
    return (log_probs.argmax(dim=1) == labels.to(log_probs.device)).double().mean().item()
