"""Prometheus: the worst latency window per route, the exemplars inside it, and the model versions serving then.

Both paths carry the same series names: the OTLP push (job = service.name, instance = service.instance.id) and a
scrape of the service's /metrics. Latency quantiles skip series labelled `mirror` (the compose stack marks its
scrape job as a mirror of the complete OTLP path, see prometheus/prometheus.yaml) and keep `job`, so the two paths
are never added up; exemplars are taken from every path, since each one points at a real request.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.triage.backend import Backend, BackendError

__all__ = [
    "LATENCY_METRIC",
    "ExemplarRef",
    "LatencyWindow",
    "PrometheusClient",
    "exemplar_selector",
    "latency_query",
    "parse_exemplars",
    "window_around_peak",
    "worst_windows",
]

LATENCY_METRIC = "http_server_request_duration_seconds"
_PROBE_ROUTES = "/healthz|/readyz|/metrics"
_TRACE_ID_LABELS = ("trace_id", "traceID", "traceId")  # OTLP / OpenMetrics path; Tempo's metrics-generator


@dataclass(frozen=True)
class LatencyWindow:
    """Where one route's latency quantile peaked, and the span of request times that drove the elevated part."""

    route: str
    method: str
    job: str
    peak: float  # seconds
    peak_at: float
    baseline: float  # the usual level: lower quartile of the quantile over the range (robust to long spikes)
    threshold: float  # half-way between baseline and peak: where the window around the peak ends
    start: float  # earliest end time of a request counted in an elevated evaluation (first point - rate interval)
    end: float  # last elevated evaluation


@dataclass(frozen=True)
class ExemplarRef:
    """One exemplar: a sampled request's trace, its duration (the exemplar value) and when it was recorded."""

    trace_id: str
    span_id: str | None
    value: float
    timestamp: float
    series: dict[str, str]


def quote(value: str) -> str:
    """A PromQL (Go) double-quoted string literal."""
    return json.dumps(value)


def latency_query(quantile: float, rate_interval: float, route: str | None, mirrors: bool = False) -> str:
    """`histogram_quantile` per job, route and method over `rate_interval`, skipping mirror series unless asked."""
    routes = f"http_route=~{quote(route)}" if route else f'http_route!="",http_route!~{quote(_PROBE_ROUTES)}'
    selector = f"{LATENCY_METRIC}_bucket{{{routes}}}" if mirrors else f'{LATENCY_METRIC}_bucket{{mirror="",{routes}}}'
    return (
        f"histogram_quantile({quantile:g}, sum by (job, http_route, http_request_method, le) "
        f"(rate({selector}[{duration(rate_interval)}])))"
    )


def exemplar_selector(window: LatencyWindow) -> str:
    """The bucket series of the window's route and method, on every path."""
    return f"{LATENCY_METRIC}_bucket{{http_route={quote(window.route)},http_request_method={quote(window.method)}}}"


def duration(seconds: float) -> str:
    """A PromQL duration literal."""
    return f"{seconds:g}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def worst_windows(matrix: Iterable[dict[str, Any]], rate_interval: float) -> list[LatencyWindow]:
    """One window per (route, method), from a `query_range` matrix of `latency_query`; highest peak first."""
    best: dict[tuple[str, str], LatencyWindow] = {}
    for series in matrix:
        points = [(float(t), float(v)) for t, v in series.get("values", []) if math.isfinite(float(v))]
        if not points:
            continue
        labels = series.get("metric", {})
        window = window_around_peak(labels, points, rate_interval)
        key = (window.route, window.method)
        if key not in best or window.peak > best[key].peak:
            best[key] = window
    return sorted(best.values(), key=lambda w: (-w.peak, w.route))


