"""Multivariate drift: the reconstruction error of recent rows under the training data's PCA, and its decision.

The request path only copies each folded batch's numeric columns into a bounded ring (`RecentRows`, at most
`CAPACITY` rows); the PCA runs when something reads (a metrics collection, `GET /monitoring`), over the ring's rows
inside the drift window. The decision (docs/metrics.md, "Multivariate drift") judges the window's mean error m over
n rows against the reference's held-out error (mean μ, standard deviation σ, skewness γ, from R rows):

    z = (m − μ) / (σ · √(1/n + 1/R)),   significant when z > z₁₋α + (z₁₋α² − 1) · γ / (6 √n)

(a one-sided test at α = `ALPHA`, with the Cornish–Fisher correction for the error's right skew, which a normal
approximation alone would turn into extra false alarms at small windows). `drift` when it is significant and the
error grew by at least `DRIFT_EFFECT` (relative); `warn` when significant but smaller; `insufficient_data` below
`MIN_ROWS` rows. The recording rules compute the same from the exported sums (prometheus/rules/drift.rules.yml).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from service.artifact.reconstruction import ReconstructionReference
from service.monitoring.drift import ALPHA

__all__ = [
    "CAPACITY",
    "DRIFT_EFFECT",
    "MIN_ROWS",
    "Z_CRITICAL",
    "MultivariateDecision",
    "RecentRows",
    "decide",
]

CAPACITY = 5000  # rows kept for the multivariate window: a window holding more is judged on its newest CAPACITY
MIN_ROWS = 100  # fewer rows in the window read insufficient_data: the normal approximation needs them
DRIFT_EFFECT = 0.10  # relative growth of the mean error from which a significant change is `drift`
Z_CRITICAL = float(norm.ppf(1.0 - ALPHA))  # one-sided: only a larger error means the joint distribution moved


@dataclass(frozen=True)
class MultivariateDecision:
    """The verdict over one window, with the numbers behind it (NaN where there are no rows)."""

    status: str
    rows: int
    error_mean: float  # the window's mean reconstruction error
    reference_error: float  # μ
    z: float
    critical_value: float  # the z the window had to exceed, at its size
    effect: float  # m / μ − 1
    reason: str | None = None


def decide(reference: ReconstructionReference, errors: np.ndarray) -> MultivariateDecision:
    """The decision over a window whose rows have reconstruction `errors`."""
    n, total = len(errors), float(errors.sum())
    mu, sigma = reference.error_mean, reference.error_std
    mean = total / n if n else math.nan
    effect = mean / mu - 1.0 if n and mu > 0 else math.nan
    if n < MIN_ROWS:
        return MultivariateDecision(
            "insufficient_data", n, mean, mu, math.nan, math.nan, effect,
            reason=f"{n} rows in the window; the multivariate test needs {MIN_ROWS}",
        )  # fmt: skip
    z = (mean - mu) / (sigma * math.sqrt(1.0 / n + 1.0 / reference.rows)) if sigma > 0 else math.inf
    critical = critical_z(reference.error_skewness, n)
    status = "stable" if z <= critical else "drift" if effect >= DRIFT_EFFECT else "warn"
    return MultivariateDecision(status, n, mean, mu, z, critical, effect)


def critical_z(skewness: float, rows: float) -> float:
    """The z a window of `rows` must exceed: z₁₋α, corrected for the skew of a mean of skewed errors."""
    return Z_CRITICAL + (Z_CRITICAL**2 - 1.0) * skewness / (6.0 * math.sqrt(rows))


class RecentRows:
    """The newest `capacity` rows of the reference's features, with the time each arrived; not thread-safe (the
    monitor holds its lock)."""

    def __init__(
        self, columns: list[int], capacity: int = CAPACITY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._columns, self._clock = columns, clock
        self._rows = np.zeros((capacity, len(columns)), dtype=np.float64)
        self._times = np.full(capacity, -np.inf)
        self._next = self._filled = 0
        self.version = 0  # bumped by every add: a reader can reuse what it computed for the same version
        self._added = self._taken = 0  # rows ever added; rows ever handed out by `take_new`

    def add(self, rows: np.ndarray) -> None:
        """Keep a batch's rows (n × card features; the reference's columns are taken)."""
        capacity = len(self._rows)
        block = rows[-capacity:, self._columns].astype(np.float64)
        positions = (self._next + np.arange(len(block))) % capacity
        self._rows[positions] = block
        self._times[positions] = self._clock()
        self._next = (self._next + len(block)) % capacity
        self._filled = min(capacity, self._filled + len(block))
        self._added += len(block)
        self.version += 1

    def take_new(self) -> np.ndarray:
        """The rows added since the last call that are still kept (a copy, oldest first). Rows overwritten before
        a reader came are never handed out: the counters then cover a sample of the traffic, the newest rows."""
        fresh = min(self._added - self._taken, self._filled)
        self._taken = self._added
        order = (self._next - fresh + np.arange(fresh)) % len(self._rows)
        return self._rows[order]

    def window(self, *, seconds: float | None = None, rows: int | None = None) -> np.ndarray:
        """The kept rows inside a window of the last `seconds`, or the last `rows` rows: a copy, oldest first."""
        order = (self._next - self._filled + np.arange(self._filled)) % len(self._rows)
        if seconds is not None:
            order = order[self._times[order] > self._clock() - seconds]
        if rows is not None:
            order = order[-rows:]
        return self._rows[order]
