"""otel/logs.py: structlog events on the console and in OpenTelemetry, by the queue fast path and by the handler."""

from __future__ import annotations

import datetime
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry.sdk._logs import Logger as SDKLogger
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otel import _sdk, logs
from otel._wire import encode_logs
from otel.logs import configure_logging, setup_logs
from otel.resource import build_resource
from otel.tracing import setup_tracing
from tests.support.logging_state import restored_logging

RESOURCE = build_resource(service_name="modellens-test", service_version="0.0.0", instance_id="test-instance")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with restored_logging():
        yield


@dataclass(frozen=True)
class _Logs:
    """A provider from `setup_logs` and the in-memory exporter behind it."""

    provider: LoggerProvider
    exporter: InMemoryLogRecordExporter

    def bodies(self) -> list[Any]:
        return [record.log_record.body for record in self.exporter.get_finished_logs()]


def _log_in_span(logs_: _Logs, emit: Any) -> tuple[list[Any], list[dict[str, Any]], str]:
    """Configure logging to `logs_.provider`, call `emit(logger)` inside a sampled span; exported records, console
    lines, and the span's trace id."""
    provider, exporter = logs_.provider, logs_.exporter
    console = io.StringIO()
    configure_logging(provider, stream=console)
    tracer = setup_tracing(RESOURCE, None, sampler=ALWAYS_ON, batch=False).get_tracer("test")
    structlog.contextvars.bind_contextvars(model_version="0123456789ab")
    with tracer.start_as_current_span("request") as span:
        emit(structlog.get_logger("otel.access"))
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.force_flush()
    lines = [json.loads(line) for line in console.getvalue().splitlines()]
    return list(exporter.get_finished_logs()), lines, trace_id


def _provider(*, batch: bool) -> _Logs:
    exporter = InMemoryLogRecordExporter()
    return _Logs(setup_logs(RESOURCE, exporter, batch=batch), exporter)


def _without_times(record: Any) -> bytes:
    record.log_record.timestamp = record.log_record.observed_timestamp = 0
    return encode_logs([record])


def _access(logger: Any) -> None:
    logger.info("request", method="POST", route="/predict", status=200, duration_ms=1.5, note=None, shape=(1, 2))


