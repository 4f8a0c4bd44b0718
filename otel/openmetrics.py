"""Pull MetricReader rendering Prometheus text 0.0.4 or OpenMetrics 1.0.0 (with trace exemplars) on demand.

It is also the source of the OTLP push (`otel.metrics.MetricPusher` calls `collect_data`): one reader, so each
measurement is aggregated once. The SDK empties its exemplar reservoirs on every collection, so the reader keeps
the newest exemplar of every histogram bucket (and of every counter series) across collections, as
prometheus_client does: a scrape and a push each see the exemplars, whichever collected first.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Exemplar,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from otel._naming import (
    escape_help,
    escape_label_value,
    format_float,
    format_le,
    labels_from_attributes,
    prometheus_name,
    prometheus_unit,
)
from otel._sdk import PullMetricReader, SDKGauge
from otel.metrics_data import merge

__all__ = ["CONTENT_TYPE_OPENMETRICS", "CONTENT_TYPE_TEXT", "OpenMetricsReader", "prometheus_name"]

CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"

_EXEMPLAR_LABELS_MAX = 128  # OpenMetrics: UTF-8 characters in all exemplar label names and values together
_INSTRUMENTS = (
    Counter,
    UpDownCounter,
    Histogram,
    SDKGauge,
    ObservableCounter,
    ObservableUpDownCounter,
    ObservableGauge,
)
_logger = logging.getLogger(__name__)


class OpenMetricsReader(PullMetricReader):
    """Pull reader: collects on demand and renders the Prometheus exposition formats."""

    def __init__(self, *, resource_as_target_info: bool = True) -> None:
        super().__init__(preferred_temporality=dict.fromkeys(_INSTRUMENTS, AggregationTemporality.CUMULATIVE))
        self._target_info = resource_as_target_info
        self._lock = threading.RLock()  # re-entered: collect() calls receive() on this thread
        self._received: MetricsData | None = None
        self._closed = False
        self._reported: set[str] = set()  # family names whose conflicts were logged once already
        self._exemplars = _ExemplarMemory()
        self._producers: list[Callable[[], MetricsData | None]] = []

    def add_producer(self, produce: Callable[[], MetricsData | None]) -> None:
        """Add data the SDK does not aggregate (`otel.histograms`) to every collection of this reader."""
        with self._lock:
            self._producers.append(produce)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Collect now and return (body, content_type). OpenMetrics 1.0.0 text when `accept` asks for
        application/openmetrics-text (Prometheus does), else Prometheus text 0.0.4 (curl, browsers).
        Exemplars are only written in the OpenMetrics format (the 0.0.4 format has none)."""
        openmetrics = _wants_openmetrics(accept)
        families = _families(self.collect_data(), target_info=self._target_info, reported=self._reported)
        body = _write(families, openmetrics=openmetrics).encode()
        return body, CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT

    def collect_data(self) -> MetricsData | None:
        """Collect now; the data with each bucket's newest exemplar (None once shut down)."""
        with self._lock:  # one collection at a time, so each caller gets the data its own collect produced
            if self._closed:
                return None
            self._received = None
            self.collect()
            data, self._received = self._received, None
            for produce in self._producers:
                data = merge(data, produce())
            return None if data is None else self._exemplars.keep(data)

    def receive(self, metrics_data: MetricsData) -> None:
        """What `collect()` collected (called on the collecting thread)."""
        with self._lock:
            self._received = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with self._lock:
            self._closed = True
            self._received = None


class _ExemplarMemory:
    """The newest exemplar per histogram bucket and per counter series, kept across collections (bounded by the
    series the SDK keeps: one exemplar per bucket)."""

    def __init__(self) -> None:
        self._kept: dict[Hashable, dict[int, Exemplar]] = {}

    def keep(self, data: MetricsData) -> MetricsData:
        resources = []
        for resource_metrics in data.resource_metrics:
            scopes = []
            for scope_metrics in resource_metrics.scope_metrics:
                metrics = [self._metric(scope_metrics.scope.name, metric) for metric in scope_metrics.metrics]
                scopes.append(dataclasses.replace(scope_metrics, metrics=metrics))
            resources.append(dataclasses.replace(resource_metrics, scope_metrics=scopes))
        return dataclasses.replace(data, resource_metrics=resources)

    def _metric(self, scope: str, metric: Metric) -> Metric:
        if not isinstance(metric.data, HistogramData | Sum):
            return metric
        data: Any = metric.data
        points = [self._point(scope, metric.name, point) for point in data.data_points]
        return dataclasses.replace(metric, data=dataclasses.replace(data, data_points=points))

    def _point(self, scope: str, name: str, point: Any) -> Any:
        key = (scope, name, frozenset((point.attributes or {}).items()))
        kept = self._kept.get(key)
        if kept is None and not point.exemplars:
            return point
        kept = self._kept.setdefault(key, {})
        bounds = point.explicit_bounds if isinstance(point, HistogramDataPoint) else None
        for exemplar in point.exemplars:
            slot = 0 if bounds is None else bisect_left(bounds, float(exemplar.value))
            newest = kept.get(slot)
            if newest is None or exemplar.time_unix_nano >= newest.time_unix_nano:
                kept[slot] = exemplar
        return dataclasses.replace(point, exemplars=[kept[slot] for slot in sorted(kept)])


