"""Feature importance of the distillation vector: which layers and dimensions the student relies on.

The design's step 3: the distillation vector (several tapped layers, each pooled to one value per
channel or unit, see methods/vector.py) can carry noise; this measures which of its slices matter.

    result = layer_importance(student, teacher, data)            # default: student.feature_modules
    result["layers"][0]["ablation_accuracy_drop"]                # one value per dimension of layer 0

For each tapped layer and each dimension d of its pooled output (a channel of a (C, H, W) map, a
unit of a (D,) vector, a feature of (T, D) tokens), on a held-out batch of `n_samples`:

  ablation_accuracy_drop[d]   accuracy - accuracy with d mean-ablated (its values replaced by their
                              mean over the batch, by a forward hook that edits the layer's output)
  ablation_agreement_drop[d]  the same for top-1 agreement with the other model (None without one)
  grad_x_act[d]               mean over samples of |d logit_pred / d a_d * a_d|, a_d = pooled
                              activation of d, logit_pred = the model's own predicted-class logit

Drops are fractions of the batch (0.01 = one sample in 100) and can be negative (ablating helped).
Cost: one forward + backward per layer for grad_x_act, then every analysed dimension is one forward
of the batch; several dimensions run in one forward (their ablated copies are stacked, up to
`batch_size` samples). A layer with more than `max_dims` dimensions is ablated only in the
`max_dims` ranked highest by grad_x_act (the others get None).
"""
import contextlib

import torch
from torch import nn

from kdkit.adapters import default_layers
from kdkit.data import BatchLoader, Dataset, Split
from kdkit.errors import KdkitError
from kdkit.evaluate import eval_mode
from kdkit.models.outputs import logits_of
from kdkit.taps import check_names

MAX_DIMS = 256  # dimensions ablated per layer (cost is linear in it)
KEYS = ("ablation_accuracy_drop", "ablation_agreement_drop", "grad_x_act")
METHOD = ("mean-ablation of each pooled dimension (accuracy and teacher agreement drop) on a held-out batch; "
          "gradient x activation of the predicted-class logit w.r.t. the pooled dimension")


def layer_importance(student: nn.Module, teacher: nn.Module | None, data: Dataset, student_layers=None,
                     teacher_layers=None, n_samples: int = 1000, device="cpu", split: str = "test",
                     max_dims: int = MAX_DIMS, batch_size: int = 4096) -> dict:
    """Importance of every dimension of the student's tapped layers (see the module docstring);
    with `teacher_layers`, the same for the teacher's layers (agreement: with the clean student)."""
    x, y = held_out_batch(data, split, n_samples, device)
    student_layers = list(student_layers or default_layers(student, "student"))
    s_pred = _predict(student.to(device), x)
    t_pred = None if teacher is None else _predict(teacher.to(device), x)
    out = {"n_samples": len(y), "split": split, "method": METHOD, "max_dims": max_dims,
           "accuracy": _rate(s_pred, y), "agreement": None if t_pred is None else _rate(s_pred, t_pred),
           "layers": analyse_layers(student, student_layers, x, y, t_pred, max_dims, batch_size)}
    if teacher is not None and teacher_layers:
        out["teacher"] = {"accuracy": _rate(t_pred, y),
                          "layers": analyse_layers(teacher, list(teacher_layers), x, y, s_pred, max_dims, batch_size)}
    return out


