"""The plain-text report, readable at 3 a.m.: headline, model, warnings, slowest traces with their stage and logs,
alerts, Explore links, notes."""

from __future__ import annotations

from typing import Any

from service.triage.alerts import Alert
from service.triage.loki import LogLine
from service.triage.report import Finding, Report, clock, day, human_duration, quantile_name

__all__ = ["render_text"]

# Structured metadata Loki adds to every OTel log record, or that repeats what the report already says.
_QUIET_FIELDS = frozenset(
    {"trace_id", "span_id", "observed_timestamp", "flags", "scope_name", "scope_version", "detected_level"}
    | {"service_name", "service_instance_id", "service_version", "deployment_environment", "severity_number"}
)
_MAX_ATTRIBUTES = 10
_MAX_LOG_LINES = 10
_MAX_WIDTH = 200


def render_text(report: Report) -> str:
    """The report as plain text, one blank line between sections."""
    q = quantile_name(report.quantile)
    lines = [
        f"modellens triage: {day(report.start)} {clock(report.start)} → {clock(report.end)} "
        f"({q} over {report.rate_interval:g}s windows, step {report.step:g}s)",
        "",
        report.headline,
    ]
    if report.model_versions:
        lines.append("model: " + ", ".join(f"{name} {version}" for name, version in report.model_versions))
    elif versions := report.trace_model_versions:
        lines.append("model version (from the traces): " + ", ".join(versions))
    if len(report.routes) > 1:
        others = ", ".join(f"{w.method} {w.route} {human_duration(w.peak)}" for w in report.routes[1:6])
        lines.append(f"other routes, peak {q}: {others}")
    lines += [f"warning: {text}" for text in report.warnings]  # what the report could not see comes first
    if report.findings:
        lines += ["", "Slowest requests in the window, slowest first:"]
        for number, finding in enumerate(report.findings, 1):
            lines += _finding(number, finding)
    lines += ["", f"Alerts between {clock(report.start)} and {clock(report.end)}:"]
    lines += _alerts(report, ("drift", "data_quality"), "drift and data quality")
    lines += _alerts(report, ("other",), "other")
    if report.links:
        lines += ["", "Grafana Explore:", *(f"  {name}: {url}" for name, url in report.links.items())]
    if report.notes:
        lines += ["", *(f"note: {text}" for text in report.notes)]
    return "\n".join(lines) + "\n"


def _finding(number: int, finding: Finding) -> list[str]:
    head = f"  {number}. {human_duration(finding.duration) if finding.duration is not None else '?'}"
    head += f"  trace {finding.trace_id}"
    head += f"  status {finding.status_code}" if finding.status_code else ""
    head += f"  at {clock(finding.at)}" if finding.at is not None else ""
    head += "  (found by a Tempo search)" if finding.source == "tempo search" else ""
    lines = [head]
    trace = finding.trace
    if trace is not None:
        stage, root = trace.slowest_stage, trace.root
        if stage is not None:
            lines.append(
                f"     slowest stage: {stage.name} {human_duration(stage.duration)}  {_pairs(stage.attributes)}"
            )
        if root is not None:
            service = " ".join(str(root.resource[k]) for k in ("service.name", "service.version") if k in root.resource)
            failed = ", span status ERROR" if root.status == "error" else ""
            lines.append(f"     request: {root.name} {human_duration(root.duration)}{failed}, service {service or '?'}")
        if trace.partial:
            lines.append(f"     partial trace: {trace.partial}")
    if finding.trace_note:
        lines.append(f"     trace: {finding.trace_note}")
    if finding.logs:
        lines.append("     logs:")
        lines += [f"       {_log_line(line)}" for line in finding.logs[:_MAX_LOG_LINES]]
    elif finding.logs_note:
        lines.append(f"     logs: {finding.logs_note}")
    lines += [f"     open {name}: {url}" for name, url in finding.links.items()]
    return [line.rstrip() for line in lines]


def _alerts(report: Report, categories: tuple[str, ...], title: str) -> list[str]:
    chosen = [alert for alert in report.alerts if alert.category in categories]
    if not chosen:
        return [f"  {title}: none"]
    window = report.worst
    lines = [f"  {title}:"]
    for alert in chosen:
        during = "  [during the spike]" if window and alert.overlaps(window.start, window.end) else ""
        summary = f": {alert.summary}" if alert.summary else ""
        lines.append(
            f"    {alert.state.upper()} {alert.name} {{{_pairs(alert.labels)}}} {_when(alert)}{during}{summary}"
        )
    return lines


def _when(alert: Alert) -> str:
    if alert.state in ("firing", "pending") and alert.active_since is not None:
        return f"{alert.state} since {clock(alert.active_since)}"
    if alert.first_firing is not None and alert.last_firing is not None:
        return f"fired {clock(alert.first_firing)}–{clock(alert.last_firing)}"
    return alert.state


def _log_line(line: LogLine) -> str:
    fields = line.fields
    shown = {k: v for k, v in fields.items() if k not in _QUIET_FIELDS and k != "severity_text"}
    head = " ".join(
        part for part in (clock(line.time_ns / 1e9, millis=True), fields.get("severity_text"), line.line) if part
    )
    text = f"{head}  {_pairs(shown)}".rstrip()
    return text if len(text) <= _MAX_WIDTH else text[: _MAX_WIDTH - 1] + "…"


def _pairs(values: dict[str, Any]) -> str:
    items = sorted(values.items())[:_MAX_ATTRIBUTES]
    shown = " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in items)
    return shown + (" …" if len(values) > _MAX_ATTRIBUTES else "")
