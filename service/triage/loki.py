"""Loki: the log lines of one trace, by the `trace_id` structured metadata Loki keeps from OTel log records.

`query_range` answers `{"data": {"resultType": "streams", "result": [{"stream": {...}, "values": [[ns, line]]}]}}`.
With the request header `X-Loki-Response-Encoding-Flags: categorize-labels` (Loki 3.x, what Grafana sends) each
value gets a third element `{"structuredMetadata": {...}, "parsed": {...}}` and `stream` keeps only index labels;
without it, structured metadata is merged into `stream`. Both are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.triage.backend import Backend, BackendError

__all__ = ["CATEGORIZE_LABELS", "LogLine", "LokiClient", "logql_for_trace", "parse_streams"]

CATEGORIZE_LABELS = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}


@dataclass(frozen=True)
class LogLine:
    """One log entry: its line (the OTel record's body), index labels, structured metadata and parsed labels."""

    time_ns: int
    line: str
    labels: dict[str, str]
    metadata: dict[str, str]
    parsed: dict[str, str]

    @property
    def fields(self) -> dict[str, str]:
        """Everything known about the line: labels, then structured metadata, then parsed labels."""
        return {**self.labels, **self.metadata, **self.parsed}


def logql_for_trace(service: str | None, trace_id: str) -> str:
    """`{service_name="svc"} | trace_id="…"`: a structured-metadata filter, no line scan (any service if None)."""
    selector = f"service_name={json.dumps(service)}" if service else 'service_name=~".+"'
    return f"{{{selector}}} | trace_id={json.dumps(trace_id)}"


def parse_streams(body: Any) -> list[LogLine]:
    """A `query_range` streams answer -> log lines, oldest first."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise ValueError("no data object")
    if data.get("resultType", "streams") != "streams":
        raise ValueError(f"expected resultType streams, got {data.get('resultType')!r}")
    lines: list[LogLine] = []
    for stream in data.get("result") or []:
        labels = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
        for value in stream.get("values") or []:
            categories = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
            lines.append(
                LogLine(
                    time_ns=int(value[0]),
                    line=str(value[1]),
                    labels=labels,
                    metadata=dict(categories.get("structuredMetadata") or {}),
                    parsed=dict(categories.get("parsed") or {}),
                )
            )
    return sorted(lines, key=lambda line: line.time_ns)


class LokiClient:
    """`/loki/api/v1/query_range` for log queries, asking for categorized labels."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def logs(self, logql: str, start: float, end: float, limit: int = 100) -> list[LogLine]:
        """Log lines matching `logql` in [start, end), oldest first."""
        params: dict[str, str | int | float] = {
            "query": logql,
            "start": str(int(start * 1e9)),
            "end": str(int(end * 1e9)),
            "limit": limit,
            "direction": "forward",
        }
        body = self.backend.get_json("/loki/api/v1/query_range", params=params, headers=CATEGORIZE_LABELS)
        try:
            return parse_streams(body)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise BackendError(f"Loki answered query_range in an unexpected format: {error}") from None
