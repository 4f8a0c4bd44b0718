"""One triage run: Prometheus (required) → worst window and exemplars → Tempo traces → Loki lines → report."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

import requests

from service.triage.alerts import HISTORY_QUERY, merge_alerts
from service.triage.backend import Backend, BackendError, Unreachable
from service.triage.links import explore_url
from service.triage.loki import LokiClient, logql_for_trace
from service.triage.options import Options
from service.triage.prometheus import (
    ExemplarRef,
    LatencyWindow,
    PrometheusClient,
    exemplar_selector,
    latency_query,
    parse_exemplars,
    worst_windows,
)
from service.triage.report import Finding, Report, human_duration, quantile_name, to_dict
from service.triage.tempo import TempoClient
from service.triage.text import render_text

__all__ = ["run"]

_MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)  # an answer not in the documented shape
_TRACE_MARGIN = 3600.0  # Tempo looks for a trace within its exemplar's time ± this
_LOG_MARGIN = 300.0  # Loki looks for a trace's lines within the trace ± this


def run(options: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the report (default stdout): 0 when it was produced, even if empty; 2 when Prometheus cannot answer."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    report = Report(
        generated_at=time.time(),
        start=options.start,
        end=options.end,
        step=options.step,
        rate_interval=options.rate_interval,
        quantile=options.quantile,
        backends={
            "prometheus": options.prometheus,
            "tempo": options.tempo,
            "loki": options.loki,
            "grafana": options.grafana,
        },
    )
    with requests.Session() as session:
        prometheus = PrometheusClient(Backend("Prometheus", options.prometheus, session, options.timeout))
        try:
            _latency(report, prometheus, options)
        except Unreachable as error:
            return _fail(f"{error}. {_PROMETHEUS_HINT}", options, out, err)
        except BackendError as error:
            return _fail(str(error), options, out, err)
        _prometheus_details(report, prometheus, options)
        tempo = TempoClient(Backend("Tempo", options.tempo, session, options.timeout)) if options.tempo else None
        loki = LokiClient(Backend("Loki", options.loki, session, options.timeout)) if options.loki else None
        if report.worst is not None and not report.findings:
            _search_tempo(report, tempo, options)
        _follow(report, tempo, loki, options)
    _links(report, options)
    out.write(json.dumps(to_dict(report), indent=2) + "\n" if options.json else render_text(report))
    return 0


_PROMETHEUS_HINT = (
    "Inside the compose network Prometheus is http://prometheus:9090 (docker compose exec model modellens triage); "
    "it is not published on the host. Pass --prometheus URL or set MODELLENS_PROMETHEUS_URL."
)


def _fail(message: str, options: Options, out: TextIO, err: TextIO) -> int:
    print(f"error: {message}", file=err)
    if options.json:
        out.write(json.dumps({"error": message}) + "\n")
    return 2


def _latency(report: Report, prometheus: PrometheusClient, options: Options) -> None:
    """The worst window per route; from the scrape mirror only when the complete (OTLP) path has nothing."""
    for mirrors in (False, True):
        expr = latency_query(options.quantile, options.rate_interval, options.route, mirrors=mirrors)
        try:
            matrix = prometheus.query_range(expr, options.start, options.end, options.step)
            report.routes = worst_windows(matrix, options.rate_interval)
        except _MALFORMED as error:
            raise BackendError(f"Prometheus answered query_range in an unexpected format: {error!r}") from None
        report.links["latency"] = explore_url(
            options.grafana, "prometheus", {"expr": expr, "range": True}, options.start, options.end
        )
        if report.routes:
            if mirrors:
                report.warnings.append(
                    "latency comes from series labelled `mirror` (the /metrics scrape): the OTLP path has none in "
                    "the range; is the Collector → Prometheus pipeline working?"
                )
            return
    report.notes.append(
        "Prometheus has no http_server_request_duration_seconds samples for the selected routes in the range: "
        "is the service receiving traffic, and are its metrics reaching Prometheus (OTLP push or scrape)?"
    )


def _prometheus_details(report: Report, prometheus: PrometheusClient, options: Options) -> None:
    """Model versions and exemplars of the worst window, and the alerts; failures become warnings."""
    worst = report.worst
    if worst is not None:
        try:
            report.model_versions = prometheus.model_versions(worst.start, worst.end)
        except (BackendError, *_MALFORMED) as error:
            report.warnings.append(f"model versions: {error}")
        try:
            refs = parse_exemplars(prometheus.exemplars(exemplar_selector(worst), worst.start, worst.end))
        except BackendError as error:
            report.warnings.append(f"exemplars: {error}")
        except _MALFORMED as error:
            report.warnings.append(f"exemplars: Prometheus answered in an unexpected format: {error!r}")
        else:
            _choose_exemplars(report, worst, refs, options.traces)
    try:
        report.alerts = merge_alerts(
            prometheus.query_range(HISTORY_QUERY, options.start, options.end, options.step), prometheus.alerts()
        )
    except BackendError as error:
        report.warnings.append(f"alerts: {error}")
    except _MALFORMED as error:
        report.warnings.append(f"alerts: Prometheus answered in an unexpected format: {error!r}")


def _choose_exemplars(report: Report, worst: LatencyWindow, refs: list[ExemplarRef], count: int) -> None:
    """The slowest exemplars slower than the route's usual quantile (else the slowest there are).

    Exemplar values are exact request durations, while `histogram_quantile` interpolates inside a bucket and can
    overshoot them, so the bar is the usual level (`baseline`), not the half-way level that bounds the window.
    """
    if not refs:
        report.notes.append(
            f"no exemplars in the window for {worst.method} {worst.route}: exemplars need Prometheus' exemplar "
            "storage (--enable-feature=exemplar-storage) and sampled requests (OTEL_TRACES_SAMPLER), and "
            "Prometheus keeps a bounded number of them."
        )
        return
    slow = [ref for ref in refs if ref.value > worst.baseline]
    if not slow:
        report.notes.append(
            f"no exemplar in the window is slower than the usual {quantile_name(report.quantile)} "
            f"({human_duration(worst.baseline)}); these are the slowest ones Prometheus kept."
        )
    report.findings = [
        Finding(
            ref.trace_id, "exemplar", ref.value, ref.timestamp, ref.span_id, ref.series.get("http_response_status_code")
        )
        for ref in (slow or refs)[:count]
    ]


def _search_tempo(report: Report, tempo: TempoClient | None, options: Options) -> None:
    """Without exemplars, ask Tempo for the window's server spans on the route slower than usual (TraceQL)."""
    worst = report.worst
    if tempo is None or worst is None:
        return
    traceql = (
        f"{{ span.http.route = {json.dumps(worst.route)} && kind = server && "
        f"duration > {max(round(worst.baseline * 1000), 1)}ms }}"
    )
    try:
        trace_ids = tempo.search(traceql, worst.start, worst.end, options.traces)
    except BackendError as error:
        report.warnings.append(f"Tempo search: {error}")
        return
    report.findings = [Finding(trace_id, "tempo search", at=worst.peak_at) for trace_id in trace_ids]
    if trace_ids:
        report.notes.append(f"traces found by a Tempo search instead: {traceql}")


