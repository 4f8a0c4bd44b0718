"""Loading a trained model safely, and predicting with it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.base import BaseEstimator

from service.artifact.calibration import calibrate
from service.artifact.card import CARD_FILE, MODEL_FILE, ModelCard, content_version

__all__ = ["Model", "ModelLoadError", "load_model"]

# Types our own pipelines contain beyond skops' default trust list. `numpy.dtype` is SimpleImputer's
# `_fit_dtype`; skops rebuilds it from an empty array read with `np.load(allow_pickle=False)`, so it runs
# no code (skops-dev/skops#224 proposes trusting it by default). Anything else is refused.
_ALSO_TRUSTED = ("numpy.dtype",)


class ModelLoadError(Exception):
    """A model directory cannot be served; the message names the file and what is wrong with it."""


class Model:
    """A loaded, verified pipeline and its card."""

    def __init__(self, card: ModelCard, estimator: Any) -> None:
        self.card = card
        self._estimator = estimator
        self._n_features = len(card.features)
        can_score = callable(getattr(estimator, "predict_proba", None))
        self._temperature = card.calibration_temperature if can_score else None
        self._classes = np.asarray(getattr(estimator, "classes_", ()))

    def predict_array(self, rows: np.ndarray) -> np.ndarray:
        """Raw predictions for an n × n_features array in card feature order (float64 or object dtype)."""
        self._check_shape(rows)
        return np.asarray(self._estimator.predict(rows))

    def _check_shape(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self._n_features:
            raise ValueError(f"expected rows of shape (n, {self._n_features}), got {rows.shape}")

    def predict_with_probabilities(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`predict_array`'s output and, for a classifier with a calibration temperature, the calibrated
        probabilities (n × classes, in `card.classes` order) from the same pass: the label is the most probable
        class, as the estimator's own `predict` picks it."""
        if self._temperature is None:
            return self.predict_array(rows), None
        self._check_shape(rows)
        probabilities = np.asarray(self._estimator.predict_proba(rows))
        labels = self._classes[np.argmax(probabilities, axis=1)]
        return labels, calibrate(probabilities, self._temperature)

    def predict(self, rows: np.ndarray) -> list[float] | list[str]:
        """Predictions as Python values: floats for regression, class labels (str) for classification."""
        return self.to_python(self.predict_array(rows))

    def to_python(self, raw: np.ndarray) -> list[float] | list[str]:
        """`predict_array`'s output as JSON-ready values."""
        if self.card.task == "regression":
            floats: list[float] = raw.astype(np.float64, copy=False).tolist()
            return floats
        return [str(label) for label in raw.tolist()]

    def to_response(self, predictions: list[float] | list[str]) -> list[float] | list[str] | list[int]:
        """`to_python`'s values as a response writes them: an integer-labelled classifier's labels as integers.
        Everything else (the prediction log, metrics, the feedback join) keeps the card's string labels."""
        if self.card.label_type == "integer":
            return [int(label) for label in predictions]
        return predictions


def load_model(directory: Path) -> Model:
    """Load `directory`'s model, refusing untrusted types, tampering, and a card that does not fit."""
    directory = Path(directory)
    card_path, model_path = directory / CARD_FILE, directory / MODEL_FILE
    for path in (card_path, model_path):
        if not path.is_file():
            raise ModelLoadError(f"{path}: missing (a model directory holds {CARD_FILE} and {MODEL_FILE})")
    try:
        card = ModelCard.load(directory)
    except ValueError as exc:
        raise ModelLoadError(f"invalid model card: {exc}") from exc
    model_bytes = model_path.read_bytes()
    untrusted = _untrusted_types(model_bytes, model_path)
    if untrusted:
        raise ModelLoadError(
            f"{model_path}: refusing to load untrusted types: {untrusted}; this artifact was not produced "
            "by `modellens train` or was tampered with"
        )
    try:
        version = content_version(model_bytes, card)
    except ValueError as exc:
        raise ModelLoadError(f"{model_path}: {exc}") from exc
    if version != card.version and content_version(model_bytes, card, legacy=True) != card.version:
        raise ModelLoadError(
            f"{model_path}: content hash {version} does not match the card version {card.version}; "
            "the model file or its card was changed after training"
        )
    try:
        estimator = sio.load(io.BytesIO(model_bytes), trusted=list(_ALSO_TRUSTED))
    except Exception as exc:
        raise ModelLoadError(f"{model_path}: cannot be loaded: {exc}") from exc
    _check_estimator(estimator, card, model_path)
    return Model(card, estimator)


def _untrusted_types(model_bytes: bytes, model_path: Path) -> list[str]:
    # Audits the file's schema without constructing any object from it.
    if not model_bytes:
        raise ModelLoadError(f"{model_path}: file is empty")
    try:
        found = sio.get_untrusted_types(data=model_bytes)
    except Exception as exc:
        raise ModelLoadError(f"{model_path}: not a valid skops file: {exc}") from exc
    return [name for name in found if name not in _ALSO_TRUSTED]


def _check_estimator(estimator: Any, card: ModelCard, model_path: Path) -> None:
    if not isinstance(estimator, BaseEstimator) or not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(f"{model_path}: holds a {type(estimator).__name__}, not an estimator with predict")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features != len(card.features):
        raise ModelLoadError(
            f"{model_path}: the model takes {n_features} input features, the card lists {len(card.features)}"
        )
    classes = tuple(str(label) for label in getattr(estimator, "classes_", ()))
    if classes != card.classes:
        raise ModelLoadError(
            f"{model_path}: the model predicts classes {list(classes)}, the card lists {list(card.classes)}"
        )