def _wants_openmetrics(accept: str | None) -> bool:
    """True when the Accept header names application/openmetrics-text with a q at least that of text/plain."""
    openmetrics = text = 0.0  # best quality of each
    for item in (accept or "").split(","):
        media_type, *params = (part.strip().lower() for part in item.split(";"))
        quality = 1.0
        for key, _, value in (param.partition("=") for param in params):
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        quality = quality if 0.0 <= quality <= 1.0 else 0.0
        if media_type == "application/openmetrics-text":
            openmetrics = max(openmetrics, quality)
        elif media_type in ("text/plain", "text/*", "*/*"):
            text = max(text, quality)
    return openmetrics > 0.0 and openmetrics >= text


@dataclass(frozen=True)
class _Sample:
    name: str
    labels: dict[str, str]
    value: float
    exemplar: str = ""  # ` # {...} value timestamp`, written in OpenMetrics only
    openmetrics: bool = True  # False: 0.0.4 only (a histogram's _sum/_count when it has negative buckets)


@dataclass
class _Family:
    name: str  # as in the 0.0.4 format: counters end in `_total`, the info family is `target_info`
    type: str  # counter | gauge | histogram | info
    help: str
    unit: str
    samples: list[_Sample] = field(default_factory=list)
    series: set[tuple[tuple[str, str], ...]] = field(default_factory=set)


def _families(data: MetricsData | None, *, target_info: bool, reported: set[str]) -> list[_Family]:
    """Group every point into one family per Prometheus name, whatever scope it came from."""
    families: dict[str, _Family] = {}
    for resource_metrics in data.resource_metrics if data else ():
        added = False
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                added |= _add_metric(families, metric, reported)
        labels = labels_from_attributes(resource_metrics.resource.attributes)
        if target_info and added and labels:
            family = _family(families, "target_info", "info", "Target metadata", "", reported)
            if family is not None:
                _add_series(family, labels, [_Sample("target_info", labels, 1)], reported)
    return sorted(families.values(), key=lambda family: family.name != "target_info")  # target_info first


def _add_metric(families: dict[str, _Family], metric: Metric, reported: set[str]) -> bool:
    """Add a metric's points to its family; True if any sample was added."""
    data = metric.data
    if isinstance(data, Sum):
        kind = "counter" if data.is_monotonic else "updowncounter"
    elif isinstance(data, Gauge):
        kind = "gauge"
    elif isinstance(data, HistogramData):
        kind = "histogram"
    else:  # ExponentialHistogram: only the native-histogram protobuf format can carry it; not rendered
        return False
    unit = metric.unit or ""
    name = prometheus_name(metric.name, unit, kind)
    prom_type = kind if kind in ("counter", "histogram") else "gauge"
    family = _family(families, name, prom_type, metric.description or "", prometheus_unit(unit, kind), reported)
    if family is None:
        return False
    added = False
    for point in data.data_points:
        labels = labels_from_attributes(point.attributes)
        if isinstance(point, HistogramDataPoint):
            samples = _histogram_samples(name, labels, point)
        else:
            exemplar = _newest_exemplar(point.exemplars) if kind == "counter" else ""
            samples = [_Sample(name, labels, point.value, exemplar)]
        added |= _add_series(family, labels, samples, reported)
    return added


def _family(
    families: dict[str, _Family], name: str, prom_type: str, help_: str, unit: str, reported: set[str]
) -> _Family | None:
    family = families.setdefault(name, _Family(name, prom_type, help_, unit))
    if family.type != prom_type:
        _report_once(reported, name, f"is a {family.type} and a {prom_type}; the {prom_type} is dropped")
        return None
    family.help = family.help or help_
    return family