def window_around_peak(
    labels: dict[str, str], points: list[tuple[float, float]], rate_interval: float
) -> LatencyWindow:
    """The run of points around the peak that stays at or above half-way between the usual level and the peak."""
    values = [v for _, v in points]
    peak_index = max(range(len(points)), key=lambda i: values[i])
    baseline = statistics.quantiles(values, n=4, method="inclusive")[0] if len(values) > 1 else values[0]
    threshold = baseline + (values[peak_index] - baseline) / 2
    first = last = peak_index

    def joined(i: int, j: int) -> bool:  # no gap longer than the rate interval (a gap means no requests)
        return points[j][0] - points[i][0] <= rate_interval

    while first > 0 and values[first - 1] >= threshold and joined(first - 1, first):
        first -= 1
    while last + 1 < len(points) and values[last + 1] >= threshold and joined(last, last + 1):
        last += 1
    return LatencyWindow(
        route=labels.get("http_route", ""),
        method=labels.get("http_request_method", ""),
        job=labels.get("job", ""),
        peak=values[peak_index],
        peak_at=points[peak_index][0],
        baseline=baseline,
        threshold=threshold,
        start=points[first][0] - rate_interval,
        end=points[last][0],
    )


def parse_exemplars(data: Iterable[dict[str, Any]]) -> list[ExemplarRef]:
    """`query_exemplars` data -> one exemplar per trace (its largest value), slowest first."""
    by_trace: dict[str, ExemplarRef] = {}
    for series in data:
        labels = series.get("seriesLabels", {})
        for exemplar in series.get("exemplars") or []:
            found = exemplar.get("labels", {})
            trace_id = next((found[name] for name in _TRACE_ID_LABELS if found.get(name)), None)
            if trace_id is None:
                continue
            trace_id = normalise_trace_id(trace_id)
            ref = ExemplarRef(
                trace_id=trace_id,
                span_id=found.get("span_id") or found.get("spanID"),
                value=float(exemplar["value"]),
                timestamp=float(exemplar["timestamp"]),
                series=dict(labels),
            )
            if trace_id not in by_trace or ref.value > by_trace[trace_id].value:
                by_trace[trace_id] = ref
    return sorted(by_trace.values(), key=lambda ref: (-ref.value, -ref.timestamp))


def normalise_trace_id(trace_id: str) -> str:
    """Lowercase hex, left-padded to 32 digits (Tempo drops leading zeros); anything else unchanged."""
    text = trace_id.strip()
    if text and len(text) <= 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower().rjust(32, "0")
    return text


class PrometheusClient:
    """The Prometheus HTTP API calls triage makes (`/api/v1/...`); errors become `BackendError`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _data(self, endpoint: str, **params: str | float) -> Any:
        body = self.backend.get_json(f"/api/v1/{endpoint}", params=params)
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise BackendError(f"Prometheus rejected {endpoint}: {error}")
        return body.get("data")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """`data.result` of a range query (a matrix)."""
        result: list[dict[str, Any]] = self._data("query_range", query=expr, start=start, end=end, step=step)["result"]
        return result

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """`data.result` of an instant query."""
        result: list[dict[str, Any]] = self._data("query", query=expr, time=at)["result"]
        return result

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """`data` of `query_exemplars`: `[{"seriesLabels": ..., "exemplars": [...]}]`."""
        data: list[dict[str, Any]] = self._data("query_exemplars", query=expr, start=start, end=end) or []
        return data

    def alerts(self) -> list[dict[str, Any]]:
        """`data.alerts` of `/api/v1/alerts`: the alerts pending or firing now."""
        alerts: list[dict[str, Any]] = self._data("alerts").get("alerts") or []
        return alerts

    def model_versions(self, start: float, end: float) -> list[tuple[str, str]]:
        """(model_name, model_version) pairs that `model_info` reported between `start` and `end`."""
        expr = f"group by (model_name, model_version) (last_over_time(model_info[{duration(max(end - start, 1))}]))"
        pairs = {
            (r["metric"].get("model_name", ""), r["metric"].get("model_version", "")) for r in self.query(expr, end)
        }
        return sorted(pairs)
