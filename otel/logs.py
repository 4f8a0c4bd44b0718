"""Logs: structlog JSON lines on stdout, the same records bridged into OpenTelemetry logs.

structlog events take structlog's own fast path: processors, then one JSON line written to the stream, and the
same event handed to OpenTelemetry without the stdlib logger hierarchy in between. With the batching processor
that `setup_logs` installs, the event becomes the SDK's `ReadableLogRecord` and goes straight onto the batch
queue: what the SDK's handler, logger and processor would build (tests compare the two field by field) for a
fraction of the cost. Events with an exception, and any other processor setup, go through the OpenTelemetry
handler from opentelemetry-instrumentation-logging. Records from other libraries (gunicorn, werkzeug) go through
the root logger to the same two places. Every line written inside a request carries that request's `trace_id`
and `span_id`.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import orjson
import structlog
from opentelemetry import trace
from opentelemetry._logs import LogRecord, get_logger
from opentelemetry.context import Context, get_current
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from structlog.typing import EventDict, Processor, WrappedLogger

from otel import _sdk
from otel.environment import BatchSettings

__all__ = ["LOG_FORMATS", "OTelBridgeHandler", "add_trace_context", "configure_logging", "flush_logs", "setup_logs"]

# Keys that structlog adds for the console line but that an OTel log record carries natively (severity, time,
# trace context, logger name) or that are the body itself.
_NATIVE_KEYS = frozenset({"event", "level", "logger", "timestamp", "trace_id", "span_id", "exc_info", "exception"})
_LEVELS = logging.getLevelNamesMapping()


# Providers built by `setup_logs` whose only processor is a BatchLogRecordProcessor: the bridge may queue
# structlog events on it directly.
_BATCHED: weakref.WeakKeyDictionary[LoggerProvider, BatchLogRecordProcessor] = weakref.WeakKeyDictionary()
_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}  # as the OTel handler names Python's levels
_EMPTY_CONTEXT = Context()
_LIMITS = LogRecordLimits()  # the SDK's defaults, which every logger of `setup_logs`' providers uses


def setup_logs(
    resource: Resource,
    exporter: LogRecordExporter | None = None,
    *,
    batch: bool = True,
    batch_settings: BatchSettings | None = None,
) -> LoggerProvider:
    """Return a LoggerProvider exporting to `exporter`, batched and bounded by `batch_settings` (left out: the
    `OTEL_BLRP_*` variables in `os.environ`, as the SDK reads them)."""
    provider = LoggerProvider(resource=resource)
    if exporter is not None:
        options = {} if batch_settings is None else batch_settings.as_kwargs()
        processor = BatchLogRecordProcessor(exporter, **options) if batch else SimpleLogRecordProcessor(exporter)
        provider.add_log_record_processor(processor)
        if isinstance(processor, BatchLogRecordProcessor):
            _BATCHED[provider] = processor
    return provider


def add_trace_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: add the active span's `trace_id` and `span_id` (hex), if there is one."""
    _add_ids(event_dict, trace.get_current_span().get_span_context())
    return event_dict


def _add_ids(event_dict: EventDict, span_context: trace.SpanContext) -> None:
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")


class OTelBridgeHandler(LoggingHandler):
    """The OpenTelemetry logging handler, fed clean records.

    A stdlib record rendered by structlog carries its event dict as the message and structlog's private
    attributes (`_logger`, `_name`, `_from_structlog`), which the OTel handler would export and warn about: such
    records are copied first, with the event as body and the other keys as attributes.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, Mapping):
            record = _record(record.name, record.levelno, record.msg, record.created, record.exc_info)
        super().emit(record)

    def __init__(self, logger_provider: LoggerProvider) -> None:
        super().__init__(logger_provider=logger_provider)
        self._enqueue = _sdk.batch_queue(_BATCHED.get(logger_provider))  # None: through the handler
        self._scopes: dict[str, tuple[Resource, InstrumentationScope]] = {}
        self._provider = logger_provider

    def emit_event(
        self, name: str, event_dict: Mapping[str, Any], now: int | None = None, context: Context | None = None
    ) -> None:
        """Bridge one structlog event: straight onto the batch queue, or through the handler with an exception.

        `now` (time.time_ns()) and `context` (the active one) are the line's own, when the caller has them."""
        exc_info = event_dict.get("exc_info")
        level = str(event_dict.get("level", "info")).upper()
        levelno = _LEVELS.get(level, logging.INFO)
        if self._enqueue is not None and not exc_info and levelno >= self.level:
            self._enqueue(self._readable(name, levelno, level, event_dict, now, context))
            return
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        super().emit(_record(name, levelno, event_dict, None, exc_info or None))

    def _readable(
        self,
        name: str,
        levelno: int,
        level: str,
        event_dict: Mapping[str, Any],
        now: int | None = None,
        context: Context | None = None,
    ) -> ReadableLogRecord:
        """What LoggingHandler._translate, Logger.emit and BatchLogRecordProcessor.on_emit would build."""
        scoped = self._scopes.get(name)
        if scoped is None:
            logger = get_logger(name, logger_provider=self._provider)  # as the handler gets it
            scoped = self._scopes[name] = (logger.resource, logger.instrumentation_scope)  # type: ignore[attr-defined]
        if now is None:
            now = time.time_ns()
        record = LogRecord(
            timestamp=now,
            observed_timestamp=now,
            # The record takes the active span's trace id, span id and flags from the context. (An empty Context is
            # falsy: test for None, or a line logged outside any span would read the current context twice.)
            context=context if context is not None else get_current(),
            severity_text=_SEVERITY_TEXT.get(level, level),
            severity_number=std_to_otel(levelno),
            body=str(event_dict.get("event", "")),
            attributes=_attributes(event_dict),
        )
        record.context = _EMPTY_CONTEXT  # as the batch processor does: the record must not pin the request's context
        return ReadableLogRecord(log_record=record, resource=scoped[0], instrumentation_scope=scoped[1], limits=_LIMITS)


