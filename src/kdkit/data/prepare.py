"""A run's dataset, prepared: loaded, cut to fewer training samples per class for a quick trial
(train_per_class), made long-tailed when asked, made label-scarce when asked (labels_per_class,
unlabeled: labels.py, unlabeled.py), given augmented sentences without labels (text_augment:
text_augment.py), resampled for bagging, with the distilled student's transfer set (classes left
out) and the class counts long-tail losses use.
"""
import dataclasses

import numpy as np
import torch

from kdkit.data.dataset import Dataset, Split
from kdkit.data.labels import hide_labels, is_labelled, labelled_only, labels_kept, sample_counts
from kdkit.data.normalize import normalized
from kdkit.data.registry import load_dataset
from kdkit.data.text import TextOptions
from kdkit.data.text_augment import add_sentences, read_sentences, transfer_sentences
from kdkit.data.unlabeled import add_unlabeled, load_unlabeled
from kdkit.errors import KdkitError


_SUBSAMPLE_STREAM = 0x73756273  # mixed into the seed: not the validation split's or the labels' draw


def prepare_data(cfg, data: Dataset | None, seed: int) -> Dataset:
    """The run's dataset: loaded (unless given), its training split cut to `train_per_class`, made
    long-tailed when `imbalance` is set, then label-scarce when `labels_per_class` or `unlabeled` is
    (label_scarce); its mean and std are what `normalize` says (kdkit.data.normalize)."""
    data = data or load_dataset(cfg.dataset, cfg.data_dir, cfg.val_fraction, seed=seed, download=cfg.download,
                                label_column=cfg.label_column, image_size=cfg.image_size, text=TextOptions.of(cfg))
    data = normalized(data, cfg.normalize)
    if cfg.train_per_class:
        full = len(data.train)
        data = subsample_train(data, cfg.train_per_class, seed)
        if cfg.progress:
            print(f"training split: {len(data.train):,} of {full:,} samples kept (train_per_class={cfg.train_per_class:g})")
    if cfg.imbalance:
        from kdkit.data.longtail import describe_counts, long_tailed

        data = long_tailed(data, cfg.imbalance, seed)
        if cfg.progress:
            print(describe_counts(data.train.labels, list(data.classes)))
    return label_scarce(cfg, data, seed)


def subsample_train(data: Dataset, train_per_class: float, seed: int) -> Dataset:
    """`data` with fewer training samples: train_per_class per class (a whole number N, or a fraction
    of each class; the counts are labels.labels_kept's), drawn at random with `seed` and kept in their
    order with their `index`. The samples left out are dropped, not kept unlabelled (that is
    labels_per_class). Validation and test are untouched, and mean / std stay those of the full
    training split (like long_tailed), so a quick trial feeds models the inputs a full run does.

    prepare_data applies it before `imbalance`: the long-tail profile is then cut from the smaller
    split, so N is the head class's count and the tail keeps its ratio (exp:100 with N = 500: 500
    down to 5); a fraction gives the same profile either way."""
    labels = data.train.labels.numpy()  # (N,)
    counts = np.bincount(labels[labels >= 0], minlength=data.num_classes)  # (K,)
    kept = labels_kept(counts.tolist(), train_per_class, list(data.classes), key="train_per_class", what="samples")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, _SUBSAMPLE_STREAM]))
    rows = [rng.permutation(np.flatnonzero(labels == k))[:count] for k, count in enumerate(kept)]
    rows = torch.from_numpy(np.sort(np.concatenate(rows)))  # (N',) the kept rows, in their order
    split = data.train
    train = Split(images=split.images[rows], labels=split.labels[rows], index=None if split.index is None else split.index[rows])
    return dataclasses.replace(data, train=train)


def label_scarce(cfg, data: Dataset, seed: int) -> Dataset:
    """`data` whose training split keeps cfg.labels_per_class labels per class (drawn with `seed`,
    after validation was carved: labels.py) and has cfg.text_augment's copies of its sentences and
    cfg.unlabeled's inputs appended (text_augment.py, unlabeled.py), all with label UNLABELED.
    Normalisation statistics, validation and test stay as they were.
    cfg.unlabeled_rest false: the samples whose labels were left out are dropped and the labelled ones
    repeated to the split's size (the scratch row's data), so the student sees the same steps."""
    if not (cfg.labels_per_class or cfg.unlabeled or cfg.text_augment):
        return data
    data = hide_labels(data, cfg.labels_per_class, seed)
    if not getattr(cfg, "unlabeled_rest", True):
        data = labelled_only(data, same_steps=True)
    if cfg.text_augment:  # Tang et al.'s transfer set, from the training sentences (text_augment.py)
        data = add_sentences(data, transfer_sentences(cfg, data, seed), copies=True)
    if cfg.unlabeled and data.text is not None:
        data = add_sentences(data, read_sentences(cfg.unlabeled))
    elif cfg.unlabeled:
        data = add_unlabeled(data, load_unlabeled(cfg.unlabeled, data, cfg.data_dir, cfg.download))
    if cfg.progress:
        counts = sample_counts(data.train)
        print(f"training split: {counts['labelled']:,} labelled, {counts['unlabeled']:,} unlabelled samples")
    return data


def transfer_set(data: Dataset, exclude) -> Dataset:
    """The distilled student's data: `data` without the classes in `exclude` in train and val (the
    transfer set of Hinton et al. 2015, section 3: MNIST without 3s); test, classes and the
    normalisation statistics stay those of the whole dataset."""
    if not exclude:
        return data
    drop = torch.tensor(sorted(set(exclude)))

    def keep(split: Split) -> Split:
        mask = ~torch.isin(split.labels, drop)  # (N,)
        return dataclasses.replace(split, images=split.images[mask], labels=split.labels[mask],
                                   index=None if split.index is None else split.index[mask])

    return dataclasses.replace(data, train=keep(data.train), val=keep(data.val))


def class_counts(data: Dataset) -> list[int]:
    """Labelled training samples per class (the prior that long-tail losses and post-hoc adjustment
    use); unlabelled samples count in no class."""
    labels = data.train.labels
    return torch.bincount(labels[is_labelled(labels)], minlength=data.num_classes).tolist()


def check_classes(data: Dataset):
    """A classifier needs two classes; one would train, then fail when its metrics are computed."""
    if data.num_classes < 2:
        raise KdkitError(f"dataset '{data.name}' has {data.num_classes} class ({', '.join(map(str, data.classes))}); "
                         "a classifier needs at least 2: add a train/<class>/ and test/<class>/ folder per class")


def bootstrap_sample(data: Dataset, seed: int) -> Dataset:
    """The same dataset with its train split resampled with replacement (seeded): bagging."""
    g = torch.Generator().manual_seed(10_000 + seed)
    pick = torch.randint(0, len(data.train), (len(data.train),), generator=g)
    train = dataclasses.replace(data.train, images=data.train.images[pick], labels=data.train.labels[pick],
                                index=None if data.train.index is None else data.train.index[pick])
    return dataclasses.replace(data, train=train)

