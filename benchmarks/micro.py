"""In-process micro-benchmarks: ML monitoring per request, drift scoring at collection time, telemetry pieces.

    python -m benchmarks.micro --model DIR [--short] [--json PATH]

Each timing is CPU time per call over `repeat` runs of `number` calls: `min` (the best run, what the report and
the goals use: interference from other processes only ever adds time) and `median`. Pieces use the service's own
setup functions (otel/) with exporters that drop what they get, so they time the request path; the OTLP encoding
that the exporter thread does later is timed separately, per item.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBasedTraceIdRatio
from scipy.spatial.distance import jensenshannon

from benchmarks.bodies import sample_rows
from otel import _wire
from otel.logs import configure_logging, setup_logs
from otel.metrics import setup_metrics
from otel.openmetrics import OpenMetricsReader
from otel.resource import build_resource
from otel.tracing import setup_tracing
from service.artifact.card import ModelCard
from service.artifact.model import Model, load_model
from service.artifact.profile import Distribution, ReferenceProfile
from service.monitoring.drift import PSI_EPSILON
from service.monitoring.monitor import ModelMonitor

__all__ = ["main", "run"]

_Scores = dict[tuple[str, str, str], tuple[float, float]]


# --- timing -------------------------------------------------------------------------------------------------------
def _time_us(call: Callable[[], object], *, number: int, repeat: int) -> dict[str, float]:
    """Microseconds per call over `repeat` runs of `number` calls (after one warm-up run).

    `median` and `min` are the process's CPU time (user + system, all threads), not wall time: on a shared machine
    a descheduled process would otherwise be charged for its neighbours. `wall_median` is there for comparison.
    """
    cpu, wall = [], []
    for attempt in range(repeat + 1):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        for _ in range(number):
            call()
        if attempt:  # the first run warms caches and lazy imports up
            cpu.append((time.process_time() - start_cpu) / number * 1e6)
            wall.append((time.perf_counter() - start_wall) / number * 1e6)
    return {
        "median": round(statistics.median(cpu), 3),
        "min": round(min(cpu), 3),
        "wall_median": round(statistics.median(wall), 3),
        "calls": number * repeat,
    }


def _scaled(timing: dict[str, float], factor: float) -> dict[str, float]:
    """A timing per call turned into a timing per item (a row of a batch, a span of an export)."""
    return {key: round(value * factor, 3) for key, value in timing.items() if key != "calls"}


# --- exporters that drop everything (the request path's cost, without a network) --------------------------------
class _DropSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _KeepLogs(LogRecordExporter):
    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.records: list[Any] = []

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if self.keep:
            self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class _DropMetrics(MetricExporter):
    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


# --- ML monitoring --------------------------------------------------------------------------------------------
def bench_monitor(model: Model, profile: ReferenceProfile, meter: Any, *, short: bool) -> dict[str, Any]:
    """`ModelMonitor.observe` for a single-row request and for 100-row requests (default 10-minute window),
    averaged over many calls: the cost of binning held-back rows (one fold per 64 rows) is included."""
    card = model.card
    monitor = ModelMonitor(meter, card, profile)
    single = [(rows, model.predict_array(rows)) for rows in np.split(sample_rows(card, 64, seed=0), 64)]
    batch = [(rows, model.predict_array(rows)) for rows in np.split(sample_rows(card, 800, seed=1), 8)]
    cycle = {"single": 0, "batch": 0}

    def observe(kind: str, inputs: list[tuple[np.ndarray, np.ndarray]]) -> Callable[[], None]:
        def call() -> None:
            cycle[kind] = (cycle[kind] + 1) % len(inputs)
            rows, predictions = inputs[cycle[kind]]
            monitor.observe(rows, predictions)

        return call

    repeat = 2 if short else 7
    one = _time_us(observe("single", single), number=1_000 if short else 20_000, repeat=repeat)
    hundred = _time_us(observe("batch", batch), number=100 if short else 2_000, repeat=repeat)
    return {
        "single_row_us": one,
        "batch100_us_per_request": hundred,
        "batch100_us_per_row": _scaled(hundred, 1 / 100),
    }


# --- drift scores: at collection time vs from raw rows --------------------------------------------------------
def _bin_counts(distribution: Distribution, values: np.ndarray) -> np.ndarray:
    """Counts per bin, straight from the profile's definition: numeric bins (-inf, e0], (e0, e1], …, (ek, inf),
    then the missing bin; categorical values by category, then unseen, then missing."""
    bins = len(distribution.labels)
    if distribution.kind == "numeric":
        numbers = values.astype(np.float64)
        indices = np.searchsorted(np.asarray(distribution.edges), numbers, side="left")
        if distribution.has_missing:
            indices[np.isnan(numbers)] = bins - 1
    else:
        lookup = {category: index for index, category in enumerate(distribution.categories)}
        indices = np.array([lookup.get(value, len(distribution.categories)) for value in values], dtype=np.intp)
    return np.bincount(indices, minlength=bins)


def _psi(reference: np.ndarray, counts: np.ndarray) -> float:
    p = np.maximum(reference, PSI_EPSILON)
    q = np.maximum(counts / counts.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def recompute_scores(card: ModelCard, profile: ReferenceProfile, rows: np.ndarray, predictions: np.ndarray) -> _Scores:
    """PSI (numpy) and Jensen–Shannon distance (scipy) from the window's raw rows and predictions."""
    scores: _Scores = {}
    columns = [("feature", spec.name, profile.features[spec.name], rows[:, j]) for j, spec in enumerate(card.features)]
    columns.append(("prediction", "", profile.prediction, predictions))
    for kind, name, distribution, values in columns:
        counts = _bin_counts(distribution, values)
        reference = np.asarray(distribution.shares, dtype=np.float64)
        scores[(kind, name, "")] = (_psi(reference, counts), float(jensenshannon(reference, counts)))
    return scores