def _add_series(family: _Family, labels: dict[str, str], samples: list[_Sample], reported: set[str]) -> bool:
    key = tuple(labels.items())
    if key in family.series:
        _report_once(reported, family.name, f"has the series {dict(key)} twice; the later one is dropped")
        return False
    family.series.add(key)
    family.samples.extend(samples)
    return True


def _report_once(reported: set[str], name: str, problem: str) -> None:
    if name not in reported:
        reported.add(name)
        _logger.warning("Prometheus metric %s %s (same name from several scopes?)", name, problem)


def _histogram_samples(name: str, labels: dict[str, str], point: HistogramDataPoint) -> list[_Sample]:
    bounds = [*point.explicit_bounds, math.inf]
    exemplars = _bucket_exemplars(point.explicit_bounds, point.exemplars)
    samples, cumulative = [], 0
    for index, (bound, count) in enumerate(zip(bounds, point.bucket_counts, strict=True)):
        cumulative += count
        bucket_labels = {**labels, "le": format_le(bound)}
        samples.append(_Sample(f"{name}_bucket", bucket_labels, cumulative, exemplars.get(index, "")))
    # OpenMetrics: a histogram with negative buckets has no _sum, and _count only comes with _sum.
    in_openmetrics = not any(bound < 0 for bound in point.explicit_bounds)
    samples.append(_Sample(f"{name}_sum", labels, point.sum, openmetrics=in_openmetrics))
    samples.append(_Sample(f"{name}_count", labels, point.count, openmetrics=in_openmetrics))
    return samples


def _bucket_exemplars(bounds: Sequence[float], exemplars: Iterable[Exemplar]) -> dict[int, str]:
    """The newest writable exemplar of each bucket index (smallest `le` >= value, else +Inf)."""
    newest: dict[int, tuple[int, str]] = {}
    for exemplar in exemplars:
        text = _exemplar_text(exemplar)
        value = float(exemplar.value)
        index = len(bounds) if math.isnan(value) else bisect_left(bounds, value)
        if text and (index not in newest or exemplar.time_unix_nano >= newest[index][0]):
            newest[index] = (exemplar.time_unix_nano, text)
    return {index: text for index, (_, text) in newest.items()}


def _newest_exemplar(exemplars: Iterable[Exemplar]) -> str:
    written = [(e.time_unix_nano, text) for e in exemplars if (text := _exemplar_text(e))]
    return max(written, key=lambda pair: pair[0])[1] if written else ""


def _exemplar_text(exemplar: Exemplar) -> str:
    """` # {trace_id="…",span_id="…"} value timestamp`, or "" when the exemplar has no labels to write."""
    labels: dict[str, str] = {}
    if exemplar.trace_id:
        labels["trace_id"] = f"{exemplar.trace_id:032x}"
        if exemplar.span_id:
            labels["span_id"] = f"{exemplar.span_id:016x}"
    extra = {k: v for k, v in labels_from_attributes(exemplar.filtered_attributes).items() if k not in labels}
    if _length({**labels, **extra}) <= _EXEMPLAR_LABELS_MAX:  # over the limit: drop the attributes first
        labels.update(extra)
    if not labels or _length(labels) > _EXEMPLAR_LABELS_MAX:
        return ""
    nanos = exemplar.time_unix_nano
    timestamp = f" {nanos // 10**9}.{nanos % 10**9:09d}" if nanos > 0 else ""
    return f" # {_label_text(labels)} {format_float(exemplar.value)}{timestamp}"


def _length(labels: dict[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in labels.items())


def _label_text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items()) + "}"


def _write(families: Iterable[_Family], *, openmetrics: bool) -> str:
    lines: list[str] = []
    for family in families:
        samples = [sample for sample in family.samples if sample.openmetrics or not openmetrics]
        if not samples:
            continue
        name, type_ = family.name, family.type
        if openmetrics and type_ in ("counter", "info"):
            name = name.removesuffix("_total" if type_ == "counter" else "_info")
        elif type_ == "info":
            type_ = "gauge"
        if family.help:
            lines.append(f"# HELP {name} {escape_help(family.help, openmetrics=openmetrics)}")
        lines.append(f"# TYPE {name} {type_}")
        if openmetrics and family.unit and name.endswith(f"_{family.unit}"):
            lines.append(f"# UNIT {name} {family.unit}")
        for sample in samples:
            labels = _label_text(sample.labels) if sample.labels else ""
            exemplar = sample.exemplar if openmetrics else ""
            lines.append(f"{sample.name}{labels} {format_float(sample.value)}{exemplar}")
    if openmetrics:
        lines.append("# EOF")
    return "".join(f"{line}\n" for line in lines)
