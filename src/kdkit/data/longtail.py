"""Long-tailed versions of a balanced dataset, and the class groups long-tail results are reported by.

Profiles (`spec` strings "exp:100", "step:10"; the factor is n_head / n_tail, >= 1):

exp    Exponential decay over the class index, the CIFAR-10/100-LT convention of Cui et al.,
       "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019 (section 6.1), also used
       by LDAM (Cao et al., NeurIPS 2019) and most long-tail work since:
           n_k = int(n_max * factor^(-k / (K - 1))),   k = 0 .. K-1
       so class 0 is the head (n_max) and class K-1 the tail (n_max / factor).
step   Two levels (Buda, Maki, Mazurowski, "A systematic study of the class imbalance problem in
       convolutional neural networks", Neural Networks 2018; step imbalance in LDAM): the first
       K - K//2 classes (the larger half when K is odd) keep n_max, the other K//2 get
       int(n_max / factor).
Every count is at least 1.

`long_tailed` applies a profile to the train and validation splits (validation mirrors the train
distribution: it is carved from the same source as train); the test split stays balanced, so test
accuracy is the class-balanced accuracy that long-tail papers report.

Shot groups (Liu, Miao, Zhan, Wang, Gong, Yu, "Large-Scale Long-Tailed Recognition in an Open
World", CVPR 2019, section 5, ImageNet-LT): many-shot classes have > 100 training samples,
medium-shot 20..100, few-shot < 20. `scaled_thresholds` shrinks those numbers for datasets whose
largest class is under 1,000 samples; see there.
"""
import dataclasses
import math

import numpy as np
import torch

from kdkit.data.dataset import Dataset, Split
from kdkit.errors import KdkitError, shown, unknown

PROFILES = ("exp", "step")

_FORM = "exp:100 or step:10"
# Added before truncating n_max * factor^(-k/(K-1)): a count whose exact value is an integer must
# not lose one to a rounding error below it (e.g. 49.99999999999999 for 5000 / 100).
_EPS = 1e-9


def parse_imbalance(spec: str) -> tuple[str, float]:
    """("exp" | "step", factor >= 1) from a spec such as "exp:100" or "step:10"."""
    parts = str(spec).strip().split(":")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise KdkitError(f"imbalance {shown(str(spec))} is not profile:factor; write it as {_FORM}")
    profile, text = parts[0].strip().lower(), parts[1].strip()
    if profile not in PROFILES:
        raise unknown("imbalance profile", profile, PROFILES)
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not math.isfinite(factor) or factor < 1:
        raise KdkitError(f"imbalance factor must be a number >= 1 (head / tail size), got {shown(text)}; "
                         f"write it as {_FORM}")
    return profile, factor


def class_counts(n_max: int, num_classes: int, profile: str, factor: float) -> list[int]:
    """Samples kept per class, class 0 the head; see the module docstring for the two profiles."""
    if profile not in PROFILES:
        raise unknown("imbalance profile", profile, PROFILES)
    if int(n_max) < 1 or int(num_classes) < 1:
        raise KdkitError(f"class_counts needs n_max >= 1 and num_classes >= 1, got {n_max} and "
                         f"{num_classes}; every class must have samples")
    if not factor >= 1:
        raise KdkitError(f"imbalance factor must be >= 1, got {factor}; e.g. 100 for exp:100")
    n_max, k_total = int(n_max), int(num_classes)
    if k_total == 1:
        return [n_max]
    if profile == "exp":
        counts = [int(n_max * factor ** (-k / (k_total - 1)) + _EPS) for k in range(k_total)]
    else:
        head = k_total - k_total // 2
        counts = [n_max] * head + [int(n_max / factor + _EPS)] * (k_total - head)
    return [max(1, c) for c in counts]


