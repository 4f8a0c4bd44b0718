"""`GET /console`: the service's own read-only console, for a latency spike → its trace → that trace's log lines.

What `make run` shows with no Prometheus, Tempo or Loki: the last hour of requests per route with exemplar dots
(`otel.requestseries`), the traces this worker kept by tail retention with their log lines (`otel.spanstore`),
a log view, and the model's monitoring. Pages are rendered on the server (hand-written HTML and inline SVG, no
script and no CDN), so they work offline; `/console/api/…` answers the same as JSON (`/openapi.json`).

Each gunicorn worker keeps its own stores: a page shows what the worker that answered served (its pid is on every
page), and a trace another worker served is a 404 naming this worker. `make run` serves with one worker.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from otel.requestseries import RequestSeries
from otel.spanstore import LogRecord, SpanStore, StoredTrace
from service.web.problems import Problem

__all__ = ["EXTENSION", "PATHS", "ConsoleState", "blueprint", "trace_document"]

EXTENSION = "modellens.console"
blueprint = Blueprint("console", __name__, template_folder="templates")
_CHART = (720, 220, 48, 16)  # width, height, left and bottom margins of a latency chart, in SVG units
_LOG_MINUTES = 15  # the log view's default look-back
# Every route of the console, as Flask rules: with the console off, each answers a 404 saying how to turn it on.
PATHS = (
    "/console", "/console/traces", "/console/traces/<trace_id>", "/console/logs", "/console/model",
    "/console/api/traces/<trace_id>", "/console/api/traces", "/console/api/overview", "/console/api/logs",
)  # fmt: skip


@dataclass(frozen=True)
class ConsoleState:
    store: SpanStore
    series: RequestSeries
    monitoring: Callable[[], dict[str, Any]] | None  # GET /monitoring's document, when monitoring is on
    bins: Callable[[], list[dict[str, Any]]] | None = None  # training vs window shares per feature (the monitor's)


def _state() -> ConsoleState:
    state: ConsoleState = current_app.extensions[EXTENSION]
    return state


# --- pages ------------------------------------------------------------------------------------------------------
@blueprint.get("/console")
def overview() -> str:
    state = _state()
    snapshot = state.series.snapshot()
    charts = [_chart(route, data) for route, data in sorted(snapshot["routes"].items())]
    return render_template("console/overview.html", page="overview", charts=charts, stats=state.store.stats(),
                           **_common())  # fmt: skip


@blueprint.get("/console/traces")
def traces() -> str:
    errors_only = request.args.get("errors") == "1"
    summaries = _state().store.summaries(errors_only=errors_only)
    return render_template("console/traces.html", page="traces", traces=summaries, errors_only=errors_only,
                           when=_when, **_common())  # fmt: skip


@blueprint.get("/console/traces/<trace_id>")
def trace_page(trace_id: str) -> str | tuple[str, int]:
    trace = _state().store.get(trace_id)
    if trace is None:
        return render_template("console/missing.html", page="traces", trace_id=trace_id, **_common()), 404
    return render_template("console/trace.html", page="traces", trace=trace, rows=_waterfall(trace), when=_when,
                           **_common())  # fmt: skip


@blueprint.get("/console/logs")
def logs() -> str:
    level, text, minutes = _log_filters()
    records = _state().store.logs(level=level, text=text, since_ns=_since(minutes))[:500]
    return render_template("console/logs.html", page="logs", records=records, level=level or "", text=text or "",
                           minutes=minutes, **_common())  # fmt: skip


@blueprint.get("/console/model")
def model() -> str:
    state = _state()
    monitoring = state.monitoring() if state.monitoring else None
    bins = {entry["name"]: entry for entry in state.bins()} if state.bins else {}
    return render_template("console/model.html", page="model", monitoring=monitoring, bins=bins, **_common())


# --- the JSON API -----------------------------------------------------------------------------------------------
@blueprint.get("/console/api/traces/<trace_id>")
def trace_json(trace_id: str) -> Response:
    trace = _state().store.get(trace_id)
    if trace is None:
        raise _missing(trace_id)
    return jsonify(trace_document(trace))


@blueprint.get("/console/api/traces")
def traces_json() -> Response:
    errors_only = request.args.get("errors") == "1"
    summaries = _state().store.summaries(errors_only=errors_only)
    return jsonify({"worker": os.getpid(), "traces": [
        {"trace_id": s.trace_id, "name": s.name, "route": s.route, "start_time": _iso(s.start_time),
         "duration_ms": round(s.duration_ms, 3), "error": s.error, "spans": s.spans, "logs": s.logs,
         "kept_because": list(s.reasons)}
        for s in summaries
    ]})  # fmt: skip


@blueprint.get("/console/api/overview")
def overview_json() -> Response:
    state = _state()
    service = current_app.extensions["modellens"].settings.service_name
    return jsonify({"worker": os.getpid(), "service": service, **state.series.snapshot(), "store": state.store.stats()})


@blueprint.get("/console/api/logs")
def logs_json() -> Response:
    level, text, minutes = _log_filters()
    records = _state().store.logs(level=level, text=text, since_ns=_since(minutes))[:500]
    return jsonify({"worker": os.getpid(), "logs": [_log_document(record) for record in records]})


def trace_document(trace: StoredTrace) -> dict[str, Any]:
    """A kept trace as `GET /console/api/traces/{trace_id}` answers it: spans in start order, then its logs."""
    return {
        "trace_id": trace.trace_id,
        "worker": os.getpid(),
        "duration_ms": round(trace.duration_ms, 3),
        "error": trace.error,
        "kept_because": sorted(trace.reasons),
        "spans": [
            {
                "name": span.name,
                "span_id": span.span_id,
                "parent_span_id": span.parent_span_id,
                "kind": span.kind,
                "status": span.status,
                "start_time": _iso(span.start_time),
                "duration_ms": round(span.duration_ms, 3),
                "attributes": span.attributes,
                "events": [
                    {"name": event["name"], "time": _iso(event["time"]), "attributes": event["attributes"]}
                    for event in span.events
                ],
            }
            for span in sorted(trace.spans, key=lambda span: span.start_time)
        ],
        "logs": [_log_document(record) for record in trace.logs],
    }


# --- helpers ----------------------------------------------------------------------------------------------------
def _missing(trace_id: str) -> Problem:
    return Problem(
        status=404,
        title="Trace not kept",
        detail=(
            f"Worker {os.getpid()} keeps no trace {trace_id}: it was evicted, was never sampled, or another worker "
            "served it (each gunicorn worker keeps its own; `make run` serves with one)."
        ),
        slug="trace-not-kept",
    )


def _common() -> dict[str, Any]:
    return {"worker": os.getpid()}


def _log_filters() -> tuple[str | None, str | None, int]:
    level = request.args.get("level") or None
    text = request.args.get("q") or None
    try:
        minutes = max(1, min(int(request.args.get("minutes", _LOG_MINUTES)), 24 * 60))
    except ValueError:
        minutes = _LOG_MINUTES
    return level, text, minutes


def _since(minutes: int) -> int:
    return int((dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)).timestamp() * 1e9)


def _log_document(record: LogRecord) -> dict[str, Any]:
    return {
        "timestamp": record.timestamp,
        "level": record.level,
        "event": record.event,
        "logger": record.logger,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        **record.fields,
    }


def _iso(nanoseconds: int) -> str:
    return dt.datetime.fromtimestamp(nanoseconds / 1e9, tz=dt.UTC).isoformat(timespec="microseconds")


def _when(nanoseconds: int) -> str:
    return dt.datetime.fromtimestamp(nanoseconds / 1e9, tz=dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def _waterfall(trace: StoredTrace) -> list[dict[str, Any]]:
    """The spans as rows of a waterfall, parents before children: depth, offset and width in % of the trace."""
    spans = sorted(trace.spans, key=lambda span: span.start_time)
    start = min(span.start_time for span in spans)
    total = max(max(span.end_time for span in spans) - start, 1)
    children: dict[str | None, list[Any]] = {}
    ids = {span.span_id for span in spans}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    rows: list[dict[str, Any]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            rows.append({
                "span": span, "depth": depth,
                "offset": 100 * (span.start_time - start) / total,
                "width": max(100 * (span.end_time - span.start_time) / total, 0.3),
            })  # fmt: skip
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return rows


def _chart(route: str, data: dict[str, Any]) -> dict[str, Any]:
    """A route's latency chart as SVG coordinates: p50/p95/p99 polylines and exemplar dots over the last hour."""
    width, height, left, bottom = _CHART
    points, exemplars = data["points"], data["exemplars"]
    now = dt.datetime.now(dt.UTC).timestamp()
    t0 = now - 3600
    top = max([p["p99"] for p in points] + [e["seconds"] for e in exemplars] + [0.001]) * 1.1

    def x(t: float) -> float:
        return round(left + (width - left - 8) * (t - t0) / 3600, 1)

    def y(seconds: float) -> float:
        return round(height - bottom - (height - bottom - 8) * min(seconds / top, 1.0), 1)

    lines = {name: [(x(p["time"]), y(p[name])) for p in points] for name in ("p50", "p95", "p99")}
    dots = [
        {"x": x(e["time"]), "y": y(e["seconds"]), "trace_id": e["trace_id"], "ms": round(e["seconds"] * 1000, 1)}
        for e in exemplars
    ]
    spark = 56  # the rate and error charts' height

    def bars(values: list[float]) -> list[dict[str, float]]:
        """One bar per 10 s slot (a line would not show a single busy slot)."""
        peak = max(values) or 1.0
        return [
            {
                "x": x(p["time"]),
                "height": round((spark - 10) * v / peak, 1),
                "y": round(spark - 4 - (spark - 10) * v / peak, 1),
            }
            for p, v in zip(points, values, strict=True)
        ]

    rates = [p["rate"] for p in points]
    error_ratios = [p["error_ratio"] for p in points]
    last = points[-1]
    ticks = [{"y": y(top * f / 4), "label": f"{top * f / 4 * 1000:.0f} ms"} for f in range(5)]
    requests = sum(p["requests"] for p in points)
    errors = sum(p["error_ratio"] * p["requests"] for p in points)
    return {
        "route": route, "width": width, "height": height, "left": left, "bottom": bottom, "lines": lines,
        "dots": dots, "ticks": ticks, "requests": requests, "error_ratio": errors / requests if requests else 0.0,
        "rate": last["rate"], "p50": last["p50"], "p95": last["p95"], "p99": last["p99"],
        "spark": spark, "rate_bars": bars(rates), "rate_peak": max(rates),
        "error_bars": bars(error_ratios), "error_peak": max(error_ratios),
    }  # fmt: skip
