"""Tempo: fetch a trace by id (`/api/v2/traces`, then `/api/traces`) and find its slowest stage.

Both endpoints answer OpenTelemetry JSON as Tempo marshals it: `{"trace": {"resourceSpans": [...]}}` from v2
(Tempo 2.6+ and 3.x; with `"status": "PARTIAL"` when the trace was cut at the size limit) or `{"batches": [...]}`
from v1. Span and trace ids are base64 (not OTLP/JSON's hex), 64-bit integers and nanosecond times are strings,
`kind` is an enum name. TraceQL search answers hex trace ids without leading zeros.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.triage.backend import Backend, BackendError, NotFound
from service.triage.prometheus import normalise_trace_id

__all__ = ["Span", "TempoClient", "Trace", "decode_id", "parse_search", "parse_trace"]


@dataclass(frozen=True)
class Span:
    """A span as Tempo returned it, ids in lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str  # "ok", "error" or "unset"
    resource: dict[str, Any]

    @property
    def duration(self) -> float:
        """Seconds."""
        return max(self.end_ns - self.start_ns, 0) / 1e9


@dataclass(frozen=True)
class Trace:
    """The spans of one trace; `root` is the span without a parent in it, `slowest_stage` its slowest descendant."""

    trace_id: str
    spans: tuple[Span, ...]
    partial: str | None = None  # v2's reason when the trace exceeded Tempo's size limit and was cut

    @property
    def root(self) -> Span | None:
        ids = {span.span_id for span in self.spans}
        roots = [span for span in self.spans if not span.parent_span_id or span.parent_span_id not in ids]
        return min(roots, key=lambda span: (span.kind != "server", span.start_ns), default=None)

    @property
    def slowest_stage(self) -> Span | None:
        root = self.root
        stages = [span for span in self.spans if span is not root]
        return max(stages, key=lambda span: span.duration, default=None)


def decode_id(value: str | None) -> str | None:
    """Tempo's base64 ids (and OTLP's hex ones) -> lowercase hex; None for an empty id."""
    if not value:
        return None
    if len(value) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    return raw.hex() if raw.strip(b"\x00") else None


def parse_trace(body: Any) -> Trace:
    """A trace-by-id answer (v2 `{"trace": {"resourceSpans"}}`, v1 `{"batches"}`, or bare OTLP) -> `Trace`."""
    if not isinstance(body, dict):
        raise ValueError(f"not a Tempo trace: {str(body)[:100]}")
    document = body.get("trace", body)
    if not isinstance(document, dict):
        raise ValueError("Tempo answered a trace document that is not an object")
    batches = document.get("resourceSpans", document.get("batches")) or []
    spans: list[Span] = []
    for batch in batches:
        resource = attributes((batch.get("resource") or {}).get("attributes"))
        for scope in batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []:
            spans.extend(_span(raw, resource) for raw in scope.get("spans") or [])
    trace_id = next((span.trace_id for span in spans if span.trace_id), "")
    status = body.get("status")
    partial = f"{status}: {body.get('message', '')}".rstrip(": ") if status and status != "COMPLETE" else None
    return Trace(trace_id=trace_id, spans=tuple(sorted(spans, key=lambda span: span.start_ns)), partial=partial)


def _span(raw: dict[str, Any], resource: dict[str, Any]) -> Span:
    kind = str(raw.get("kind", ""))
    status = str((raw.get("status") or {}).get("code", "")).lower()
    return Span(
        trace_id=decode_id(raw.get("traceId")) or "",
        span_id=decode_id(raw.get("spanId")) or "",
        parent_span_id=decode_id(raw.get("parentSpanId")),
        name=str(raw.get("name", "")),
        kind=_KINDS.get(kind, kind.removeprefix("SPAN_KIND_").lower()),
        start_ns=int(raw.get("startTimeUnixNano") or 0),
        end_ns=int(raw.get("endTimeUnixNano") or 0),
        attributes=attributes(raw.get("attributes")),
        status=_STATUS.get(status, status.removeprefix("status_code_") or "unset"),
        resource=resource,
    )


_KINDS = {"1": "internal", "2": "server", "3": "client", "4": "producer", "5": "consumer"}
_STATUS = {"1": "ok", "2": "error", "0": "unset", "": "unset"}


def attributes(pairs: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    """OTLP JSON `[{"key": ..., "value": {"stringValue": ...}}]` -> a plain dict."""
    return {pair["key"]: _value(pair.get("value") or {}) for pair in pairs or [] if "key" in pair}


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_value(item) for item in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values"))
    return None


def parse_search(body: Any) -> list[str]:
    """TraceQL search answer -> trace ids (32 hex digits), in Tempo's order."""
    traces = body.get("traces") if isinstance(body, dict) else None
    return [normalise_trace_id(str(t["traceID"])) for t in traces or [] if t.get("traceID")]


class TempoClient:
    """Trace by id and TraceQL search over Tempo's HTTP API."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def trace(self, trace_id: str, start: float, end: float) -> Trace | None:
        """The trace, or None if Tempo does not have it (yet, or any more). v2 first, then v1 (Tempo < 2.6)."""
        params = {"start": int(start), "end": int(end) + 1}
        for path in (f"/api/v2/traces/{trace_id}", f"/api/traces/{trace_id}"):
            try:
                body = self.backend.get_json(path, params=params)
            except NotFound:
                continue
            try:
                trace = parse_trace(body)
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise BackendError(f"Tempo answered {path} in an unexpected format: {error}") from None
            return trace if trace.spans else None  # v2 answers an empty trace when it has none
        return None

    def search(self, traceql: str, start: float, end: float, limit: int) -> list[str]:
        """Trace ids matching a TraceQL query in [start, end]."""
        params: dict[str, str | int | float] = {"q": traceql, "start": int(start), "end": int(end) + 1, "limit": limit}
        body = self.backend.get_json("/api/search", params=params)
        try:
            return parse_search(body)
        except (TypeError, AttributeError) as error:
            raise BackendError(f"Tempo answered /api/search in an unexpected format: {error}") from None
