"""Hand-written PyTorch training loops: the "peers" that benchmarks/throughput.py sets beside kdkit.

student_only     cross-entropy training of the student alone: uint8 data already on the device, batch
                 indices drawn on the device, crop+flip and normalisation on the device, optional bf16
                 autocast, channels_last and torch.compile; SGD (momentum 0.9, nesterov, wd 5e-4,
                 fused on CUDA).
plain_kd         the same loop plus a frozen teacher (eval mode, no_grad, compiled too when asked):
                 loss = (1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)), in fp32.
torchdistill_kd  torchdistill 1.1.5's own machinery (get_distillation_box, WeightedSumLoss + KDLoss, its
                 DataLoader built from a train_data_loader config), driven as its
                 examples/torchvision/image_classification.py drives it: fp32, NCHW, and CPU-side
                 per-sample PIL augmentation as in its CIFAR-100 sample configs.

Each returns {"images_per_s", "seconds", "steps", "batch_size", "peak_memory_mb", "memory_kind",
"final_loss", "notes"}: `warmup` untimed steps, a device sync, `steps` timed steps, a device sync.
Models are moved to the device (channels_last when asked) in place, the student is trained and the plain
loops' teacher is left frozen (requires_grad False).

Not identical to kdkit's loop: batches are drawn with replacement (torch.randint on the device), not
as epoch permutations with augmentation draws made on the CPU and sent over once per epoch; mean/std
are fixed CIFAR-100 constants, not measured from the data; weight decay also hits biases and norm
parameters; there is no gradient-norm computation, clipping or non-finite check, no validation,
logging, checkpointing or LR schedule; the teacher's logits are computed online (never cached).
Not identical to torchdistill's sample: persistent DataLoader workers, no LR schedule, a synthetic
in-memory dataset instead of torchvision's CIFAR100 (same PIL path), KDLoss given alpha' = 1 - alpha
and beta = alpha so that its loss is the one above (its own alpha weights the CE term).
"""
import contextlib
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.5070754, 0.48655024, 0.44091907)  # CIFAR-100 train statistics, as in torchdistill's samples
CIFAR_STD = (0.26733398, 0.25643876, 0.2761503)


def crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding, then horizontal flip with probability 1/2, per sample.

    x: (B, C, H, W), any dtype. One gather, no per-sample loop:
    out[b, c, i, j] = padded[b, c, oy[b] + i, ox[b] + (W - 1 - j if flip[b] else j)].
    Returns (B, C, H, W) with channels_last strides (a permuted view of a (B, H, W, C) gather).
    """
    b, _, h, w = x.shape
    dev = x.device
    corner = torch.randint(0, 2 * pad + 1, (b, 2), device=dev, generator=generator)  # (B, 2), padded coords
    flip = torch.randint(0, 2, (b, 1), device=dev, generator=generator).bool()  # (B, 1)
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p), zero fill
    j = torch.arange(w, device=dev)
    rows = corner[:, :1] + torch.arange(h, device=dev)  # (B, H)
    cols = corner[:, 1:] + torch.where(flip, w - 1 - j, j)  # (B, W)
    batch = torch.arange(b, device=dev)[:, None, None]  # (B, 1, 1)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims come first
    return out.permute(0, 3, 1, 2)  # (B, C, H, W)


def kd_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)), batchmean, in float32.

    s, t: (B, K) student / teacher logits (any float dtype); y: (B,) int64. Returns a scalar.
    """
    s, t = s.float(), t.float()
    log_ps = F.log_softmax(s / temperature, dim=1)  # (B, K)
    log_pt = F.log_softmax(t / temperature, dim=1)  # (B, K)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    return (1 - alpha) * F.cross_entropy(s, y) + alpha * temperature**2 * kl


def _batcher(images, labels, batch_size, device, channels_last, seed=0):
    """next_batch() -> ((B, 3, H, W) float32 augmented and normalised, (B,) int64); no host sync."""
    images, labels = images.to(device), labels.to(device)  # no-op when already there (before timing)
    gen = torch.Generator(device=device).manual_seed(seed)
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1) * 255  # uint8 units
    inv_std = 1 / (torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1) * 255)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def next_batch():
        idx = torch.randint(0, len(images), (batch_size,), device=device, generator=gen)  # (B,)
        x = crop_flip(images[idx], gen)  # (B, 3, H, W) uint8
        return ((x.float() - mean) * inv_std).contiguous(memory_format=fmt), labels[idx]

    return next_batch


