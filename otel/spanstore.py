"""Recent traces and their log lines, kept in the process for a console it serves itself (zPages' TraceZ, plus logs).

`SpanStore` is a span processor: spans gather per trace until the trace's local root ends, and then tail retention
decides whether the whole trace stays. A finished trace is kept while any of three reasons holds:

- it is one of the `recent_per_bucket` newest traces of its route and latency bucket (`SECONDS_BUCKETS`), so every
  latency range a histogram shows has a few traces to open;
- it failed (its root or any span has an error status): the newest `max_errors` of those;
- it is the slowest trace of its time slice (`slice_seconds`), for the last `slices` slices.

Log records (`add_log`, a tap on the structlog chain) join their trace by trace id and live and die with it, so a
trace's page always has its logs and no log outlives its trace in the index; every record also enters a bounded
ring for the log view. The store is bounded in traces (`max_traces`) and in bytes (`max_bytes`, an estimate of
what the kept traces hold): past either, the oldest trace kept only as "recent" goes first, then the oldest error
or slice trace. Traces whose root never ends are bounded too (`max_pending`), and so are spans and logs per trace.
Nothing here reads a feature value: it keeps what spans and log lines carry, which by the service's rule is none.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from otel.metrics import SECONDS_BUCKETS

__all__ = ["LogRecord", "SpanStore", "StoredSpan", "StoredTrace", "TraceSummary"]

_SPAN_OVERHEAD = 600  # bytes a finished SDK span holds beyond its attributes (context, times, resource reference)
_LOG_OVERHEAD = 200
_PER_ATTRIBUTE = 120  # a key, a value and a dict slot, for the short values spans and log lines carry
_MAX_VALUE = 512  # characters of one attribute or log value kept: a console line, not a payload


@dataclass(frozen=True, slots=True)
class StoredSpan:
    name: str
    span_id: str
    parent_span_id: str | None
    kind: str
    start_time: int  # unix nanoseconds
    end_time: int
    status: str  # "unset" | "ok" | "error"
    attributes: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def duration_ms(self) -> float:
        return (self.end_time - self.start_time) / 1e6


@dataclass(frozen=True, slots=True)
class LogRecord:
    timestamp: str
    level: str
    event: str
    logger: str
    trace_id: str | None
    span_id: str | None
    fields: dict[str, Any]  # everything else the line carried
    time_ns: int


@dataclass(slots=True)
class StoredTrace:
    trace_id: str
    spans: list[StoredSpan] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    root: StoredSpan | None = None
    size: int = 0  # estimated bytes
    reasons: set[str] = field(default_factory=set)  # why it is kept: "recent", "error", "slowest"

    @property
    def error(self) -> bool:
        return any(span.status == "error" for span in self.spans)

    @property
    def duration_ms(self) -> float:
        return self.root.duration_ms if self.root is not None else 0.0

    @property
    def route(self) -> str:
        if self.root is None:
            return ""
        return str(self.root.attributes.get("http.route") or self.root.name)


class _Trace:
    """A trace as the store holds it: the SDK's finished spans and the log lines' fields as they came, converted
    to `StoredSpan` and `LogRecord` only when someone reads them (the request path pays for a list append)."""

    __slots__ = ("error", "logs", "reasons", "root", "size", "spans", "trace_id")

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.spans: list[ReadableSpan] = []
        self.logs: list[tuple[dict[str, Any], int]] = []
        self.root: ReadableSpan | None = None
        self.size = 0
        self.reasons: set[str] = set()
        self.error = False

    @property
    def duration_ms(self) -> float:
        root = self.root
        return (
            (root.end_time - root.start_time) / 1e6 if root is not None and root.end_time and root.start_time else 0.0
        )

    @property
    def route(self) -> str:
        if self.root is None:
            return ""
        return str((self.root.attributes or {}).get("http.route") or self.root.name)

    def view(self) -> StoredTrace:
        spans = [_stored_span(span) for span in self.spans]
        root = _stored_span(self.root) if self.root is not None else None
        return StoredTrace(self.trace_id, spans, [_log_record(*raw) for raw in self.logs], root, self.size,
                           set(self.reasons))  # fmt: skip


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    name: str
    route: str
    start_time: int
    duration_ms: float
    error: bool
    spans: int
    logs: int
    reasons: tuple[str, ...]


class SpanStore(SpanProcessor):
    """Finished traces with their logs, kept by tail retention within a count and a byte budget."""

    def __init__(
        self,
        *,
        recent_per_bucket: int = 5,
        max_errors: int = 100,
        slice_seconds: float = 60.0,
        slices: int = 60,
        max_traces: int = 2000,
        max_bytes: int = 16 * 1024 * 1024,
        max_pending: int = 1000,
        max_spans_per_trace: int = 256,
        max_logs_per_trace: int = 100,
        log_ring: int = 5000,
        bounds: Sequence[float] = SECONDS_BUCKETS,
    ) -> None:
        self.max_traces = max_traces
        self.max_bytes = max_bytes
        self._recent_per_bucket = recent_per_bucket
        self._max_errors = max_errors
        self._slice_seconds = slice_seconds
        self._slices = slices
        self._max_pending = max_pending
        self._max_spans = max_spans_per_trace
        self._max_logs = max_logs_per_trace
        self._bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Trace] = OrderedDict()  # traces whose local root has not ended
        self._kept: dict[str, _Trace] = {}
        self._recent: dict[tuple[str, int], deque[str]] = {}
        self._recent_order: OrderedDict[str, None] = OrderedDict()  # kept as "recent", oldest first
        self._errors: deque[str] = deque()
        self._slowest: OrderedDict[int, str] = OrderedDict()  # time slice → trace id
        self._bytes = 0
        self._ring: deque[tuple[dict[str, Any], int]] = deque(maxlen=log_ring)
        self.evicted = 0

    # --- SpanProcessor ------------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or span.start_time is None or span.end_time is None:
            return
        trace_id = format(context.trace_id, "032x")
        parent = span.parent
        local_root = parent is None or parent.is_remote
        # An estimate, not a measurement: attribute and event counts times what one typically holds.
        added = _SPAN_OVERHEAD + _PER_ATTRIBUTE * (len(span.attributes or ()) + 2 * len(span.events))
        with self._lock:
            trace = self._pending.get(trace_id)
            if trace is None:
                trace = self._kept.get(trace_id)  # a late span of a trace already kept
                if trace is None:
                    trace = self._pending[trace_id] = _Trace(trace_id)
                    if len(self._pending) > self._max_pending:
                        self._pending.popitem(last=False)
            if len(trace.spans) < self._max_spans:
                trace.spans.append(span)
                trace.size += added
                trace.error = trace.error or span.status.status_code is StatusCode.ERROR
                if trace.trace_id in self._kept:
                    self._bytes += added
            if local_root and trace_id in self._pending:
                trace.root = span
                del self._pending[trace_id]
                self._retain(trace)
                self._enforce_bounds()

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # --- logs ---------------------------------------------------------------------------------------------
    def add_log(self, event_dict: Mapping[str, Any], time_ns: int) -> None:
        """A log line as structlog built it (a tap on the chain: the JSON line's fields), copied as it is."""
        raw = (dict(event_dict), time_ns)
        trace_id = event_dict.get("trace_id")
        added = _LOG_OVERHEAD + _PER_ATTRIBUTE * len(event_dict)
        with self._lock:
            self._ring.append(raw)
            if trace_id is None:
                return
            trace = self._pending.get(trace_id) or self._kept.get(trace_id)
            if trace is None or len(trace.logs) >= self._max_logs:
                return
            trace.logs.append(raw)
            trace.size += added
            if trace_id in self._kept:
                self._bytes += added

    # --- reading ------------------------------------------------------------------------------------------
    def get(self, trace_id: str) -> StoredTrace | None:
        """A kept trace (a copy of its lists: the store may change while the caller reads)."""
        with self._lock:
            trace = self._kept.get(trace_id.lower())
            if trace is None:
                return None
            spans, logs, reasons = list(trace.spans), list(trace.logs), set(trace.reasons)
        copy = _Trace(trace.trace_id)
        copy.spans, copy.logs, copy.root, copy.size, copy.reasons = spans, logs, trace.root, trace.size, reasons
        return copy.view()

    def summaries(self, *, route: str | None = None, errors_only: bool = False) -> list[TraceSummary]:
        """Kept traces, newest first."""
        with self._lock:
            traces = list(self._kept.values())
        found = [
            TraceSummary(
                trace_id=trace.trace_id,
                name=trace.root.name if trace.root else "",
                route=trace.route,
                start_time=trace.root.start_time or 0 if trace.root else 0,
                duration_ms=trace.duration_ms,
                error=trace.error,
                spans=len(trace.spans),
                logs=len(trace.logs),
                reasons=tuple(sorted(trace.reasons)),
            )
            for trace in traces
            if (route is None or trace.route == route) and (not errors_only or trace.error)
        ]
        return sorted(found, key=lambda summary: summary.start_time, reverse=True)

    def logs(self, *, level: str | None = None, text: str | None = None, since_ns: int = 0) -> list[LogRecord]:
        """Log lines from the ring, newest first: at `level` or above, containing `text` (in the event or a
        field's value), not older than `since_ns`."""
        rank = _LEVELS.get((level or "").lower(), 0)
        needle = (text or "").lower()
        with self._lock:
            records = [_log_record(*raw) for raw in self._ring]
        chosen = []
        for record in reversed(records):
            if record.time_ns < since_ns or _LEVELS.get(record.level, 0) < rank:
                continue
            if (
                needle
                and needle not in record.event.lower()
                and not any(needle in str(value).lower() for value in record.fields.values())
            ):
                continue
            chosen.append(record)
        return chosen

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "traces": len(self._kept),
                "bytes": self._bytes,
                "pending": len(self._pending),
                "logs": len(self._ring),
                "evicted": self.evicted,
                "max_traces": self.max_traces,
                "max_bytes": self.max_bytes,
            }

    # --- retention (with the lock held) -------------------------------------------------------------------
    def _retain(self, trace: _Trace) -> None:
        trace_id = trace.trace_id
        bucket = bisect.bisect_left(self._bounds, trace.duration_ms / 1000)
        recent = self._recent.setdefault((trace.route, bucket), deque())
        recent.append(trace_id)
        trace.reasons.add("recent")
        self._recent_order[trace_id] = None
        if len(recent) > self._recent_per_bucket:
            self._release(recent.popleft(), "recent")
        if trace.error:
            trace.reasons.add("error")
            self._errors.append(trace_id)
            if len(self._errors) > self._max_errors:
                self._release(self._errors.popleft(), "error")
        end = trace.root.end_time if trace.root is not None and trace.root.end_time else time.time_ns()
        slot = int(end / 1e9 // self._slice_seconds)
        holder = self._slowest.get(slot)
        if holder is None or trace.duration_ms > self._kept[holder].duration_ms:
            self._slowest[slot] = trace_id
            trace.reasons.add("slowest")
            if holder is not None:
                self._release(holder, "slowest")
        while self._slowest and next(iter(self._slowest)) <= slot - self._slices:
            _, old = self._slowest.popitem(last=False)
            self._release(old, "slowest")
        self._kept[trace_id] = trace
        self._bytes += trace.size

    def _release(self, trace_id: str, reason: str) -> None:
        trace = self._kept.get(trace_id)
        if trace is None:
            return
        trace.reasons.discard(reason)
        if reason == "recent":
            self._recent_order.pop(trace_id, None)
        if not trace.reasons:
            del self._kept[trace_id]
            self._bytes -= trace.size
            self.evicted += 1

    def _enforce_bounds(self) -> None:
        """Past a bound, drop whole traces: the oldest kept only as recent, then the oldest recent, then the
        oldest error, then the oldest slowest-of-its-slice."""
        while self._kept and (len(self._kept) > self.max_traces or self._bytes > self.max_bytes):
            victim = next((tid for tid in self._recent_order if self._kept[tid].reasons == {"recent"}), None)
            if victim is None:
                victim = next(iter(self._recent_order), None)
            if victim is None:
                victim = self._errors[0] if self._errors else next(iter(self._slowest.values()))
            self._drop(victim)

    def _drop(self, trace_id: str) -> None:
        """Remove a kept trace, with its logs, whatever keeps it."""
        trace = self._kept.pop(trace_id)
        self._bytes -= trace.size
        self.evicted += 1
        if self._recent_order.pop(trace_id, False) is None:
            for ids in self._recent.values():
                if trace_id in ids:
                    ids.remove(trace_id)
                    break
        if "error" in trace.reasons:
            self._errors.remove(trace_id)
        if "slowest" in trace.reasons:
            for slot, holder in list(self._slowest.items()):
                if holder == trace_id:
                    del self._slowest[slot]


_STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _value(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE] + "…"


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {key: list(value) if isinstance(value, tuple) else _value(value) for key, value in attributes.items()}


def _stored_span(span: ReadableSpan) -> StoredSpan:
    context, parent = span.context, span.parent
    assert context is not None
    return StoredSpan(
        name=span.name,
        span_id=format(context.span_id, "016x"),
        parent_span_id=None if parent is None else format(parent.span_id, "016x"),
        kind=span.kind.name.lower(),
        start_time=span.start_time or 0,
        end_time=span.end_time or 0,
        status=_STATUS.get(span.status.status_code, "unset"),
        attributes=_plain(span.attributes),
        events=[
            {"name": event.name, "time": event.timestamp, "attributes": _plain(event.attributes)}
            for event in span.events
        ],
    )


_LOG_KEYS = ("event", "level", "logger", "timestamp", "trace_id", "span_id")


def _log_record(event_dict: dict[str, Any], time_ns: int) -> LogRecord:
    trace_id, span_id = event_dict.get("trace_id"), event_dict.get("span_id")
    return LogRecord(
        timestamp=str(event_dict.get("timestamp", "")),
        level=str(event_dict.get("level", "")),
        event=_value(event_dict.get("event", "")),
        logger=str(event_dict.get("logger", "")),
        trace_id=None if trace_id is None else str(trace_id),
        span_id=None if span_id is None else str(span_id),
        fields={k: _value(v) for k, v in event_dict.items() if k not in _LOG_KEYS and not k.startswith("_")},
        time_ns=time_ns,
    )
