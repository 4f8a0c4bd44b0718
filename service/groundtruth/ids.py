"""Prediction ids: a request's random 96-bit id followed by the row's index in it, so an id alone finds its row.

The id of prediction `i` is the request id (24 hex digits) followed by `i` as 8 hex digits: 32 hex digits in all.
A label finds its stored request, and its place in it, from the id alone, and a request's ids sort together.
"""

from __future__ import annotations

import os

__all__ = ["new_prediction_ids", "prediction_id_range", "prediction_ids", "split_prediction_id"]

_REQUEST_ID_HEX = 24  # 96 random bits per request
_INDEX_HEX = 8  # the row's index in its request

_suffixes: list[str] = []  # "00000000", "00000001", …: formatted once, shared by every request


def new_prediction_ids(count: int) -> tuple[str, list[str]]:
    """A new random request id, and the ids of its `count` predictions (32 hex digits each)."""
    request_id = os.urandom(_REQUEST_ID_HEX // 2).hex()
    return request_id, prediction_ids(request_id, count)


def prediction_ids(request_id: str, count: int) -> list[str]:
    """The ids of the first `count` predictions of request `request_id`, in row order."""
    global _suffixes  # replaced whole, never mutated: safe to read from any thread
    suffixes = _suffixes
    if len(suffixes) < count:
        suffixes = _suffixes = [f"{index:08x}" for index in range(max(count, 2 * len(suffixes)))]
    return [request_id + suffix for suffix in suffixes[:count]]


def split_prediction_id(prediction_id: str) -> tuple[str, int] | None:
    """The request id and row index a prediction id stands for; None if it is not one of ours."""
    if len(prediction_id) != _REQUEST_ID_HEX + _INDEX_HEX:
        return None
    try:
        int(prediction_id, 16)
    except ValueError:
        return None
    return prediction_id[:_REQUEST_ID_HEX], int(prediction_id[_REQUEST_ID_HEX:], 16)


def prediction_id_range(request_id: str) -> tuple[str, str]:
    """Bounds that every id of the request's predictions sorts between (for one range scan of an id index)."""
    return request_id, request_id + "f" * _INDEX_HEX