def bench_drift(model: Model, profile: ReferenceProfile, meter: Any, *, window_rows: int) -> dict[str, Any]:
    """Scores for every feature and the predictions over a window of `window_rows` rows, two ways.

    The monitor keeps bin counts and scores them at collection time (`window_scores`, timed after one more request
    so it cannot reuse the last readings); the naive way keeps the window's raw rows and recomputes bins and scores
    from them with numpy and scipy. Same rows, same bins: the scores must agree (to floating-point rounding).
    """
    card = model.card
    monitor = ModelMonitor(meter, card, profile, clock=lambda: 0.0)  # a frozen clock: every row is in the window
    rows = sample_rows(card, window_rows, seed=2)
    predictions = model.predict_array(rows)
    for start in range(0, window_rows, 100):
        monitor.observe(rows[start : start + 100], predictions[start : start + 100])
    collected = monitor.window_scores()
    recomputed = recompute_scores(card, profile, rows, predictions)
    compared = {key: value for key, value in collected.items() if key in recomputed}
    missing = (float("nan"), float("nan"))
    max_difference = max(
        abs(a - b) for key, pair in recomputed.items() for a, b in zip(pair, compared.get(key, missing), strict=True)
    )
    one_row, one_prediction = rows[:1], predictions[:1]

    def collect_after_a_request() -> None:
        # The monitor reuses readings while the window's counts are unchanged; a real scrape follows new rows.
        monitor.observe(one_row, one_prediction)
        monitor.window_scores()

    collection = _time_us(collect_after_a_request, number=20, repeat=5)
    recompute = _time_us(lambda: recompute_scores(card, profile, rows, predictions), number=1, repeat=5)
    return {
        "window_rows": window_rows,
        "scores": len(recomputed),
        "collection_us": collection,
        "recompute_us": recompute,
        "speedup": round(recompute["median"] / collection["median"], 1),
        "max_abs_difference": max_difference,
        "identical": bool(len(compared) == len(recomputed) and max_difference <= 1e-9),
    }


