"""Evaluation: classification metrics, teacher-student agreement, model size/speed, peak memory.

Everything returned is plain Python (float, int, list, dict, None) so it can go straight into a
JSON report. Metrics are computed here with numpy so their definitions are visible in one place;
scikit-learn is used only for ROC-AUC. Tests compare each metric with scikit-learn's.

    logits, labels = predict_logits(model, test_loader)
    metrics = classification_metrics(logits, labels, class_names)
    facts = model_facts(model, input_shape=(3, 32, 32))
    with PeakMemory("cpu") as peak:
        fit(...)
    peak.result  # {"peak_memory_mb": ..., "peak_memory_kind": "cpu_rss", ...}

Just over 400 lines, kept whole: every number in the evidence table is defined here, side by side.
"""
import contextlib
import copy
import platform
import statistics
import sys
import time

import numpy as np
import safetensors.torch
import torch
from torch.utils.flop_counter import FlopCounterMode

from kdkit.data import BatchLoader, Dataset
from kdkit.data.dataset import example_inputs
from kdkit.data.prepare import class_counts
from kdkit.errors import KdkitError
from kdkit.models.outputs import logits_of

ECE_BINS = 15  # Guo et al. 2017, "On Calibration of Modern Neural Networks", Sec. 2
WARMUP_RUNS = 3
LATENCY_THREADS = 1  # intra-op threads for the CPU latency figures (see model_facts)


# ---------------------------------------------------------------- classification metrics


def classification_metrics(logits, labels, class_names=None) -> dict:
    """All metrics for (N, K) logits against (N,) integer labels, as a JSON-ready dict.

    Per-class and macro averages run over all K classes, including classes absent from both
    labels and predictions (sklearn's `labels=range(K)`); a 0/0 precision, recall or F1 counts
    as 0.0 (sklearn's `zero_division=0`). `balanced_accuracy` and `worst_class_recall` use only
    the classes present in `labels`, so `balanced_accuracy` can differ from `recall_macro`.
    `brier` is the multi-class Brier score (Brier 1950): sum over classes of squared error, mean
    over samples; for K == 2 it is twice the binary score on P(class 1).
    """
    logits, labels = _check_inputs(logits, labels)  # (N, K) float64, (N,) int64
    n, k = logits.shape
    names = _class_names(class_names, k)
    log_probs = _log_softmax(logits)  # (N, K)
    probs = np.exp(log_probs)  # (N, K)
    predicted = logits.argmax(axis=1)  # (N,)
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)  # rows = true
    per_class = _per_class(confusion)
    present = per_class["support"] > 0
    out = {"n": n, "accuracy": float((predicted == labels).mean())}
    if k >= 10:
        top5 = np.argsort(-logits, axis=1)[:, :5]  # (N, 5)
        out["top5"] = float((top5 == labels[:, None]).any(axis=1).mean())
    out["balanced_accuracy"] = float(per_class["recall"][present].mean())
    out.update(_averages(per_class))
    out.update(_auc(probs, labels))
    out["nll"] = float(-log_probs[np.arange(n), labels].mean())
    out["ece"] = expected_calibration_error(probs, labels)
    out["brier"] = float(((probs - np.eye(k)[labels]) ** 2).sum(axis=1).mean())
    out["confusion_matrix"] = confusion.tolist()
    out["per_class"] = {
        name: {key: per_class[key][i].item() for key in ("precision", "recall", "f1", "support")}
        for i, name in enumerate(names)
    }
    worst = int(np.argmin(np.where(present, per_class["recall"], np.inf)))
    out["worst_class_recall"] = float(per_class["recall"][worst])
    out["worst_class"] = names[worst]
    return out


def expected_calibration_error(probs, labels, n_bins: int = ECE_BINS) -> float:
    """ECE = sum over bins b of |b|/N * |accuracy(b) - confidence(b)| (Guo et al. 2017, Eq. 3).

    Confidence is the top-1 probability; bins are equal-width and right-closed: ((m-1)/M, m/M].
    """
    confidence = probs.max(axis=1)  # (N,)
    correct = probs.argmax(axis=1) == labels  # (N,)
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]  # (M-1,)
    bins = np.searchsorted(inner_edges, confidence, side="left")  # (N,) in [0, M)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            ece += in_bin.mean() * gap
    return float(ece)


