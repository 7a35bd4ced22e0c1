"""The one rule for what a model's forward may return, used wherever kdkit calls a model for logits.

    logits = logits_of(model(x), "the teacher", batch=len(x))   # (B, K)

A forward may return the logits tensor itself, an object with `.logits` (Hugging Face's
`ModelOutput`, a dataclass), a mapping with a "logits" key, or a tuple/list whose first element is
the logits (mdistiller's `(logits, feats)`). Whatever it returns, the logits must be (B, K): one row
of class scores per sample. Any other shape, e.g. (B, F, 1, K) from a Linear applied to 4-D input,
is refused here, because the losses would broadcast it without a word.
"""
from collections.abc import Mapping

import torch
from torch import nn

from kdkit.errors import KdkitError

FORMS = "a tensor, an object with .logits, a mapping with 'logits', or a tuple/list with the logits first"


def logits_of(out, who: str = "the model", batch: int | None = None) -> torch.Tensor:
    """The (B, K) logits in a forward's output `out` (see the module docstring). `who` names the
    model in messages; `batch`, when given, is the B it must have (the input's batch size)."""
    logits = out
    if not torch.is_tensor(out):
        logits = getattr(out, "logits", None)
        if logits is None and isinstance(out, Mapping):
            logits = out.get("logits")
        if logits is None and isinstance(out, (tuple, list)) and out:
            logits = out[0]
    if not torch.is_tensor(logits):
        raise KdkitError(f"{who} returned {type(out).__name__}, and kdkit finds no logits tensor in it; make its "
                         f"forward return {FORMS}")
    if logits.ndim != 2 or (batch is not None and logits.shape[0] != batch):
        b = batch if batch is not None else logits.shape[0] if logits.ndim else "batch"
        k = logits.shape[-1] if logits.ndim >= 2 else "classes"
        raise KdkitError(f"{who} returned logits of shape {tuple(logits.shape)}; kdkit needs (batch, classes) = ({b}, {k}): "
                         "make its forward return one row of class scores per sample (flatten or pool before the classifier)")
    return logits


class LogitsOnly(nn.Module):
    """`model` with a forward that returns its logits alone (for ONNX export of a model whose forward
    returns a ModelOutput, a mapping or a tuple). The wrapped model is `self.model`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x))
