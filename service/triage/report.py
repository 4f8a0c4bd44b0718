"""The incident report's content, its JSON form (`--json`), and the formatting both renderings share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.triage.alerts import Alert
from service.triage.loki import LogLine
from service.triage.prometheus import LatencyWindow
from service.triage.tempo import Trace

__all__ = ["Finding", "Report", "clock", "day", "human_duration", "quantile_name", "to_dict"]


@dataclass
class Finding:
    """One slow request: its exemplar (or TraceQL hit), its trace from Tempo and its log lines from Loki."""

    trace_id: str
    source: str  # "exemplar" or "tempo search"
    duration: float | None = None  # seconds: the exemplar value, else the root span's duration
    at: float | None = None
    span_id: str | None = None
    status_code: str | None = None
    trace: Trace | None = None
    trace_note: str | None = None
    logs: list[LogLine] = field(default_factory=list)
    logs_note: str | None = None
    links: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    """Everything one run found; `routes[0]` is the worst route."""

    generated_at: float
    start: float
    end: float
    step: float
    rate_interval: float
    quantile: float
    backends: dict[str, str | None]
    routes: list[LatencyWindow] = field(default_factory=list)
    model_versions: list[tuple[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def worst(self) -> LatencyWindow | None:
        return self.routes[0] if self.routes else None

    @property
    def trace_model_versions(self) -> list[str]:
        """`model.version` span attributes of the fetched traces (when `model_info` had nothing)."""
        return sorted(
            {
                str(span.attributes["model.version"])
                for finding in self.findings
                if finding.trace is not None
                for span in finding.trace.spans
                if "model.version" in span.attributes
            }
        )

    @property
    def headline(self) -> str:
        worst, q = self.worst, quantile_name(self.quantile)
        if worst is None:
            return f"no latency data: no {q} of any route between {clock(self.start)} and {clock(self.end)}"
        return (
            f"{q} of {worst.method} {worst.route} peaked at {human_duration(worst.peak)} at {clock(worst.peak_at)} "
            f"(window {clock(worst.start)[:-1]}–{clock(worst.end)}; baseline {human_duration(worst.baseline)})"
        )


def to_dict(report: Report) -> dict[str, Any]:
    """The same content as the text report, as JSON-ready data (times ISO 8601 UTC, durations in seconds)."""
    window = report.worst
    start, end = (window.start, window.end) if window else (report.start, report.end)
    return {
        "generated_at": _iso(report.generated_at),
        "range": {
            "start": _iso(report.start),
            "end": _iso(report.end),
            "step_s": report.step,
            "rate_interval_s": report.rate_interval,
            "quantile": report.quantile,
        },
        "backends": report.backends,
        "headline": report.headline,
        "worst": _window(window) if window else None,
        "routes": [_window(w) for w in report.routes],
        "model_versions": [{"model_name": n, "model_version": v} for n, v in report.model_versions],
        "trace_model_versions": report.trace_model_versions,
        "traces": [_finding(f) for f in report.findings],
        "alerts": {
            kind: [_alert(a, start, end) for a in report.alerts if a.category == kind]
            for kind in ("drift", "data_quality", "other")
        },
        "links": report.links,
        "warnings": report.warnings,
        "notes": report.notes,
    }


def _window(window: LatencyWindow) -> dict[str, Any]:
    return {
        "route": window.route,
        "method": window.method,
        "job": window.job,
        "peak_s": window.peak,
        "peak_at": _iso(window.peak_at),
        "baseline_s": window.baseline,
        "threshold_s": window.threshold,
        "window": {"start": _iso(window.start), "end": _iso(window.end)},
    }


def _finding(finding: Finding) -> dict[str, Any]:
    trace = finding.trace
    return {
        "trace_id": finding.trace_id,
        "span_id": finding.span_id,
        "source": finding.source,
        "duration_s": finding.duration,
        "at": _iso(finding.at) if finding.at is not None else None,
        "status_code": finding.status_code,
        "trace": _trace(trace) if trace is not None else None,
        "trace_note": finding.trace_note,
        "logs": [
            {
                "time": _iso(line.time_ns / 1e9),
                "line": line.line,
                "labels": line.labels,
                "structured_metadata": line.metadata,
                "parsed": line.parsed,
            }
            for line in finding.logs
        ],
        "logs_note": finding.logs_note,
        "links": finding.links,
    }


def _trace(trace: Trace) -> dict[str, Any]:
    root, stage = trace.root, trace.slowest_stage

    def span(s: Any) -> dict[str, Any]:
        return {
            "name": s.name,
            "span_id": s.span_id,
            "duration_s": s.duration,
            "status": s.status,
            "attributes": s.attributes,
        }

    return {
        "service": root.resource.get("service.name") if root else None,
        "service_version": root.resource.get("service.version") if root else None,
        "root": span(root) if root else None,
        "slowest_stage": span(stage) if stage else None,
        "spans": [span(s) for s in trace.spans],
        "partial": trace.partial,
    }


def _alert(alert: Alert, start: float, end: float) -> dict[str, Any]:
    return {
        "name": alert.name,
        "state": alert.state,
        "severity": alert.severity,
        "labels": alert.labels,
        "summary": alert.summary,
        "active_since": _iso(alert.active_since) if alert.active_since else None,
        "first_firing": _iso(alert.first_firing) if alert.first_firing is not None else None,
        "last_firing": _iso(alert.last_firing) if alert.last_firing is not None else None,
        "during_window": alert.overlaps(start, end),
    }


def quantile_name(quantile: float) -> str:
    """0.99 -> p99, 0.995 -> p99.5."""
    return f"p{quantile * 100:.10g}"


def human_duration(seconds: float) -> str:
    """4.2 ms, 812 ms, 1.25 s."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    millis = seconds * 1000
    return f"{millis:.0f} ms" if millis >= 10 else f"{millis:.1f} ms"


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def clock(timestamp: float | None, millis: bool = False) -> str:
    """03:12:40Z (03:12:40.123Z with `millis`), UTC."""
    if timestamp is None:
        return "?"
    moment = _utc(timestamp)
    return moment.strftime("%H:%M:%S") + (f".{moment.microsecond // 1000:03d}" if millis else "") + "Z"


def day(timestamp: float) -> str:
    """2026-08-04, UTC."""
    return _utc(timestamp).strftime("%Y-%m-%d")


def _iso(timestamp: float) -> str:
    moment = _utc(timestamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"
