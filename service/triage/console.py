"""`modellens triage --console URL`: the same incident report from the service's own console, with no backend.

The console's API (`/console/api/overview`, `/console/api/traces/{id}`) stands in for all three backends: its
per-route series give the latency quantile over time (Prometheus's part), its exemplars the slow requests, its
kept traces the spans (Tempo's part) and their log lines (Loki's). The report is what `triage` prints from the
backends; its links open the console's own pages instead of Grafana. It covers one worker: the one that answered
(the console says which).
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any, TextIO

import requests

from service.triage.backend import Backend, BackendError, NotFound
from service.triage.loki import LogLine
from service.triage.options import Options
from service.triage.prometheus import LatencyWindow, window_around_peak
from service.triage.report import Finding, Report, to_dict
from service.triage.tempo import Span, Trace
from service.triage.text import render_text

__all__ = ["run_console"]

_QUANTILES = {0.5: "p50", 0.95: "p95", 0.99: "p99"}  # what the console's series carry
_PROBES = ("/healthz", "/readyz", "/metrics")


def run_console(options: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the report from `options.console`: 0 when produced, 2 when the console cannot answer."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    assert options.console is not None
    name = min(_QUANTILES, key=lambda q: abs(q - options.quantile))
    report = Report(
        generated_at=time.time(), start=options.start, end=options.end, step=options.step,
        rate_interval=options.rate_interval, quantile=name, backends={"console": options.console},
    )  # fmt: skip
    with requests.Session() as session:
        console = Backend("the console", options.console, session, options.timeout)
        try:
            overview = console.get_json("/console/api/overview")
            report.routes = _windows(overview, options, _QUANTILES[name])
        except BackendError as error:
            print(f"error: {error}. Is the console on (MODELLENS_CONSOLE) and the URL the service's?", file=err)
            return 2
        except (KeyError, TypeError, ValueError) as error:
            print(f"error: the console answered in an unexpected format: {error!r}", file=err)
            return 2
        report.notes.append(f"from the console of worker {overview.get('worker')}: what that worker served")
        if not report.routes:
            report.notes.append("the console has no requests in the range for the selected routes")
        else:
            report.findings = _findings(overview, report.routes[0], options.traces)
        service = {"service.name": overview.get("service")} if overview.get("service") else {}
        for finding in report.findings:
            _follow(console, finding, options.console, service)
    out.write(json.dumps(to_dict(report), indent=2) + "\n" if options.json else render_text(report))
    return 0


def _windows(overview: dict[str, Any], options: Options, quantile: str) -> list[LatencyWindow]:
    windows = []
    slot = float(overview["slot_seconds"])
    for route, data in overview["routes"].items():
        if route in _PROBES or (options.route is not None and not re.search(options.route, route)):
            continue
        points = [(p["time"] + slot, p[quantile]) for p in data["points"] if options.start <= p["time"] <= options.end]
        if points:
            windows.append(window_around_peak({"http_route": route}, points, slot))
    return sorted(windows, key=lambda window: (-window.peak, window.route))


def _findings(overview: dict[str, Any], worst: LatencyWindow, count: int) -> list[Finding]:
    exemplars = overview["routes"][worst.route]["exemplars"]
    inside = [e for e in exemplars if worst.start <= e["time"] <= worst.end + overview["slot_seconds"]]
    inside.sort(key=lambda e: -e["seconds"])
    slow = [e for e in inside if e["seconds"] > worst.baseline]
    return [Finding(e["trace_id"], "exemplar", e["seconds"], e["time"]) for e in (slow or inside)[:count]]


def _follow(console: Backend, finding: Finding, base: str, resource: dict[str, Any]) -> None:
    finding.links["trace"] = f"{base.rstrip('/')}/console/traces/{finding.trace_id}"
    try:
        document = console.get_json(f"/console/api/traces/{finding.trace_id}")
    except NotFound:
        finding.trace_note = "no longer kept by the console (evicted), or kept by another worker"
        finding.logs_note = "its log lines went with it"
        return
    except BackendError as error:
        finding.trace_note = str(error)
        return
    finding.trace = Trace(
        finding.trace_id, tuple(_span(finding.trace_id, span, resource) for span in document["spans"])
    )
    finding.logs = [_line(record) for record in document["logs"]]
    finding.logs_note = None if finding.logs else "no log lines carried this trace's id"


def _span(trace_id: str, raw: dict[str, Any], resource: dict[str, Any]) -> Span:
    start = _ns(raw["start_time"])
    return Span(
        trace_id=trace_id, span_id=raw["span_id"], parent_span_id=raw["parent_span_id"], name=raw["name"],
        kind=raw.get("kind", ""), start_ns=start, end_ns=start + int(raw["duration_ms"] * 1e6),
        attributes=raw["attributes"], status=raw.get("status", "unset"), resource=resource,
    )  # fmt: skip


def _line(record: dict[str, Any]) -> LogLine:
    shown = ("event", "timestamp", "trace_id", "span_id")  # the line, its time, and what the finding already says
    fields = {key: str(value) for key, value in record.items() if value is not None and key not in shown}
    return LogLine(time_ns=_ns(record["timestamp"]), line=str(record.get("event", "")), labels={}, metadata={},
                   parsed=fields)  # fmt: skip


def _ns(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)
