"""Teacher-output cache (offline KD): the teacher labels every training sample once per recorded
view; distillation then reads those outputs instead of running the teacher at every step.

    cache = TeacherCache.build(teacher, data.train, "runs/x/teacher_cache", augment="crop_flip",
                               views=8, seed=0, mean=data.mean, std=data.std, device="cuda")
    method = create_method("kd", student, cache, ...)   # the cache stands in for the teacher
    fit(method, data, cfg, run_dir)                      # fit replays the recorded views

Consistent teaching (FKD, Shen & Xing 2022; Beyer et al. 2022): with augmentation, the student
must see exactly the view the teacher labelled. So the cache records K views per sample (slots):
an augmentation row (shift dy, dx, flip) for each (slot, sample), drawn from a generator seeded
with (seed, slot). Training epoch e replays slot e % K: BatchLoader applies the recorded rows (in
a fresh order every epoch) and the cache returns the outputs of that slot. K trades teacher work
(K passes over the training set, in inference mode and large batches) against view diversity
(K = epochs sees as many distinct views as online KD). Without augmentation K is 1.

Mixing (mix = mixup or cutmix, kdkit.data.mix; Beyer et al.'s function matching): a recorded view
is then a mixed image, and its partner is part of it. For each (slot, sample) the cache records the
partner (a train-split position: slot k pairs the samples by a random permutation), lam and
the cutmix box, drawn with (seed, slot); the loader rebuilds sample i's view of slot k as its own
recorded view mixed with its partner's recorded view of the same slot, bit for bit what the teacher
was given, in whatever batch i lands. K is cache_views then, with or without augmentation.

Files (a folder; reused when everything it was built from is unchanged, see `key`):
  views.npy               (K, N, 3) int8     the recorded augmentation rows
  mix_partner.npy         (K, N)    int64    with mix: each view's partner (train-split position),
  mix_lam.npy             (K, N)    float32  its share of the sample's own image,
  mix_box.npy             (K, N, 4) int16    and the cutmix box (y0, y1, x0, x1) of partner pixels
  logits.npy              (K, N, C) float16 or float32, the teacher's logits        (topk = 0)
  topk_logp.npy           (K, N, k) float16  the k largest log-probabilities ...     (topk > 0)
  topk_index.npy          (K, N, k) int16    ... and their classes
  residual.npy            (K, N)    float32  probability mass of the other C - k classes, which
                                             are read back as sharing it equally
  feat{i}.npy             (K, N, D) float16 or float32, the average-pooled output of the i-th of
                                    `layers` (only when layers are given)
  meta.json               what it was built from; written last, so a folder without it is a
                          cache cut off while building and is rebuilt
All are read memory-mapped; one slot at a time is moved to the training device. Rows are keyed
by position in the training split, the `idx` BatchLoader yields.

Features: methods that use the teacher's features only average-pooled to vectors (CRD, RKD, PKT,
vector; `FeatureMethod.pooled_teacher`) read them from the cache too: build it with the layers they
tap (`layers`). Methods that match whole feature maps (FitNets, AT, NST, SP) run the teacher online.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdkit import checkpoint as ckpt
from kdkit import distributed
from kdkit.adapters import pool
from kdkit.data.augment import draw
from kdkit.data.dataset import Split, example_inputs, mapped_array, sample_shape
from kdkit.data.loader import BatchLoader, seeded_generator, seeded_rng
from kdkit.data.mix import draw_mix
from kdkit.errors import KdkitError
from kdkit.models.outputs import logits_of
from kdkit.taps import Taps

_VIEWS = 0x7663  # mixed into the views' generator seed, so they differ from the training draws
_MIX = 0x6D78  # and into the mix rows' seed, so they differ from the views'
MIX_ROWS = ("partner", "lam", "box")  # mix_{name}.npy
FORMAT = 1


def digest(*arrays) -> str:
    """SHA-256 over tensors/arrays (their bytes, dtype and shape)."""
    h = hashlib.sha256()
    for a in arrays:
        a = torch.as_tensor(a).detach().cpu().contiguous()
        h.update(f"{a.dtype}{tuple(a.shape)}".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """The teacher's identity: its class and every tensor of its state dict."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(digest(tensor).encode())
    return h.hexdigest()


def key(teacher: nn.Module, split: Split, **settings) -> dict:
    """Everything a cache's contents depend on; a cache is reused only when all of it matches."""
    return {"format": FORMAT, "teacher": model_digest(teacher),
            "data": digest(split.images, split.labels), **settings}


