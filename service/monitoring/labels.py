"""Label drift: the ground truth `/feedback` joins, binned against the training target.

A regressor's actual values fall into the target's training quantile bins, a classifier's into its classes; the
window's counts get the same χ² decision as a feature's (`service.monitoring.drift`, a family of one). The world
can change under a model whose inputs look the same (a new price level, a rarer class): this is where it shows,
as soon as labels arrive. Labels count in the window they arrive in, whatever the prediction's age, and only
labels that joined a logged prediction count (an unknown id or a repeat says nothing about the target).

Nothing here runs on `/predict`; `observe` runs once per `/feedback` request, O(labels).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from service.artifact.card import ModelCard
from service.artifact.profile import Distribution
from service.monitoring.drift import STATUSES, Decision, critical_value, min_rows
from service.monitoring.layout import Segment
from service.monitoring.observations import DriftCallbacks, register_drift_instruments
from service.monitoring.snapshot import drift_entry, segment_decision, segment_scores
from service.monitoring.window import parse_window

__all__ = ["LabelDrift"]


class LabelDrift:
    """The joined labels' distribution against the training target's, since start-up and over a sliding window."""

    def __init__(
        self,
        meter: Meter,
        card: ModelCard,
        target: Distribution,
        *,
        window: str = "1h",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._segment = Segment("label", "", "", 0, target)
        self._size = len(target.labels)
        self._regression = card.task == "regression"
        self._lock = threading.Lock()
        self._totals = np.zeros(self._size, dtype=np.int64)
        self._window = parse_window(window, self._size, clock=clock)
        self._common = {"model.name": card.name, "model.version": card.version}
        self._bins = [{**self._common, "bin": label} for label in target.labels]
        self._register(meter)

    def observe(self, actuals: Sequence[Any]) -> None:
        """Count one `/feedback` request's joined labels (numbers for a regressor, class labels otherwise)."""
        values = [value for value in actuals if self._countable(value)]
        if not values:
            return
        column = np.asarray(values, dtype=np.float64 if self._regression else object)
        indices = self._segment.distribution.bin_indices(column)
        indices = indices[indices < self._size]  # a class the card does not know falls in no bin
        counts = np.bincount(indices, minlength=self._size)
        with self._lock:
            self._totals += counts
            self._window.add(counts, indices.reshape(-1, 1), self._window.stamp())

    def _countable(self, value: Any) -> bool:
        if not self._regression:
            return isinstance(value, str)
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    def totals(self) -> np.ndarray:
        """Labels per target bin since start-up (a copy)."""
        with self._lock:
            return self._totals.copy()

    def window_counts(self) -> np.ndarray:
        """Labels per target bin over the window."""
        with self._lock:
            return self._window.counts()

    def decision(self) -> Decision:
        """The drift decision over the window."""
        return segment_decision(self._segment, self.window_counts(), 1)

    def summary(self) -> dict[str, Any]:
        """`GET /monitoring`'s `label_drift` entry: the decision over the window, and the numbers behind it."""
        window = self.window_counts()
        return {
            "window": self._window.describe(),
            "labels": int(self.totals().sum()),
            **drift_entry(self._segment, window, 1),
            "bins": list(self._segment.distribution.labels),
            "training_shares": list(self._segment.distribution.shares),
            "window_counts": window.tolist(),
        }

    def scores(self) -> tuple[float, float, Decision]:
        """(PSI, JS distance, decision) over the window, from one read of its counts."""
        window = self.window_counts()
        psi_value, js_value, _ = segment_scores(self._segment, window)
        return psi_value, js_value, segment_decision(self._segment, window, 1)

    def _register(self, meter: Meter) -> None:
        """The instruments: counts, the reference and the test's constants (what the recording rules need), and
        the in-process scores and decision."""
        reference, bins, common = self._segment.distribution, self._bins, self._common
        shares = np.asarray(reference.shares, dtype=np.float64)
        constants = {
            "reference": [Observation(share, item) for share, item in zip(reference.shares, bins, strict=True)],
            "rows": [Observation(count, item) for count, item in zip(reference.counts or (), bins, strict=False)],
            "critical": [Observation(critical_value(shares, 1), common)],
            "min_rows": [Observation(min_rows(shares), common)],
        }

        def constant(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda _options: constants[name]

        def counts(_options: CallbackOptions) -> Iterable[Observation]:
            for count, item in zip(self.totals().tolist(), bins, strict=True):
                yield Observation(count, item)

        def drift_scores(_options: CallbackOptions) -> Iterable[Observation]:
            psi_value, js_value, decision = self.scores()
            if math.isfinite(psi_value):
                yield Observation(psi_value, {**common, "method": "psi"})
                yield Observation(js_value, {**common, "method": "js"})
            if math.isfinite(decision.statistic):
                yield Observation(decision.statistic, {**common, "method": "chi2"})

        def status(_options: CallbackOptions) -> Iterable[Observation]:
            current = self.decision().status
            for name in STATUSES:
                yield Observation(int(current == name), {**common, "status": name})

        register_drift_instruments(
            meter, "model.label", "{label}", "Joined ground-truth labels",
            DriftCallbacks(
                counts=counts, reference=constant("reference"), reference_rows=constant("rows"), score=drift_scores,
                status=status, critical_value=constant("critical"), min_rows=constant("min_rows"),
            ),
        )  # fmt: skip
