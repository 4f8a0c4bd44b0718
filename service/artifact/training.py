"""Training: fit a pipeline on a dataset, score it on a holdout, and write the model artifact and card."""

from __future__ import annotations

import dataclasses
import io
import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import skops
import skops.io as sio
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.artifact.calibration import calibrate, fit_temperature
from service.artifact.card import MODEL_FILE, FeatureSpec, ModelCard, Task, content_version
from service.artifact.datasets import Dataset, DatasetError, load_bundled
from service.artifact.profile import build_profile

__all__ = [
    "MISSING_CATEGORY",
    "build_pipeline",
    "describe_features",
    "fit_pipeline",
    "split_dataset",
    "to_matrix",
    "train",
    "train_bundled",
]

# What a missing categorical value becomes before one-hot encoding: a category of its own.
MISSING_CATEGORY = "__missing__"


def train(dataset: Dataset, *, output: Path, name: str | None = None, seed: int = 0, holdout: float = 0.2) -> ModelCard:
    """Fit on a train split, score on the holdout, write model.skops and model-card.json to `output`."""
    train_set, holdout_set = split_dataset(dataset, seed=seed, holdout=holdout)
    features = describe_features(train_set.frame)
    started = time.perf_counter()
    pipeline = fit_pipeline(train_set, features)
    duration = time.perf_counter() - started
    buffer = io.BytesIO()
    sio.dump(pipeline, buffer)
    model_bytes = buffer.getvalue()
    temperature = _temperature(pipeline, holdout_set, features) if dataset.task == "classification" else None
    card = ModelCard(
        name=name or _default_name(dataset.name),
        version="",
        trained_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        dataset=dataset.name,
        task=dataset.task,
        target=dataset.target_name,
        features=features,
        classes=tuple(str(label) for label in pipeline.classes_) if dataset.task == "classification" else (),
        metrics=_holdout_metrics(pipeline, holdout_set, features, temperature),
        training_duration_seconds=duration,
        estimator=f"Pipeline(ColumnTransformer, {type(pipeline[-1]).__name__})",
        n_train=len(train_set.frame),
        n_holdout=len(holdout_set.frame),
        label_type=dataset.label_type,
        calibration_temperature=temperature,
        library_versions={
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "skops": skops.__version__,
            "python": platform.python_version(),
        },
    )
    card = dataclasses.replace(card, version=content_version(model_bytes, card))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{MODEL_FILE}.tmp"
    tmp.write_bytes(model_bytes)
    os.replace(tmp, output / MODEL_FILE)
    card.save(output)
    rows = to_matrix(train_set.frame, features)
    build_profile(card, rows, pipeline.predict(rows), targets=train_set.target.to_numpy()).save(output)
    return card


def train_bundled(
    name: str, output: Path, *, model_name: str | None = None, seed: int = 0, holdout: float = 0.2
) -> ModelCard:
    """`train` on one of scikit-learn's bundled datasets (see `service.artifact.datasets.BUNDLED`)."""
    return train(load_bundled(name), output=output, name=model_name, seed=seed, holdout=holdout)