def _measure(step, warmup, steps, device):
    """`warmup` untimed steps, then `steps` timed ones; step() -> (loss tensor, images in the batch)."""
    assert steps >= 1, "steps must be >= 1"
    cuda = device.type == "cuda"
    old_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = old_benchmark or cuda  # torchdistill's example sets it; restored below
    try:
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        images, start = 0, time.perf_counter()
        for _ in range(steps):
            loss, n = step()
            images += n
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    else:  # ru_maxrss: KiB on Linux, bytes on macOS; the whole process, so it only grows across runs
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak, kind = rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"
    final = loss.item()  # the one host sync, after timing
    if not math.isfinite(final):
        raise FloatingPointError(f"final loss is not finite: {final}")
    return {"images_per_s": images / seconds, "seconds": seconds, "steps": steps, "peak_memory_mb": peak,
            "memory_kind": kind, "final_loss": final}


def plain_kd(teacher, student, images, labels, *, batch_size, steps, warmup, device, amp=True, channels_last=True,
             compile_mode=None, temperature=4.0, alpha=0.9, lr=0.05) -> dict:
    """Online Hinton KD (kd_loss) of `student` from a frozen `teacher`; teacher None: student_only."""
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    student = student.to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          fused=True if device.type == "cuda" else None)
    if teacher is not None:
        teacher = teacher.to(device, memory_format=fmt).eval().requires_grad_(False)
    if compile_mode is not None:
        student = torch.compile(student, mode=compile_mode)
        teacher = torch.compile(teacher, mode=compile_mode) if teacher is not None else None
    mark = compile_mode is not None and "reduce-overhead" in compile_mode
    bf16 = amp and (device.type != "cuda" or torch.cuda.is_bf16_supported())  # on CPU: whenever amp is asked
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    next_batch = _batcher(images, labels, batch_size, device, channels_last)

    def step():
        if mark:
            torch.compiler.cudagraph_mark_step_begin()
        x, y = next_batch()  # (B, 3, H, W) float32, (B,) int64
        with autocast:
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)  # (B, K)
            s_logits = student(x)  # (B, K)
        if teacher is None:
            loss = F.cross_entropy(s_logits.float(), y)
        else:
            loss = kd_loss(s_logits, t_logits, y, temperature, alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), batch_size

    result = _measure(step, warmup, steps, device)
    notes = ["bf16 autocast" if bf16 else "fp32" + (" (no bf16 on this GPU)" if amp else ""),
             "channels_last" if channels_last else "NCHW",
             "eager" if compile_mode is None else f"torch.compile(mode={compile_mode!r})",
             "data on device, batches drawn with replacement, crop+flip on device",
             "SGD nesterov" + (" fused" if device.type == "cuda" else "")]
    if teacher is not None:
        notes.append(f"teacher eval+no_grad, T={temperature}, alpha={alpha} weights the KL term")
    return {**result, "batch_size": batch_size, "notes": "; ".join(notes)}


def student_only(student, images, labels, *, batch_size, steps, warmup, device, amp=True, channels_last=True,
                 compile_mode=None, lr=0.05) -> dict:
    """Cross-entropy training of `student` on (N, 3, H, W) uint8 `images`, (N,) int64 `labels`."""
    return plain_kd(None, student, images, labels, batch_size=batch_size, steps=steps, warmup=warmup,
                    device=device, amp=amp, channels_last=channels_last, compile_mode=compile_mode, lr=lr)


