"""The in-process trace store: tail retention, logs that live and die with their trace, and its bounds."""

from __future__ import annotations

import time

import pytest
from opentelemetry import trace as api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel.requestseries import RequestSeries
from otel.spanstore import SpanStore

SECOND = 1_000_000_000


def _trace(
    provider: TracerProvider, store: SpanStore, *, route: str, ms: float, error: bool = False, logs: int = 1,
    at: int | None = None,
) -> str:  # fmt: skip
    """One request's trace (a server span and a child) ending at `at`, with `logs` log lines; its trace id."""
    tracer = provider.get_tracer("test")
    start = at if at is not None else time.time_ns()
    end = start + int(ms * 1e6)
    root = tracer.start_span(f"POST {route}", kind=SpanKind.SERVER, attributes={"http.route": route}, start_time=start)
    trace_id = format(root.get_span_context().trace_id, "032x")
    with api.use_span(root, end_on_exit=False):
        child = tracer.start_span("inference", start_time=start + 1000)
        child.end(end_time=end - 1000)
    for index in range(logs):
        store.add_log({"event": "request", "level": "info", "trace_id": trace_id, "index": index}, start)
    if error:
        root.set_status(Status(StatusCode.ERROR))
    root.end(end_time=end)
    return trace_id


def _store(**options: object) -> tuple[TracerProvider, SpanStore]:
    store = SpanStore(**options)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(store)
    return provider, store


class TestRetention:
    def test_a_trace_is_kept_whole_with_its_logs(self) -> None:
        provider, store = _store()
        trace_id = _trace(provider, store, route="/predict", ms=12, logs=2)
        trace = store.get(trace_id)
        assert trace is not None
        assert [span.name for span in trace.spans] == ["inference", "POST /predict"]
        assert trace.root is not None and trace.root.parent_span_id is None
        assert [record.fields["index"] for record in trace.logs] == [0, 1]
        assert trace.duration_ms == 12

    def test_recent_per_bucket_then_errors_and_the_slowest_stay(self) -> None:
        provider, store = _store(recent_per_bucket=3, slice_seconds=60)
        now = time.time_ns()
        slow = _trace(provider, store, route="/predict", ms=900, at=now)
        failed = _trace(provider, store, route="/predict", ms=5, error=True, at=now)
        fast = [_trace(provider, store, route="/predict", ms=5, at=now + i) for i in range(50)]
        kept = {summary.trace_id for summary in store.summaries()}
        assert slow in kept and failed in kept  # slowest of its minute; an error
        assert set(fast[-3:]) <= kept and not set(fast[:-3]) & kept  # only the newest three of the 5 ms bucket
        assert store.get(fast[0]) is None

    def test_a_trace_and_its_logs_go_together(self) -> None:
        provider, store = _store(recent_per_bucket=1)
        first = _trace(provider, store, route="/predict", ms=6, logs=3)
        second = _trace(provider, store, route="/predict", ms=7, logs=3)  # the same latency bucket, slower
        assert store.get(first) is None  # replaced as the recent one of its bucket, and as the slowest
        assert store.get(second) is not None
        assert len(store.logs(text="request")) == 6  # the ring still has every line, for the log view
        assert all(record.trace_id != first for trace in [store.get(second)] if trace for record in trace.logs)


class TestBounds:
    @pytest.mark.slow  # 100k traces through the SDK: about half a minute
    def test_stays_within_its_bounds_under_100k_requests_and_keeps_errors_and_the_slow(self) -> None:
        provider, store = _store(max_traces=300, max_bytes=2 * 1024 * 1024, max_errors=50, slices=10)
        start = time.time_ns() - 100_000 * SECOND // 100  # 100 requests a second over the last 1000 s
        errors, slowest = [], []
        peak = 0
        for index in range(100_000):
            at = start + index * SECOND // 100
            if index % 10_000 == 5_000:
                slowest.append(_trace(provider, store, route="/predict", ms=2000 + index / 1000, at=at, logs=0))
            elif index % 997 == 0:
                errors.append(_trace(provider, store, route="/predict", ms=3, error=True, at=at, logs=0))
            else:
                _trace(provider, store, route=("/predict", "/feedback")[index % 2], ms=1 + index % 40, at=at, logs=0)
            if index % 1000 == 0:
                stats = store.stats()
                peak = max(peak, stats["traces"])
                assert stats["bytes"] <= 2 * 1024 * 1024
        stats = store.stats()
        assert peak <= 300 and stats["traces"] <= 300
        kept = {summary.trace_id for summary in store.summaries()}
        assert set(errors[-50:]) <= kept  # the newest errors, up to their bound
        assert slowest[-1] in kept  # the slowest of the last slices
        assert stats["pending"] == 0

    def test_a_byte_budget_evicts_whole_traces(self) -> None:
        provider, store = _store(max_bytes=20_000)
        for index in range(200):
            _trace(provider, store, route=f"/r{index % 7}", ms=1 + index % 30, logs=5)
        stats = store.stats()
        assert stats["bytes"] <= 20_000 and stats["evicted"] > 0
        for summary in store.summaries():
            trace = store.get(summary.trace_id)
            assert trace is not None and len(trace.logs) == 5  # never a trace without its logs


class TestLogView:
    def test_filters_by_level_text_and_age(self) -> None:
        store = SpanStore()
        now = time.time_ns()
        store.add_log({"event": "old", "level": "error"}, now - 3600 * SECOND)
        store.add_log({"event": "fault injected", "level": "warning", "stage": "feature_lookup"}, now)
        store.add_log({"event": "request", "level": "info", "route": "/predict"}, now)
        assert [r.event for r in store.logs(level="warning")] == ["fault injected", "old"]
        assert [r.event for r in store.logs(text="feature_lookup")] == ["fault injected"]
        assert [r.event for r in store.logs(since_ns=now - SECOND)] == ["request", "fault injected"]


class TestRequestSeries:
    def test_rate_errors_quantiles_and_exemplars_per_route(self) -> None:
        series = RequestSeries(slot_seconds=10)
        for index in range(100):
            series.observe("/predict", 500 if index < 5 else 200, 0.004, f"{index:032x}")
        series.observe("/predict", 200, 0.8, "f" * 32)
        series.observe(None, 404, 0.001, None)
        snapshot = series.snapshot()
        (point,) = snapshot["routes"]["/predict"]["points"]
        assert point["requests"] == 101 and point["error_ratio"] == 5 / 101
        assert 0.0025 <= point["p50"] <= 0.005  # inside the bucket that holds the median
        exemplars = snapshot["routes"]["/predict"]["exemplars"]
        assert {"seconds": 0.8, "trace_id": "f" * 32} in [{k: e[k] for k in ("seconds", "trace_id")} for e in exemplars]
        assert "(unmatched)" in snapshot["routes"]  # never the raw path
