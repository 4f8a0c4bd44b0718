"""How values are stored in the prediction log: compact JSON (a missing number as null), float arrays as bytes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["decode_predictions", "dumps", "encode_predictions"]


def dumps(value: Any) -> str:
    """Compact JSON; NaN and infinities (a missing numeric value) become null, numpy scalars plain numbers."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(_finite(value))


def encode_predictions(predictions: Sequence[float | str] | np.ndarray) -> bytes | str:
    """A request's predictions as one column value: float64 bytes for a float array (no per-value text), else JSON."""
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind == "f":
        return predictions.astype("<f8", copy=False).tobytes()
    return dumps(list(predictions))


def decode_predictions(raw: bytes | str) -> list[Any]:
    """The predictions `encode_predictions` stored; NaN reads back as null, as the JSON encoding writes it."""
    if isinstance(raw, bytes):
        values = np.frombuffer(raw, dtype="<f8").tolist()
        return [None if math.isnan(value) else value for value in values]
    decoded: list[Any] = json.loads(raw)
    return decoded


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    return tolist() if callable(tolist) else str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    tolist = getattr(value, "tolist", None)
    return _finite(tolist()) if callable(tolist) else value


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_plain)  # built once: fast
