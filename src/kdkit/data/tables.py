"""Tables: a pandas DataFrame, or a .csv / .parquet file read into one, as (N, F) float32 feature rows
and one label per row (for sources.as_dataset and `kdkit train --dataset table.csv`).

    columns = learn_columns(train_frame, "label", "train")    # fixed by the training table
    x, y = encode(val_frame, columns, "val")                    # (N, F) float32, (N,) labels as given

The label column (`label_column`, "label" unless named) gives the labels (numbers, or text such as
"cat": sources.py turns text into class indices). Every other column is a feature: numbers and
booleans as they are; text and categorical columns one-hot encoded with the categories the TRAINING
table holds, sorted, one feature per category (a category met only in val or test, or a missing
value, gives all zeros). A missing number is refused with its column and row.

pandas is imported only when a table is read (it is not a kdkit dependency); Parquet also needs pyarrow.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdkit.errors import KdkitError, did_you_mean, shown

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
# A text column with more distinct values than this is an identifier or free text, not a category:
# one-hot encoding it would add that many features.
MAX_CATEGORIES = 1000


@dataclass
class Columns:
    """What the training table fixes for every split: the label column, the feature columns in
    order, and the categories of each one-hot encoded column."""

    label: str
    features: list[str]
    categories: dict[str, list[str]]  # one-hot encoded column -> its categories (as text), sorted

    def describe(self) -> str:
        """'colour (3 categories), city (12 categories)': the columns that were one-hot encoded."""
        return ", ".join(f"{name} ({len(values)} categories)" for name, values in self.categories.items())


def is_frame(source) -> bool:
    """Whether `source` is a pandas DataFrame (told without importing pandas)."""
    return type(source).__name__ == "DataFrame" and type(source).__module__.startswith("pandas")


def require(module: str, why: str):
    """The module `module`, or a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise KdkitError(f"{why} needs {module}, which is not installed; pip install {module}") from None


def read_table(path: Path):
    """The DataFrame of a .csv or .tsv file (pandas) or a .parquet file (pandas with pyarrow)."""
    pandas = require("pandas", f"reading the table {path.name}")
    try:
        if path.suffix.lower() == ".parquet":
            require("pyarrow", f"reading the Parquet file {path.name}")
            return pandas.read_parquet(path, engine="pyarrow")
        return pandas.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as error:  # noqa: BLE001 -- pandas and pyarrow fail on a bad file in many ways; all mean the same
        why = " ".join(str(error).split())[:100] or type(error).__name__
        raise KdkitError(f"cannot read the table {path} ({why}); check that it is a valid "
                         f"{path.suffix.lstrip('.').upper()} file") from None


def learn_columns(frame, label_column: str, what: str) -> Columns:
    """The Columns of the training table `frame`."""
    names = [str(c) for c in frame.columns]
    if label_column not in names:
        close = did_you_mean(label_column, names)
        close = f"{close} " if close.startswith("did you mean") else ""
        raise KdkitError(f"{what} has no label column {shown(label_column)}; {close}its columns are {_listed(names)}; "
                         "name the label column with label_column=NAME (kdkit: --set label_column=NAME)")
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise KdkitError(f"{what} has two columns named {shown(twice)}; rename one")
    features = [name for name in names if name != label_column]
    if not features:
        raise KdkitError(f"{what} has only the label column {shown(label_column)}; a table needs feature columns too")
    categories = {}
    for name in features:
        column = frame[_original(frame, name)]
        if not _numeric(column):
            values = sorted({text for text in _texts(column) if text is not None})
            if len(values) > MAX_CATEGORIES:
                raise KdkitError(f"{what}: column {shown(name)} holds {len(values):,} distinct texts, too many to one-hot "
                                 f"encode (at most {MAX_CATEGORIES}); drop it (an identifier or free text) or encode it yourself")
            categories[name] = values
    return Columns(label_column, features, categories)


def encode(frame, columns: Columns, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, F) float32 features, y (N,) labels as the table holds them) of `frame`, with the
    feature columns and categories of the training table."""
    names = [str(c) for c in frame.columns]
    expected = [columns.label, *columns.features]
    if sorted(names) != sorted(expected):
        missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
        said = ", ".join(part for part in (f"lacks {_listed(missing)}" if missing else "",
                                           f"has {_listed(extra)} too" if extra else "") if part)
        raise KdkitError(f"{what} {said}, unlike the training table; give every split the same columns")
    parts = [_feature(frame[_original(frame, name)], name, columns.categories.get(name), what)
             for name in columns.features]
    labels = frame[_original(frame, columns.label)]
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise KdkitError(f"{what}: the label column {shown(columns.label)} has {int(labels.isna().sum())} missing "
                         f"values (first in row {row}); drop those rows or fill in their labels")
    return np.concatenate(parts, axis=1), labels.to_numpy()


def _feature(column, name: str, categories: list | None, what: str) -> np.ndarray:
    """(N, 1) float32 of a numeric column, or (N, K) one-hot rows over `categories`."""
    if categories is not None:
        import pandas

        codes = pandas.Index(categories).get_indexer(_texts(column))  # (N,) -1 for unseen or missing
        return (codes[:, None] == np.arange(len(categories))[None, :]).astype(np.float32)  # (N, K)
    if not _numeric(column):
        raise KdkitError(f"{what}: column {shown(name)} holds text but numbers in the training table; "
                         "give it numbers in every split")
    values = column.to_numpy(dtype=np.float32, na_value=np.nan)  # (N,) nullable integers too
    if np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values))[0])
        raise KdkitError(f"{what}: column {shown(name)} has {int(np.isnan(values).sum())} missing values (first in "
                         f"row {row}); fill them in (e.g. frame.fillna(frame.median())) or drop those rows")
    return values[:, None]


def _texts(column) -> list:
    """The column's values as text, None where missing: categories are matched by their text, so any
    value (a number among words, an object) has one."""
    import pandas

    return [None if value is None or value is pandas.NA or value is pandas.NaT or (isinstance(value, float) and value != value)
            else str(value) for value in column.tolist()]


def _numeric(column) -> bool:
    """Numbers or booleans (numpy's or pandas' nullable kinds), not text or categories."""
    return column.dtype.kind in "biuf"


def _original(frame, name: str):
    """The column label of `frame` whose text is `name` (a CSV's columns are text; a DataFrame's may
    be numbers)."""
    return next(c for c in frame.columns if str(c) == name)


def _listed(names: list[str]) -> str:
    """Names joined by commas, cut to about 150 characters."""
    text = ", ".join(names)
    return text if len(text) <= 150 else text[:147] + "..."
