"""Alerts active in the range: firing history from `ALERTS`, current state and summaries from `/api/v1/alerts`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["DATA_QUALITY_ALERTS", "DRIFT_ALERTS", "HISTORY_QUERY", "Alert", "category", "merge_alerts"]

DRIFT_ALERTS = frozenset(
    {"ModelFeatureDrift", "ModelFeatureDriftWarning", "ModelPredictionDrift", "ModelMultivariateDrift"}
)
DATA_QUALITY_ALERTS = frozenset({"ModelDataQualitySpike"})
HISTORY_QUERY = 'ALERTS{alertstate="firing"}'
_HIDDEN = frozenset({"alertname", "alertstate", "__name__"})


@dataclass
class Alert:
    """One alert instance (alert name + labels): when it fired in the range and what it is doing now."""

    name: str
    labels: dict[str, str]
    category: str  # "drift", "data_quality" or "other"
    state: str  # "firing" or "pending" now, or "resolved" (fired in the range, no longer active)
    first_firing: float | None = None  # first and last evaluation seen firing in the range
    last_firing: float | None = None
    active_since: float | None = None
    summary: str | None = None

    @property
    def severity(self) -> str | None:
        return self.labels.get("severity")

    def overlaps(self, start: float, end: float) -> bool:
        """Whether it was firing at some point in [start, end] (active alerts count up to now)."""
        first = self.first_firing if self.first_firing is not None else self.active_since
        last = self.last_firing if self.state != "firing" else end
        return first is not None and last is not None and first <= end and last >= start


def category(name: str) -> str:
    """`drift` and `data_quality` alerts are the model's own; everything else is `other`."""
    if name in DRIFT_ALERTS or "Drift" in name:
        return "drift"
    if name in DATA_QUALITY_ALERTS or "DataQuality" in name:
        return "data_quality"
    return "other"


def merge_alerts(history: Iterable[dict[str, Any]], active: Iterable[dict[str, Any]]) -> list[Alert]:
    """Join the `ALERTS{alertstate="firing"}` matrix with `/api/v1/alerts` on (alertname, labels)."""
    alerts: dict[tuple[tuple[str, str], ...], Alert] = {}
    for series in history:
        metric = series.get("metric", {})
        times = [float(t) for t, _ in series.get("values", [])]
        if not times or "alertname" not in metric:
            continue
        alert = _get(alerts, metric["alertname"], metric, "resolved")
        alert.first_firing = min(times) if alert.first_firing is None else min(alert.first_firing, *times)
        alert.last_firing = max(times) if alert.last_firing is None else max(alert.last_firing, *times)
    for entry in active:
        labels = entry.get("labels", {})
        if "alertname" not in labels:
            continue
        alert = _get(alerts, labels["alertname"], labels, entry.get("state", "firing"))
        alert.state = entry.get("state", alert.state)
        alert.active_since = _timestamp(entry.get("activeAt"))
        alert.summary = (entry.get("annotations") or {}).get("summary")
    order = {"firing": 0, "pending": 1, "resolved": 2}
    return sorted(alerts.values(), key=lambda a: (order.get(a.state, 3), a.name, sorted(a.labels.items())))


def _get(alerts: dict[tuple[tuple[str, str], ...], Alert], name: str, labels: dict[str, str], state: str) -> Alert:
    shown = {k: v for k, v in labels.items() if k not in _HIDDEN}
    key = (("alertname", name), *sorted(shown.items()))
    if key not in alerts:
        alerts[key] = Alert(name=name, labels=shown, category=category(name), state=state)
    return alerts[key]


def _timestamp(text: Any) -> float | None:
    """RFC 3339 with up to nanoseconds (Go's format) -> Unix seconds; None if absent or unparsable."""
    if not isinstance(text, str) or not text:
        return None
    head, dot, rest = text.partition(".")
    if dot:  # Python < 3.12 accepts at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
        text = f"{head}.{rest}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