class CifarLikeDataset(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR100's __getitem__ on in-memory arrays: HWC uint8 -> PIL image -> transform."""

    def __init__(self, images, labels, transform):
        self.data = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, H, W, 3) uint8, as CIFAR100.data
        self.targets = labels.cpu().tolist()  # N ints
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def torchdistill_kd(teacher, student, images, labels, *, batch_size, steps, warmup, device, teacher_train_mode: bool,
                    temperature=4.0, alpha=0.9, lr=0.05, num_workers=None, wrapper=True, loss_item_each_step=True):
    """KD through torchdistill 1.1.5's DistillationBox, configured like its CIFAR-100 sample KD config.

    No torchdistill code or config key sets the teacher's mode (the default pre-epoch process calls only
    student.train()), so its samples distil from a teacher left in nn.Module's default train mode, under
    no_grad because of `requires_grad: False`; teacher_train_mode=False calls teacher.eval() first.
    num_workers None: 0 on CPU, else min(16, CPU count); wrapper: the samples' DataParallel wrappers
    (CUDA only); loss_item_each_step: the example script's per-step loss.item() for its MetricLogger.
    """
    try:
        import torchvision.transforms as T
        from torchdistill.core.distillation import get_distillation_box
    except ImportError as error:
        raise ImportError(f"torchdistill_kd needs torchdistill 1.1.5 and torchvision: {error}") from None
    device = torch.device(device)
    if num_workers is None:
        num_workers = 0 if device.type == "cpu" else min(16, os.cpu_count() or 1)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(p=0.5), T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    dataset = CifarLikeDataset(images, labels, transform)
    teacher = teacher.to(device).train(teacher_train_mode)  # the example's load_model ends with model.to(device)
    student = student.to(device)
    kd = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
          "teacher_module_io": "output", "temperature": temperature, "reduction": "batchmean",
          "alpha": 1 - alpha, "beta": alpha}  # torchdistill's alpha weights CE and beta the KL term
    loader = {"batch_size": batch_size, "num_workers": num_workers, "pin_memory": device.type == "cuda",
              "drop_last": len(dataset) >= batch_size, "persistent_workers": num_workers > 0}
    train_config = {
        "num_epochs": 1,
        "train_data_loader": {"dataset_id": "train", "kwargs": loader,
                              "sampler": {"class_or_func": torch.utils.data.RandomSampler, "kwargs": None}},
        # 1.1.5 has no default forward_proc (None raises); its wrap_model turns DistributedDataParallel
        # into DataParallel when not distributed, and wraps nothing on CPU
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False,
                    "wrapper": "DataParallel" if wrapper else None},
        "student": {"forward_proc": "forward_batch_only", "adaptations": None, "sequential": [],
                    "requires_grad": True, "frozen_modules": [],
                    "wrapper": "DistributedDataParallel" if wrapper else None},
        "optimizer": {"key": "SGD", "kwargs": {"lr": lr, "momentum": 0.9, "weight_decay": 5e-4}},
        "criterion": {"key": "WeightedSumLoss",
                      "kwargs": {"sub_terms": {"kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}}},
    }
    cuda_index = torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index
    device_ids = [cuda_index] if device.type == "cuda" else None
    box = get_distillation_box(teacher, student, {"train": dataset}, train_config, device, device_ids, False, 1)

    def batches():  # endless: one torchdistill epoch after another, with its pre- and post-epoch processes
        epoch = 0
        while True:
            box.pre_epoch_process(epoch=epoch)
            yield from box.train_data_loader  # (B, 3, 32, 32) float32, (B,) int64, supp_dict {}
            box.post_epoch_process()
            epoch += 1

    stream = batches()

    def step():  # examples/torchvision/image_classification.py, train_one_epoch
        sample_batch, targets, supp_dict = next(stream)
        sample_batch, targets = sample_batch.to(device), targets.to(device)
        loss = box.forward_process(sample_batch, targets, supp_dict)
        box.post_forward_process(loss=loss)
        if loss_item_each_step:
            loss.item()
        return loss.detach(), len(sample_batch)

    result = _measure(step, warmup, steps, device)
    stream.close()  # ends the DataLoader iterator (and its workers)
    box.clean_modules()
    notes = ["torchdistill DistillationBox + WeightedSumLoss(KDLoss), fp32, NCHW, eager",
             f"teacher in {'train' if teacher_train_mode else 'eval'} mode under no_grad",
             f"CPU per-sample PIL crop/flip/ToTensor/Normalize, {num_workers} DataLoader workers"
             + (" (persistent)" if num_workers else ""),
             "SGD momentum 0.9 wd 5e-4, no nesterov, not fused, no LR schedule",
             "DataParallel wrappers" if wrapper and device.type == "cuda" else "no DataParallel",
             "per-step loss.item()" if loss_item_each_step else "no per-step sync"]
    return {**result, "batch_size": batch_size, "notes": "; ".join(notes)}


if __name__ == "__main__":  # CPU check: resnet32x4 -> resnet8x4, 100 classes, synthetic CIFAR-shaped data
    import argparse

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from kdkit.models.registry import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--batch-size", 64), ("--steps", 10), ("--warmup", 3), ("--n", 1024)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast and channels_last in the plain loops")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 100, (args.n,))
    kw = dict(batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, device=args.device)
    runs = {"student_only": lambda t, s: student_only(s, x, y, amp=args.amp, channels_last=args.amp, **kw),
            "plain_kd": lambda t, s: plain_kd(t, s, x, y, amp=args.amp, channels_last=args.amp, **kw),
            "torchdistill_kd, teacher train": lambda t, s: torchdistill_kd(t, s, x, y, teacher_train_mode=True, **kw),
            "torchdistill_kd, teacher eval": lambda t, s: torchdistill_kd(t, s, x, y, teacher_train_mode=False, **kw)}
    print(f"{'loop':32s} {'img/s':>8s} {'seconds':>8s} {'peak MB':>8s} {'loss':>7s}  notes")
    for name, run in runs.items():
        try:
            r = run(create_model("resnet32x4", 100), create_model("resnet8x4", 100))
        except ImportError as error:
            print(f"{name:32s} skipped: {error}")
            continue
        print(f"{name:32s} {r['images_per_s']:8.1f} {r['seconds']:8.2f} {r['peak_memory_mb']:8.0f} "
              f"{r['final_loss']:7.3f}  {r['notes']}")
