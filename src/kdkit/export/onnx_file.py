"""The exported file: the .onnx written from a PyTorch model, its JSON sidecar (what `kdkit predict`
needs: classes, mean/std, input shape, where it came from), and an onnxruntime session over it.
onnx and onnxruntime are optional (`pip install 'kdkit[onnx]'`), so they are imported inside functions."""
import contextlib
import copy
import errno
import hashlib
import json
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from kdkit.version import __version__
from kdkit import checkpoint as ckpt
from kdkit.data import BatchLoader, Split
from kdkit.data.dataset import example_inputs
from kdkit.errors import KdkitError
from kdkit.extras import need
from kdkit.models.outputs import LogitsOnly

ONNX_FORMAT = "kdkit-onnx-1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
THREADS = 1  # onnxruntime intra-op threads for every timing (and verification)


def require_onnx():
    """(onnx, onnxruntime), or the one-line error naming the onnx extra that installs them."""
    return need("onnx", "ONNX (export, int8, predict)"), need("onnxruntime", "ONNX (export, int8, predict)")


def export_onnx(model: torch.nn.Module, path, input_shape, opset: int = 17) -> Path:
    """Write `model` (a copy, in eval mode, on CPU) as ONNX: input "input" (B, C, H, W) float32,
    output "logits" (B, K), batch size B free (a forward returning a ModelOutput, a mapping or a tuple
    is exported as its logits: models/outputs.py). torch's TorchScript exporter (dynamo=False) is
    used: the torch.export-based default needs the onnxscript package and gains nothing here."""
    path = Path(path)
    example = example_inputs(input_shape, 1)  # (1, C, H, W), (1, F) or (1, L)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(LogitsOnly(copy.deepcopy(model)).cpu().eval(), (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamic_axes=axes, dynamo=False)
    except OSError as e:  # the disk, not the model
        raise write_error(path, e) from None
    except Exception as e:
        raise export_error(e, opset) from e
    return path


def write_error(path: Path, error: OSError) -> KdkitError:
    """A file of the export that could not be written (disk full, permissions): a fix for the disk,
    not for the model, and no --resume (export has nothing to resume)."""
    return KdkitError(f"cannot write '{path}' ({error.strerror or error}); free disk space or make its folder writable "
                      "(or choose another --out), then run kdkit export again")


def write_file(path: Path, data: bytes):
    """checkpoint.atomic_write, with a failure said as write_error."""
    try:
        ckpt.atomic_write(path, data)
    except (OSError, ckpt.DiskFull) as e:
        raise write_error(path, e if isinstance(e, OSError) else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None


def export_error(error: Exception, opset: int) -> KdkitError:
    """The exporter's exception as one line: the operator it rejected, when it names one."""
    text = str(error).strip()
    op = re.search(r"operator '([^']+)'", text)
    if op:
        return KdkitError(f"the ONNX exporter cannot export operator '{op.group(1)}' at opset {opset}; replace that "
                          "operation in the model's forward(), try another --opset, or register a symbolic for it "
                          "(torch.onnx.register_custom_op_symbolic)")
    first = text.splitlines()[0][:200] if text else ""
    return KdkitError(f"the ONNX exporter failed ({type(error).__name__}: {first}); use only tensor operations in "
                      "forward() (no Python-side data-dependent logic); kdkit --debug export ... shows the traceback")


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 for the block: torch 2.13's legacy exporter leaves its C++ log on
    (setup_onnx_logging tests a function object, which is always true) and prints the whole graph
    to stderr when an operator fails, which would bury the one-line error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def write_sidecar(onnx_path: Path, meta: dict, weights: Path, data, **extra) -> dict:
    """OUT.json: everything `kdkit predict` needs, and where the file came from. input_dtype says
    whether the model was trained on uint8 pixels (scaled to [0, 1] before mean/std) or on floats."""
    side = {"format": ONNX_FORMAT, "arch": meta["arch"], "classes": list(meta["classes"]),
            "mean": list(meta["mean"]), "std": list(meta["std"]), "input_shape": list(data.input_shape),
            "input_dtype": str(data.train.images.dtype).removeprefix("torch."), "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME, "dataset": meta.get("dataset"),
            "source_weights": str(weights), "source_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "kdkit_version": __version__, "torch_version": torch.__version__, "written_by": "kdkit export"} | tokenizer_entry(data) | extra
    write_file(onnx_path.with_suffix(".json"), json.dumps(side, indent=1).encode())
    return side


def tokenizer_entry(data) -> dict:
    """{"tokenizer": ...}: how `kdkit predict` turns sentences into the ids a text model takes, for a
    model of kdkit's word vocabulary (its words, in id order, and max_length); {} for other data."""
    from kdkit.data.text import WordVocabulary

    tokenizer = getattr(getattr(data, "text", None), "tokenizer", None)
    if not isinstance(tokenizer, WordVocabulary):
        return {}
    return {"tokenizer": {"kind": "words", "words": list(tokenizer.words), "max_length": tokenizer.max_length}}


def load_sidecar(onnx_path) -> dict:
    path = Path(onnx_path)
    if path.is_dir():
        found = sorted(path.glob("export/*.onnx")) + sorted(path.glob("*.onnx"))
        if found:
            raise KdkitError(f"'{path}' is a folder; pass the .onnx file that kdkit export wrote, e.g. {found[0]}")
        raise KdkitError(f"'{path}' is a folder without an exported model; run `kdkit export RUN_DIR` first and "
                         "pass the .onnx file it writes")
    if not path.is_file():
        raise KdkitError(f"model file '{path}' not found; check the path (kdkit export writes RUN/export/student.onnx, "
                         "or model.onnx for a train run)")
    if path.suffix.lower() != ".onnx":
        raise KdkitError(f"'{path}' is not an exported .onnx model; run `kdkit export {path}` first and pass the "
                         ".onnx file it writes")
    meta = ckpt.load_meta(path)
    if meta.get("format") != ONNX_FORMAT:
        raise KdkitError(f"'{path}' has no kdkit sidecar '{path.with_suffix('.json').name}' (classes, mean, std); "
                         "export the model with kdkit export")
    return meta


# ---------------------------------------------------------------- running the file


def ort_session(path, threads: int = THREADS):
    """An onnxruntime CPU session with `threads` intra-op threads (and one inter-op thread)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def loader(split: Split, meta: dict, batch_size: int = 512) -> BatchLoader:
    """Batches normalised with the model's own mean/std (from its sidecar, not the dataset's)."""
    return BatchLoader(split, batch_size, shuffle=False, mean=meta["mean"], std=meta["std"])


def ort_logits(session, split: Split, meta: dict) -> np.ndarray:
    """(N, K) float32 logits of an onnxruntime session over a split."""
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0] for x, _, _ in loader(split, meta)])