def _record(name: str, levelno: int, event_dict: Mapping[str, Any], created: float | None, exc_info: Any) -> Any:
    record = logging.LogRecord(name, levelno, "", 0, str(event_dict.get("event", "")), None, exc_info)
    if created is not None:
        record.created = created
    record.__dict__.update(_attributes(event_dict))
    return record


def _attributes(event_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The event's own keys (not the native fields, not LogRecord's attributes) as OTel attribute values."""
    return {
        key: value if type(value) in _PRIMITIVES else _attribute_value(value)
        for key, value in event_dict.items()
        if key not in _SKIPPED_KEYS
    }


_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SKIPPED_KEYS = _NATIVE_KEYS | _RECORD_ATTRIBUTES
_PRIMITIVES = frozenset({str, bool, int, float})


def _attribute_value(value: Any) -> Any:
    """OTel attributes are primitives or homogeneous sequences of them; everything else becomes its string."""
    if value is None:
        return ""
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


class _Sink:
    """Where log lines go: one per process. `configure_logging` repoints it, so loggers that structlog cached on
    first use (module-level `get_logger` proxies) follow a reconfiguration.

    With a flush interval, INFO and DEBUG lines are queued and a background thread writes them, all at once, every
    interval: a write per line is a system call on the request path, and the GIL goes to another thread while it
    runs. WARNING and above are written at once, after the lines queued before them, so lines keep their order
    and an error is on stdout before the code that logged it goes on. `flush_logs` writes what is queued (at
    exit, and when a worker stops).
    """

    def __init__(self) -> None:
        self.stream: IO[str] = sys.stdout
        self.bridge: OTelBridgeHandler | None = None
        # Callables given each structlog event (its fields and time in ns) after the bridge: an in-process store
        # of recent log lines, for instance. They run on the logging thread: keep them cheap.
        self.taps: tuple[Callable[[Mapping[str, Any], int], None], ...] = ()
        self.interval = 0.0
        self._queued: list[str] = []
        self._queue_lock = threading.Lock()  # guards _queued; held only to append or take
        self._write_lock = threading.Lock()  # one writer at a time, so batches and urgent lines stay in order
        self._writer_pid = 0  # the process whose writer thread runs (threads do not survive a fork)
        self._stopped = threading.Event()

    def write(self, line: str, *, urgent: bool = False) -> None:
        if urgent or self.interval <= 0:
            with self._write_lock:
                with self._queue_lock:
                    lines, self._queued = self._queued, []
                lines.append(line)
                self._emit(lines)
            return
        with self._queue_lock:
            self._queued.append(line)
            if self._writer_pid != os.getpid():
                self._start_writer()

    def flush(self) -> None:
        with self._write_lock:
            with self._queue_lock:
                lines, self._queued = self._queued, []
            if lines:
                self._emit(lines)

    def reconfigure(self, stream: IO[str], bridge: OTelBridgeHandler | None, interval: float) -> None:
        self.flush()  # what is queued belongs to the old stream
        with self._queue_lock:
            self._stopped.set()  # the writer sleeps the old interval: stop it; the next queued line starts one
            self._writer_pid = 0
            self.stream, self.bridge, self.interval = stream, bridge, interval

    def _emit(self, lines: list[str]) -> None:
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: logging must never break the caller
            pass

    def after_fork(self) -> None:
        """In a forked child: new locks (another thread may have held them at the fork) and no queued lines (the
        parent writes its own)."""
        self._queued = []
        self._queue_lock, self._write_lock = threading.Lock(), threading.Lock()
        self._writer_pid = 0

    def _start_writer(self) -> None:
        """Called with the queue lock held, once per process."""
        self._writer_pid = os.getpid()
        self._stopped = threading.Event()
        threading.Thread(target=self._run, args=(self._stopped,), name="otel-log-lines", daemon=True).start()

    def _run(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.interval if self.interval > 0 else 0.05):
            self.flush()


_SINK = _Sink()
atexit.register(_SINK.flush)
os.register_at_fork(after_in_child=_SINK.after_fork)


def flush_logs() -> None:
    """Write the log lines still queued for stdout (see `configure_logging`'s `flush_interval`)."""
    _SINK.flush()


class _Logger:
    """structlog's final logger: hands one JSON line to the sink; WARNING and above are written at once."""

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str) -> None:
        _SINK.write(line)

    def urgent(self, line: str) -> None:
        _SINK.write(line, urgent=True)

    info = debug = log = msg
    warning = warn = error = err = critical = fatal = exception = urgent


