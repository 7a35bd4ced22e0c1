"""Label-scarce training splits: which training samples keep their label (`labels_per_class`), the
mark of a sample without one (UNLABELED), and the labelled part that hard-label rows train on.

Distillation can learn from inputs without labels (Hinton et al., "Distilling the Knowledge in a
Neural Network", 2015, section 2: the transfer set "could consist entirely of unlabeled data").
The protocol of the semi-supervised literature (Oliver et al., "Realistic Evaluation of Deep
Semi-Supervised Learning Algorithms", NeurIPS 2018; Sohn et al., FixMatch, NeurIPS 2020: 4, 25 or
400 labels per class of CIFAR-10): N samples per class are drawn at random from the training split
and keep their labels; the rest of the training split is used without them. kdkit draws them AFTER the validation split is carved
(dataset.build_dataset), so validation keeps all its labels and stays the same split whatever
labels_per_class is. Oliver et al. point out what that costs in realism: with Fashion-MNIST and
val_fraction 0.1, 6,000 labelled images select the model that 1,000 labels trained; a smaller
val_fraction is closer to what a label-scarce user has.

    labels_per_class = N (a whole number >= 1)   exactly N labels in every class; a class with fewer
                                                  than N training samples is an error naming it
    labels_per_class = f in (0, 1)               round(f * n_k) labels in class k (half to even), at
                                                  least 1, so the class proportions are kept
    labels_per_class = 0                          every label kept (the default)

With `imbalance` the split is made long-tailed first, then labels are drawn from it: a fraction
keeps the long tail in the labelled and the unlabelled parts alike (the setting of long-tailed
semi-supervised work, e.g. Wei et al., CReST, CVPR 2021), while N needs N samples in the tail
class too and makes the labelled part balanced.

The label convention: a sample without a label has label UNLABELED (-100) in `Split.labels`, in
place, so every sample keeps its row and its `index` (saved teacher outputs still match it). -100
is torch's `cross_entropy` ignore_index default, so a plain `F.cross_entropy` skips such samples,
and it is no class index, so a loss that gathers by label (one_hot, gather) fails loudly instead
of reading a wrong class. A batch may hold no labelled sample at all: losses must mask and
normalise by the labelled count themselves (`is_labelled`). The hidden labels are not kept.
"""
import dataclasses

import numpy as np
import torch

from kdkit.data.dataset import Dataset, Split
from kdkit.errors import KdkitError, shown

UNLABELED = -100  # the label of a training sample without one (torch's cross_entropy ignore_index)
_STREAM = 0x6C616265  # mixed into the seed: the labelled draw is not the validation split's draw


def is_labelled(labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which samples have a label."""
    return labels != UNLABELED


def labels_kept(counts: list[int], labels_per_class: float, classes: list[str], key: str = "labels_per_class",
                what: str = "labels") -> list[int]:
    """Labels kept per class, given the training samples per class; see the module docstring.
    `key` and `what` name the setting in the messages (train_per_class draws samples the same way)."""
    value = float(labels_per_class)
    if value == 0:
        return list(counts)
    if 0 < value < 1:
        return [min(n, max(1, int(round(value * n)))) for n in counts]
    if value < 0 or not value.is_integer():
        raise KdkitError(f"{key} must be a fraction in (0, 1) or a whole number of {what} per class, "
                         f"got {shown(labels_per_class)}; e.g. 100 or 0.1")
    wanted = int(value)
    short = [(name, n) for name, n in zip(classes, counts) if n < wanted]
    if short:
        name, n = min(short, key=lambda item: item[1])
        raise KdkitError(f"class {shown(name)} has {n} training samples, fewer than {key}={wanted}; "
                         f"lower {key}, or give a fraction (e.g. 0.1) to keep that share of each class")
    return [wanted] * len(counts)


def hide_labels(data: Dataset, labels_per_class: float, seed: int) -> Dataset:
    """A copy of `data` whose training split keeps labels_per_class labels per class, drawn at random
    (seeded by `seed`); every other training label becomes UNLABELED. Validation and test, the images,
    their order, `index` and the normalisation statistics are unchanged."""
    if not labels_per_class:
        return data
    labels = data.train.labels.numpy()  # (N,)
    counts = np.bincount(labels[labels != UNLABELED], minlength=data.num_classes)  # (K,)
    kept = labels_kept(counts.tolist(), labels_per_class, list(data.classes))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, _STREAM]))
    keep = np.zeros(len(labels), dtype=bool)
    for k, count in enumerate(kept):
        keep[rng.permutation(np.flatnonzero(labels == k))[:count]] = True
    hidden = torch.where(torch.from_numpy(keep), data.train.labels, UNLABELED)  # (N,)
    return dataclasses.replace(data, train=dataclasses.replace(data.train, labels=hidden))


def labelled_only(data: Dataset, same_steps: bool = False) -> Dataset:
    """`data` with only the labelled samples in its training split: what a hard-label row (the
    scratch student, a teacher trained in the run, `kdkit train`) trains on. The same object when
    every sample has a label.

    same_steps: the labelled samples repeated (whole copies, then the first ones again) to as many as
    the training split holds in all, so an epoch of this row takes as many steps as an epoch of a
    student that sees every sample: the scratch row gets the distilled student's budget (the
    protocol of the label-scarce comparisons, e.g. ANCHORS.md: the same steps for every student).
    text_augment's copies of the training sentences do not count: they are the labelled sentences
    again, and Tang et al. 2019 train the student alone on the original sentences (a transformer
    teacher fine-tuned here would otherwise take 20 times its steps)."""
    mask = is_labelled(data.train.labels)  # (N,)
    if bool(mask.all()):
        return data
    keep = mask.nonzero().squeeze(1)  # (n,)
    if same_steps and len(keep):
        total = len(mask) - copy_rows(data)
        keep = keep.repeat(-(-total // len(keep)))[:total]  # (N',)
    split = data.train
    train = Split(images=split.images[keep], labels=split.labels[keep],
                  index=None if split.index is None else split.index[keep])
    return dataclasses.replace(data, train=train)


def copy_rows(data: Dataset) -> int:
    """How many rows of data's training split are text_augment's copies (data/text_augment.py)."""
    copies = data.text.copies if getattr(data, "text", None) is not None else range(0)
    if not copies or data.train.index is None:
        return 0
    index = data.train.index
    return int(((index >= copies.start) & (index < copies.stop)).sum())


def sample_counts(split: Split) -> dict[str, int]:
    """{"labelled": n, "unlabeled": m}: the distinct samples of `split` with and without a label (a
    sample repeated by labelled_only(same_steps=True) counts once: its `index` is the same)."""
    mask = is_labelled(split.labels)  # (N,)
    if split.index is None:
        labelled = int(mask.sum())
        return {"labelled": labelled, "unlabeled": len(split) - labelled}
    return {"labelled": len(torch.unique(split.index[mask])), "unlabeled": len(torch.unique(split.index[~mask]))}
