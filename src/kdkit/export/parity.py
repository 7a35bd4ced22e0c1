"""Parity of an exported file with PyTorch: max |logit difference| and identical predicted classes
on the test split (docs/export.md says why these bounds)."""
from pathlib import Path

import numpy as np
import torch

from kdkit.data import Split
from kdkit.errors import KdkitError
from kdkit.evaluate import predict_logits
from kdkit.export.onnx_file import loader, ort_logits, ort_session

FP32_TOLERANCE = 1e-3  # max |logit difference| allowed between onnxruntime and PyTorch (fp32)
MIN_IDENTICAL = 0.999  # fraction of test images whose predicted class must be the same


def verify(onnx_path, model: torch.nn.Module, split: Split, meta: dict, tolerance: float = FP32_TOLERANCE) -> dict:
    """Parity of the exported file with PyTorch on `split`: max |logit difference| and the fraction
    of identical predicted classes. passed = diff < tolerance and identical >= MIN_IDENTICAL."""
    torch_logits, labels = predict_logits(model, loader(split, meta))
    torch_logits, labels = torch_logits.numpy(), labels.numpy()  # (N, K), (N,)
    onnx_logits = ort_logits(ort_session(onnx_path), split, meta)  # (N, K)
    diff = float(np.abs(onnx_logits - torch_logits).max())
    identical = float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())
    return {"n": len(labels), "max_abs_logit_diff": diff, "identical_predictions": identical,
            "tolerance": tolerance, "min_identical": MIN_IDENTICAL,
            "passed": diff < tolerance and identical >= MIN_IDENTICAL,
            "accuracy_torch": float((torch_logits.argmax(1) == labels).mean()),
            "accuracy_onnx": float((onnx_logits.argmax(1) == labels).mean())}


def parity_error(check: dict, report_path: Path) -> KdkitError:
    return KdkitError(
        f"the exported model does not match PyTorch on {check['n']} test samples: max |logit diff| "
        f"{check['max_abs_logit_diff']:.2e} (tolerance {check['tolerance']:.0e}), identical predictions "
        f"{100 * check['identical_predictions']:.2f}% (need >= {100 * check['min_identical']:.1f}%); numbers in "
        f"{report_path}; look for operations that trace differently (data-dependent branches), or try another --opset")
