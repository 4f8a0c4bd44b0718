"""Per-request model monitoring: bin counts, data quality, drift scores — O(features) work per row.

A request hands its rows over under one lock; they are binned into numpy count arrays in one vectorised pass per
64 rows (or per window time slot, or when something reads), and nothing is computed per bin on the request path.
The counts are published through observable instruments read at collection time, and drift scores over the
sliding window are computed then too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from service.artifact.card import ModelCard
from service.artifact.profile import OTHER, Distribution, ReferenceProfile, slice_label
from service.monitoring.drift import js_distance, psi, status
from service.monitoring.window import CountWindow

__all__ = ["QUALITY_REASONS", "ModelMonitor", "QualityIssue"]

QUALITY_REASONS = ("missing", "non_finite", "wrong_type", "below_min", "above_max", "unknown_category")


class QualityIssue(NamedTuple):
    """One value of a known feature that failed validation, by reason (one of `QUALITY_REASONS`)."""

    feature: str
    reason: str


_REASON_INDEX = {reason: index for index, reason in enumerate(QUALITY_REASONS)}
_MISSING, _BELOW_MIN, _ABOVE_MAX = _REASON_INDEX["missing"], _REASON_INDEX["below_min"], _REASON_INDEX["above_max"]
_FOLD_ROWS = 64  # rows held back before they are binned together (bounded: a 64-row matrix at most)


@dataclass(frozen=True)
class _Segment:
    """A contiguous run of bins in the flat count array: one feature, the predictions, or one slice value."""

    kind: str  # "feature", "prediction" or "slice"
    name: str  # feature name, "" for predictions, slice feature for slices
    value: str  # slice value ("" otherwise)
    start: int
    distribution: Distribution

    @property
    def stop(self) -> int:
        return self.start + len(self.distribution.labels)


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
        unknown = [name for name in slices if name not in profile.slices]
        if unknown:
            offered = ", ".join(profile.slices) or "none"
            raise ValueError(f"cannot slice by {unknown}: the profile offers {offered} (≤ 20 distinct values)")
        self.card, self.profile = card, profile
        self._common = {"model.name": card.name, "model.version": card.version}
        self._segments: list[_Segment] = []
        start = 0
        for spec in card.features:
            self._segments.append(_Segment("feature", spec.name, "", start, profile.features[spec.name]))
            start = self._segments[-1].stop
        self._prediction = _Segment("prediction", "", "", start, profile.prediction)
        self._segments.append(self._prediction)
        start = self._prediction.stop
        self._slice_offsets: list[tuple[int, dict[str, int], int]] = []  # (feature column, value → start, other)
        for name in slices:
            slice_spec = profile.slices[name]
            starts: dict[str, int] = {}
            for value in (*slice_spec.values, OTHER):
                reference = slice_spec.predictions.get(value) or _empty_like(profile.prediction)
                self._segments.append(_Segment("slice", name, value, start, reference))
                starts[value] = start
                start = self._segments[-1].stop
            self._slice_offsets.append((card.feature_names.index(name), starts, starts[OTHER]))
        self._size = start
        numeric_prediction = profile.prediction.kind == "numeric"
        self._prediction_edges = np.asarray(profile.prediction.edges) if numeric_prediction else None
        self._binner = _Binner(card, profile, [s.start for s in self._segments[: len(card.features)]])
        self._lock = threading.Lock()
        self._totals = np.zeros(self._size, dtype=np.int64)
        self._quality = np.zeros((len(card.features), len(QUALITY_REASONS)), dtype=np.int64)
        self._rejected_rows = 0
        self._window = CountWindow.parse(window, self._size, clock=clock)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # rows held back, see `observe`
        self._pending_rows = 0
        self._pending_stamp = 0
        self._trained_at = _timestamp(card.trained_at)
        self._profiled_at = _timestamp(profile.created_at)
        self._attributes = self._build_attributes()
        self._register(meter)

    # --- the request path ---------------------------------------------------------------------------------
    def observe(self, rows: np.ndarray, predictions: np.ndarray) -> None:
        """Count one request's scored rows (n × features, card order) and their predictions.

        Rows are held back and binned together once `_FOLD_ROWS` have arrived (or their window time slot ends),
        in one vectorised pass, far cheaper per row than binning each alone (micro-benchmark `monitor`,
        `benchmarks/micro.py`). Every read folds
        them in first, so what is read is always exact. The arrays are kept, so the caller must not change them.
        """
        stamp = self._window.stamp()
        with self._lock:
            if self._pending and stamp != self._pending_stamp:
                self._fold()  # rows keep the time slot they arrived in
            self._pending_stamp = stamp
            self._pending.append((rows, predictions))
            self._pending_rows += len(rows)
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
        flat, quality = self._binner.bin(rows)
        prediction_bins = self._prediction_bins(predictions)
        columns = [flat, prediction_bins[:, None]]
        for column, starts, other in self._slice_offsets:
            offsets = np.fromiter(
                (starts.get(slice_label(value), other) for value in rows[:, column]),
                dtype=np.intp,
                count=len(rows),
            )
            columns.append((offsets + prediction_bins - self._prediction.start)[:, None])
        indices = np.concatenate(columns, axis=1)
        counts = np.bincount(indices.ravel(), minlength=self._size)
        self._totals += counts
        self._quality += quality
        self._window.add(counts, indices, self._pending_stamp)

    def _prediction_bins(self, predictions: np.ndarray) -> np.ndarray:
        if self._prediction_edges is not None:
            return np.searchsorted(self._prediction_edges, predictions, side="left") + self._prediction.start
        return self._prediction.distribution.bin_indices(predictions) + self._prediction.start

    def record_rejection(self, issues: Iterable[QualityIssue], rows: int) -> None:
        """Count a rejected request: its rows, and each known feature's problem by reason."""
        positions = {name: index for index, name in enumerate(self.card.feature_names)}
        with self._lock:
            self._rejected_rows += rows
            for issue in issues:
                column = positions.get(issue.feature)
                reason = _REASON_INDEX.get(issue.reason)
                if column is not None and reason is not None:
                    self._quality[column, reason] += 1

    # --- reading ------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The `GET /monitoring` summary: window drift, data quality, totals."""
        with self._lock:
            self._fold()
            window, quality, rejected = self._window.counts(), self._quality.copy(), self._rejected_rows
            scored = int(self._totals[self._prediction.start : self._prediction.stop].sum())
        features: dict[str, dict[str, Any]] = {}
        for segment in self._segments:
            if segment.kind != "feature":
                continue
            psi_value, js_value, rows = self._scores(segment, window)
            counts = quality[len(features)].tolist()
            features[segment.name] = {
                "psi": _json_float(psi_value),
                "js_distance": _json_float(js_value),
                "status": status(psi_value, js_value),
                "window_rows": rows,
                "quality_issues": {reason: n for reason, n in zip(QUALITY_REASONS, counts, strict=True) if n},
            }
        psi_value, js_value, rows = self._scores(self._prediction, window)
        slices: dict[str, dict[str, Any]] = {}
        for segment in self._segments:
            if segment.kind == "slice":
                s_psi, s_js, s_rows = self._scores(segment, window)
                slices.setdefault(segment.name, {})[segment.value] = {
                    "psi": _json_float(s_psi), "js_distance": _json_float(s_js), "window_rows": s_rows,
                }  # fmt: skip
        return {
            "model": {"name": self.card.name, "version": self.card.version},
            "window": self._window.describe(),
            "rows_scored": scored,
            "rows_rejected": rejected,
            "features": features,
            "prediction": {
                "psi": _json_float(psi_value),
                "js_distance": _json_float(js_value),
                "status": status(psi_value, js_value),
                "window_rows": rows,
            },
            "slices": slices,
        }

    def window_scores(self) -> dict[tuple[str, str, str], tuple[float, float]]:
        """(kind, name, slice value) → (PSI, JS distance) over the current window."""
        with self._lock:
            self._fold()
            window = self._window.counts()
        scores = {}
        for segment in self._segments:
            psi_value, js_value, _ = self._scores(segment, window)
            scores[(segment.kind, segment.name, segment.value)] = (psi_value, js_value)
        return scores

    def _scores(self, segment: _Segment, window: np.ndarray) -> tuple[float, float, int]:
        current = window[segment.start : segment.stop].astype(np.float64)
        reference = np.asarray(segment.distribution.shares, dtype=np.float64)
        return psi(reference, current), js_distance(reference, current), int(current.sum())

    # --- instruments --------------------------------------------------------------------------------------
    def _build_attributes(self) -> list[dict[str, str]]:
        """One attribute set per flat bin, built once (collection reuses them)."""
        attributes = []
        for segment in self._segments:
            for label in segment.distribution.labels:
                item = {**self._common, "bin": label}
                if segment.kind == "feature":
                    item["feature"] = segment.name
                elif segment.kind == "slice":
                    item["slice"], item["slice_value"] = segment.name, segment.value
                attributes.append(item)
        return attributes

    def _register(self, meter: Meter) -> None:
        for kind, prefix in (("feature", "model.feature"), ("prediction", "model.prediction"),
                             ("slice", "model.slice.prediction")):  # fmt: skip
            unit = "{row}" if kind == "feature" else "{prediction}"
            meter.create_observable_counter(
                f"{prefix}.observations", [self._counts_callback(kind)], unit=unit,
                description=f"Scored {kind} values per reference bin (every bin exists from start-up).",
            )  # fmt: skip
            meter.create_observable_gauge(
                f"{prefix}.reference", [self._reference_callback(kind)], unit="1",
                description="Training share of each bin (the reference distribution).",
            )  # fmt: skip
            meter.create_observable_gauge(
                f"{prefix}.drift.score", [self._drift_callback(kind)], unit="{score}",
                description="Drift over the in-process sliding window: method=psi or js (Jensen-Shannon distance).",
            )  # fmt: skip
        meter.create_observable_counter(
            "model.data_quality.issues", [self._quality_callback], unit="{issue}",
            description="Values with a data-quality problem, by feature and reason.",
        )  # fmt: skip
        meter.create_observable_counter(
            "model.rows.rejected", [self._rejected_callback], unit="{row}",
            description="Rows in requests rejected by validation.",
        )  # fmt: skip
        if self.card.task == "regression":
            meter.create_observable_gauge(
                "model.prediction.reference.spread", [self._spread_callback],
                description="p90 - p10 of the training predictions: the scale for prediction disagreements.",
            )  # fmt: skip
        meter.create_observable_gauge("model.age", [self._age_callback], unit="s",
                                      description="Seconds since the serving model was trained.")  # fmt: skip
        meter.create_observable_gauge("model.reference.age", [self._reference_age_callback], unit="s",
                                      description="Seconds since the reference profile was computed.")  # fmt: skip
        meter.create_observable_gauge("model.training.duration", [self._training_callback], unit="s",
                                      description="How long training the serving model took.")  # fmt: skip

    def _counts_callback(self, kind: str) -> Any:
        segments = [s for s in self._segments if s.kind == kind]

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                self._fold()
                totals = self._totals.copy()
            for segment in segments:
                for index in range(segment.start, segment.stop):
                    yield Observation(int(totals[index]), self._attributes[index])

        return callback

    def _reference_callback(self, kind: str) -> Any:
        observations = [
            Observation(share, self._attributes[segment.start + offset])
            for segment in self._segments if segment.kind == kind and sum(segment.distribution.shares) > 0
            for offset, share in enumerate(segment.distribution.shares)
        ]  # fmt: skip

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return observations

        return callback

    def _drift_callback(self, kind: str) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            for (segment_kind, name, value), (psi_value, js_value) in self.window_scores().items():
                if segment_kind != kind or np.isnan(psi_value):
                    continue
                attributes = dict(self._common)
                if kind == "feature":
                    attributes["feature"] = name
                elif kind == "slice":
                    attributes["slice"], attributes["slice_value"] = name, value
                yield Observation(psi_value, {**attributes, "method": "psi"})
                yield Observation(js_value, {**attributes, "method": "js"})

        return callback

    def _quality_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            self._fold()
            quality = self._quality.copy()
        for column, spec in enumerate(self.card.features):
            for index, reason in enumerate(QUALITY_REASONS):
                if reason in _REASONS_BY_TYPE[spec.type]:
                    attributes = {**self._common, "feature": spec.name, "reason": reason}
                    yield Observation(int(quality[column, index]), attributes)

    def _rejected_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._rejected_rows, self._common)

    def _spread_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        edges = self.profile.prediction.edges
        if len(edges) > 1:
            yield Observation(edges[-1] - edges[0], self._common)

    def _age_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(max(time.time() - self._trained_at, 0.0), self._common)

    def _reference_age_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(max(time.time() - self._profiled_at, 0.0), self._common)

    def _training_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.card.training_duration_seconds, self._common)


