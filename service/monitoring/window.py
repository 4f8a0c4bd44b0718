"""Sliding windows of bin counts: the last N seconds (`TimeWindow`) or the last N rows (`RowsWindow`).

Both answer the same small interface (`CountWindow`); `parse_window` picks one from the drift-window setting.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

__all__ = ["CountWindow", "RowsWindow", "TimeWindow", "parse_window"]

_SPEC = re.compile(r"^\s*(\d+)\s*(s|m|h|rows)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
_SLOTS = 10


class CountWindow(Protocol):
    """Counts per bin over a sliding window, updated in O(bins) per batch of rows."""

    def describe(self) -> dict[str, float | int]:
        """The window's span, as `GET /monitoring` shows it: `{"seconds": …}` or `{"rows": …}`."""
        ...

    def stamp(self) -> int:
        """Which time slot rows arriving now belong to: rows held back before they are added keep the stamp of
        their arrival."""
        ...

    def add(self, counts: np.ndarray, indices: np.ndarray, stamp: int) -> None:
        """Add rows: `counts` is the bincount of `indices` (n rows × bins-per-row flat indices); `stamp` is the
        time slot they arrived in (`stamp()` when they did)."""
        ...

    def counts(self) -> np.ndarray:
        """Counts per bin inside the window now."""
        ...


def parse_window(spec: str, size: int, *, clock: Callable[[], float] = time.monotonic) -> CountWindow:
    """The window a drift-window setting names, over `size` bins: `"10m"`, `"600s"`, `"1h"` or `"5000rows"`."""
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"drift window {spec!r}: use e.g. 10m, 600s, 1h or 5000rows")
    amount, unit = int(match.group(1)), match.group(2)
    if unit == "rows":
        return RowsWindow(size, amount)
    return TimeWindow(size, amount * _SECONDS[unit], clock=clock)


class TimeWindow:
    """The last `seconds`, in `_SLOTS` time slots of width seconds/10; read in O(bins · slots).

    A slot older than the window is cleared when reused, so the window covers between 90% and 100% of its span.
    """

    def __init__(self, size: int, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError("a drift window must be longer than 0 s")
        self._seconds = seconds
        self._clock = clock
        self._width = seconds / _SLOTS
        self._slots = np.zeros((_SLOTS, size), dtype=np.int64)
        self._epochs = np.full(_SLOTS, -1, dtype=np.int64)

    def describe(self) -> dict[str, float | int]:
        return {"seconds": self._seconds}

    def stamp(self) -> int:
        return int(self._clock() // self._width)

    def add(self, counts: np.ndarray, indices: np.ndarray, stamp: int) -> None:
        slot = self._slot(stamp)
        if slot is not None:
            self._slots[slot] += counts

    def counts(self) -> np.ndarray:
        current = int(self._clock() // self._width)
        live = self._epochs > current - _SLOTS
        return np.asarray(self._slots[live].sum(axis=0))

    def _slot(self, epoch: int) -> int | None:
        """The slot holding `epoch`, cleared first if it still holds an older epoch's counts; None when a newer
        epoch already took it (the rows are older than the window)."""
        slot = epoch % _SLOTS
        held = int(self._epochs[slot])
        if held > epoch:
            return None
        if held != epoch:
            self._slots[slot] = 0
            self._epochs[slot] = epoch
        return slot


class RowsWindow:
    """The last `rows` rows, exactly: each row's bin indices are kept in a ring, and the rows it overwrites are
    subtracted; read in O(bins)."""

    def __init__(self, size: int, rows: int) -> None:
        if rows <= 0:
            raise ValueError("a drift window must hold at least one row")
        self._size = size
        self._rows = rows
        self._ring: np.ndarray | None = None  # rows × bins-per-row, allocated by the first `add`
        self._filled = 0
        self._next = 0
        self._counts = np.zeros(size, dtype=np.int64)

    def describe(self) -> dict[str, float | int]:
        return {"rows": self._rows}

    def stamp(self) -> int:
        return 0  # rows leave a rows window by count, never by time

    def add(self, counts: np.ndarray, indices: np.ndarray, stamp: int) -> None:
        capacity = self._rows
        if self._ring is None:
            self._ring = np.zeros((capacity, indices.shape[1]), dtype=np.intp)
        if len(indices) > capacity:
            indices = indices[-capacity:]
        n = len(indices)
        positions = (self._next + np.arange(n)) % capacity
        if self._filled == capacity:
            old = self._ring[positions]
        else:
            overwritten = positions[positions < self._filled] if self._filled + n > capacity else positions[:0]
            old = self._ring[overwritten]
        if len(old):
            self._counts -= np.bincount(old.ravel(), minlength=self._size)
        self._ring[positions] = indices
        self._counts += np.bincount(indices.ravel(), minlength=self._size)
        self._next = (self._next + n) % capacity
        self._filled = min(capacity, self._filled + n)

    def counts(self) -> np.ndarray:
        return self._counts.copy()