def _follow(report: Report, tempo: TempoClient | None, loki: LokiClient | None, options: Options) -> None:
    """Fetch each finding's trace, then its log lines; the first failure of a backend switches it off."""
    if report.findings and tempo is None:
        report.notes.append(
            "Tempo is not configured (--tempo '' or MODELLENS_TEMPO_URL=''): the report stops at the exemplar "
            "trace ids; the Explore links open them in Grafana."
        )
    if report.findings and loki is None:
        report.notes.append("Loki is not configured (--loki ''): no log lines.")
    for finding in report.findings:
        at = finding.at if finding.at is not None else options.end
        if tempo is not None:
            try:
                finding.trace = tempo.trace(finding.trace_id, at - _TRACE_MARGIN, at + _TRACE_MARGIN)
            except BackendError as error:
                report.warnings.append(f"{error}; continuing without traces")
                tempo = None
            else:
                if finding.trace is None:
                    finding.trace_note = "not in Tempo (not ingested yet, or past retention)"
                elif finding.duration is None and finding.trace.root is not None:
                    finding.duration = finding.trace.root.duration
        if loki is not None:
            start, end = _trace_span(finding, at)
            try:
                finding.logs = loki.logs(logql_for_trace(_service(finding, options), finding.trace_id), start, end)
            except BackendError as error:
                report.warnings.append(f"{error}; continuing without logs")
                loki = None
            else:
                finding.logs_note = None if finding.logs else "no log lines in Loki for this trace"
    report.findings.sort(key=lambda f: -(f.duration or 0.0))


def _trace_span(finding: Finding, at: float) -> tuple[float, float]:
    spans = finding.trace.spans if finding.trace is not None else ()
    if spans:
        return min(s.start_ns for s in spans) / 1e9 - _LOG_MARGIN, max(s.end_ns for s in spans) / 1e9 + _LOG_MARGIN
    return at - _LOG_MARGIN, at + _LOG_MARGIN


def _service(finding: Finding, options: Options) -> str | None:
    if options.service:
        return options.service
    root = finding.trace.root if finding.trace is not None else None
    name = root.resource.get("service.name") if root is not None else None
    return str(name) if name else None


def _links(report: Report, options: Options) -> None:
    for finding in report.findings:
        at = finding.at if finding.at is not None else options.end
        start, end = _trace_span(finding, at)
        finding.links["trace"] = explore_url(
            options.grafana, "tempo", {"queryType": "traceql", "query": finding.trace_id}, start, end
        )
        logql = logql_for_trace(_service(finding, options), finding.trace_id)
        finding.links["logs"] = explore_url(options.grafana, "loki", {"expr": logql, "queryType": "range"}, start, end)
