"""The model card: what a trained model is, what it was trained on, and how well it did."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from service.artifact.digest import model_digest

__all__ = ["CARD_FILE", "MODEL_FILE", "FeatureSpec", "FeatureType", "LabelType", "ModelCard", "Task", "content_version"]

CARD_FILE = "model-card.json"
MODEL_FILE = "model.skops"

FeatureType = Literal["numeric", "categorical"]
Task = Literal["regression", "classification"]
# How a classifier's labels are written in JSON: as the strings the card lists, or as the integers an integer
# target was (`train` stores a 0/1 target's classes as "0", "1" and answers 0 and 1).
LabelType = Literal["string", "integer"]

# Card fields that describe one training run rather than the model: left out of the version hash.
_UNVERSIONED = frozenset({"version", "trained_at", "training_duration_seconds"})
_VERSION = re.compile(r"[0-9a-f]{12}")
_INTEGER = re.compile(r"-?[0-9]+")  # a class label written for an integer target


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature, as seen in the training data."""

    name: str
    type: FeatureType
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    missing_rate: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("feature 'name' must be a non-empty string")
        if self.type not in get_args(FeatureType):
            raise ValueError(f"feature {self.name!r}: 'type' must be one of {get_args(FeatureType)}")
        if self.type == "numeric" and self.categories:
            raise ValueError(f"feature {self.name!r}: 'categories' must be empty for a numeric feature")
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: 'min' and 'max' must be null for a categorical feature")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: 'min' is greater than 'max'")
        if not 0.0 <= self.missing_rate <= 1.0:
            raise ValueError(f"feature {self.name!r}: 'missing_rate' must be between 0 and 1")