class _SinkHandler(logging.Handler):
    """The root logger's console handler: other libraries' records, formatted as JSON, through the same sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _SINK.write(self.format(record), urgent=record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)


def _render(event_dict: Any, **kwargs: Any) -> str:
    """JSON for structlog's JSONRenderer: orjson, about ten times faster than json.dumps for a log line."""
    try:
        return orjson.dumps(event_dict, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson cannot encode (integers beyond 64 bits): the standard library can
        return json.dumps(event_dict, **kwargs)


LOG_FORMATS = ("json", "console", "auto")


def _renderer(log_format: str, stream: IO[str]) -> Processor:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    terminal = hasattr(stream, "isatty") and stream.isatty()
    if log_format == "console" or (log_format == "auto" and terminal):
        return structlog.dev.ConsoleRenderer(colors=terminal, exception_formatter=structlog.dev.plain_traceback)
    return structlog.processors.JSONRenderer(serializer=_render)


def _logger_factory(*args: Any) -> _Logger:
    return _Logger(str(args[0]) if args else "")


_METHOD_LEVELS = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level names them


class _Annotate:
    """structlog processor: what `merge_contextvars`, `add_log_level`, `add_trace_context`, `TimeStamper(fmt="iso",
    utc=True)` and the logger name add, in one step, then the event bridged into OpenTelemetry.

    One step instead of six, one read of the active context and one of the clock, shared by the console line and
    the OTel record (so both carry the same instant). The timestamp's date and time of day are formatted once per
    second; the line's is exactly what TimeStamper would write (`2026-11-26T21:07:10.123456Z`, no fraction on a
    whole second).
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # (whole seconds, their ISO text); replaced, never mutated

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        event_dict["level"] = _METHOD_LEVELS.get(method_name, method_name)
        context = get_current()
        _add_ids(event_dict, trace.get_current_span(context).get_span_context())
        now = time.time_ns()
        event_dict["timestamp"] = self._iso(now)
        name = event_dict["logger"] = getattr(logger, "name", "")
        bridge = _SINK.bridge
        if bridge is not None:
            bridge.emit_event(name, event_dict, now, context)
        for tap in _SINK.taps:
            tap(event_dict, now)
        return event_dict

    def _iso(self, now: int) -> str:
        seconds, micros = divmod(now // 1000, 1_000_000)
        cached = self._second
        if cached[0] != seconds:
            text = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            cached = self._second = (seconds, text)
        return f"{cached[1]}.{micros:06d}Z" if micros else f"{cached[1]}Z"


def configure_logging(
    logger_provider: LoggerProvider | None = None,
    *,
    level: int | str = logging.INFO,
    stream: IO[str] | None = None,
    flush_interval: float = 0.0,
    log_format: str = "json",
    taps: Sequence[Callable[[Mapping[str, Any], int], None]] = (),
) -> None:
    """Configure structlog and the root logger: JSON to `stream` (stdout), and to OTel when a provider is given.

    `taps` also receive every structlog event (its fields, and its time in unix nanoseconds), e.g. a store of
    recent log lines (`otel.spanstore.SpanStore.add_log`).

    `log_format`: `json` (one object per line, for collectors), `console` (aligned, human-readable lines, colored
    on a terminal) or `auto` (console when `stream` is a terminal, else JSON). The OTel records are the same.

    With `flush_interval` > 0 (seconds), INFO and DEBUG lines are written by a background thread every interval
    instead of one system call each; WARNING and above are still written at once (see `_Sink`).

    Process-global, so call it once at process start (gunicorn `post_fork`, the CLI) — never at import time.
    """
    stream = stream or sys.stdout
    renderer = _renderer(log_format, stream)
    numeric_level = level if isinstance(level, int) else _LEVELS.get(level.upper(), logging.INFO)
    bridge = OTelBridgeHandler(logger_provider=logger_provider) if logger_provider is not None else None
    _SINK.reconfigure(stream, bridge, flush_interval)
    _SINK.taps = tuple(taps)
    structlog.configure(
        processors=[
            _Annotate(),  # context, level, trace ids, timestamp, logger name; then the OTel record
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=_logger_factory,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    # Other libraries' records: the same JSON shape on the same stream, and the same bridge (a handler of its own).
    foreign: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_trace_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_logger_name,
    ]
    console = _SinkHandler()
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handlers: list[logging.Handler] = [console] + ([bridge] if bridge is not None else [])
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(numeric_level)
