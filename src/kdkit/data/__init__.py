"""Datasets and batching for kdkit.

    from kdkit.data import load_dataset, BatchLoader
    ds = load_dataset("fashion-mnist", data_dir="data")       # or "cifar10", "digits", a path, a .csv
    ds = as_dataset(train, val)       # your own data: arrays, DataFrame, torch/HF dataset, DataLoader (docs/data.md)
    loader = BatchLoader(ds.train, 128, shuffle=True, augment=ds.augment, mean=ds.mean, std=ds.std)

Where things live: dataset.py (Split, Dataset, splitting, statistics), registry.py (named
datasets, where files are looked for, load_dataset), idx.py / cifar.py / imagefolder.py (file
formats), files.py (folders, archives, decoded cache), download.py, arrays.py (from_arrays,
digits), sources.py (as_dataset: any source of the user's), tables.py (DataFrames, .csv, .parquet), augment.py, loader.py, labels.py (labels_per_class, UNLABELED, labelled_only),
unlabeled.py (inputs without labels from elsewhere), prepare.py (a run's data, all of these applied).
"""
from kdkit.data.arrays import from_arrays
from kdkit.data.augment import AUGMENTS, augment_batch, crop, flip, random_crop, random_flip
from kdkit.data.dataset import Dataset, Split
from kdkit.data.labels import UNLABELED, is_labelled, labelled_only
from kdkit.data.loader import BatchLoader
from kdkit.data.registry import DATASETS, dataset_status, load_dataset
from kdkit.data.sources import as_dataset

__all__ = [
    "AUGMENTS", "BatchLoader", "as_dataset", "DATASETS", "Dataset", "Split", "UNLABELED", "augment_batch", "crop",
    "dataset_status", "flip", "from_arrays", "is_labelled", "labelled_only", "load_dataset", "random_crop",
    "random_flip",
]
