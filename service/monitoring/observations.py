"""The monitor's observable instruments: bin counts, the reference, drift scores and decisions, data quality and
model age.

Nothing here runs on the request path: each callback reads the monitor when a reader collects. Every bin's
attribute set is built once, at registration, and reused by every collection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

import numpy as np
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from service.artifact.card import ModelCard
from service.artifact.profile import ReferenceProfile
from service.monitoring.drift import STATUSES, critical_value, min_rows
from service.monitoring.layout import BinLayout
from service.monitoring.multivariate import MultivariateDecision
from service.monitoring.quality import QUALITY_REASONS, REASONS_BY_TYPE
from service.monitoring.snapshot import Decisions, Scores, families, family_of

__all__ = ["DriftCallbacks", "Readings", "register_drift_instruments", "register_observations"]

_Callback = Callable[[CallbackOptions], Iterable[Observation]]


class Readings(Protocol):
    """What the callbacks read from the monitor; every read includes the rows it still holds back."""

    def totals(self) -> np.ndarray:
        """Counts per flat bin since start-up (a copy)."""
        ...

    def quality_counts(self) -> np.ndarray:
        """Data-quality issues since start-up, features × `QUALITY_REASONS` (a copy)."""
        ...

    def rejected_rows(self) -> int:
        """Rows in requests rejected by validation since start-up."""
        ...

    def window_scores(self) -> Scores:
        """(kind, name, slice value) → (PSI, JS distance) over the current window."""
        ...

    def window_decisions(self) -> Decisions:
        """(kind, name, slice value) → the drift decision over the current window."""
        ...

    def multivariate_decision(self) -> MultivariateDecision | None:
        """The multivariate drift decision over the window; None without a multivariate reference."""
        ...

    def multivariate_totals(self) -> tuple[int, float]:
        """(rows scored, the sum of their reconstruction errors) since start-up."""
        ...

    def expected_correct(self) -> tuple[int, float]:
        """(rows with calibrated probabilities, the sum of their predicted class's probability) since start-up."""
        ...


class DriftCallbacks(NamedTuple):
    """What one kind of segment's drift instruments read (`register_drift_instruments`)."""

    counts: _Callback  # per bin since start-up
    reference: _Callback  # the training share per bin
    reference_rows: _Callback  # the training rows per bin
    score: _Callback  # PSI, JS and chi2 over the window
    status: _Callback  # the decision over the window, one series per status
    critical_value: _Callback  # the test's constants
    min_rows: _Callback


def register_drift_instruments(meter: Meter, prefix: str, unit: str, counted: str, callbacks: DriftCallbacks) -> None:
    """The instruments of one kind of drift-tested segment under `prefix` (features, predictions, slices, labels):
    the bin counters (`counted` says what they count, `unit` in what), the reference, and the in-process decision
    with the constants the recording rules test against."""
    meter.create_observable_counter(
        f"{prefix}.observations", [callbacks.counts], unit=unit,
        description=f"{counted} per reference bin (every bin exists from start-up).",
    )  # fmt: skip
    meter.create_observable_gauge(
        f"{prefix}.reference", [callbacks.reference], unit="1",
        description="Training share of each bin (the reference distribution).",
    )  # fmt: skip
    meter.create_observable_gauge(
        f"{prefix}.reference.rows", [callbacks.reference_rows], unit="{row}",
        description="Training rows in each bin: the reference side of the drift test.",
    )  # fmt: skip
    meter.create_observable_gauge(
        f"{prefix}.drift.score", [callbacks.score], unit="{score}",
        description="Drift over the in-process sliding window: method=psi, js (Jensen-Shannon distance) "
        "or chi2 (the test statistic, when the window is large enough).",
    )  # fmt: skip
    meter.create_observable_gauge(
        f"{prefix}.drift.status", [callbacks.status],
        description="The drift decision over the window: 1 for the current status, 0 for the others.",
    )  # fmt: skip
    meter.create_observable_gauge(
        f"{prefix}.drift.critical_value", [callbacks.critical_value], unit="{score}",
        description="The chi2 statistic above which the window's change is significant (Bonferroni-corrected).",
    )  # fmt: skip
    meter.create_observable_gauge(
        f"{prefix}.drift.min_rows", [callbacks.min_rows], unit="{row}",
        description="Window rows the drift test needs; fewer read insufficient_data.",
    )  # fmt: skip


def register_observations(
    meter: Meter, card: ModelCard, profile: ReferenceProfile, layout: BinLayout, readings: Readings
) -> None:
    """Create the monitor's observable instruments on `meter`, reading `readings` at collection time."""
    _Observations(card, profile, layout, readings).register(meter)


class _Observations:
    """The callbacks, with the attribute sets they reuse."""

    def __init__(self, card: ModelCard, profile: ReferenceProfile, layout: BinLayout, readings: Readings) -> None:
        self._card, self._profile, self._layout, self._readings = card, profile, layout, readings
        self._common = {"model.name": card.name, "model.version": card.version}
        self._attributes = self._build_attributes()
        self._trained_at = _timestamp(card.trained_at)
        self._profiled_at = _timestamp(profile.created_at)

    def _build_attributes(self) -> list[dict[str, str]]:
        """One attribute set per flat bin."""
        attributes = []
        for segment in self._layout.segments:
            for label in segment.distribution.labels:
                item = {**self._common, "bin": label}
                if segment.kind == "feature":
                    item["feature"] = segment.name
                elif segment.kind == "slice":
                    item["slice"], item["slice_value"] = segment.name, segment.value
                attributes.append(item)
        return attributes

    def register(self, meter: Meter) -> None:
        for kind, prefix in (("feature", "model.feature"), ("prediction", "model.prediction"),
                             ("slice", "model.slice.prediction")):  # fmt: skip
            register_drift_instruments(
                meter, prefix, "{row}" if kind == "feature" else "{prediction}", f"Scored {kind} values",
                DriftCallbacks(
                    counts=self._counts_callback(kind), reference=self._reference_callback(kind),
                    reference_rows=self._reference_rows_callback(kind), score=self._drift_callback(kind),
                    status=self._status_callback(kind), critical_value=self._limit_callback(kind, "critical"),
                    min_rows=self._limit_callback(kind, "rows"),
                ),
            )  # fmt: skip
        meter.create_observable_counter(
            "model.data_quality.issues", [self._quality_callback], unit="{issue}",
            description="Values with a data-quality problem, by feature and reason.",
        )  # fmt: skip
        meter.create_observable_counter(
            "model.rows.rejected", [self._rejected_callback], unit="{row}",
            description="Rows in requests rejected by validation.",
        )  # fmt: skip
        if self._card.task == "regression":
            meter.create_observable_gauge(
                "model.prediction.reference.spread", [self._spread_callback],
                description="p90 - p10 of the training predictions: the scale for prediction disagreements.",
            )  # fmt: skip
        if self._profile.multivariate is not None:
            self._register_multivariate(meter)
        if self._card.calibration_temperature is not None:
            expected = _PairedReading(self._readings.expected_correct)
            meter.create_observable_counter(
                "model.prediction.confidence.rows", [self._total_callback(expected, 0)], unit="{prediction}",
                description="Predictions scored with calibrated probabilities (the denominator of CBPE).",
            )  # fmt: skip
            meter.create_observable_counter(
                "model.prediction.expected_correct", [self._total_callback(expected, 1)], unit="{prediction}",
                description="Sum of each prediction's calibrated probability of being right: expected correct "
                "predictions (confidence-based performance estimation, CBPE).",
            )  # fmt: skip
        meter.create_observable_gauge("model.age", [self._age_callback], unit="s",
                                      description="Seconds since the serving model was trained.")  # fmt: skip
        meter.create_observable_gauge("model.reference.age", [self._reference_age_callback], unit="s",
                                      description="Seconds since the reference profile was computed.")  # fmt: skip
        meter.create_observable_gauge("model.training.duration", [self._training_callback], unit="s",
                                      description="How long training the serving model took.")  # fmt: skip

    def _register_multivariate(self, meter: Meter) -> None:
        """Multivariate drift (docs/metrics.md): the in-process decision, and the counters and reference moments
        the recording rules pool over replicas to reach the same decision."""
        reference = self._profile.multivariate
        assert reference is not None
        moments = [
            Observation(value, {**self._common, "statistic": statistic})
            for statistic, value in (("mean", reference.error_mean), ("std", reference.error_std),
                                     ("skewness", reference.error_skewness))
        ]  # fmt: skip
        rows = [Observation(reference.rows, self._common)]
        totals = _PairedReading(self._readings.multivariate_totals)
        meter.create_observable_counter(
            "model.multivariate.rows", [self._total_callback(totals, 0)], unit="{row}",
            description="Rows scored by the multivariate (PCA reconstruction) drift check.",
        )  # fmt: skip
        meter.create_observable_counter(
            "model.multivariate.errors", [self._total_callback(totals, 1)], unit="{score}",
            description="Sum of the scored rows' squared PCA reconstruction errors.",
        )  # fmt: skip
        meter.create_observable_gauge(
            "model.multivariate.reference.error", [lambda _options: moments], unit="{score}",
            description="The reconstruction error on held-out training rows: statistic=mean, std or skewness.",
        )  # fmt: skip
        meter.create_observable_gauge(
            "model.multivariate.reference.rows", [lambda _options: rows], unit="{row}",
            description="Held-out training rows the reference error comes from.",
        )  # fmt: skip
        meter.create_observable_gauge(
            "model.multivariate.drift.error", [self._multivariate_error], unit="{score}",
            description="Mean PCA reconstruction error over the in-process drift window.",
        )  # fmt: skip
        meter.create_observable_gauge(
            "model.multivariate.drift.status", [self._multivariate_status],
            description="The multivariate drift decision over the window: 1 for the current status, 0 for the others.",
        )  # fmt: skip

    def _total_callback(self, pair: _PairedReading, index: int) -> _Callback:
        """One of a pair's two totals (a count, and the sum beside it), as one counter's observation."""

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(pair.value(index), self._common)

        return callback

    def _multivariate_error(self, _options: CallbackOptions) -> Iterable[Observation]:
        decision = self._readings.multivariate_decision()
        if decision is not None and np.isfinite(decision.error_mean):
            yield Observation(decision.error_mean, self._common)

    def _multivariate_status(self, _options: CallbackOptions) -> Iterable[Observation]:
        decision = self._readings.multivariate_decision()
        if decision is not None:
            for status in STATUSES:
                yield Observation(int(decision.status == status), {**self._common, "status": status})

    def _counts_callback(self, kind: str) -> _Callback:
        segments = self._layout.of_kind(kind)

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            totals = self._readings.totals()
            for segment in segments:
                for index in range(segment.start, segment.stop):
                    yield Observation(int(totals[index]), self._attributes[index])

        return callback

    def _reference_callback(self, kind: str) -> _Callback:
        observations = [
            Observation(share, self._attributes[segment.start + offset])
            for segment in self._layout.of_kind(kind) if sum(segment.distribution.shares) > 0
            for offset, share in enumerate(segment.distribution.shares)
        ]  # fmt: skip

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return observations

        return callback

    def _segment_attributes(self, kind: str, name: str, value: str) -> dict[str, str]:
        attributes = dict(self._common)
        if kind == "feature":
            attributes["feature"] = name
        elif kind == "slice":
            attributes["slice"], attributes["slice_value"] = name, value
        return attributes

    def _drift_callback(self, kind: str) -> _Callback:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            decisions = self._readings.window_decisions()
            for key, (psi_value, js_value) in self._readings.window_scores().items():
                if key[0] != kind or np.isnan(psi_value):
                    continue
                attributes = self._segment_attributes(*key)
                yield Observation(psi_value, {**attributes, "method": "psi"})
                yield Observation(js_value, {**attributes, "method": "js"})
                statistic = decisions[key].statistic
                if np.isfinite(statistic):
                    yield Observation(statistic, {**attributes, "method": "chi2"})

        return callback

    def _status_callback(self, kind: str) -> _Callback:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            for key, decision in self._readings.window_decisions().items():
                if key[0] == kind:
                    attributes = self._segment_attributes(*key)
                    for status in STATUSES:
                        yield Observation(int(decision.status == status), {**attributes, "status": status})

        return callback

    def _limit_callback(self, kind: str, limit: str) -> _Callback:
        """The segment's constant threshold: the critical χ² value, or the rows the test needs."""
        sizes = families(self._layout)
        observations = []
        for segment in self._layout.of_kind(kind):
            shares = np.asarray(segment.distribution.shares, dtype=np.float64)
            if not shares.sum() > 0:
                continue
            value = critical_value(shares, family_of(segment, sizes)) if limit == "critical" else min_rows(shares)
            observations.append(Observation(value, self._segment_attributes(kind, segment.name, segment.value)))

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return observations

        return callback

    def _reference_rows_callback(self, kind: str) -> _Callback:
        observations = [
            Observation(count, self._attributes[segment.start + offset])
            for segment in self._layout.of_kind(kind) if segment.distribution.counts is not None
            and sum(segment.distribution.counts) > 0
            for offset, count in enumerate(segment.distribution.counts)
        ]  # fmt: skip

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return observations

        return callback

    def _quality_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        quality = self._readings.quality_counts()
        for column, spec in enumerate(self._card.features):
            for index, reason in enumerate(QUALITY_REASONS):
                if reason in REASONS_BY_TYPE[spec.type]:
                    attributes = {**self._common, "feature": spec.name, "reason": reason}
                    yield Observation(int(quality[column, index]), attributes)

    def _rejected_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._readings.rejected_rows(), self._common)

    def _spread_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        edges = self._profile.prediction.edges
        if len(edges) > 1:
            yield Observation(edges[-1] - edges[0], self._common)

    def _age_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(max(time.time() - self._trained_at, 0.0), self._common)

    def _reference_age_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(max(time.time() - self._profiled_at, 0.0), self._common)

    def _training_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._card.training_duration_seconds, self._common)


class _PairedReading:
    """Two counters from one read (a count and the sum beside it), so a scrape never pairs a count with a sum
    read a moment later: a counter's callback reads afresh only when it already used the last read, so within a
    collection the second counter gets the first one's read."""

    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self._read = read
        self._last: tuple[int, float] = (0, 0.0)
        self._used: set[int] = {0, 1}
        self._lock = threading.Lock()

    def value(self, index: int) -> float:
        with self._lock:
            if index in self._used:
                self._last, self._used = self._read(), set()
            self._used.add(index)
            return self._last[index]


def _timestamp(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
