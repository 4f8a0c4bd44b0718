"""Sliding windows of bin counts: the last N seconds (in time slots) or the last N rows (a ring of rows)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CountWindow"]

_SPEC = re.compile(r"^\s*(\d+)\s*(s|m|h|rows)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
_SLOTS = 10


class CountWindow:
    """Counts over a sliding window, updated in O(bins) per request and read in O(bins · slots).

    A time window keeps `_SLOTS` slots of width window/10: a slot older than the window is cleared when reused,
    so the window covers between 90% and 100% of its span. A rows window keeps each row's bin indices in a ring
    and subtracts the rows it overwrites, so it is exact.
    """

    def __init__(self, size: int, *, seconds: float | None = None, rows: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if (seconds is None) == (rows is None):
            raise ValueError("give exactly one of seconds or rows")
        self._size = size
        self._clock = clock
        self._seconds = seconds
        self._rows = rows
        if seconds is not None:
            if seconds <= 0:
                raise ValueError("a drift window must be longer than 0 s")
            self._width = seconds / _SLOTS
            self._slots = np.zeros((_SLOTS, size), dtype=np.int64)
            self._epochs = np.full(_SLOTS, -1, dtype=np.int64)
        else:
            assert rows is not None
            if rows <= 0:
                raise ValueError("a drift window must hold at least one row")
            self._ring: np.ndarray | None = None
            self._filled = 0
            self._next = 0
            self._counts = np.zeros(size, dtype=np.int64)

    @classmethod
    def parse(cls, spec: str, size: int, **kwargs: Any) -> CountWindow:
        """`"10m"`, `"600s"`, `"1h"` or `"5000rows"`."""
        match = _SPEC.match(spec)
        if match is None:
            raise ValueError(f"drift window {spec!r}: use e.g. 10m, 600s, 1h or 5000rows")
        amount, unit = int(match.group(1)), match.group(2)
        if unit == "rows":
            return cls(size, rows=amount, **kwargs)
        return cls(size, seconds=amount * _SECONDS[unit], **kwargs)

    def describe(self) -> dict[str, float | int]:
        return {"seconds": self._seconds} if self._seconds is not None else {"rows": self._rows or 0}

    def stamp(self) -> int:
        """Which time slot rows arriving now belong to (always 0 for a rows window): rows held back before they
        are added keep the stamp of their arrival."""
        return int(self._clock() // self._width) if self._seconds is not None else 0

    def add(self, counts: np.ndarray, indices: np.ndarray, stamp: int) -> None:
        """Add rows: `counts` is the bincount of `indices` (n rows × bins-per-row flat indices); `stamp` is the
        time slot they arrived in (`stamp()` when they did)."""
        if self._seconds is not None:
            slot = self._slot(stamp)
            if slot is not None:
                self._slots[slot] += counts
            return
        self._add_rows(indices)

    def counts(self) -> np.ndarray:
        """Counts per bin inside the window now."""
        if self._seconds is not None:
            current = int(self._clock() // self._width)
            live = self._epochs > current - _SLOTS
            return np.asarray(self._slots[live].sum(axis=0))
        return self._counts.copy()

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

    def _add_rows(self, indices: np.ndarray) -> None:
        capacity = self._rows or 0
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
