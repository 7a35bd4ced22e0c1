"""`BatchLoader`: batches from an in-memory Split, with no per-sample Python work.

    loader = BatchLoader(ds.train, 128, shuffle=True, seed=0, augment=ds.augment,
                         mean=ds.mean, std=ds.std, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y, idx in loader:   # x (B, C, H, W) float32 normalised, y (B,), idx (B,)
            ...

Reproducibility: the order of an epoch comes from a generator seeded with (seed, epoch), and
the augmentation of batch b from one seeded with (seed, epoch, b). So an epoch can be recreated
exactly, and `iter_from(k)` resumes at batch k without computing batches 0..k-1. With `views`
(recorded augmentation rows, K slots), epoch e instead replays slot e % K: each sample is seen
exactly as it was when the teacher-output cache labelled it.

Speed: the data sits on the device when it fits; an epoch's order and augmentation rows are made
on the CPU once and copied in one pinned, non-blocking transfer, so no batch waits for the host.
When the images stay on the CPU (larger than half the free device memory, a split memory-mapped
from disk, or CPU training), `workers=N` gathers and augments the next batches in N background
threads while the model trains on the current one; the batches are the same, in the same order,
as with workers=0 (the order and augmentation rows are drawn before any worker starts).

Samplers (for long-tailed training splits; `shuffle=True` only). An epoch is always len(split)
draws, so the batches per epoch, schedules and resuming are the same whichever is chosen:
  none            a permutation: every sample once (the instance-balanced sampling of the
                  long-tail literature)
  class_balanced  len(split) draws with replacement, sample i with probability ∝ 1 / n_{y_i}:
                  every class equally likely (class-balanced sampling, e.g. Kang et al., "Decoupling
                  Representation and Classifier for Long-Tailed Recognition", ICLR 2020, eq. 1, q = 0)
  sqrt            the same with probability ∝ n_{y_i}^{-1/2}: class k drawn ∝ sqrt(n_k)
                  (square-root sampling, q = 1/2 in Kang et al.'s eq. 1)
"""
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from kdkit.data.augment import AUGMENTS, apply, draw
from kdkit.data.dataset import Split
from kdkit.errors import KdkitError, unknown

