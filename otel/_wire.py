"""OTLP protobuf encoding written straight to bytes, for spans and log records.

The SDK's encoder builds a Python protobuf object for every span, attribute and value, then serialises it: about
40-50 µs per span, on the export thread but still the process's CPU (and GIL). Most of a service's attributes
repeat (route, method, model name and version, resource and scope), so here each distinct key/value pair is
encoded once and reused, and messages are concatenated as bytes. The output parses to the same
`ExportTraceServiceRequest` / `ExportLogsServiceRequest` the SDK would send (tests compare them message by message).

Wire format: https://protobuf.dev/programming-guides/encoding/ ; field numbers from opentelemetry-proto 1.x
(`trace.proto`, `logs.proto`, `common.proto`, `resource.proto`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel._sdk import attribute_items

__all__ = ["encode_logs", "encode_spans"]

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")
_CACHE_LIMIT = 4096  # distinct attribute pairs kept encoded; beyond this the cache starts over
_pairs: dict[tuple[int, str, type, Any], bytes] = {}
_messages: dict[Any, bytes] = {}  # resources and scopes, by identity of their (hashable) SDK objects
_IS_REMOTE_KNOWN, _IS_REMOTE = 0x100, 0x200  # SpanFlags: the parent's is_remote is known / true


_SMALL = [bytes([i]) for i in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 values are sent as their two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_TAGS: dict[tuple[int, int], bytes] = {}


def _key(field: int, wire_type: int) -> bytes:
    tag = _TAGS.get((field, wire_type))
    if tag is None:
        tag = _TAGS[(field, wire_type)] = _varint(field << 3 | wire_type)
    return tag


def _bytes_field(field: int, payload: bytes) -> bytes:
    size = len(payload)
    return _key(field, 2) + (_SMALL[size] if size < 128 else _varint(size)) + payload


def _string_field(field: int, text: str) -> bytes:
    return _bytes_field(field, text.encode("utf-8")) if text else b""


def _fixed64_field(field: int, value: int) -> bytes:
    return _key(field, 1) + _FIXED64.pack(value) if value else b""


def _varint_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    """AnyValue: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _key(2, 0) + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _bytes_field(1, value.encode("utf-8"))
    if isinstance(value, int):
        return _key(3, 0) + _varint(value)
    if isinstance(value, float):
        return _key(4, 1) + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _bytes_field(7, value)
    if isinstance(value, Sequence):
        return _bytes_field(5, b"".join(_bytes_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _bytes_field(6, b"".join(_bytes_field(1, _key_value(k, v)) for k, v in value.items()))
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _string_field(1, key) + _bytes_field(2, _any_value(value))


def _attribute(field: int, key: str, value: Any) -> bytes:
    """One attribute as a repeated KeyValue field, cached (framed) when the value is hashable."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool:
        cache_key = (field, key, kind, value)
        cached = _pairs.get(cache_key)
        if cached is None:
            cached = _remember(_pairs, cache_key, _bytes_field(field, _key_value(key, value)))
        return cached
    return _bytes_field(field, _key_value(key, value))


def _remember(cache: dict[Any, bytes], key: Any, encoded: bytes) -> bytes:
    """Store `encoded` in one of the encoding caches; a full cache starts over (bounded memory)."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = encoded
    return encoded


def _attributes(field: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    # Straight from the dict inside the SDK's BoundedAttributes (`otel._sdk.attribute_items` says why).
    return b"".join([_attribute(field, key, value) for key, value in attribute_items(attributes)])


def _resource(resource: Resource) -> bytes:
    cached = _messages.get(resource)
    if cached is None:
        cached = _messages[resource] = _bytes_field(1, _attributes(1, resource.attributes))
    return cached


def _scope(scope: InstrumentationScope | None) -> bytes:
    key = ("scope", scope)
    cached = _messages.get(key)
    if cached is None:
        body = b""
        if scope is not None:
            body = _string_field(1, scope.name) + _string_field(2, scope.version or "")
            body += _attributes(3, scope.attributes)
        cached = _messages[key] = _bytes_field(1, body)
    return cached


def _group(items: Sequence[Any], encode: Any) -> dict[Resource, dict[InstrumentationScope | None, list[bytes]]]:
    """Encoded items by resource, then scope. A Resource hashes by serialising its attributes to JSON, so each
    distinct resource object is matched (by equality, as the SDK's encoder groups) once, then by identity."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    by_identity: dict[int, dict[InstrumentationScope | None, list[bytes]]] = {}
    for item in items:
        resource = item.resource
        by_scope = by_identity.get(id(resource))
        if by_scope is None:
            by_scope = by_identity[id(resource)] = grouped.setdefault(resource, {})
        by_scope.setdefault(item.instrumentation_scope or None, []).append(encode(item))
    return grouped


def _request(grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]], item_field: int) -> bytes:
    """Export*ServiceRequest { resource_* = 1 { resource = 1, scope_* = 2 { scope = 1, items, schema_url = 3 },
    schema_url = 3 } }"""
    out = []
    for resource, scopes in grouped.items():
        scope_messages = []
        for scope, encoded in scopes.items():
            body = _scope(scope) + b"".join(_bytes_field(item_field, item) for item in encoded)
            if scope is not None and scope.schema_url:
                body += _string_field(3, scope.schema_url)
            scope_messages.append(_bytes_field(2, body))
        body = _resource(resource) + b"".join(scope_messages) + _string_field(3, resource.schema_url)
        out.append(_bytes_field(1, body))
    return b"".join(out)


def _span(span: ReadableSpan) -> bytes:
    """Span: trace_id 1, span_id 2, trace_state 3, parent_span_id 4, name 5, kind 6, start 7, end 8,
    attributes 9, dropped_attributes 10, events 11, dropped_events 12, links 13, dropped_links 14, status 15,
    flags 16."""
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),  # field 1, 16 bytes
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),  # field 2, 8 bytes
    ]
    if context.trace_state:
        parts.append(_string_field(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    if span.parent is not None:
        parts.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))  # field 4, 8 bytes
    parts += [
        _name(span.name),
        _KINDS[span.kind.value],
        b"\x39" + _FIXED64.pack(span.start_time or 0),  # field 7, fixed64
        b"\x41" + _FIXED64.pack(span.end_time or 0),  # field 8, fixed64
        _attributes(9, span.attributes),
    ]
    if span.dropped_attributes:
        parts.append(_varint_field(10, span.dropped_attributes))
    for event in span.events:
        body = _fixed64_field(1, event.timestamp) + _string_field(2, event.name) + _attributes(3, event.attributes)
        parts.append(_bytes_field(11, body + _varint_field(4, event.dropped_attributes)))
    if span.dropped_events:
        parts.append(_varint_field(12, span.dropped_events))
    for link in span.links:
        body = _bytes_field(1, link.context.trace_id.to_bytes(16, "big"))
        body += _bytes_field(2, link.context.span_id.to_bytes(8, "big"))
        body += _attributes(4, link.attributes) + _varint_field(5, link.dropped_attributes)
        body += _key(6, 5) + _FIXED32.pack(_IS_REMOTE_KNOWN | (_IS_REMOTE if link.context.is_remote else 0))
        parts.append(_bytes_field(13, body))
    if span.dropped_links:
        parts.append(_varint_field(14, span.dropped_links))
    status = span.status
    if status.description:
        parts.append(
            _bytes_field(15, _string_field(2, status.description) + _varint_field(3, status.status_code.value))
        )
    else:
        parts.append(_STATUSES[status.status_code.value])
    parts.append(_REMOTE_FLAGS if span.parent is not None and span.parent.is_remote else _LOCAL_FLAGS)
    return b"".join(parts)


_KINDS = [_varint_field(6, kind + 1) for kind in range(5)]  # SDK SpanKind 0..4; the proto enum has UNSPECIFIED at 0
_STATUSES = [_bytes_field(15, _varint_field(3, code)) for code in range(3)]
_LOCAL_FLAGS = _key(16, 5) + _FIXED32.pack(_IS_REMOTE_KNOWN)
_REMOTE_FLAGS = _key(16, 5) + _FIXED32.pack(_IS_REMOTE_KNOWN | _IS_REMOTE)
_names: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    """Span names repeat (route templates, stage names): encode each once."""
    cached = _names.get(name)
    if cached is None:
        cached = _remember(_names, name, _string_field(5, name))
    return cached


def _log(readable: ReadableLogRecord) -> bytes:
    """LogRecord: time 1, severity_number 2, severity_text 3, body 5, attributes 6, dropped_attributes 7,
    flags 8, trace_id 9, span_id 10, observed_time 11, event_name 12."""
    record = readable.log_record
    parts = [
        _fixed64_field(1, record.timestamp or 0),
        _severity(getattr(record.severity_number, "value", 0) or 0, record.severity_text or ""),
        _body(record.body),
        _attributes(6, record.attributes),
        _varint_field(7, readable.dropped_attributes),
    ]
    flags = int(record.trace_flags or 0)
    if flags:
        parts.append(_key(8, 5) + _FIXED32.pack(flags))
    if record.trace_id:
        parts.append(_TRACE_ID_TAG + record.trace_id.to_bytes(16, "big"))
    if record.span_id:
        parts.append(_SPAN_ID_TAG + record.span_id.to_bytes(8, "big"))
    parts.append(_fixed64_field(11, record.observed_timestamp or 0))
    if record.event_name:
        parts.append(_string_field(12, record.event_name))
    return b"".join(parts)


_TRACE_ID_TAG = _key(9, 2) + _varint(16)  # LogRecord.trace_id: 16 bytes
_SPAN_ID_TAG = _key(10, 2) + _varint(8)  # LogRecord.span_id: 8 bytes
_severities: dict[tuple[int, str], bytes] = {}
_bodies: dict[str, bytes] = {}


def _severity(number: int, text: str) -> bytes:
    """severity_number and severity_text, encoded once per level."""
    cached = _severities.get((number, text))
    if cached is None:
        cached = _remember(_severities, (number, text), _varint_field(2, number) + _string_field(3, text))
    return cached


def _body(body: Any) -> bytes:
    """The body (present even when empty, as the SDK's encoder sends it); string bodies repeat (event names), so
    each is encoded once."""
    if type(body) is not str:
        return _bytes_field(5, _any_value(body))
    cached = _bodies.get(body)
    if cached is None:
        cached = _remember(_bodies, body, _bytes_field(5, _any_value(body)))
    return cached


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """A serialised `ExportTraceServiceRequest` for `spans` (ScopeSpans.spans is field 2)."""
    return _request(_group(spans, _span), 2)


def encode_logs(records: Sequence[ReadableLogRecord]) -> bytes:
    """A serialised `ExportLogsServiceRequest` for `records` (ScopeLogs.log_records is field 2)."""
    return _request(_group(records, _log), 2)