class TeacherCache:
    """Cached teacher outputs standing in for the teacher (see module docstring).

    Called as teacher(x, index) by a method (needs_index): returns (B, C) float32 logits of the
    current slot for train-split positions `index`; x is not looked at."""

    needs_index = True

    def __init__(self, path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise KdkitError(f"no complete teacher cache in '{self.path}' (meta.json missing); rebuild it with --teacher-cache")
        self.meta = json.loads(meta_path.read_text())
        self.views = torch.from_numpy(np.load(self.path / "views.npy"))  # (K, N, 3) int8, small
        self.mix = self.meta.get("mix", "none")  # the mixing its views were recorded with (fit checks the run's)
        self.mix_rows = None if self.mix == "none" else {  # {name: (K, N, ...)}, small; the loader replays them
            name: torch.from_numpy(np.load(self.path / f"mix_{name}.npy")) for name in MIX_ROWS}
        self.topk = self.meta["topk"]
        names = ("topk_logp", "topk_index", "residual") if self.topk else ("logits",)
        self.arrays = {n: np.load(self.path / f"{n}.npy", mmap_mode="r") for n in names}
        self.num_classes = self.meta["num_classes"]
        self.layers = self.meta.get("layers", [])  # teacher layers whose pooled outputs are stored
        self.shapes = {name: (size,) for name, size in zip(self.layers, self.meta.get("feature_sizes", []))}
        self.arrays |= {f"feat{i}": np.load(self.path / f"feat{i}.npy", mmap_mode="r") for i in range(len(self.layers))}
        self.slot, self.loaded = 0, None  # loaded: (slot, device, {name: tensor}) of the slot in use

    def set_epoch(self, epoch: int) -> None:
        """Epoch e reads slot e % K (the loader replays the same slot's views)."""
        self.slot = int(epoch) % len(self.views)

    def _slot(self, device) -> dict:
        if self.loaded is None or self.loaded[:2] != (self.slot, device):
            tensors = {n: torch.from_numpy(np.array(a[self.slot])).to(device) for n, a in self.arrays.items()}
            self.loaded = (self.slot, device, tensors)
        return self.loaded[2]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        slot = self._slot(index.device)
        if not self.topk:
            return slot["logits"].index_select(0, index).float()  # (B, C)
        logp = slot["topk_logp"].index_select(0, index).float()  # (B, k)
        classes = slot["topk_index"].index_select(0, index).long()  # (B, k)
        rest = slot["residual"].index_select(0, index)  # (B,)
        others = torch.log(rest.clamp_min(1e-12) / max(1, self.num_classes - self.topk))  # (B,)
        out = others[:, None].expand(-1, self.num_classes).clone()  # (B, C) log-probabilities
        return out.scatter_(1, classes, logp)

    def check_layers(self, layers) -> None:
        missing = [name for name in layers if name not in self.layers]
        if missing:
            raise KdkitError(f"teacher layer '{missing[0]}' is not in the teacher cache, which holds {self.layers}; "
                             "build the cache for this method's layers (the pipeline does: --teacher-cache)")

    @torch.no_grad()
    def features(self, index: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """{layer: (B, D) float32} pooled teacher features of the current slot for positions `index`."""
        self.check_layers(layers)
        slot = self._slot(index.device)
        return {name: slot[f"feat{self.layers.index(name)}"].index_select(0, index).float() for name in layers}

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: nn.Module, split: Split, path, *, augment: str, views: int, seed: int, mean, std,
              device="cpu", dtype: str = "float16", topk: int = 0, autocast=None, batch_size: int = 1024,
              layers=(), log=print, workers: int = 0, channels_last: bool = False, mix: str = "none",
              mix_alpha: float = 1.0) -> "TeacherCache":
        """The cache for (teacher, split, settings) in `path`/<key>: reused when complete, else
        built (K teacher passes over the split). `autocast`: dtype of the teacher's forward.
        `layers`: teacher layers whose average-pooled outputs are stored too. `workers`: the
        loader's background threads (BatchLoader). `channels_last`: the teacher and the batches in that
        layout (as fit keeps them: train.uses_channels_last). `mix`, `mix_alpha`: record mixed views
        (see the module docstring)."""
        if dtype not in ("float16", "float32"):
            raise KdkitError(f"cache_dtype must be float16 or float32, got '{dtype}'")
        slots = views if augment != "none" or mix != "none" else 1
        if slots < 1:
            raise KdkitError(f"cache_views must be >= 1, got {views}; e.g. --set cache_views=8")
        device = torch.device(device)
        teacher.eval().to(device)
        layers = list(layers)
        with Taps(teacher, layers) as taps:
            num_classes = logits_of(teacher(example_inputs(sample_shape(split.images), 1, device=device)), "the teacher", 1).shape[1]
        feature_sizes = [pool(taps.outputs[name]).shape[-1] for name in layers]
        if topk >= num_classes or topk < 0:
            raise KdkitError(f"cache_topk must be in 0..{num_classes - 1} for {num_classes} classes, got {topk}; 0 stores every logit")
        settings = dict(augment=augment, views=slots, seed=seed, dtype=dtype, topk=topk, num_classes=num_classes,
                        layers=layers, feature_sizes=feature_sizes,
                        mean=np.atleast_1d(mean if mean is not None else 0.0).tolist(),
                        std=np.atleast_1d(std if std is not None else 1.0).tolist())
        if mix != "none":  # (absent without mix: the caches built before mixing existed keep their key)
            settings |= dict(mix=mix, mix_alpha=float(mix_alpha))
        meta = key(teacher, split, **settings)
        folder = Path(path) / hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        if (folder / "meta.json").is_file():
            log(f"teacher cache: reusing {folder} ({slots} view(s) x {len(split)} samples)")
        elif distributed.is_main():  # under torchrun one process writes, the others wait and read
            log(f"teacher cache: labelling {slots} view(s) x {len(split)} samples -> {folder}")
            _write(folder, meta, teacher, split, slots, device, dtype, topk, num_classes, autocast, batch_size, workers,
                   channels_last)
        distributed.barrier()
        return cls(folder)

def _write(folder: Path, meta: dict, teacher, split: Split, slots: int, device, dtype: str, topk: int,
           num_classes: int, autocast, batch_size: int, workers: int, channels_last: bool):
    augment, seed = meta["augment"], meta["seed"]
    shutil.rmtree(folder, ignore_errors=True)  # a build cut off before meta.json
    folder.mkdir(parents=True)
    rows = torch.stack([draw(len(split), seeded_generator(seed, _VIEWS, k), augment) for k in range(slots)])  # (K, N, 3)
    np.save(folder / "views.npy", rows.numpy())
    n = len(split)
    mix, mix_rows = meta.get("mix", "none"), None
    if mix != "none":
        mix_rows = _mix_rows(split, slots, seed, mix, meta["mix_alpha"])
        for name, value in mix_rows.items():
            np.save(folder / f"mix_{name}.npy", value.numpy())
    if topk:
        arrays = {"topk_logp": ((slots, n, topk), np.float16),
                  "topk_index": ((slots, n, topk), np.int16 if num_classes < 2**15 else np.int32),
                  "residual": ((slots, n), np.float32)}
    else:
        arrays = {"logits": ((slots, n, num_classes), np.dtype(dtype))}
    layers = meta["layers"]
    arrays |= {f"feat{i}": ((slots, n, size), np.dtype(dtype)) for i, size in enumerate(meta["feature_sizes"])}
    try:  # blocks reserved up front: a full disk is this one-line error, not a bus error mid-build
        files = {name: mapped_array(folder / f"{name}.npy", s, d) for name, (s, d) in arrays.items()}
    except OSError as error:
        size = sum(np.prod(s) * np.dtype(d).itemsize for s, d in arrays.values())
        raise KdkitError(f"cannot write the {size / 1e9:.1f} GB teacher cache in {folder} ({error}); free that much "
                         "disk, or shrink it: --set cache_views=K, cache_topk=K or cache_dtype=float16") from None
    loader = BatchLoader(split, batch_size, shuffle=False, augment=augment, mean=meta["mean"], std=meta["std"],
                         device=device, views=rows, workers=workers, channels_last=channels_last, mix=mix,
                         mix_alpha=meta.get("mix_alpha", 1.0), mix_rows=mix_rows)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    for slot in range(slots):
        loader.set_epoch(slot)
        outputs = torch.empty(n, num_classes, device=device)  # (N, C) this slot, kept on device
        feats = [torch.empty(n, size, device=device) for size in meta["feature_sizes"]]  # (N, D_i) each
        for x, _, idx, *_ in loader:  # (with mix: x mixed as the rows of this slot say)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None), Taps(teacher, layers) as taps:
                outputs[idx] = logits_of(teacher(x), "the teacher", len(x)).float()
            for i, name in enumerate(layers):
                feats[i][idx] = pool(taps.outputs[name]).float()
        for i, feat in enumerate(feats):
            files[f"feat{i}"][slot] = feat.cpu().numpy().astype(dtype)
        if topk:
            logp = torch.log_softmax(outputs, dim=1)  # (N, C)
            top, classes = logp.topk(topk, dim=1)  # (N, k) each
            files["topk_logp"][slot] = top.cpu().numpy().astype(np.float16)
            files["topk_index"][slot] = classes.cpu().numpy()
            files["residual"][slot] = (1 - top.exp().sum(1)).clamp_min(0).cpu().numpy()
        else:
            files["logits"][slot] = outputs.cpu().numpy().astype(dtype)
    if channels_last:  # default layout again: a teacher evaluated later gives what a freshly loaded one gives
        teacher.to(memory_format=torch.contiguous_format)
    for array in files.values():
        array.flush()
    for name in files:
        with open(folder / f"{name}.npy", "rb+") as f:
            os.fsync(f.fileno())
    ckpt.write_json(folder / "meta.json", dict(meta, samples=n))  # last: marks the cache complete


def _mix_rows(split: Split, slots: int, seed: int, mix: str, alpha: float) -> dict:
    """{partner: (K, N) int64, lam: (K, N) float32, box: (K, N, 4) int16}: slot k pairs sample i with
    partner perm_k(i), a permutation of the split drawn with (seed, slot), and draws its mix row."""
    height, width = split.images.shape[-2:]
    rows = {name: [] for name in MIX_ROWS}
    for k in range(slots):
        rng = seeded_rng(seed, _VIEWS, _MIX, k)
        rows["partner"].append(torch.from_numpy(rng.permutation(len(split))))
        lam, box = draw_mix(len(split), rng, mix, alpha, height, width)
        rows["lam"].append(lam)
        rows["box"].append(box)
    return {name: torch.stack(values) for name, values in rows.items()}
