"""Shadow mode: a challenger model scores the same rows off the request path and is compared with the live one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import structlog
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, Tracer

from otel.metrics import SECONDS_BUCKETS
from service.artifact.model import Model

__all__ = ["ShadowScorer"]

_log = structlog.get_logger("service.monitoring.shadow")
_FRACTIONS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

ResultHandler = Callable[[Sequence[str], np.ndarray], None]


class ShadowScorer:
    """Scores rows with the challenger in a bounded pool; when the pool is busy the rows are skipped and counted.

    The live response never waits: `submit` only hands work over (or skips it). Each shadow run is a span in the
    request's trace, so a trace shows both models side by side.
    """

    def __init__(
        self,
        challenger: Model,
        live: Model,
        meter: Meter,
        tracer: Tracer,
        *,
        workers: int = 1,
        queue_limit: int = 32,
        prediction_scale: float = 1.0,
        on_result: ResultHandler | None = None,
    ) -> None:
        if challenger.card.feature_names != live.card.feature_names:
            raise ValueError(
                f"the shadow model {challenger.card.name} {challenger.card.version} takes features "
                f"{list(challenger.card.feature_names)}, the live model {list(live.card.feature_names)}"
            )
        if challenger.card.task != live.card.task:
            raise ValueError(f"the shadow model is a {challenger.card.task} model, the live one {live.card.task}")
        self.challenger, self.live = challenger, live
        self._tracer = tracer
        self.on_result = on_result
        self._slots = threading.BoundedSemaphore(queue_limit)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shadow")
        self._attributes = {
            "model.name": live.card.name,
            "model.version": live.card.version,
            "shadow_model.version": challenger.card.version,
        }
        self._duration = meter.create_histogram(
            "model.shadow.duration", unit="s", description="Challenger scoring time per request (off the request path)",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )  # fmt: skip
        self._errors = meter.create_counter("model.shadow.errors", description="Challenger failures.")
        self._skipped = meter.create_counter(
            "model.shadow.skipped", unit="{row}", description="Rows not shadowed because the shadow pool was full."
        )
        self._comparisons = meter.create_counter(
            "model.shadow.comparisons", unit="{row}", description="Rows scored by both models, by outcome."
        )
        self._disagreement = meter.create_histogram(
            "model.shadow.disagreement", description="Regression: |live − challenger| per row.",
            explicit_bucket_boundaries_advisory=[prediction_scale * f for f in _FRACTIONS],
        )  # fmt: skip
        self._lock = threading.Lock()
        self._stats = {"compared": 0, "disagreed": 0, "absolute_difference_sum": 0.0, "skipped": 0, "errors": 0}

    def submit(self, rows: np.ndarray, live: np.ndarray, prediction_ids: Sequence[str]) -> bool:
        """Queue rows for the challenger; False (and counted) when the pool is full. Never blocks."""
        if not self._slots.acquire(blocking=False):
            self._skipped.add(len(rows), self._attributes)
            with self._lock:
                self._stats["skipped"] += len(rows)
            return False
        parent = trace.get_current_span().get_span_context()
        try:
            self._pool.submit(self._score, rows, live, list(prediction_ids), parent)
        except RuntimeError:  # the pool is shutting down
            self._slots.release()
            return False
        return True

    def summary(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
        compared = int(stats["compared"])
        summary: dict[str, Any] = {
            "model_version": self.challenger.card.version,
            "rows_compared": compared,
            "rows_skipped": stats["skipped"],
            "errors": stats["errors"],
        }
        if self.live.card.task == "classification":
            summary["disagreement_rate"] = stats["disagreed"] / compared if compared else None
        else:
            summary["mean_absolute_difference"] = stats["absolute_difference_sum"] / compared if compared else None
        return summary

    def close(self) -> None:
        """Finish queued shadow work (at most `queue_limit` requests) and stop the pool."""
        self._pool.shutdown(wait=True)

    def _score(self, rows: np.ndarray, live: np.ndarray, prediction_ids: list[str], parent: SpanContext) -> None:
        try:
            context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent.is_valid else None
            with self._tracer.start_as_current_span(
                "shadow inference",
                context=context,
                attributes={**self._attributes, "model.batch.size": len(rows)},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                started = time.perf_counter()
                try:
                    challenger = self.challenger.predict_array(rows)
                except Exception as error:
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                    self._errors.add(1, self._attributes)
                    with self._lock:
                        self._stats["errors"] += 1
                    _log.warning("shadow model failed", error=type(error).__name__, rows=len(rows))
                    return
                self._duration.record(time.perf_counter() - started, self._attributes)
                self._compare(live, challenger)
                if self.on_result is not None:
                    self.on_result(prediction_ids, challenger)
        finally:
            self._slots.release()

    def _compare(self, live: np.ndarray, challenger: np.ndarray) -> None:
        if self.live.card.task == "classification":
            disagreed = int(np.sum(live.astype(str) != challenger.astype(str)))
            agreed = len(live) - disagreed
            if agreed:
                self._comparisons.add(agreed, {**self._attributes, "outcome": "agree"})
            if disagreed:
                self._comparisons.add(disagreed, {**self._attributes, "outcome": "disagree"})
            difference = 0.0
        else:
            gaps = np.abs(live.astype(np.float64) - challenger.astype(np.float64))
            for gap in gaps.tolist():
                self._disagreement.record(gap, self._attributes)
            self._comparisons.add(len(live), {**self._attributes, "outcome": "compared"})
            disagreed, difference = 0, float(gaps.sum())
        with self._lock:
            self._stats["compared"] += len(live)
            self._stats["disagreed"] += disagreed
            self._stats["absolute_difference_sum"] += difference