@dataclass(frozen=True)
class ModelCard:
    """Everything the service and its dashboards need to know about one trained model."""

    name: str
    version: str
    trained_at: str
    dataset: str
    task: Task
    target: str
    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...]
    metrics: dict[str, float]
    training_duration_seconds: float
    estimator: str
    n_train: int
    n_holdout: int
    library_versions: dict[str, str]
    # Optional in the file, written only when "integer": cards trained before it keep their version.
    label_type: LabelType = "string"
    # A classifier's probability temperature, fitted on the holdout (`service.artifact.calibration`); None for
    # regressors and for cards trained before it (no confidence-based estimate then).
    calibration_temperature: float | None = None

    def __post_init__(self) -> None:
        if self.task not in get_args(Task):
            raise ValueError(f"'task' must be one of {get_args(Task)}")
        if not self.features:
            raise ValueError("'features' must not be empty")
        if len(set(self.feature_names)) != len(self.features):
            raise ValueError("'features' names must be unique")
        if self.task == "regression" and self.classes:
            raise ValueError("'classes' must be empty for a regression model")
        if self.task == "classification" and len(set(self.classes)) < 2:
            raise ValueError("'classes' must hold at least two distinct labels for a classification model")
        if self.label_type not in get_args(LabelType):
            raise ValueError(f"'label_type' must be one of {get_args(LabelType)}")
        if self.label_type == "integer" and len(self.integer_classes) != len(self.classes):
            raise ValueError("'label_type' integer needs a classifier whose 'classes' are all integers")
        temperature = self.calibration_temperature
        if temperature is not None and (self.task != "classification" or not 0 < temperature < math.inf):
            raise ValueError("'calibration_temperature' must be a positive number, for a classifier only")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in the order the model expects its input columns."""
        return tuple(spec.name for spec in self.features)

    @property
    def integer_classes(self) -> tuple[int, ...]:
        """The class labels that are integers (`train` writes a 0/1 target's classes as "0", "1"): a label may
        also be sent as the JSON integer."""
        return tuple(int(label) for label in self.classes if _INTEGER.fullmatch(label))

    def feature(self, name: str) -> FeatureSpec:
        """The spec of the feature called `name` (KeyError if there is none)."""
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return (
            {
                "name": self.name,
                "version": self.version,
                "trained_at": self.trained_at,
                "dataset": self.dataset,
                "task": self.task,
                "target": self.target,
                "features": [_feature_to_dict(spec) for spec in self.features],
                "classes": list(self.classes),
                "metrics": dict(self.metrics),
                "training_duration_seconds": self.training_duration_seconds,
                "estimator": self.estimator,
                "n_train": self.n_train,
                "n_holdout": self.n_holdout,
                "library_versions": dict(self.library_versions),
            }
            | ({"label_type": self.label_type} if self.label_type != "string" else {})
            | (
                {"calibration_temperature": self.calibration_temperature}
                if self.calibration_temperature is not None
                else {}
            )
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Parse and validate a dict made by `to_dict`; ValueError names the offending key."""
        _check_keys(data, _CARD_KEYS, "", optional=_OPTIONAL_CARD_KEYS)
        version = _str(data, "version")
        if not _VERSION.fullmatch(version):
            raise ValueError("'version' must be 12 lowercase hex characters")
        trained_at = _str(data, "trained_at")
        try:
            datetime.fromisoformat(trained_at)
        except ValueError:
            raise ValueError("'trained_at' must be an ISO 8601 timestamp") from None
        versions = _dict(data, "library_versions")
        features = data["features"]
        if not isinstance(features, list):
            raise ValueError("'features' must be a list")
        return cls(
            name=_str(data, "name"),
            version=version,
            trained_at=trained_at,
            dataset=_str(data, "dataset"),
            task=_str(data, "task"),  # type: ignore[arg-type]  # checked in __post_init__
            target=_str(data, "target"),
            features=tuple(_feature_from_dict(item, f"features[{i}].") for i, item in enumerate(features)),
            classes=_str_tuple(data, "classes"),
            metrics={key: _float(value, f"metrics.{key}") for key, value in _dict(data, "metrics").items()},
            training_duration_seconds=_float(data["training_duration_seconds"], "training_duration_seconds"),
            estimator=_str(data, "estimator"),
            n_train=_int(data, "n_train"),
            n_holdout=_int(data, "n_holdout"),
            library_versions={key: _str(versions, key, "library_versions.") for key in versions},
            label_type=_str(data, "label_type") if "label_type" in data else "string",  # type: ignore[arg-type]
            calibration_temperature=None
            if data.get("calibration_temperature") is None
            else _float(data["calibration_temperature"], "calibration_temperature"),
        )

    def save(self, directory: Path) -> Path:
        """Write the card to `directory`/model-card.json (atomically) and return that path."""
        path = Path(directory) / CARD_FILE
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        _write_atomic(path, text.encode("utf-8"))
        return path

    @classmethod
    def load(cls, directory: Path) -> ModelCard:
        """Read `directory`/model-card.json; ValueError (naming the file) if it is not a valid card."""
        path = Path(directory) / CARD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must hold a JSON object")
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


def content_version(model_bytes: bytes, card: ModelCard, *, legacy: bool = False) -> str:
    """The card version: 12 hex chars of sha256 over the fitted model (`digest.model_digest`, the same for the
    same data and seed) and the card's model content. `legacy`: over the file's raw bytes instead, as 0.1 versioned its
    cards (their files still load)."""
    content = {key: value for key, value in card.to_dict().items() if key not in _UNVERSIONED}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    digest = hashlib.sha256(model_bytes if legacy else model_digest(model_bytes))
    digest.update(canonical.encode("utf-8"))
    return digest.hexdigest()[:12]


_CARD_KEYS = frozenset(ModelCard.__dataclass_fields__)
_OPTIONAL_CARD_KEYS = frozenset({"label_type", "calibration_temperature"})
_FEATURE_KEYS = frozenset(FeatureSpec.__dataclass_fields__)


def _write_atomic(path: Path, data: bytes) -> None:
    # Through a temporary sibling, so a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _feature_to_dict(spec: FeatureSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.type,
        "min": spec.min,
        "max": spec.max,
        "categories": list(spec.categories),
        "missing_rate": spec.missing_rate,
    }


def _feature_from_dict(data: Any, where: str) -> FeatureSpec:
    if not isinstance(data, dict):
        raise ValueError(f"'{where.rstrip('.')}' must be an object")
    _check_keys(data, _FEATURE_KEYS, where)
    return FeatureSpec(
        name=_str(data, "name", where),
        type=_str(data, "type", where),  # type: ignore[arg-type]  # checked in __post_init__
        min=None if data["min"] is None else _float(data["min"], f"{where}min"),
        max=None if data["max"] is None else _float(data["max"], f"{where}max"),
        categories=_str_tuple(data, "categories", where),
        missing_rate=_float(data["missing_rate"], f"{where}missing_rate"),
    )


def _check_keys(
    data: Mapping[str, Any], expected: frozenset[str], where: str, optional: frozenset[str] = frozenset()
) -> None:
    for key in sorted(expected - optional - set(data)):
        raise ValueError(f"missing key '{where}{key}'")
    for key in sorted(set(data) - expected):
        raise ValueError(f"unknown key '{where}{key}'")


def _str(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"'{where}{key}' must be a string")
    return value


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number")
    return float(value)


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{key}' must be a non-negative integer")
    return value


def _dict(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data[key]
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be an object")
    return value


def _str_tuple(data: Mapping[str, Any], key: str, where: str = "") -> tuple[str, ...]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"'{where}{key}' must be a list of strings")
    return tuple(value)