# --- telemetry pieces -------------------------------------------------------------------------------------------
def bench_pieces(*, short: bool) -> dict[str, Any]:
    """Per-request telemetry pieces, each with the service's setup (otel/) and exporters that drop everything."""
    resource = build_resource(service_name="modellens-bench", service_version="0.0.0", instance_id="bench")
    # As the service: one reader behind /metrics, whose collections otel.metrics.MetricPusher also pushes.
    meter = setup_metrics(resource, [OpenMetricsReader()]).get_meter("bench")
    sampled = setup_tracing(resource, _DropSpans(), sampler=ALWAYS_ON).get_tracer("bench")
    ten_percent = setup_tracing(resource, _DropSpans(), sampler=ParentBasedTraceIdRatio(0.1)).get_tracer("bench")
    attributes = {"model.name": "diabetes", "model.version": "0123456789ab"}
    counter = meter.create_counter("bench.predictions", unit="{prediction}")
    histogram = meter.create_histogram("bench.duration", unit="s")
    number, repeat = (1_000, 2) if short else (20_000, 7)
    results: dict[str, Any] = {}

    def span(tracer: Any) -> Callable[[], None]:
        def call() -> None:
            with tracer.start_as_current_span("inference", attributes=attributes):
                pass

        return call

    results["span_start_end_sampled"] = _time_us(span(sampled), number=number, repeat=repeat)
    results["span_start_end_10pct"] = _time_us(span(ten_percent), number=number, repeat=repeat)
    success = {**attributes, "outcome": "success"}
    results["counter_add"] = _time_us(lambda: counter.add(1, success), number=number, repeat=repeat)
    # Every reader processes every measurement: the stock setup, a pull reader plus a PeriodicExportingMetricReader.
    readers = [OpenMetricsReader(), PeriodicExportingMetricReader(_DropMetrics(), export_interval_millis=3_600_000)]
    stock = MeterProvider(resource=resource, metric_readers=readers).get_meter("bench")
    two_readers = stock.create_counter("bench.two")
    results["counter_add_two_readers"] = _time_us(lambda: two_readers.add(1, success), number=number, repeat=repeat)
    # The service's histograms are aggregated in process (otel.histograms); the SDK's own, on one reader, for scale.
    sdk_histogram = MeterProvider(resource=resource, metric_readers=[OpenMetricsReader()]).get_meter("bench")
    sdk_duration = sdk_histogram.create_histogram("bench.duration", unit="s")
    http: dict[str, str | int] = {"http.request.method": "POST", "url.scheme": "http", "http.route": "/predict"}
    http["http.response.status_code"] = 200
    for key, instrument, labels in (
        ("histogram_record", histogram, attributes),
        ("histogram_record_http", histogram, http),
        ("histogram_record_sdk", sdk_duration, attributes),
        ("histogram_record_sdk_http", sdk_duration, http),
    ):
        results[key] = _time_us(lambda i=instrument, a=labels: i.record(0.0012, a), number=number, repeat=repeat)
    with sampled.start_as_current_span("request"):  # exemplars are offered only inside a sampled span
        results["histogram_record_in_sampled_span"] = _time_us(
            lambda: histogram.record(0.0012, attributes), number=number, repeat=repeat
        )
    results.update(_bench_log_lines(resource, sampled, number=number // 2, repeat=repeat))
    results.update(_bench_encoding(resource, sampled, number=max(number // 20, 100), repeat=repeat))
    return results


@contextlib.contextmanager
def _restored_logging() -> Iterator[None]:
    """Put the root logger and structlog back as they were (configure_logging changes both)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def _access_line(logger: Any) -> Callable[[], None]:
    def call() -> None:
        logger.info("request", method="POST", route="/predict", status=200, duration_ms=1.234)

    return call


def _bench_log_lines(resource: Any, tracer: Any, *, number: int, repeat: int) -> dict[str, Any]:
    """One access-log line inside a sampled span, as the service logs it: JSON on a stream (here /dev/null) and,
    with a LoggerProvider, the same record bridged into OTel logs."""
    results = {}
    with _restored_logging(), open("/dev/null", "w") as devnull:
        for name, provider, level in (
            ("log_line_stdout_and_otel", setup_logs(resource, _KeepLogs(keep=False)), logging.INFO),
            ("log_line_stdout_only", None, logging.INFO),
            ("log_line_filtered_by_level", None, logging.WARNING),
        ):
            configure_logging(provider, level=level, stream=devnull)
            structlog.contextvars.bind_contextvars(model_version="0123456789ab", rows=1)
            logger = structlog.get_logger("otel.access")
            with tracer.start_as_current_span("request"):
                results[name] = _time_us(_access_line(logger), number=number, repeat=repeat)
            if provider is not None:
                provider.shutdown()
    return results


def _bench_encoding(resource: Any, tracer: Any, *, number: int, repeat: int) -> dict[str, Any]:
    """OTLP protobuf encoding the exporter threads do per span and per log record (512 per batch, the SDK default)."""
    spans: list[ReadableSpan] = []

    class Keep(SpanExporter):
        def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
            spans.extend(batch)
            return SpanExportResult.SUCCESS

    provider = setup_tracing(resource, Keep(), sampler=ALWAYS_ON, batch=False)
    keeper = provider.get_tracer("bench")
    for _ in range(512):
        with keeper.start_as_current_span("inference", attributes={"model.name": "diabetes", "model.batch.size": 1}):
            pass
    kept = _KeepLogs()
    log_provider = setup_logs(resource, kept, batch=False)
    with _restored_logging():
        configure_logging(log_provider, stream=io.StringIO())
        logger = structlog.get_logger("otel.access")
        with tracer.start_as_current_span("request"):
            for _ in range(512):
                _access_line(logger)()
    batch_runs = max(number // 512, 3)
    # The service's exporters encode with otel._wire; the SDK's encoder is timed beside it for scale.
    span_batch = _time_us(lambda: _wire.encode_spans(spans), number=batch_runs, repeat=repeat)
    log_batch = _time_us(lambda: _wire.encode_logs(kept.records), number=batch_runs, repeat=repeat)
    sdk_spans = _time_us(lambda: encode_spans(spans).SerializeToString(), number=batch_runs, repeat=repeat)
    sdk_logs = _time_us(lambda: encode_logs(kept.records).SerializeToString(), number=batch_runs, repeat=repeat)
    return {
        "otlp_encode_per_span": _scaled(span_batch, 1 / 512),
        "otlp_encode_per_log_record": _scaled(log_batch, 1 / 512),
        "otlp_encode_per_span_sdk": _scaled(sdk_spans, 1 / 512),
        "otlp_encode_per_log_record_sdk": _scaled(sdk_logs, 1 / 512),
    }


# --- entry point ------------------------------------------------------------------------------------------------
def run(model_dir: Path, *, short: bool = False, window_rows: int | None = None) -> dict[str, Any]:
    model = load_model(model_dir)
    profile = ReferenceProfile.load(model_dir)
    resource = build_resource(service_name="modellens-bench", service_version="0.0.0", instance_id="bench")
    meter = setup_metrics(resource, [OpenMetricsReader()]).get_meter("bench")
    rows = window_rows or (20_000 if short else 600_000)
    return {
        "monitor": bench_monitor(model, profile, meter, short=short),
        "drift": bench_drift(model, profile, meter, window_rows=rows),
        "pieces_us": bench_pieces(short=short),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a trained model directory (modellens train)")
    parser.add_argument("--short", action="store_true", help="few iterations: proves it runs, times are rough")
    parser.add_argument("--window-rows", type=int, help="rows in the drift window (default 600k; 20k with --short)")
    parser.add_argument("--json", type=Path, help="write the results here (default: print them)")
    args = parser.parse_args(argv)
    results = run(args.model, short=args.short, window_rows=args.window_rows)
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