def long_tailed(data: Dataset, spec: str, seed: int) -> Dataset:
    """A copy of `data` whose train and val splits follow the profile `spec`; test is unchanged.

    Each split is cut on its own: n_max is the split's smallest class (so every class can supply
    its count), class k keeps a seeded random subset of class_counts(n_max, ...)[k] samples in their
    original order, and `index` is subset with the rows. Train and val draw from separate streams
    of `seed`. An empty val split (val_fraction 0) stays empty. mean / std are left as they were
    (those of the full balanced train split): they only normalise inputs, and keeping them means
    the balanced and long-tailed runs of a dataset feed models identically scaled inputs.
    The name records the profile: "fashion-mnist-lt100" (exp:100), "fashion-mnist-lt10-step".
    """
    profile, factor = parse_imbalance(spec)
    train_seq, val_seq = np.random.SeedSequence(int(seed) % 2**64).spawn(2)
    train = _subsample(data.train, data.classes, profile, factor, np.random.default_rng(train_seq), "train")
    val = _subsample(data.val, data.classes, profile, factor, np.random.default_rng(val_seq), "validation")
    name = f"{data.name}-lt{factor:g}" + ("-step" if profile == "step" else "")
    return dataclasses.replace(data, name=name, train=train, val=val, classes=list(data.classes))


def _subsample(split: Split, classes: list[str], profile: str, factor: float,
               rng: np.random.Generator, what: str) -> Split:
    """`split` cut to the profile's counts (see long_tailed)."""
    if len(split) == 0:
        return split
    labels = split.labels.numpy()  # (N,)
    present = np.bincount(labels, minlength=len(classes))  # (K,)
    if present.min() == 0:
        empty = classes[int(np.argmin(present))]
        raise KdkitError(f"class '{empty}' has no samples in the {what} split, so it cannot be made "
                         "long-tailed; use data with every class in every split (or a larger val_fraction)")
    counts = class_counts(int(present.min()), len(classes), profile, factor)
    kept = [rng.permutation(np.flatnonzero(labels == k))[:count] for k, count in enumerate(counts)]
    rows = torch.from_numpy(np.sort(np.concatenate(kept)))  # (N',) kept rows, original order
    return Split(images=split.images[rows], labels=split.labels[rows],
                 index=None if split.index is None else split.index[rows])


def describe_counts(labels: torch.Tensor, classes: list[str], split: str = "train") -> str:
    """One line: "class counts (train): T-shirt/top 5400, ..., Ankle boot 54 (imbalance 100.0)".

    Up to 12 classes are all listed; beyond, the first 6 and the last 3 around "...". The
    imbalance is the largest count over the smallest (inf when a class has none).
    """
    counts = torch.bincount(labels.cpu(), minlength=len(classes)).tolist()
    shown = [f"{name} {count}" for name, count in zip(classes, counts)]
    if len(shown) > 12:
        shown = shown[:6] + ["..."] + shown[-3:]
    ratio = max(counts) / min(counts) if min(counts) > 0 else math.inf
    return f"class counts ({split}): {', '.join(shown)} (imbalance {ratio:.1f})"


def shot_groups(train_counts: list[int], many: int = 100, few: int = 20) -> dict[str, list[int]]:
    """Class indices by training samples: "many" (> many), "medium" (few..many, both included), "few" (< few).

    The defaults are Liu et al.'s ImageNet-LT thresholds (many-shot > 100, few-shot < 20); pass
    scaled_thresholds(max(train_counts)) for a dataset with small classes.
    """
    if few > many:
        raise KdkitError(f"shot thresholds need few <= many, got few={few}, many={many}; e.g. 20 and 100")
    groups = {"many": [], "medium": [], "few": []}
    for k, count in enumerate(train_counts):
        group = "many" if count > many else "few" if count < few else "medium"
        groups[group].append(k)
    return groups


def scaled_thresholds(n_max: int) -> tuple[int, int]:
    """(many, few) shot thresholds for a train split whose largest class has n_max samples:
    (n_max / 10, n_max / 50), rounded half up, at least 1.

    These are Liu et al.'s fractions of ImageNet-LT's head (100 and 20 of about 1,000-1,280), kept
    relative so the groups mean the same on any dataset: on Fashion-MNIST-LT (head 5,400) the
    absolute 100 / 20 would put 8 of 10 classes in "many" and none in "few". CIFAR-100-LT papers
    (n_max = 500) keep the absolute 100 / 20; pass those to shot_groups to compare with them.
    """
    return max(1, int(n_max / 10 + 0.5)), max(1, int(n_max / 50 + 0.5))
