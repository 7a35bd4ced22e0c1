"""`BatchLoader`: batches from an in-memory Split, with no per-sample Python work.

    loader = BatchLoader(ds.train, 128, shuffle=True, seed=0, augment=ds.augment,
                         mean=ds.mean, std=ds.std, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y, idx in loader:   # x (B, C, H, W) float32 normalised, y (B,), idx (B,)
    (table rows: x (B, F) float32 normalised per feature; token ids: x (B, L) int64 as stored)
            ...

Reproducibility: the order of an epoch comes from a generator seeded with (seed, epoch), and
the augmentation of batch b from one seeded with (seed, epoch, b). So an epoch can be recreated
exactly, and `iter_from(k)` resumes at batch k without computing batches 0..k-1. With `views`
(recorded augmentation rows, K slots), epoch e instead replays slot e % K: each sample is seen
exactly as it was when the teacher-output cache labelled it.

Mixing (`mix`: mixup or cutmix, kdkit.data.mix): each sample of a batch is mixed with a partner,
another sample of the same batch (a random permutation of it), by a lam and a box drawn per sample
from a generator seeded with (seed, epoch, b), after both are augmented. The batches are then
(x, y, idx, mixing): x mixed, y and idx the sample's own, `mixing` (a kdkit.data.mix.Mixing) the
partner's position and label and lam, which the hard-label terms read. With recorded `mix_rows`
(the teacher-output cache's), epoch e replays slot e % K instead: each sample is mixed with its
recorded partner (seen in the partner's own recorded view) by its recorded lam and box, whatever
batch it lands in, so the student gets the very mixed image the teacher labelled.

Speed: the data sits on the device when it fits; an epoch's order and augmentation rows are made
on the CPU once and copied in one pinned, non-blocking transfer, so no batch waits for the host.
When the images stay on the CPU (larger than half the free device memory, a split memory-mapped
from disk, or CPU training), `workers=N` gathers and augments the next batches in N background
threads while the model trains on the current one; the batches are the same, in the same order,
as with workers=0 (the order and augmentation rows are drawn before any worker starts).

A batch transform (`transform`: any callable, e.g. a torchvision.transforms.v2 or kornia module) is
applied to each training batch after kdkit's own augmentation and the scaling of uint8 images to
[0, 1], before the mean/std normalisation (and before mixing): it gets (B, C, H, W) float32 in [0, 1]
for uint8 images (float images and table rows in their stored units; token ids as int64) and must
return a tensor of the same batch size. The model in the step, and so an online teacher, sees what
it returns. It draws from its own random state, so an epoch with one is not recreated exactly, and it
cannot be combined with recorded views (the teacher-output cache labelled the views without it).

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
from kdkit.data.mix import MIXES, Mixing, apply_mix, draw_mix
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


def seeded_rng(*keys: int) -> np.random.Generator:
    """A numpy generator whose state depends on all of `keys` (for draws torch has no generator for)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) % 2**64 for k in keys]))


_MIX = 0x6D6978  # mixed into the seed of a batch's mix rows, so they differ from its augmentation's


