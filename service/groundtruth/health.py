"""The prediction log's health as metrics: how far behind it is, whether it is failing, and what it did not log.

Read at collection time from `PredictionLog.health()` (a few counters under a lock), never on the request path.
Per process: with several workers or replicas, sum (queue, dropped) or take the max (failing) over instances.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from service.groundtruth.store import PredictionLog

__all__ = ["DROP_REASONS", "register_log_instruments"]

# `prediction_log.dropped` attributes: what was not logged (`record`) and why (`reason`); 4 series at most.
DROP_REASONS = ("queue_full", "writer_failed", "unserializable")


def register_log_instruments(meter: Meter, log: PredictionLog) -> None:
    """`prediction_log.queue.depth`, `prediction_log.failing`, `prediction_log.write.errors` and
    `prediction_log.dropped`, every series present from start-up at zero."""

    def depth(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(log.health().pending)

    def failing(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1 if log.health().failing else 0)

    def write_errors(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(log.health().write_errors)

    def dropped(_options: CallbackOptions) -> Iterable[Observation]:
        health = log.health()
        for reason in DROP_REASONS:
            yield Observation(health.dropped.get(reason, 0), {"record": "prediction", "reason": reason})
        yield Observation(health.shadow_dropped, {"record": "shadow", "reason": "queue_full"})

    meter.create_observable_gauge(
        "prediction_log.queue.depth", [depth], unit="{row}",
        description="Predictions queued for the prediction log's writer and not yet committed (this process).",
    )  # fmt: skip
    meter.create_observable_gauge(
        "prediction_log.failing", [failing], unit="",
        description="1 while the prediction log cannot write (its last attempt failed), else 0.",
    )  # fmt: skip
    meter.create_observable_counter(
        "prediction_log.write.errors", [write_errors], unit="{error}",
        description="Failed write attempts of the prediction log (each batch is retried until it commits).",
    )  # fmt: skip
    meter.create_observable_counter(
        "prediction_log.dropped", [dropped], unit="{prediction}",
        description="Predictions answered but not logged (the queue was full, or the writer had died), and "
        "challenger results not logged.",
    )  # fmt: skip
