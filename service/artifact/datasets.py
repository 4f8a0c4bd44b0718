"""Datasets to train on: the ones bundled with scikit-learn, or a CSV file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype, is_numeric_dtype
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from service.artifact.card import LabelType, Task

__all__ = ["BUNDLED", "MIN_ROWS", "Dataset", "DatasetError", "load_bundled", "load_csv"]

BUNDLED = ("diabetes", "breast_cancer", "wine")
MIN_ROWS = 20
# An integer target with at most this many distinct values is taken for class labels.
_MAX_INTEGER_CLASSES = 20

_LOADERS: dict[str, Callable[..., Any]] = {
    "diabetes": load_diabetes,
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
}


class DatasetError(ValueError):
    """A dataset cannot be used for training; the message says why."""


@dataclass
class Dataset:
    """Features (numeric columns as float, categorical as str with NaN for missing) and a target."""

    name: str
    frame: pd.DataFrame
    target: pd.Series
    task: Task
    target_name: str
    class_names: tuple[str, ...] = ()
    label_type: LabelType = "string"  # "integer" when the classes came from an integer (or whole-float) target

    def __post_init__(self) -> None:
        columns = list(self.frame.columns)
        if not columns:
            raise DatasetError(f"{self.name}: no feature columns")
        for column in columns:
            if not isinstance(column, str) or not column:
                raise DatasetError(f"{self.name}: column names must be non-empty strings, got {column!r}")
        if len(set(columns)) != len(columns):
            duplicates = sorted({c for c in columns if columns.count(c) > 1})
            raise DatasetError(f"{self.name}: duplicate column names {duplicates}")
        if len(self.target) != len(self.frame):
            raise DatasetError(f"{self.name}: {len(self.target)} targets for {len(self.frame)} rows")
        if self.task not in get_args(Task):
            raise DatasetError(f"{self.name}: task must be one of {get_args(Task)}, got {self.task!r}")
        if self.task == "regression" and self.class_names:
            raise DatasetError(f"{self.name}: a regression dataset has no class names")
        if self.task == "classification" and len(self.class_names) < 2:
            raise DatasetError(f"{self.name}: classification needs at least two classes, got {self.class_names}")


def load_bundled(name: str) -> Dataset:
    """One of scikit-learn's bundled datasets (no network): diabetes, breast_cancer or wine."""
    if name not in _LOADERS:
        raise DatasetError(f"unknown bundled dataset {name!r}; choose one of {list(BUNDLED)}")
    bunch = _LOADERS[name](as_frame=True)
    frame = bunch.data.astype("float64")
    if name == "diabetes":
        target = bunch.target.astype("float64").rename("target")
        return Dataset(f"sklearn:{name}", frame, target, "regression", "target")
    names = np.asarray(bunch.target_names, dtype=object)
    target = pd.Series(names[bunch.target.to_numpy()], index=frame.index, name="target", dtype=object)
    return Dataset(f"sklearn:{name}", frame, target, "classification", "target", _class_names(target))


def _check_columns(
    path: Path, raw: pd.DataFrame, target: str, features: Sequence[str] | None, drop: Sequence[str]
) -> None:
    for option, names in (("--features", features or ()), ("--drop", drop)):
        unknown = [name for name in names if name not in raw.columns]
        if unknown:
            raise DatasetError(f"{path}: {option} names columns it lacks: {unknown}; available: {list(raw.columns)}")
        if target in names:
            raise DatasetError(f"{path}: {option} names the target column {target!r}")


def load_csv(
    path: Path,
    target: str,
    task: Task | None = None,
    *,
    features: Sequence[str] | None = None,
    drop: Sequence[str] = (),
) -> Dataset:
    """A CSV file with a header row; `task` is inferred from the target column when None.

    The features are every column but the target, or only `features`, less `drop` (ids, columns that leak the
    target). A column named there that the file lacks, or the target among them, is an error naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as CSV: {exc}") from None
    if target not in raw.columns:
        raise DatasetError(f"{path}: no target column {target!r}; available columns: {list(raw.columns)}")
    if raw.empty:
        raise DatasetError(f"{path}: no data rows, only a header")
    if len(raw) < MIN_ROWS:
        raise DatasetError(f"{path}: {len(raw)} rows, at least {MIN_ROWS} are needed to train and evaluate")
    labels = raw[target]
    if labels.isna().any():
        raise DatasetError(f"{path}: target column {target!r} has {int(labels.isna().sum())} missing values")
    _check_columns(path, raw, target, features, drop)
    chosen = [column for column in raw.columns if column != target] if features is None else list(features)
    inputs = raw[[column for column in chosen if column not in set(drop)]]
    if inputs.columns.empty:
        raise DatasetError(f"{path}: no feature columns besides the target {target!r}")
    if task is not None and task not in get_args(Task):
        raise DatasetError(f"task must be one of {get_args(Task)}, got {task!r}")
    task = task or _infer_task(labels)
    frame = pd.DataFrame({column: _convert(inputs[column]) for column in inputs.columns})
    name = f"csv:{path.name}"
    if task == "regression":
        if is_bool_dtype(labels) or not is_numeric_dtype(labels):
            raise DatasetError(f"{path}: regression needs a numeric target, {target!r} is {labels.dtype}")
        return Dataset(name, frame, labels.astype("float64"), task, target)
    classes = _as_labels(labels)
    label_type: LabelType = "integer" if _is_integral(labels) else "string"
    return Dataset(name, frame, classes, "classification", target, _class_names(classes), label_type)


def _infer_task(labels: pd.Series) -> Task:
    if is_bool_dtype(labels) or not is_numeric_dtype(labels):
        return "classification"
    if is_integer_dtype(labels) and labels.nunique() <= _MAX_INTEGER_CLASSES:
        return "classification"
    return "regression"


def _is_numeric(column: pd.Series) -> bool:
    return is_numeric_dtype(column) and not is_bool_dtype(column)


def _convert(column: pd.Series) -> pd.Series:
    if _is_numeric(column):
        return column.astype("float64")
    values = [np.nan if pd.isna(value) else str(value) for value in column.to_numpy(dtype=object)]
    return pd.Series(values, index=column.index, name=column.name, dtype=object)


def _is_integral(labels: pd.Series) -> bool:
    # An integer column, or floats that are all whole (2.0): their labels answer as JSON integers.
    if is_bool_dtype(labels) or not is_numeric_dtype(labels):
        return False
    return is_integer_dtype(labels) or bool((labels % 1 == 0).all())


def _as_labels(labels: pd.Series) -> pd.Series:
    # Whole floats (2.0) are labelled like the integers they stand for ("2").
    if is_float_dtype(labels) and _is_integral(labels):
        labels = labels.astype("int64")
    values = [str(value) for value in labels.to_numpy(dtype=object)]
    return pd.Series(values, index=labels.index, name=labels.name, dtype=object)


def _class_names(labels: pd.Series) -> tuple[str, ...]:
    # Sorted, like the `classes_` scikit-learn derives from string labels.
    return tuple(sorted(set(labels)))
