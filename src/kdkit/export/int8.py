"""int8 quantisation of an exported file with onnxruntime: static (QDQ, calibrated on training
images) or dynamic, the fallback when static quantisation fails."""
import tempfile
from pathlib import Path

import torch

from kdkit.data import Split
from kdkit.errors import unknown
from kdkit.export.onnx_file import INPUT_NAME, loader, quiet_stderr, require_onnx

CALIBRATION_SAMPLES = 256  # training images that set the int8 activation ranges


def quantize_int8(fp32_path, out_path, train: Split, meta: dict, samples: int = CALIBRATION_SAMPLES,
                  mode: str = "static") -> dict:
    """Write an int8 copy of `fp32_path`. static: QDQ format, uint8 activations with ranges from
    `samples` training images (min/max), int8 weights per output channel. dynamic (also the
    fallback when static quantisation raises): int8 weights, activation ranges found at run time."""
    require_onnx()
    if mode not in ("static", "dynamic"):
        raise unknown("quantisation mode", mode, ["static", "dynamic"])
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        source = _preprocessed(fp32_path, Path(tmp) / "pre.onnx")
        reason = None
        if mode == "static":
            try:
                quantize_static(source, out_path, _calibration_reader(train, meta, samples), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                return {"mode": "static", "format": "QDQ", "per_channel": True, "calibration_samples": min(samples, len(train)),
                        "activations": "uint8", "weights": "int8"}
            except Exception as e:  # an operator or graph static quantisation does not handle
                reason = f"static quantisation failed ({type(e).__name__}: {str(e).strip()[:120]})"
        quantize_dynamic(source, out_path, weight_type=QuantType.QInt8)
    return {"mode": "dynamic", "weights": "int8", "activations": "uint8, range per batch at run time",
            "fallback_reason": reason}


def _preprocessed(fp32_path, pre_path: Path) -> str:
    """onnxruntime's recommended pre-pass (shape inference, graph optimisation); the original if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet_stderr():
            quant_pre_process(str(fp32_path), str(pre_path))
        return str(pre_path)
    except Exception:
        return str(fp32_path)


def _calibration_reader(train: Split, meta: dict, samples: int):
    """onnxruntime's CalibrationDataReader over `samples` training images (seeded pick), normalised."""
    from onnxruntime.quantization import CalibrationDataReader

    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:samples]
    batches = [{INPUT_NAME: x.numpy()} for x, _, _ in loader(Split(train.images[pick], train.labels[pick]), meta, 32)]

    class Reader(CalibrationDataReader):  # onnxruntime wants an object with get_next()
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    return Reader()