def held_out_batch(data: Dataset, split: str, n_samples: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to n_samples of data.{split}, a fixed random subset (classes mixed), normalised like training."""
    if split not in ("val", "test"):
        raise KdkitError(f"importance is measured on 'val' or 'test', got '{split}'; use split='test'")
    part = getattr(data, split)
    if len(part) == 0:
        raise KdkitError(f"the {split} split is empty, so importance cannot be measured; use the other split")
    pick = torch.randperm(len(part), generator=torch.Generator().manual_seed(0))[:n_samples]
    subset = Split(part.images[pick], part.labels[pick])
    x, y, _ = next(iter(BatchLoader(subset, len(pick), shuffle=False, mean=data.mean, std=data.std, device=device)))
    return x, y  # (N, C, H, W), (N,)


def analyse_layers(model, layers, x, y, reference, max_dims: int = MAX_DIMS, batch_size: int = 4096) -> list[dict]:
    """One result dict per layer; `reference` holds the other model's predictions (or None)."""
    check_names(model, layers)
    segments, offset = [], 0
    with eval_mode(model):
        for name in layers:
            segments.append(analyse_layer(model, name, x, y, reference, max_dims, batch_size) | {"offset": offset})
            offset += segments[-1]["dims"]
    return segments


def analyse_layer(model, name: str, x, y, reference, max_dims: int, batch_size: int) -> dict:
    """grad_x_act of every dimension, then mean-ablation of the (capped) dimensions in chunks."""
    acts, grads, shape = pooled_gradients(model, name, x)  # (N, D) each
    gxa = (grads * acts).abs().mean(0)  # (D,)
    dims = gxa.numel()
    chosen = torch.argsort(gxa, descending=True)[:max_dims].sort().values.tolist()
    acc_drop, agree_drop = [None] * dims, [None] * dims
    clean = _predict(model, x)
    per_pass = max(1, batch_size // len(y))
    for start in range(0, len(chosen), per_pass):
        channels = chosen[start:start + per_pass]
        preds = ablated_predictions(model, name, x, channels)  # (k, N)
        for j, c in enumerate(channels):
            acc_drop[c] = _rate(clean, y) - _rate(preds[j], y)
            if reference is not None:
                agree_drop[c] = _rate(clean, reference) - _rate(preds[j], reference)
    values = {"ablation_accuracy_drop": acc_drop, "ablation_agreement_drop": agree_drop, "grad_x_act": gxa.tolist()}
    return {"name": name, "shape": list(shape), "dims": dims, "analysed": len(chosen), **values,
            "total": {k: _total(v, sum) for k, v in values.items()},
            "mean": {k: _total(v, lambda a: sum(a) / len(a)) for k, v in values.items()}}


def pooled_gradients(model, name: str, x) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Pooled activations (N, D) of layer `name` and the gradient of the model's predicted-class
    logit with respect to them (N, D), plus the layer's output shape without the batch."""
    box = {}

    def hook(module, inputs, out):
        v = _channels_first(_tensor(out, name))  # (N, D, ...)
        pooled = v.flatten(2).mean(2) if v.ndim > 2 else v  # (N, D), as adapters.pool does
        box["p"] = pooled.detach().requires_grad_()
        box["shape"] = tuple(out.shape[1:])
        shift = (box["p"] - pooled.detach()).view(*pooled.shape, *[1] * (v.ndim - 2))  # zero, but carries the gradient
        return _channels_back(v + shift, out.ndim)

    with _hooked(model, name, hook), torch.enable_grad():
        logits = logits_of(model(x))  # (N, K)
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(score, box["p"])  # parameters get no .grad
    return box["p"].detach(), grad.detach(), box["shape"]


@torch.no_grad()
def ablated_predictions(model, name: str, x, channels: list[int]) -> torch.Tensor:
    """(k, N) predictions with dimension channels[j] of layer `name` mean-ablated in copy j.
    The copies are made at the layer's output; a model that reuses the batch elsewhere (e.g. a skip
    connection around the tapped layer) falls back to repeating the input k times."""
    k, n = len(channels), len(x)

    def hook(module, inputs, out):
        v = _channels_first(_tensor(out, name))  # (N, D, ...) or (k*N, D, ...)
        copies = v.unsqueeze(0).expand(k, *v.shape).clone() if len(v) == n else v.reshape(k, n, *v.shape[1:]).clone()
        mean = copies[0].mean(0)  # (D, ...) batch mean of the clean copy
        index = torch.as_tensor(channels, device=v.device)
        copies[torch.arange(k, device=v.device), :, index] = mean[index].unsqueeze(1)  # (k, N, ...) per copy
        return _channels_back(copies.reshape(k * n, *v.shape[1:]), out.ndim)

    with _hooked(model, name, hook):
        try:
            logits = logits_of(model(x))  # (k*N, K)
        except RuntimeError:
            logits = logits_of(model(x.repeat(k, *[1] * (x.ndim - 1))))  # (k*N, K)
    return logits.argmax(-1).view(k, n)


def _channels_first(out: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) and (N, D) unchanged; (N, T, D) tokens -> (N, D, T): the pooled axis second."""
    if out.ndim == 3:
        return out.transpose(1, 2)
    if out.ndim not in (2, 4):
        raise KdkitError(f"cannot pool a layer output of shape {tuple(out.shape)}; tap layers with (C, H, W), (D,) or (T, D) outputs")
    return out


def _channels_back(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.transpose(1, 2) if ndim == 3 else v


def _tensor(out, name: str) -> torch.Tensor:
    if not torch.is_tensor(out):
        raise KdkitError(f"layer '{name}' does not return a tensor ({type(out).__name__}); tap one of its submodules instead")
    return out


@contextlib.contextmanager
def _hooked(model: nn.Module, name: str, hook):
    handle = dict(model.named_modules())[name].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _predict(model: nn.Module, x) -> torch.Tensor:
    with eval_mode(model):
        return logits_of(model(x)).argmax(-1)  # (N,)


def _rate(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a == b).sum().item() / len(a)  # exact multiples of 1 / N


def _total(values: list, reduce):
    present = [v for v in values if v is not None]
    return reduce(present) if present else None


def layer_shares(result: dict, key: str = "ablation_accuracy_drop") -> dict[str, float]:
    """Each layer's share of the total importance (negative values count as 0); {} when all are 0."""
    totals = {layer["name"]: sum(max(0.0, v) for v in layer[key] if v is not None) for layer in result["layers"]}
    whole = sum(totals.values())
    return {name: value / whole for name, value in totals.items()} if whole > 0 else {}


def ranked_dims(result: dict, key: str = "ablation_accuracy_drop") -> list[tuple[str, int, float]]:
    """(layer, dimension, value) of every analysed dimension, most important first."""
    rows = [(layer["name"], d, v) for layer in result["layers"] for d, v in enumerate(layer[key]) if v is not None]
    return sorted(rows, key=lambda row: -row[2])
