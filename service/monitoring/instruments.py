"""The model's own metrics, as OpenTelemetry instruments (their Prometheus names are in the README)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel.metrics import SECONDS_BUCKETS
from service.artifact.card import ModelCard

__all__ = ["BATCH_BUCKETS", "ModelInstruments"]

BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class ModelInstruments:
    """Inference duration, predictions by outcome, batch size, and a model-info gauge carrying the version."""

    def __init__(self, meter: Meter, card: ModelCard) -> None:
        self.card = card
        self.attributes = {"model.name": card.name, "model.version": card.version}
        self._success = {**self.attributes, "outcome": "success"}
        self._error = {**self.attributes, "outcome": "error"}
        self.inference_duration = meter.create_histogram(
            "model.inference.duration",
            unit="s",
            description="Time the model takes to score one request's rows.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        # Counted here and read at collection time: one add per request through the SDK costs more than the
        # integer increment, for every reader.
        self._rows = {"success": 0, "error": 0}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            "model.predictions",
            callbacks=[self._observe_predictions],
            unit="{prediction}",
            description="Rows scored, by outcome (success, error).",
        )
        self.batch_size = meter.create_histogram(
            "model.batch.size",
            unit="{row}",
            description="Rows per scoring request.",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        meter.create_observable_gauge(
            "model.info",
            callbacks=[self._observe_info],
            unit="",
            description="Always 1; the labels say which model name, version and task is serving.",
        )

    def record_success(self, rows: int, seconds: float) -> None:
        self.inference_duration.record(seconds, self.attributes)
        self.batch_size.record(rows, self.attributes)
        with self._lock:  # `+=` on a shared int is not atomic across threads
            self._rows["success"] += rows

    def record_error(self, rows: int) -> None:
        with self._lock:
            self._rows["error"] += rows

    def _observe_predictions(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._rows["success"], self._success)
        yield Observation(self._rows["error"], self._error)

    def _observe_info(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1, {**self.attributes, "model.task": self.card.task})