def _check_inputs(logits, labels):
    """(N, K) float64 and (N,) int64 numpy arrays, or KdkitError saying what is wrong."""
    logits, labels = _to_numpy(logits).astype(np.float64), _to_numpy(labels)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise KdkitError(f"logits must have shape (N, K) with K >= 2 classes; got {logits.shape}")
    n, k = logits.shape
    if n == 0:
        raise KdkitError("cannot compute metrics on 0 samples; check that the dataset is not empty")
    if labels.shape != (n,):
        raise KdkitError(f"labels must have shape ({n},) to match logits {logits.shape}; got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise KdkitError(f"labels must be integer class indices; got dtype {labels.dtype}")
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise KdkitError(
            f"label {int(bad[0])} is out of range [0, {k}) for logits with K={k} classes; "
            "check that the model's number of classes matches the dataset"
        )
    if not np.isfinite(logits).all():
        raise KdkitError("logits contain NaN or inf; the model diverged or the inputs are broken")
    return logits, labels.astype(np.int64)


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        return (array.double() if array.is_floating_point() else array).numpy()
    return np.asarray(array)


def _class_names(class_names, k: int) -> list:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(name) for name in class_names]
    if len(names) != k or len(set(names)) != k:
        raise KdkitError(f"class_names must be {k} distinct names, one per logit; got {len(names)}")
    return names


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), max 0 for stability
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0.0 where the denominator is 0 (sklearn's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _per_class(confusion: np.ndarray) -> dict:
    """Per-class precision, recall, F1 (each (K,) float) and support ((K,) int)."""
    true_positive = np.diag(confusion)  # (K,)
    support = confusion.sum(axis=1)  # (K,) samples of each true class
    predicted = confusion.sum(axis=0)  # (K,) samples predicted as each class
    return {
        "precision": _safe_divide(true_positive, predicted),
        "recall": _safe_divide(true_positive, support),
        "f1": _safe_divide(2 * true_positive, support + predicted),  # = 2PR / (P + R)
        "support": support,
    }


def _averages(per_class: dict) -> dict:
    """Macro (every class counts the same) and weighted (by support) precision, recall, F1."""
    weights = per_class["support"] / per_class["support"].sum()  # (K,)
    out = {}
    for key in ("precision", "recall", "f1"):
        out[f"{key}_macro"] = float(per_class[key].mean())
        out[f"{key}_weighted"] = float((per_class[key] * weights).sum())
    return out


def _auc(probs: np.ndarray, labels: np.ndarray) -> dict:
    """ROC-AUC: binary on P(class 1) when K == 2, else one-vs-rest macro over the softmax."""
    k = probs.shape[1]
    missing = sorted(set(range(k)) - set(labels.tolist()))
    if missing:
        return {"auc": None, "auc_reason": f"classes {missing} never occur in labels; AUC undefined"}
    from sklearn.metrics import roc_auc_score  # lazy: sklearn costs ~1 s to import

    if k == 2:
        return {"auc": float(roc_auc_score(labels, probs[:, 1]))}
    return {"auc": float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=list(range(k))))}


# ---------------------------------------------------------------- teacher vs student


def agreement(teacher_logits, student_logits, temperature: float = 1.0) -> dict:
    """How closely the student copies the teacher, on the same (N, K) inputs.

    top1_agreement: fraction of samples whose argmax classes match.
    mean_kl: mean over samples of KL(p_teacher || p_student), both softened by `temperature`,
    in nats, without the T^2 factor that KD losses add for gradient scale.
    """
    teacher = torch.as_tensor(_to_numpy(teacher_logits), dtype=torch.float64)  # (N, K)
    student = torch.as_tensor(_to_numpy(student_logits), dtype=torch.float64)  # (N, K)
    if teacher.shape != student.shape or teacher.ndim != 2 or teacher.shape[0] == 0:
        raise KdkitError(
            f"teacher and student logits must be the same non-empty (N, K) shape; "
            f"got {tuple(teacher.shape)} and {tuple(student.shape)}"
        )
    if temperature <= 0:
        raise KdkitError(f"temperature must be > 0; got {temperature}")
    log_p_teacher = torch.log_softmax(teacher / temperature, dim=1)  # (N, K)
    log_p_student = torch.log_softmax(student / temperature, dim=1)  # (N, K)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)  # (N,)
    same = teacher.argmax(dim=1) == student.argmax(dim=1)  # (N,)
    return {"top1_agreement": same.double().mean().item(), "mean_kl": kl.mean().item()}