_REASONS_BY_TYPE = {
    "numeric": frozenset({"missing", "non_finite", "wrong_type", "below_min", "above_max"}),
    "categorical": frozenset({"missing", "wrong_type", "unknown_category"}),
}


class _Binner:
    """Turns a request's rows into flat bin indices (n × features) and data-quality counts (features × reasons)."""

    def __init__(self, card: ModelCard, profile: ReferenceProfile, starts: Sequence[int]) -> None:
        self._starts = np.asarray(starts, dtype=np.intp)[None, :]
        specs = card.features
        self._numeric = [j for j, spec in enumerate(specs) if spec.type == "numeric"]
        self._categorical = [j for j, spec in enumerate(specs) if spec.type != "numeric"]
        self._all_numeric = not self._categorical
        distributions = [profile.features[spec.name] for spec in specs]
        width = max((len(distributions[j].edges) for j in self._numeric), default=0)
        edges = np.full((len(self._numeric), max(width, 1)), np.inf)
        for row, j in enumerate(self._numeric):
            edges[row, : len(distributions[j].edges)] = distributions[j].edges
        self._edges = edges[None, :, :]
        self._missing_bin = np.array([[len(distributions[j].labels) - 1 for j in self._numeric]], dtype=np.intp)
        self._mins = np.array([specs[j].min for j in self._numeric], dtype=np.float64)
        self._maxs = np.array([specs[j].max for j in self._numeric], dtype=np.float64)
        self._categorical_bins = [distributions[j] for j in self._categorical]
        self._features = len(specs)

    def bin(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat bin indices (n × features) and the request's data-quality counts (features × reasons)."""
        quality = np.zeros((self._features, len(QUALITY_REASONS)), dtype=np.int64)
        if self._all_numeric:
            bins = self._numeric_bins(rows, quality)
            return bins + self._starts, quality
        bins = np.empty((len(rows), self._features), dtype=np.intp)
        if self._numeric:
            numeric_quality = np.zeros((len(self._numeric), len(QUALITY_REASONS)), dtype=np.int64)
            bins[:, self._numeric] = self._numeric_bins(rows[:, self._numeric].astype(np.float64), numeric_quality)
            quality[self._numeric] = numeric_quality
        for position, j in enumerate(self._categorical):
            distribution = self._categorical_bins[position]
            column_bins = distribution.bin_indices(rows[:, j])
            bins[:, j] = column_bins
            quality[j, _REASON_INDEX["missing"]] = int((column_bins == len(distribution.labels) - 1).sum())
            quality[j, _REASON_INDEX["unknown_category"]] = int((column_bins == len(distribution.categories)).sum())
        return bins + self._starts, quality

    def _numeric_bins(self, values: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Bins of a float matrix of the numeric features, for every column at once; fills `quality` in place."""
        # The number of edges strictly below a value is its bin (searchsorted, side="left"); +inf padding never
        # counts, and NaN compares false everywhere, so a missing value is moved to its own bin below.
        bins = (values[:, :, None] > self._edges).sum(axis=2)
        missing = np.isnan(values)
        if missing.any():
            bins = np.where(missing, self._missing_bin, bins)
            quality[:, _MISSING] = missing.sum(axis=0)
        quality[:, _BELOW_MIN] = (values < self._mins).sum(axis=0)
        quality[:, _ABOVE_MAX] = (values > self._maxs).sum(axis=0)
        return bins


def _empty_like(distribution: Distribution) -> Distribution:
    return Distribution(
        distribution.kind, distribution.labels, tuple(0.0 for _ in distribution.labels),
        distribution.edges, distribution.categories, distribution.has_missing,
    )  # fmt: skip


def _timestamp(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 6)