def split_dataset(dataset: Dataset, *, seed: int = 0, holdout: float = 0.2) -> tuple[Dataset, Dataset]:
    """The (train, holdout) split `train` uses: reproducible from the seed; stratified for classes."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    stratify = None
    if dataset.task == "classification":
        counts = dataset.target.value_counts()
        if counts.min() < 2:
            rare = sorted(str(label) for label in counts.index[counts < 2])
            raise DatasetError(f"{dataset.name}: classes {rare} have a single row; a stratified split needs two")
        stratify = dataset.target
    try:
        train_frame, holdout_frame, train_target, holdout_target = train_test_split(
            dataset.frame, dataset.target, test_size=holdout, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise DatasetError(f"{dataset.name}: cannot split off a {holdout:.0%} holdout: {exc}") from exc
    return (
        dataclasses.replace(dataset, frame=train_frame, target=train_target),
        dataclasses.replace(dataset, frame=holdout_frame, target=holdout_target),
    )


def describe_features(frame: pd.DataFrame) -> tuple[FeatureSpec, ...]:
    """Feature specs (range or categories, missing rate) of a frame as `service.artifact.datasets` builds them."""
    specs = []
    for column in frame.columns:
        values = frame[column]
        present = values.dropna()
        missing_rate = float(values.isna().mean()) if len(values) else 0.0
        if not is_numeric_dtype(values) or is_bool_dtype(values):
            categories = tuple(sorted({str(value) for value in present}))
            specs.append(FeatureSpec(column, "categorical", categories=categories, missing_rate=missing_rate))
        elif present.empty:
            specs.append(FeatureSpec(column, "numeric", missing_rate=missing_rate))
        else:
            low, high = float(present.min()), float(present.max())
            specs.append(FeatureSpec(column, "numeric", min=low, max=high, missing_rate=missing_rate))
    return tuple(specs)


def to_matrix(frame: pd.DataFrame, features: ModelCard | Sequence[FeatureSpec]) -> np.ndarray:
    """Model input in card feature order: float64 if all numeric, else object with NaN for missing."""
    specs = features.features if isinstance(features, ModelCard) else tuple(features)
    absent = [spec.name for spec in specs if spec.name not in frame.columns]
    if absent:
        raise KeyError(f"frame lacks feature columns {absent}")
    if all(spec.type == "numeric" for spec in specs):
        return frame[[spec.name for spec in specs]].to_numpy(dtype=np.float64)
    matrix = np.empty((len(frame), len(specs)), dtype=object)
    for j, spec in enumerate(specs):
        column = frame[spec.name]
        if spec.type == "numeric":
            matrix[:, j] = column.to_numpy(dtype=np.float64)
        else:
            matrix[:, j] = [np.nan if pd.isna(value) else str(value) for value in column.to_numpy(dtype=object)]
    return matrix


def build_pipeline(features: Sequence[FeatureSpec], task: Task) -> Pipeline:
    """An unfitted pipeline reading columns by position, in the order of `features`."""
    numeric = [i for i, spec in enumerate(features) if spec.type == "numeric"]
    categorical = [i for i, spec in enumerate(features) if spec.type == "categorical"]
    transformers = []
    if numeric:
        steps = [
            # keep_empty_features: a column with no value in training stays a column (imputed as 0).
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        steps = [
            # Missing is NaN from `to_matrix`, but callers building rows by hand may send None:
            # one imputer per marker, so both land in the same category.
            ("impute_nan", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            (
                "impute_none",
                SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING_CATEGORY),
            ),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
        transformers.append(("categorical", Pipeline(steps), categorical))
    model = Ridge() if task == "regression" else LogisticRegression(max_iter=1000)
    if not categorical:
        # All numeric: the column selection is the identity, and a ColumnTransformer would cost most of a
        # single-row prediction for nothing (`make bench`, the
        # single-row `bare` configuration).
        return Pipeline([*transformers[0][1].steps, ("model", model)])
    return Pipeline([("features", ColumnTransformer(transformers)), ("model", model)])


def fit_pipeline(dataset: Dataset, features: Sequence[FeatureSpec]) -> Pipeline:
    """`build_pipeline` fitted on all rows of `dataset` (pass the train split)."""
    pipeline = build_pipeline(features, dataset.task)
    pipeline.fit(to_matrix(dataset.frame, features), dataset.target.to_numpy())
    return pipeline


def _temperature(pipeline: Pipeline, holdout: Dataset, features: Sequence[FeatureSpec]) -> float:
    """The probability temperature that calibrates the classifier on the holdout."""
    truth = np.searchsorted(pipeline.classes_, holdout.target.to_numpy())
    return fit_temperature(pipeline.predict_proba(to_matrix(holdout.frame, features)), truth)


def _holdout_metrics(
    pipeline: Pipeline, holdout: Dataset, features: Sequence[FeatureSpec], temperature: float | None = None
) -> dict[str, float]:
    rows = to_matrix(holdout.frame, features)
    truth = holdout.target.to_numpy()
    predicted = pipeline.predict(rows)
    if holdout.task == "regression":
        return {
            "r2": float(r2_score(truth, predicted)),
            "mae": float(mean_absolute_error(truth, predicted)),
            "rmse": float(root_mean_squared_error(truth, predicted)),
        }
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(f1_score(truth, predicted, average="macro")),
    }
    probabilities = pipeline.predict_proba(rows)
    if temperature is not None:  # CBPE on the holdout the temperature was fitted on: the estimate's best case
        metrics["expected_accuracy"] = float(calibrate(probabilities, temperature).max(axis=1).mean())
    if len(pipeline.classes_) == 2:
        metrics["roc_auc"] = float(roc_auc_score(truth == pipeline.classes_[1], probabilities[:, 1]))
    return metrics


def _default_name(dataset_name: str) -> str:
    # "sklearn:diabetes" -> "diabetes"; "csv:houses.csv" -> "houses"
    return Path(dataset_name.split(":", 1)[-1]).stem or "model"
