"""Per-request model monitoring: the request path and the counts it keeps — O(features) work per row.

A request hands its rows over under one lock; they are binned into numpy count arrays in one vectorised pass per
64 rows (or per window time slot, or when something reads), and nothing is computed per bin on the request path.
The counts are published through observable instruments read at collection time (`observations`), and drift
scores over the sliding window are computed then too (`snapshot`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from opentelemetry.metrics import Meter

from service.artifact.card import ModelCard
from service.artifact.profile import ReferenceProfile
from service.monitoring.binning import Binner
from service.monitoring.layout import BinLayout
from service.monitoring.multivariate import MultivariateDecision, RecentRows, decide
from service.monitoring.observations import register_observations
from service.monitoring.quality import QUALITY_REASONS, REASON_INDEX, QualityIssue
from service.monitoring.snapshot import (
    Decisions,
    Scores,
    multivariate_entry,
    summary,
    window_decisions,
    window_scores,
)
from service.monitoring.window import parse_window

__all__ = ["ModelMonitor"]

_FOLD_ROWS = 64  # rows held back before they are binned together (bounded: a 64-row matrix at most)


class ModelMonitor:
    """Counts what the model sees and says, against its reference profile, and exports it as metrics."""

    def __init__(
        self,
        meter: Meter,
        card: ModelCard,
        profile: ReferenceProfile,
        *,
        slices: Sequence[str] = (),
        window: str = "10m",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.card, self.profile = card, profile
        self._layout = BinLayout(card, profile, slices)
        self._size = self._layout.size
        self._prediction = self._layout.prediction
        self._binner = Binner(card, self._layout)
        self._positions = {name: index for index, name in enumerate(card.feature_names)}
        self._lock = threading.Lock()
        self._totals = np.zeros(self._size, dtype=np.int64)
        self._quality = np.zeros((len(card.features), len(QUALITY_REASONS)), dtype=np.int64)
        self._rejected_rows = 0
        self._window = parse_window(window, self._size, clock=clock)
        self._memo: tuple[np.ndarray, Scores, Decisions] | None = None  # the last window readings (_window_readings)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # rows held back, see `observe`
        self._pending_rows = 0
        self._pending_stamp = 0
        self._pending_confidence: list[np.ndarray] = []  # held-back rows' calibrated probabilities
        self._confidence = np.zeros(2)  # rows with probabilities, and the sum of their predicted class's probability
        reference = profile.multivariate
        self._recent = None if reference is None else RecentRows(
            [self._positions[name] for name in reference.features], clock=clock
        )  # fmt: skip
        self._span = self._window.describe()
        self._multivariate_memo: tuple[tuple[int, int], MultivariateDecision] | None = None
        self._scored = np.zeros(2)  # multivariate rows scored and the sum of their errors, since start-up
        self._score_lock = threading.Lock()
        register_observations(meter, card, profile, self._layout, self)

    # --- the request path ---------------------------------------------------------------------------------
    def observe(self, rows: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None = None) -> None:
        """Count one request's scored rows (n × features, card order) and their predictions.

        Rows are held back and binned together once `_FOLD_ROWS` have arrived (or their window time slot ends),
        in one vectorised pass, far cheaper per row than binning each alone (micro-benchmark `monitor`,
        `benchmarks/micro.py`). Every read folds
        them in first, so what is read is always exact. The arrays are kept, so the caller must not change them.
        `probabilities` (a calibrated classifier's, n × classes) add to the confidence-based expected accuracy.
        """
        stamp = self._window.stamp()
        with self._lock:
            if self._pending and stamp != self._pending_stamp:
                self._fold()  # rows keep the time slot they arrived in
            self._pending_stamp = stamp
            self._pending.append((rows, predictions))
            self._pending_rows += len(rows)
            if probabilities is not None:
                self._pending_confidence.append(probabilities)
            if self._pending_rows >= _FOLD_ROWS:
                self._fold()

    def _fold(self) -> None:
        """Bin the held-back rows into the totals, quality counts and window. Called with the lock held."""
        if not self._pending:
            return
        if len(self._pending) == 1:
            rows, predictions = self._pending[0]
        else:
            rows = np.concatenate([rows for rows, _ in self._pending])
            predictions = np.concatenate([predictions for _, predictions in self._pending])
        self._pending, self._pending_rows = [], 0
        if self._pending_confidence:
            scored = np.concatenate(self._pending_confidence)
            self._confidence += (len(scored), float(scored.max(axis=1).sum()))
            self._pending_confidence = []
        indices, quality = self._binner.bin(rows, predictions)
        counts = np.bincount(indices.ravel(), minlength=self._size)
        self._totals += counts
        self._quality += quality
        self._window.add(counts, indices, self._pending_stamp)
        if self._recent is not None:
            self._recent.add(rows)  # a copy of the numeric columns; the PCA runs when something reads

    def record_rejection(self, issues: Iterable[QualityIssue], rows: int) -> None:
        """Count a rejected request: its rows, and each known feature's problem by reason."""
        with self._lock:
            self._rejected_rows += rows
            for issue in issues:
                column = self._positions.get(issue.feature)
                reason = REASON_INDEX.get(issue.reason)
                if column is not None and reason is not None:
                    self._quality[column, reason] += 1

    # --- reading (each read folds the held-back rows in first) --------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The `GET /monitoring` summary: window drift, data quality, totals."""
        with self._lock:
            self._fold()
            window, quality, rejected = self._window.counts(), self._quality.copy(), self._rejected_rows
            scored = int(self._totals[self._prediction.start : self._prediction.stop].sum())
        document = summary(
            self.card, self._layout, span=self._window.describe(), window=window, quality=quality,
            scored=scored, rejected=rejected,
        )  # fmt: skip
        reference = self.profile.multivariate
        rows, expected = self.expected_correct()
        temperature = self.card.calibration_temperature
        document["estimated_performance"] = None if temperature is None else {
            "method": "cbpe", "rows": rows, "expected_accuracy": round(expected / rows, 6) if rows else None,
            "calibration_temperature": round(temperature, 6),
        }  # fmt: skip
        document["multivariate"] = multivariate_entry(
            self.multivariate_decision(), reference.features if reference is not None else ()
        )
        return document

    def window_bins(self) -> list[dict[str, Any]]:
        """Per feature, then the prediction: its bins, the training shares and the window's shares (for a chart)."""
        with self._lock:
            self._fold()
            window = self._window.counts()
        drawn = []
        for segment in self._layout.segments:
            counts = window[segment.start : segment.stop]
            rows = int(counts.sum())
            drawn.append({
                "name": segment.name or "prediction", "rows": rows, "labels": list(segment.distribution.labels),
                "training": list(segment.distribution.shares),
                "window": [int(c) / rows if rows else 0.0 for c in counts],
            })  # fmt: skip
        return drawn

    def window_scores(self) -> Scores:
        """(kind, name, slice value) → (PSI, JS distance) over the current window."""
        return self._window_readings()[1]

    def window_decisions(self) -> Decisions:
        """(kind, name, slice value) → the drift decision over the current window."""
        return self._window_readings()[2]

    def _window_readings(self) -> tuple[np.ndarray, Scores, Decisions]:
        """Scores and decisions over the window, computed again only when its counts changed: one collection reads
        them from six callbacks (scores and statuses of features, predictions and slices)."""
        with self._lock:
            self._fold()
            window = self._window.counts()
            memo = self._memo
        if memo is not None and np.array_equal(memo[0], window):
            return memo
        memo = (window, window_scores(self._layout, window), window_decisions(self._layout, window))
        self._memo = memo  # a race only computes the same readings twice
        return memo

    def multivariate_decision(self) -> MultivariateDecision | None:
        """The multivariate drift decision over the drift window (None without a multivariate reference), computed
        again only when rows arrived or, for a time window, its time slot moved on."""
        if self._recent is None or self.profile.multivariate is None:
            return None
        with self._lock:
            self._fold()
            key = (self._recent.version, self._window.stamp())
            memo = self._multivariate_memo
            if memo is not None and memo[0] == key:
                return memo[1]
            rows = self._recent.window(seconds=self._span.get("seconds"), rows=self._span.get("rows"))  # type: ignore[arg-type]
        decision = decide(self.profile.multivariate, self.profile.multivariate.errors(rows))
        self._multivariate_memo = (key, decision)
        return decision

    def expected_correct(self) -> tuple[int, float]:
        """(rows scored with calibrated probabilities, the sum of each one's predicted-class probability) since
        start-up: the expected number of correct predictions (CBPE); their ratio is the expected accuracy."""
        with self._lock:
            self._fold()
            return int(self._confidence[0]), float(self._confidence[1])

    def multivariate_totals(self) -> tuple[int, float]:
        """(rows scored, the sum of their reconstruction errors) since start-up: the counters PromQL pools over
        replicas. Scores the rows that arrived since the last call."""
        if self._recent is None or self.profile.multivariate is None:
            return 0, 0.0
        with self._score_lock:
            with self._lock:
                self._fold()
                fresh = self._recent.take_new()
            if len(fresh):
                self._scored += (len(fresh), float(self.profile.multivariate.errors(fresh).sum()))
            return int(self._scored[0]), float(self._scored[1])

    def totals(self) -> np.ndarray:
        """Counts per flat bin (see `BinLayout`) since start-up: a copy."""
        with self._lock:
            self._fold()
            return self._totals.copy()

    def quality_counts(self) -> np.ndarray:
        """Data-quality issues since start-up, features (card order) × `QUALITY_REASONS`: a copy."""
        with self._lock:
            self._fold()
            return self._quality.copy()

    def rejected_rows(self) -> int:
        """Rows in requests rejected by validation since start-up."""
        return self._rejected_rows