SAMPLERS = ("none", "class_balanced", "sqrt")
# Exponent q of each class's draw probability, n_k^q / sum_j n_j^q (Kang et al., eq. 1); a sample
# of class k is drawn with probability ∝ n_k^(q - 1).
_SAMPLER_EXPONENT = {"class_balanced": 0.0, "sqrt": 0.5}


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose state depends on all of `keys` (well mixed, so (1, 0) != (0, 1))."""
    entropy = [int(k) % 2**64 for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class BatchLoader:
    """Yields (x, y, idx) batches of a Split; see the module docstring."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int = 0,
                 augment: str = "none", mean=None, std=None, device="cpu", drop_last: bool = False,
                 sampler: str = "none", views: torch.Tensor | None = None, workers: int = 0,
                 channels_last: bool = False):
        if batch_size < 1:
            raise KdkitError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise KdkitError(f"workers must be 0 (batches made in the training loop) or more, got {workers}")
        if augment not in AUGMENTS:
            raise unknown("augment", augment, AUGMENTS)
        if sampler not in SAMPLERS:
            raise unknown("sampler", sampler, SAMPLERS)
        if sampler != "none" and not shuffle:
            raise KdkitError(f"sampler '{sampler}' draws samples at random, so it needs shuffle=True; "
                             "use sampler='none' for evaluation loaders")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.augment, self.drop_last, self.epoch = augment, drop_last, 0
        self.sampler, self.workers, self.channels_last = sampler, workers, channels_last
        # (N,) float64 draw weight of each sample (CPU, for torch.multinomial); None = permutation
        self.draw_weights = None if sampler == "none" else _draw_weights(split.labels, sampler)
        self.device = torch.device(device)
        self.images = _place(split.images, self.device)  # (N, C, H, W), on device when it fits
        # (K, N, 3) int8 recorded augmentation rows (the teacher-output cache's views): epoch e
        # replays slot e % K, so a sample is seen exactly as the teacher labelled it
        self.views = None if views is None else views.to(self.images.device)
        self.labels = split.labels.to(self.images.device)  # (N,)
        channels = split.images.shape[1]
        self.scale = 1 / 255 if split.images.dtype == torch.uint8 else 1.0
        self.mean = _per_channel(mean, 0.0, channels, "mean").to(self.device)  # (1, C, 1, 1)
        self.std = _per_channel(std, 1.0, channels, "std").to(self.device)  # (1, C, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch."""
        count = len(self.labels)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch: int):
        """The batches of the current epoch from `start_batch` on, identical to the tail of a full
        iteration; the skipped batches are not computed."""
        if not 0 <= start_batch <= len(self):
            raise KdkitError(f"start_batch {start_batch} is outside 0..{len(self)} for this loader")
        return self._batches(start_batch)

    def _batches(self, start_batch: int):
        first = start_batch * self.batch_size
        order = self._order()[first:]  # (N',) sample indices of the batches still to come
        params = self._params(order, start_batch)  # (N', 3) int8 augmentation rows, or None
        # One host -> device copy per epoch (pinned, non-blocking): no per-batch synchronisation.
        order = _to_device(order, self.images.device)
        params = None if params is None else _to_device(params, self.images.device)

        def gather(b: int) -> tuple[torch.Tensor, torch.Tensor]:
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            return self._gather(order[rows], None if params is None else params[rows]), order[rows]

        count = len(self) - start_batch
        if self.workers and self.images.device.type == "cpu":
            batches = _prefetch(gather, count, self.workers)
        else:
            batches = (gather(b) for b in range(count))
        for x, idx in batches:
            yield self._finish(x, idx)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.labels))
        generator = seeded_generator(self.seed, self.epoch)
        if self.draw_weights is not None and len(self.labels):
            return torch.multinomial(self.draw_weights, len(self.labels), replacement=True,
                                     generator=generator)
        return torch.randperm(len(self.labels), generator=generator)

    def _params(self, order: torch.Tensor, start_batch: int) -> torch.Tensor | None:
        """Augmentation rows for `order`: replayed from `views` (slot epoch % K) when recorded views
        are given, else batch b's drawn from a generator seeded with (seed, epoch, b)."""
        if self.augment == "none":
            return None
        if self.views is not None:
            slot = self.views[self.epoch % len(self.views)]  # (N, 3) this epoch's recorded views
            return slot.index_select(0, order.to(slot.device))
        sizes = [len(order[b * self.batch_size:(b + 1) * self.batch_size]) for b in range(len(self) - start_batch)]
        return torch.cat([draw(n, seeded_generator(self.seed, self.epoch, start_batch + b), self.augment)
                          for b, n in enumerate(sizes)] or [torch.zeros(0, 3, dtype=torch.int8)])

    def _gather(self, idx: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """(B, C, H, W) images of `idx`, augmented, still uint8 (cheaper to augment and copy), where
        the images are; pinned when they go on to a GPU. The part of a batch a worker makes."""
        x = self.images.index_select(0, idx)
        if params is not None:
            x = apply(x, params, self.augment)
        if x.device.type == "cpu" and self.device.type == "cuda":
            x = x.pin_memory()
        return x

    def _finish(self, x: torch.Tensor, idx: torch.Tensor):
        """The (x, y, idx) a step gets: x on the device, float32, normalised."""
        if x.device.type != self.device.type:  # images kept on CPU: one non-blocking copy per batch
            x = x.to(self.device, non_blocking=True)
        x = x.float().mul_(self.scale).sub_(self.mean).div_(self.std)  # (B, C, H, W) float32 normalised
        if self.channels_last and x.dim() == 4:  # the layout fit keeps the models in (train.uses_channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        idx = idx.to(self.device, non_blocking=True)
        return x, self.labels.index_select(0, idx.to(self.labels.device)).to(self.device, non_blocking=True), idx


def _prefetch(make, count: int, workers: int):
    """make(0), ..., make(count - 1) in order, computed by `workers` threads up to 2 * workers ahead.
    Closing the generator early (a break in the loop) waits only for the batches under way."""
    with ThreadPoolExecutor(workers, thread_name_prefix="kdkit-batches") as pool:
        pending = deque(pool.submit(make, b) for b in range(min(count, 2 * workers)))
        submitted = len(pending)
        try:
            while pending:
                result = pending.popleft().result()
                if submitted < count:
                    pending.append(pool.submit(make, submitted))
                    submitted += 1
                yield result
        finally:
            for future in pending:
                future.cancel()


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _draw_weights(labels: torch.Tensor, sampler: str) -> torch.Tensor:
    """(N,) float64 weight of each sample for `sampler`: n_{y_i}^(q - 1), see _SAMPLER_EXPONENT."""
    labels = labels.cpu()
    if bool((labels < 0).any()):  # UNLABELED samples (kdkit.data.labels) belong to no class
        raise KdkitError(f"sampler '{sampler}' draws by class, but {int((labels < 0).sum())} samples have no label; "
                         "use sampler='none' for a split with unlabelled samples")
    counts = torch.bincount(labels).to(torch.float64)  # (K,) classes absent from the split get 0
    per_class = torch.zeros_like(counts)
    present = counts > 0
    per_class[present] = counts[present] ** (_SAMPLER_EXPONENT[sampler] - 1.0)
    return per_class[labels]  # (N,)


def _per_channel(values, default: float, channels: int, what: str) -> torch.Tensor:
    """(1, C, 1, 1) float32 from None, one number, or one number per channel."""
    values = [default] * channels if values is None else list(np.atleast_1d(values))
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise KdkitError(f"{what} has {len(values)} values but the images have {channels} "
                         "channels; pass one value per channel (dataset.mean / dataset.std)")
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, channels, 1, 1)


def _place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`images` on `device` if it takes under half of the free accelerator memory, else left where
    they are, in RAM or memory-mapped from disk (batches are then gathered on CPU, pinned and
    copied over one at a time)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() * images.element_size() > free // 2:
            return images
    return images.to(device)