class TestQueueFastPath:
    """With the batch processor, an event skips the SDK handler but exports exactly what the handler would."""

    def test_batched_events_skip_the_sdk_logger_and_arrive_with_the_batch(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Batched: straight onto the queue (the SDK's Logger.emit never runs), exported when the batch is flushed.
        Unbatched: through the handler and Logger.emit, exported at once."""
        through_logger: list[Any] = []
        emit = SDKLogger.emit

        def spy(self: SDKLogger, *args: Any, **kwargs: Any) -> None:
            through_logger.append(args)
            emit(self, *args, **kwargs)

        monkeypatch.setattr(SDKLogger, "emit", spy)
        batched = _provider(batch=True)
        configure_logging(batched.provider, stream=io.StringIO())
        structlog.get_logger("service").info("started", workers=2)
        batched.provider.force_flush()
        assert batched.bodies() == ["started"]
        assert through_logger == []
        unbatched = _provider(batch=False)
        configure_logging(unbatched.provider, stream=io.StringIO())
        structlog.get_logger("service").info("started", workers=2)
        assert unbatched.bodies() == ["started"]  # no flush: the simple processor exports synchronously
        assert len(through_logger) == 1

    def test_same_record_as_the_handler(self) -> None:
        fast, fast_lines, fast_trace = _log_in_span(_provider(batch=True), _access)
        slow, slow_lines, slow_trace = _log_in_span(_provider(batch=False), _access)
        (fast_record,), (slow_record,) = fast, slow
        assert format(fast_record.log_record.trace_id, "032x") == fast_trace
        assert dict(fast_record.log_record.attributes) == {
            "method": "POST",
            "route": "/predict",
            "status": 200,
            "duration_ms": 1.5,
            "note": "",
            "shape": "(1, 2)",
            "model_version": "0123456789ab",
        }
        assert fast_record.log_record.context == {}  # the request's context is not kept alive by the queue
        # Byte for byte the same OTLP message once the trace ids and the timestamps are aligned.
        slow_record.log_record.trace_id = fast_record.log_record.trace_id
        slow_record.log_record.span_id = fast_record.log_record.span_id
        assert _without_times(fast_record) == _without_times(slow_record)
        assert fast_record.instrumentation_scope == slow_record.instrumentation_scope
        assert (fast_record.resource, repr(fast_record.limits)) == (slow_record.resource, repr(slow_record.limits))
        # The console lines are the same too, and carry the trace ids.
        assert fast_lines[0]["trace_id"] == fast_trace and slow_lines[0]["trace_id"] == slow_trace
        assert {k: v for k, v in fast_lines[0].items() if k not in ("trace_id", "span_id", "timestamp")} == {
            k: v for k, v in slow_lines[0].items() if k not in ("trace_id", "span_id", "timestamp")
        }

    @pytest.mark.parametrize("level", ["warning", "error", "critical", "debug"])
    def test_severity(self, level: str) -> None:
        def emit(logger: Any) -> None:
            getattr(logger, level)("something")

        batched = _provider(batch=True)
        configure_logging(batched.provider, level=logging.DEBUG, stream=io.StringIO())
        fast, _, _ = _log_in_span(batched, emit)
        slow, _, _ = _log_in_span(_provider(batch=False), emit)
        assert [(r.log_record.severity_text, r.log_record.severity_number) for r in fast] == [
            (r.log_record.severity_text, r.log_record.severity_number) for r in slow
        ]

    def test_an_exception_goes_through_the_handler_with_its_stack(self) -> None:
        def emit(logger: Any) -> None:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")

        (record,), lines, _ = _log_in_span(_provider(batch=True), emit)
        attributes = dict(record.log_record.attributes)
        assert attributes["exception.type"] == "ValueError"
        assert "boom" in attributes["exception.stacktrace"]
        assert "ValueError: boom" in lines[0]["exception"]

    def test_outside_a_span_no_trace_ids(self) -> None:
        batched = _provider(batch=True)
        console = io.StringIO()
        configure_logging(batched.provider, stream=console)
        structlog.get_logger("service").info("started", workers=2)
        batched.provider.force_flush()
        (record,) = batched.exporter.get_finished_logs()
        assert not record.log_record.trace_id and not record.log_record.span_id
        assert record.log_record.body == "started"
        assert record.instrumentation_scope is not None and record.instrumentation_scope.name == "service"
        assert "trace_id" not in json.loads(console.getvalue())

    def test_a_renamed_sdk_internal_falls_back_to_the_handler(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_sdk, "batch_queue", lambda processor: None)
        records, _, _ = _log_in_span(_provider(batch=True), _access)
        assert [r.log_record.body for r in records] == ["request"]


class TestAnnotate:
    """The one processor in front of the renderer adds what structlog's stock processors would, and the console
    line and the OTel record share one instant."""

    def test_same_keys_and_values_as_the_stock_processors(self) -> None:
        stock: list[Any] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            logs.add_trace_context,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ]
        tracer = setup_tracing(RESOURCE, None, sampler=ALWAYS_ON, batch=False).get_tracer("test")
        structlog.contextvars.bind_contextvars(model_version="0123456789ab", rows=3)
        named = logs._Logger("otel.access")  # the stock processors ignore the logger; `_Annotate` reads its name
        for method in ("info", "warn", "warning", "exception", "debug"):
            with tracer.start_as_current_span("request"):
                ours = logs._Annotate()(named, method, {"event": "e", "status": 200})
                theirs: Any = {"event": "e", "status": 200}
                for processor in stock:
                    theirs = processor(named, method, theirs)
            theirs["logger"] = "otel.access"
            assert list(ours) == list(theirs), method  # same keys, same order
            assert {k: v for k, v in ours.items() if k != "timestamp"} == {
                k: v for k, v in theirs.items() if k != "timestamp"
            }
            assert abs(_parse(ours["timestamp"]) - _parse(theirs["timestamp"])) < 1

    @pytest.mark.parametrize("now", [1_795_000_000_123_456_789, 1_795_000_000_000_000_000, 1_795_000_001_000_001_000])
    def test_timestamp_is_what_timestamper_writes_for_the_same_instant(
        self, now: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seconds, micros = divmod(now // 1000, 1_000_000)
        instant = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).replace(microsecond=micros)
        monkeypatch.setattr(logs.time, "time_ns", lambda: now)
        annotate = logs._Annotate()
        stamped = annotate(logs._Logger("x"), "info", {"event": "e"})["timestamp"]
        assert stamped == instant.isoformat().replace("+00:00", "Z")  # TimeStamper's own expression
        assert annotate(logs._Logger("x"), "info", {"event": "e"})["timestamp"] == stamped  # the cached second

    def test_the_otel_record_has_the_lines_instant(self) -> None:
        (record,), (line,), _ = _log_in_span(_provider(batch=True), _access)
        assert record.log_record.timestamp == record.log_record.observed_timestamp
        stamped = datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert record.log_record.timestamp // 1000 == round(stamped.timestamp() * 1_000_000)


def _parse(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class TestConsoleLines:
    """JSON lines on the console: queued and written in batches, except WARNING and above, always in order."""

    def test_info_lines_are_written_in_batches(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console, flush_interval=3600)  # the writer thread never gets to it
        log = structlog.get_logger("service")
        log.info("first", n=1)
        log.debug("filtered")  # below INFO: never rendered
        log.info("second", n=2)
        assert console.getvalue() == ""
        logs.flush_logs()
        assert [json.loads(line)["event"] for line in console.getvalue().splitlines()] == ["first", "second"]

    def test_the_writer_thread_writes_them_within_the_interval(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console, flush_interval=0.02)
        structlog.get_logger("service").info("queued")
        deadline = time.monotonic() + 5
        while "queued" not in console.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert json.loads(console.getvalue())["event"] == "queued"

    def test_a_warning_is_written_at_once_after_the_lines_before_it(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console, flush_interval=3600)
        log = structlog.get_logger("service")
        log.info("before")
        logging.getLogger("gunicorn.error").info("a library's line")
        log.warning("slow backend", seconds=2.5)
        events = [json.loads(line)["event"] for line in console.getvalue().splitlines()]
        assert events == ["before", "a library's line", "slow backend"]

    def test_without_an_interval_each_line_is_written_at_once(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console)
        structlog.get_logger("service").info("now")
        assert json.loads(console.getvalue())["event"] == "now"

    def test_values_json_cannot_take_natively_still_render(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console)
        structlog.get_logger("service").info(
            "odd values", big=2**70, keys={1: "a"}, path=Path("/tmp/x"), ratio=0.1, text='é\n"q"'
        )
        line = json.loads(console.getvalue())
        assert line["big"] == 2**70
        assert line["keys"] == {"1": "a"}
        assert line["path"] == "PosixPath('/tmp/x')"  # structlog's fallback: repr
        assert line["ratio"] == 0.1
        assert line["text"] == 'é\n"q"'
        assert console.getvalue().count("\n") == 1  # one line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestFormats:
    """`json` for collectors, `console` for a person at a terminal, `auto` choosing by whether the stream is one."""

    def test_console_lines_are_for_reading(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console, log_format="console")
        structlog.get_logger("service").warning("slow backend", seconds=2.5)
        line = console.getvalue()
        assert not line.startswith("{")
        assert "slow backend" in line and "seconds=2.5" in line and "warning" in line
        assert "\x1b[" not in line  # no color codes into a file

    def test_auto_is_console_on_a_terminal_and_json_elsewhere(self) -> None:
        terminal, pipe = _Terminal(), io.StringIO()
        configure_logging(None, stream=terminal, log_format="auto")
        structlog.get_logger("service").info("hello", n=1)
        assert "hello" in terminal.getvalue() and not terminal.getvalue().startswith("{")
        configure_logging(None, stream=pipe, log_format="auto")
        structlog.get_logger("service").info("hello", n=1)
        assert json.loads(pipe.getvalue())["n"] == 1

    def test_a_library_line_follows_the_format(self) -> None:
        console = io.StringIO()
        configure_logging(None, stream=console, log_format="console")
        logging.getLogger("gunicorn.error").warning("Worker timeout")
        assert "Worker timeout" in console.getvalue() and not console.getvalue().startswith("{")

    def test_an_unknown_format_is_refused(self) -> None:
        with pytest.raises(ValueError, match="log format must be one of json, console, auto"):
            configure_logging(None, stream=io.StringIO(), log_format="yaml")
