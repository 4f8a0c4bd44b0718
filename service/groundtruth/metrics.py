"""Realized performance: joined ground-truth labels exported as counters PromQL can divide over any window."""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from opentelemetry.metrics import Counter, Meter

from service.artifact import OTHER, ModelCard
from service.groundtruth.records import FeedbackResult, JoinedLabel

__all__ = ["DELAY_BUCKETS", "FeedbackInstruments"]

# Seconds to a week: labels arrive anywhere from a click later to a weekly batch job later.
DELAY_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800,
)  # fmt: skip
MAX_SLICE_VALUE = 64  # characters; longer slice values are not exported as label values
SCORE_BINS = 20  # predicted-probability bins for ROC AUC: bin b holds [b/20, (b+1)/20), the last includes 1
CONFIDENCE_BINS = 10  # predicted-class confidence bins for the reliability table

_Sums = defaultdict[tuple[tuple[str, str], ...], float]  # attribute items of one series → amount to add


class FeedbackInstruments:
    """Realized performance from joined labels, as counters PromQL can divide over any window.

    Regression: labels joined and sums of absolute and squared errors (MAE = Σ|e| / n, RMSE = √(Σe² / n)).
    Classification: labels correct or incorrect, and the confusion matrix over the card's classes. Also the
    label delay, rejected labels, and the same counts per configured slice. Every series carries the model
    name and version that made the prediction (stored with it), which may be older than the serving model;
    rejected labels, which have no stored prediction to ask, carry the serving model's. Class labels come only
    from the card: a prediction of a class the serving card does not know counts as correct or incorrect but
    stays out of the confusion matrix.
    """

    def __init__(
        self,
        meter: Meter,
        card: ModelCard,
        slice_names: Sequence[str],
        slice_values: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self.card = card
        self._regression = card.task == "regression"
        self._classes = frozenset(card.classes)
        self._slices = frozenset(slice_names)
        # The reference profile's values per slice: any other stored value is exported as `__other__`, so a
        # label value never comes from a request. None: values up to MAX_SLICE_VALUE characters pass as they are.
        self._slice_values = None if slice_values is None else {k: frozenset(v) for k, v in slice_values.items()}
        self._current = {"model.name": card.name, "model.version": card.version}
        self.labels = meter.create_counter(
            "model.feedback.labels",
            unit="{label}",
            description="Ground-truth labels joined to predictions, by outcome (joined, correct, incorrect).",
        )
        self.delay = meter.create_histogram(
            "model.feedback.delay",
            unit="s",
            description="Time from a prediction to the arrival of its ground truth.",
            explicit_bucket_boundaries_advisory=DELAY_BUCKETS,
        )
        self.rejected = meter.create_counter(
            "model.feedback.rejected",
            unit="{label}",
            description="Labels not joined, by reason (unknown_id, duplicate).",
        )
        self.slice_labels = meter.create_counter(
            "model.slice.feedback.labels", unit="{label}", description="Joined labels per slice value, by outcome."
        )
        if self._regression:
            self.absolute_error = meter.create_counter(
                "model.feedback.absolute_error", description="Sum of |actual − prediction| over joined labels."
            )
            self.squared_error = meter.create_counter(
                "model.feedback.squared_error", description="Sum of (actual − prediction)² over joined labels."
            )
            self.slice_absolute_error = meter.create_counter(
                "model.slice.feedback.absolute_error", description="Sum of |actual − prediction| per slice value."
            )
            self.slice_squared_error = meter.create_counter(
                "model.slice.feedback.squared_error", description="Sum of (actual − prediction)² per slice value."
            )
        else:
            self.class_labels = meter.create_counter(
                "model.feedback.class_labels",
                unit="{label}",
                description="Joined labels by actual and predicted class: the confusion matrix.",
            )
        # Labels of predictions that logged calibrated probabilities (docs/metrics.md, "ROC AUC and calibration"):
        # per one-vs-rest class (a binary model: its second class only), the label's side and the bin of that
        # class's probability, with the count in lower bins beside it so PromQL needs no cumulative sum.
        self._scored_classes: tuple[str, ...] = ()
        if card.task == "classification" and card.calibration_temperature is not None:
            self._scored_classes = card.classes[1:] if len(card.classes) == 2 else card.classes
            self.scores = meter.create_counter(
                "model.feedback.scores", unit="{label}",
                description="Joined labels by class (one-vs-rest), actual (positive|negative) and the bin of the "
                "predicted probability of that class.",
            )  # fmt: skip
            self.scores_below = meter.create_counter(
                "model.feedback.scores.below", unit="{label}",
                description="As model.feedback.scores, counting labels whose probability fell in a lower bin.",
            )  # fmt: skip
            self.confidence = meter.create_counter(
                "model.feedback.confidence", unit="{label}",
                description="Joined labels by the bin of the predicted class's calibrated probability and outcome "
                "(correct|incorrect): the reliability table.",
            )  # fmt: skip
        self._bins: defaultdict[tuple[str, ...], float] = defaultdict(float)  # in-process copy, for the summary
        self._start_at_zero()
        self._lock = threading.Lock()
        self._totals: dict[str, float] = defaultdict(float)

    def summary(self) -> dict[str, Any]:
        """Realized performance since start-up, for `GET /monitoring` (windows are PromQL's job)."""
        with self._lock:
            totals = dict(self._totals)
        labels = totals.get("labels", 0.0)
        summary: dict[str, Any] = {
            "labels": int(labels),
            "unknown_ids": int(totals.get("unknown", 0)),
            "duplicate_ids": int(totals.get("duplicate", 0)),
        }
        if self._regression:
            summary["mae"] = totals.get("absolute", 0.0) / labels if labels else None
            summary["rmse"] = math.sqrt(totals.get("squared", 0.0) / labels) if labels else None
        else:
            summary["accuracy"] = totals.get("correct", 0.0) / labels if labels else None
        if self._scored_classes:
            with self._lock:
                bins = dict(self._bins)
            summary["roc_auc"] = {name: _binned_auc(bins, name) for name in self._scored_classes}
            summary["calibration"] = _reliability(bins)
        return summary

    def record(self, result: FeedbackResult) -> None:
        """Count one request's joined labels (summed per series first) and its rejected ids."""
        labels: _Sums = defaultdict(float)
        absolute: _Sums = defaultdict(float)
        squared: _Sums = defaultdict(float)
        slice_labels: _Sums = defaultdict(float)
        slice_absolute: _Sums = defaultdict(float)
        slice_squared: _Sums = defaultdict(float)
        confusion: _Sums = defaultdict(float)
        for label in result.joined:
            model = (("model.name", label.model_name), ("model.version", label.model_version))
            self.delay.record(label.delay_seconds, dict(model))
            scored = self._score(label)
            if scored is None:
                continue
            outcome, error = scored
            labels[(*model, ("outcome", outcome))] += 1
            if error is not None:
                absolute[model] += abs(error)
                squared[model] += error * error
            elif isinstance(label.prediction, str) and {label.actual, label.prediction} <= self._classes:
                confusion[(*model, ("actual_class", str(label.actual)), ("predicted_class", label.prediction))] += 1
            for slice_name, slice_value in (label.slices or {}).items():
                if slice_name not in self._slices or not isinstance(slice_value, str):
                    continue
                if self._slice_values is not None:
                    if slice_value not in self._slice_values.get(slice_name, ()):
                        slice_value = OTHER
                elif len(slice_value) > MAX_SLICE_VALUE:
                    continue
                series = (*model, ("slice", slice_name), ("slice_value", slice_value))
                slice_labels[(*series, ("outcome", outcome))] += 1
                if error is not None:
                    slice_absolute[series] += abs(error)
                    slice_squared[series] += error * error
        if self._scored_classes:
            self._record_scores(result)
        _add(self.labels, labels)
        _add(self.slice_labels, slice_labels)
        if self._regression:
            _add(self.absolute_error, absolute)
            _add(self.squared_error, squared)
            _add(self.slice_absolute_error, slice_absolute)
            _add(self.slice_squared_error, slice_squared)
        else:
            _add(self.class_labels, confusion)
        with self._lock:
            self._totals["labels"] += sum(labels.values())
            self._totals["correct"] += sum(n for key, n in labels.items() if ("outcome", "correct") in key)
            self._totals["absolute"] += sum(absolute.values())
            self._totals["squared"] += sum(squared.values())
            self._totals["unknown"] += len(result.unknown_ids)
            self._totals["duplicate"] += len(result.duplicate_ids)
        if result.unknown_ids:
            self.rejected.add(len(result.unknown_ids), {**self._current, "reason": "unknown_id"})
        if result.duplicate_ids:
            self.rejected.add(len(result.duplicate_ids), {**self._current, "reason": "duplicate"})

    def _record_scores(self, result: FeedbackResult) -> None:
        """The ROC AUC bins and the reliability table, for labels whose prediction logged probabilities from the
        serving model (an older version's may order or name its classes differently)."""
        scores: _Sums = defaultdict(float)
        below: _Sums = defaultdict(float)
        confidence: _Sums = defaultdict(float)
        local: defaultdict[tuple[str, ...], float] = defaultdict(float)
        classes = self.card.classes
        for label in result.joined:
            probabilities = label.probabilities
            if probabilities is None or label.model_version != self.card.version or len(probabilities) != len(classes):
                continue
            model = (("model.name", label.model_name), ("model.version", label.model_version))
            for name in self._scored_classes:
                side = "positive" if label.actual == name else "negative"
                score_bin = min(int(probabilities[classes.index(name)] * SCORE_BINS), SCORE_BINS - 1)
                scores[(*model, ("class", name), ("actual", side), ("bin", str(score_bin)))] += 1
                local[("score", name, side, str(score_bin))] += 1
                for higher in range(score_bin + 1, SCORE_BINS):
                    below[(*model, ("class", name), ("actual", side), ("bin", str(higher)))] += 1
            predicted = int(np.argmax(probabilities))
            confidence_bin = str(min(int(probabilities[predicted] * CONFIDENCE_BINS), CONFIDENCE_BINS - 1))
            outcome = "correct" if classes[predicted] == label.actual else "incorrect"
            confidence[(*model, ("bin", confidence_bin), ("outcome", outcome))] += 1
            local[("confidence", confidence_bin, outcome)] += 1
        _add(self.scores, scores)
        _add(self.scores_below, below)
        _add(self.confidence, confidence)
        with self._lock:
            for key, value in local.items():
                self._bins[key] += value

    def _score(self, label: JoinedLabel) -> tuple[str, float | None] | None:
        """(outcome, signed error or None); None when the stored prediction cannot be compared at all."""
        prediction, actual = label.prediction, label.actual
        if not self._regression:
            return ("correct" if prediction == actual else "incorrect"), None
        if not _is_number(prediction) or not _is_number(actual):
            return None
        return "joined", float(actual) - float(prediction)

    def _start_at_zero(self) -> None:
        # Series for the serving model exist from start-up, so rate() sees the first labels of a window.
        outcomes = ("joined",) if self._regression else ("correct", "incorrect")
        for outcome in outcomes:
            self.labels.add(0, {**self._current, "outcome": outcome})
        for reason in ("unknown_id", "duplicate"):
            self.rejected.add(0, {**self._current, "reason": reason})
        if self._regression:
            self.absolute_error.add(0.0, self._current)
            self.squared_error.add(0.0, self._current)
            return
        for actual in self.card.classes:
            for predicted in self.card.classes:
                self.class_labels.add(0, {**self._current, "actual_class": actual, "predicted_class": predicted})
        for name in self._scored_classes:
            for side in ("positive", "negative"):
                for score_bin in range(SCORE_BINS):
                    attributes = {**self._current, "class": name, "actual": side, "bin": str(score_bin)}
                    self.scores.add(0, attributes)
                    self.scores_below.add(0, attributes)
        if self._scored_classes:
            for confidence_bin in range(CONFIDENCE_BINS):
                for outcome in ("correct", "incorrect"):
                    self.confidence.add(0, {**self._current, "bin": str(confidence_bin), "outcome": outcome})


def _reliability(bins: Mapping[tuple[str, ...], float]) -> list[dict[str, Any]]:
    """The reliability table: per confidence bin with labels, its range, the labels in it and their accuracy."""
    table = []
    for b in range(CONFIDENCE_BINS):
        correct = bins.get(("confidence", str(b), "correct"), 0.0)
        labels = correct + bins.get(("confidence", str(b), "incorrect"), 0.0)
        if labels:
            table.append(
                {"confidence": [b / CONFIDENCE_BINS, (b + 1) / CONFIDENCE_BINS], "labels": int(labels),
                 "accuracy": correct / labels}
            )  # fmt: skip
    return table


def _binned_auc(bins: Mapping[tuple[str, ...], float], name: str) -> float | None:
    """ROC AUC from the score bins: each positive beats the negatives in lower bins and ties half of its own bin's
    (the Mann-Whitney statistic at the bins' resolution; PromQL computes the same)."""
    positives = [bins.get(("score", name, "positive", str(b)), 0.0) for b in range(SCORE_BINS)]
    negatives = [bins.get(("score", name, "negative", str(b)), 0.0) for b in range(SCORE_BINS)]
    if not sum(positives) or not sum(negatives):
        return None
    below, wins = 0.0, 0.0
    for positive, negative in zip(positives, negatives, strict=True):
        wins += positive * (below + negative / 2)
        below += negative
    return wins / (sum(positives) * sum(negatives))


def _add(counter: Counter, sums: _Sums) -> None:
    for attributes, value in sums.items():
        counter.add(value, dict(attributes))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