# ---------------------------------------------------------------- running a model


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """model.eval() for the block, then each submodule back to its own previous mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def predict_logits(model: torch.nn.Module, batches, device="cpu"):
    """Run `model` over batches of (x, y) or (x, y, index); return (N, K) float32 and (N,) int64 CPU tensors."""
    all_logits, all_labels = [], []
    with eval_mode(model), torch.inference_mode():
        for batch in batches:
            x, y = batch[0], batch[1]
            logits = logits_of(model(x.to(device)), "the model", len(x))  # (B, K)
            all_logits.append(logits.float().cpu())
            all_labels.append(torch.as_tensor(y).long().cpu())
    if not all_logits:
        raise KdkitError("no batches to evaluate; check that the dataset is not empty")
    return torch.cat(all_logits), torch.cat(all_labels)


def model_facts(model: torch.nn.Module, input_shape, *, repeats: int = 20, batch_sizes=(1, 64),
                threads: int = LATENCY_THREADS, sample: torch.Tensor | None = None) -> dict:
    """Size and speed of `model` for inputs of per-sample shape `input_shape` (no batch dim, e.g. (3, 32, 32)).

    sample: real inputs (N, *input_shape) to time and count on instead of random ones; token ids need
    them (padding alone is one token long to a model that drops padding, as Hugging Face models do
    here): repeat r at batch B reads rows r*B .. r*B+B-1 (cycling), so the median is that of a typical
    batch; flops_per_sample is the mean over the first min(N, 64) rows, counted as one batch.

    flops_per_sample: torch's FlopCounterMode on one sample, which counts a multiply-add as 2 FLOPs
    (Linear(10 -> 5) = 2 * 10 * 5 = 100). size_mb: bytes of the state dict saved as safetensors / 1e6.
    latency_ms_b{B}: median of `repeats` timed forward passes at batch size B, after warm-up,
    on a CPU copy in eval mode under inference_mode (the caller's model is not touched), with
    `threads` intra-op threads (latency_threads); throughput_b{B} = B / latency in samples/s.
    Default one thread, as the ONNX benchmark's: on a 2-vCPU machine, over 20 calls, the same model's batch-1
    figure moved up to 1.9x with two threads and 1.2x with one (benchmarks/latency_threads.py).
    """
    parameters = {id(p): p for p in model.parameters()}.values()
    cpu_model = copy.deepcopy(model).cpu().eval()
    out = {
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "size_mb": len(safetensors.torch.save(_unshared_state_dict(cpu_model))) / 1e6,
        "flops_per_sample": _count_flops(cpu_model, input_shape, sample),
        "latency_threads": threads,
    }
    for batch_size in batch_sizes:
        latency_ms = _median_latency_ms(cpu_model, input_shape, batch_size, repeats, threads, sample)
        out[f"latency_ms_b{batch_size}"] = latency_ms
        out[f"throughput_b{batch_size}"] = batch_size / (latency_ms / 1000.0)
    return out


def _unshared_state_dict(model: torch.nn.Module) -> dict:
    """State dict safetensors can save: tied tensors (same storage) kept once, all contiguous copies."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if key not in seen:
            seen.add(key)
            out[name] = tensor.detach().contiguous().clone()
    return out


def _inputs(input_shape, batch: int, sample: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
    """Rows start .. start+batch-1 of `sample` (cycling), or standard-normal inputs, or padding token
    ids for a model of token ids."""
    if sample is not None and len(sample):
        return sample[(start + torch.arange(batch)) % len(sample)].cpu()  # (B, *input_shape)
    x = example_inputs(input_shape, batch)
    return torch.randn(x.shape) if x.is_floating_point() else x


def _count_flops(cpu_model: torch.nn.Module, input_shape, sample: torch.Tensor | None = None) -> int:
    batch = min(len(sample), 64) if sample is not None and len(sample) else 1
    x = _inputs(input_shape, batch, sample)  # (B, *input_shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        cpu_model(x)
    return int(counter.get_total_flops()) // batch


def _median_latency_ms(cpu_model: torch.nn.Module, input_shape, batch: int, repeats: int, threads: int,
                       sample: torch.Tensor | None = None) -> float:
    times, caller_threads = [], torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(WARMUP_RUNS):
                cpu_model(_inputs(input_shape, batch, sample))
            for r in range(repeats):
                x = _inputs(input_shape, batch, sample, start=r * batch)  # (B, *input_shape)
                start = time.perf_counter()
                cpu_model(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(caller_threads)
    return statistics.median(times) * 1000.0


# ---------------------------------------------------------------- peak memory


class PeakMemory:
    """Peak memory during a block (e.g. training); megabytes are 1e6 bytes.

        with PeakMemory(device) as peak:
            fit(...)
        peak.result  # {"peak_memory_mb", "peak_memory_kind", "start_memory_mb"[, "peak_memory_note"]}

    CUDA: peak bytes allocated by torch's caching allocator on that device ("cuda_allocated").
    CPU: the whole process's peak resident set size (VmHWM) during the block ("cpu_rss"), reset at
    entry through /proc/self/clear_refs (Linux). Both include memory already held at entry
    (`start_memory_mb`). Where the reset is impossible the process-lifetime peak is reported and
    `peak_memory_note` says so.
    """

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.result = {}
        self._reset_ok = False

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._reset_ok = _reset_peak_rss()
            self._start = _proc_status_bytes("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak, kind = torch.cuda.max_memory_allocated(self.device), "cuda_allocated"
        else:
            peak, kind = _peak_rss_bytes(self._reset_ok), "cpu_rss"
        self.result = {"peak_memory_mb": peak / 1e6, "peak_memory_kind": kind}
        if self._start is not None:
            self.result["start_memory_mb"] = self._start / 1e6
        if kind == "cpu_rss" and not self._reset_ok:
            self.result["peak_memory_note"] = "process lifetime peak (could not reset the peak RSS)"
        return False


def _reset_peak_rss() -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmHWM") is not None
    except OSError:
        return False


def _proc_status_bytes(field: str):
    """A 'kB' field of /proc/self/status (e.g. VmHWM) in bytes, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_bytes(reset_ok: bool) -> int:
    if reset_ok:
        return _proc_status_bytes("VmHWM")
    import resource  # Unix only, so imported just for this fallback

    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss if sys.platform == "darwin" else max_rss * 1024  # macOS reports bytes, Linux KiB


def evaluate_model(model, data: Dataset, device, teacher_logits=None, posthoc_tau: float = 0.0) -> tuple[dict, torch.Tensor]:
    """Test-set metrics (and agreement with the teacher when its test logits are given).
    posthoc_tau > 0: the logits are first adjusted by - posthoc_tau * log(train prior)."""
    test = BatchLoader(data.test, 512, shuffle=False, mean=data.mean, std=data.std, device=device)
    logits, labels = predict_logits(model.to(device), test, device)
    return test_metrics(logits, labels, data, teacher_logits, posthoc_tau), logits


def test_metrics(logits, labels, data: Dataset, teacher_logits=None, posthoc_tau: float = 0.0) -> dict:
    """classification_metrics, plus many/medium/few-shot accuracy when train is long-tailed."""
    from kdkit.data.longtail import scaled_thresholds, shot_groups
    from kdkit.losses.balanced import posthoc_adjust

    counts = class_counts(data)
    if posthoc_tau > 0:
        logits = posthoc_adjust(torch.as_tensor(logits), torch.tensor(counts, dtype=torch.float64), posthoc_tau)
    metrics = classification_metrics(logits, labels, list(data.classes))
    if teacher_logits is not None:
        metrics |= agreement(teacher_logits, logits)
    if max(counts) > min(counts):  # an imbalanced train split: accuracy by how many samples a class had
        many, few = scaled_thresholds(max(counts))
        recalls = [metrics["per_class"][name]["recall"] for name in data.classes]
        for group, members in shot_groups(counts, many, few).items():
            metrics[f"{group}_shot_accuracy"] = sum(recalls[k] for k in members) / len(members) if members else None
        metrics["shot_thresholds"] = {"many": many, "few": few}
    return metrics


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}

