"""Where a run trains and in what precision and layout: the device (auto: this process's GPU under
torchrun, else CUDA, MPS or the CPU), bf16 autocast where it pays, channels_last where it is faster."""
import torch

from kdkit import distributed
from kdkit.errors import KdkitError, shown


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if distributed.local_device() is not None:  # torchrun on GPUs: this process's own card
            return distributed.local_device()
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdkitError(f"device '{name}' requested but CUDA is not available; use --set device=cpu (or auto)")
    return torch.device(name)


def parse_device(name: str) -> torch.device:
    """select_device, with a one-line error for a string that names no device (e.g. 'gpu')."""
    try:
        return select_device(name)
    except RuntimeError:
        raise KdkitError(f"unknown device {shown(name)}; use auto, cpu, cuda, cuda:N or mps, e.g. --device cpu") from None


def uses_channels_last(setting: str, device: torch.device) -> bool:
    """Whether models and image batches are kept channels_last (NHWC strides) while training. auto:
    on CUDA (tensor cores want NHWC) and on CPU (oneDNN's convolutions; on the 2-core AVX512
    development machine the demo teacher's forward 2.6x and the resnets' steps 1.1-1.3x faster,
    shufflenetv2 in bf16 the one loss, 0.84x: benchmarks/results/layout_cpu.json, docs/speed.md);
    off on MPS, where it is not measured."""
    if setting == "auto":
        return device.type in ("cuda", "cpu")
    return setting == "on"


def autocast_dtype(amp: str, device: torch.device):
    """bf16 where it pays: CUDA with bf16 support, or a CPU with native bf16 (AVX512-BF16 / AMX), where
    it measured 1.6x faster for the demo teacher. Elsewhere emulated bf16 is slower than float32."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