class BatchLoader:
    """Yields (x, y, idx) batches of a Split; see the module docstring."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int = 0,
                 augment: str = "none", mean=None, std=None, device="cpu", drop_last: bool = False,
                 sampler: str = "none", views: torch.Tensor | None = None, workers: int = 0,
                 channels_last: bool = False, mix: str = "none", mix_alpha: float = 1.0, mix_rows: dict | None = None,
                 transform=None):
        if batch_size < 1:
            raise KdkitError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise KdkitError(f"workers must be 0 (batches made in the training loop) or more, got {workers}")
        if augment not in AUGMENTS:
            raise unknown("augment", augment, AUGMENTS)
        if sampler not in SAMPLERS:
            raise unknown("sampler", sampler, SAMPLERS)
        if mix not in MIXES:
            raise unknown("mix", mix, MIXES)
        if mix != "none" and not mix_alpha > 0:
            raise KdkitError(f"mix_alpha must be above 0 (the Beta(alpha, alpha) of lam), got {mix_alpha}; e.g. 1.0")
        if mix == "none" and mix_rows is not None:
            raise KdkitError("recorded mix rows were given with mix=none; pass the mix they were recorded with")
        if mix_rows is not None and views is None and augment != "none":
            raise KdkitError("recorded mix rows need the recorded views they go with (the teacher cache's views)")
        if mix == "cutmix" and (split.images.dim() != 4 or split.images.shape[2] * split.images.shape[3] == 1):
            raise KdkitError(f"mix=cutmix pastes a box of pixels, but these inputs have shape {tuple(split.images.shape[1:])}, "
                             "not images (C, H, W); use mix=mixup or none")
        if transform is not None and not callable(transform):
            raise KdkitError(f"transform must be a callable taking a batch tensor, got {type(transform).__name__}")
        if transform is not None and views is not None:
            raise KdkitError("a batch transform cannot be replayed from the teacher-output cache (the teacher labelled "
                             "its recorded views without it); use teacher_cache=false, or drop transform")
        if sampler != "none" and not shuffle:
            raise KdkitError(f"sampler '{sampler}' draws samples at random, so it needs shuffle=True; "
                             "use sampler='none' for evaluation loaders")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.augment, self.drop_last, self.epoch = augment, drop_last, 0
        self.sampler, self.workers, self.channels_last = sampler, workers, channels_last
        self.mix, self.mix_alpha, self.transform = mix, mix_alpha, transform
        # (N,) float64 draw weight of each sample (CPU, for torch.multinomial); None = permutation
        self.draw_weights = None if sampler == "none" else _draw_weights(split.labels, sampler)
        self.device = torch.device(device)
        self.images = _place(split.images, self.device)  # (N, C, H, W), on device when it fits
        # (K, N, 3) int8 recorded augmentation rows (the teacher-output cache's views): epoch e
        # replays slot e % K, so a sample is seen exactly as the teacher labelled it
        self.views = None if views is None else views.to(self.images.device)
        # {"partner": (K, N) int64, "lam": (K, N) float32, "box": (K, N, 4) int16} recorded mix rows (the
        # cache's): epoch e mixes each sample with its recorded partner of slot e % K
        self.mix_rows = None if mix_rows is None else {k: torch.as_tensor(v) for k, v in mix_rows.items()}
        self.labels = split.labels.to(self.images.device)  # (N,)
        # token ids (int64 (N, L)) go to the model as they are; images and table rows as float32,
        # scaled (uint8 to [0, 1]) and normalised per channel / feature
        self.tokens = not (split.images.dtype.is_floating_point or split.images.dtype == torch.uint8)
        if self.tokens and augment != "none":
            raise KdkitError(f"augment={augment} transforms images, but these inputs are token ids; use augment=none")
        if split.images.dim() == 2 and augment != "none":
            raise KdkitError(f"augment={augment} transforms images, but these inputs are table rows of "
                             f"{split.images.shape[1]} features; use augment=none")
        if self.tokens and mix != "none":
            raise KdkitError(f"mix={mix} blends inputs, but token ids cannot be blended; use mix=none")
        channels = split.images.shape[1]
        view = (1, channels) + (1,) * (split.images.dim() - 2)
        self.scale = 1 / 255 if split.images.dtype == torch.uint8 else 1.0
        self.mean = _per_channel(mean, 0.0, channels, "mean").view(view).to(self.device)  # (1, C, 1, 1) or (1, F)
        self.std = _per_channel(std, 1.0, channels, "std").view(view).to(self.device)

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
        mix = self._mix_rows(order, params, start_batch)  # each sample's partner and mix row, or None
        # One host -> device copy per epoch (pinned, non-blocking): no per-batch synchronisation.
        order = _to_device(order, self.images.device)
        params = None if params is None else _to_device(params, self.images.device)
        mix = None if mix is None else {k: None if v is None else _to_device(v, self.images.device) for k, v in mix.items()}

        def gather(b: int):
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            x = self._gather(order[rows], None if params is None else params[rows])
            if mix is None:
                return x, order[rows], None, None
            part = {k: None if v is None else v[rows] for k, v in mix.items()}
            return x, order[rows], self._gather(part["partner"], part["partner_params"]), part

        count = len(self) - start_batch
        if self.workers and self.images.device.type == "cpu":
            batches = _prefetch(gather, count, self.workers)
        else:
            batches = (gather(b) for b in range(count))
        for x, idx, second, part in batches:
            yield self._finish(x, idx, second, part)

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

    def _mix_rows(self, order: torch.Tensor, params: torch.Tensor | None, start_batch: int) -> dict | None:
        """For `order`: each sample's partner (train-split position), the partner's augmentation row
        and the mix row (lam, box). Replayed from `mix_rows` (slot epoch % K) when recorded, else
        batch b's partners are a permutation of batch b, drawn with (seed, epoch, b)."""
        if self.mix == "none":
            return None
        if self.mix_rows is not None:
            slot = {k: v[self.epoch % len(v)] for k, v in self.mix_rows.items()}  # (N, ...) this epoch's
            rows = {k: v.index_select(0, order.to(v.device)) for k, v in slot.items()}
            views = None if params is None else self.views[self.epoch % len(self.views)]  # (N, 3)
            partner_params = None if views is None else views.index_select(0, rows["partner"].to(views.device))
            return rows | {"partner_params": partner_params}
        height, width = self.images.shape[-2:]
        where, lams, boxes = [], [], []  # positions in `order` of the partners, and the mix rows
        for b in range(len(self) - start_batch):
            count = len(order[b * self.batch_size:(b + 1) * self.batch_size])
            rng = seeded_rng(self.seed, self.epoch, start_batch + b, _MIX)
            where.append(torch.from_numpy(rng.permutation(count)) + b * self.batch_size)
            lam, box = draw_mix(count, rng, self.mix, self.mix_alpha, height, width)
            lams.append(lam)
            boxes.append(box)
        where = torch.cat(where) if where else torch.zeros(0, dtype=torch.int64)
        return {"partner": order.index_select(0, where), "partner_params": None if params is None else params.index_select(0, where),
                "lam": torch.cat(lams or [torch.ones(0)]), "box": torch.cat(boxes or [torch.zeros(0, 4, dtype=torch.int16)])}

    def _gather(self, idx: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """(B, C, H, W) images of `idx`, augmented, still uint8 (cheaper to augment and copy), where
        the images are; pinned when they go on to a GPU. The part of a batch a worker makes."""
        x = self.images.index_select(0, idx)
        if params is not None:
            x = apply(x, params, self.augment)
        if x.device.type == "cpu" and self.device.type == "cuda":
            x = x.pin_memory()
        return x

    def _finish(self, x: torch.Tensor, idx: torch.Tensor, second: torch.Tensor | None = None, part: dict | None = None):
        """The (x, y, idx) a step gets: x on the device, float32, normalised; mixed with `second` (the
        partners, augmented) by `part`'s rows, with the Mixing as a fourth item."""
        x = self._normalised(x)
        idx = idx.to(self.device, non_blocking=True)
        y = self._labels(idx)
        if second is not None:
            lam = part["lam"].to(self.device, non_blocking=True)
            x = apply_mix(x, self._normalised(second), lam, part["box"], self.mix)
        if self.channels_last and x.dim() == 4:  # the layout fit keeps the models in (train.uses_channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if second is None:
            return x, y, idx
        partner = part["partner"].to(self.device, non_blocking=True)
        return x, y, idx, Mixing(partner, self._labels(partner), lam)

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != self.device.type:  # images kept on CPU: one non-blocking copy per batch
            x = x.to(self.device, non_blocking=True)
        if self.tokens:
            return x if self.transform is None else self._transformed(x)  # (B, L) int64 token ids
        if self.transform is None:
            return x.float().mul_(self.scale).sub_(self.mean).div_(self.std)  # (B, C, H, W) float32 normalised
        x = self._transformed(x.float().mul_(self.scale))  # (B, C, H, W) in [0, 1] for uint8 images
        return (x - self.mean) / self.std  # not in place: the transform's output may be a tensor it keeps

    def _transformed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.transform(x)
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or len(out) != len(x):
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise KdkitError(f"the batch transform returned {got} for a batch of shape {tuple(x.shape)}; "
                             f"return a tensor of the {len(x)} samples")
        return out

    def _labels(self, idx: torch.Tensor) -> torch.Tensor:
        return self.labels.index_select(0, idx.to(self.labels.device)).to(self.device, non_blocking=True)


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
    """(C,) float32 from None (or empty: token ids), one number, or one number per channel."""
    values = [] if values is None else list(np.atleast_1d(values))
    values = values or [default] * channels
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise KdkitError(f"{what} has {len(values)} values but the images have {channels} "
                         "channels; pass one value per channel (dataset.mean / dataset.std)")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def _place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`images` on `device` if it takes under half of the free accelerator memory, else left where
    they are, in RAM or memory-mapped from disk (batches are then gathered on CPU, pinned and
    copied over one at a time)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() * images.element_size() > free // 2:
            return images
    return images.to(device)
