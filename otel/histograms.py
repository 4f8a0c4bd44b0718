"""Histograms aggregated in process: a record finds its series with one hash of the attributes' items.

The SDK's `Histogram.record` cleans the attribute dict into a new dict, copies that, and hashes it with a recursive
walk, on every call: with the four attributes of `http.server.request.duration` that is half of its cost
(`benchmarks/micro.py`, `histogram_record_sdk`). A service records two or three histograms per request with the same
few attribute sets, so `setup_metrics` hands out these instead. The attributes are cleaned once, when their series is
first seen; a record is then a tuple hash, a bisect and a few additions under the series' lock.

They keep what the SDK's explicit-bucket histogram gives: name, unit and description; the advisory bucket
boundaries (else the SDK's defaults); cumulative count, sum, min and max; one exemplar per bucket, chosen by the
provider's exemplar filter (`OTEL_METRICS_EXEMPLAR_FILTER`) and emptied at each collection; and the SDK's limit of
2000 series per histogram, past which measurements go to one `otel.metric.overflow` series. Negative and non-finite
values are dropped with a warning, as the SDK does.

What differs: Views do not apply to them, and only readers that take producers see them (`OpenMetricsReader`, and
the OTLP push that reuses its collections); `setup_metrics` refuses any other reader rather than lose them.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from bisect import bisect_left
from collections.abc import Hashable, Mapping, Sequence
from time import time_ns

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Exemplar, ExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, get_current_span
from opentelemetry.util.types import AnyValue, Attributes

__all__ = ["DEFAULT_BOUNDARIES", "HistogramProducer"]

_log = logging.getLogger(__name__)

# The SDK's default explicit-bucket boundaries, for a histogram created without advisory boundaries.
DEFAULT_BOUNDARIES: tuple[float, ...] = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0,
)  # fmt: skip
_CARDINALITY_LIMIT = 2000  # the SDK's default per instrument and reader
_OVERFLOW_ATTRIBUTES: dict[str, AnyValue] = {"otel.metric.overflow": True}
_NAME = re.compile(r"[a-zA-Z][-_./a-zA-Z0-9]{0,254}")  # the API's instrument name syntax


class HistogramProducer:
    """Every in-process histogram of one MeterProvider; `produce` returns their data points at collection time."""

    def __init__(self, resource: Resource, exemplar_filter: ExemplarFilter) -> None:
        self._resource = resource
        self._filter = exemplar_filter
        self._lock = threading.Lock()
        self._histograms: dict[tuple[InstrumentationScope, str], _Histogram] = {}

    def create_histogram(
        self,
        scope: InstrumentationScope,
        name: str,
        unit: str = "",
        description: str = "",
        boundaries: Sequence[float] | None = None,
    ) -> Histogram:
        """The histogram `name` of `scope`: created once, the same object on every later call (as the SDK does)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid instrument name {name!r}: a letter, then up to 254 of [-_./a-zA-Z0-9]")
        bounds = _boundaries(name, boundaries)
        key = (scope, name.lower())
        with self._lock:
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = _Histogram(name, unit, description, bounds, self._filter)
            elif (histogram.unit, histogram.description, histogram.bounds) != (unit, description, bounds):
                _log.warning("histogram %r of scope %r was created before with another unit, description or "
                             "boundaries; the first one is kept", name, scope.name)  # fmt: skip
            return histogram

    def produce(self) -> MetricsData | None:
        """The cumulative data of every histogram that has recorded something (None if none has)."""
        now = time_ns()
        with self._lock:
            histograms = list(self._histograms.items())
        scopes: dict[InstrumentationScope, list[Metric]] = {}
        for (scope, _name), histogram in histograms:
            metric = histogram.collect(now)
            if metric is not None:
                scopes.setdefault(scope, []).append(metric)
        if not scopes:
            return None
        scope_metrics = [ScopeMetrics(scope, metrics, scope.schema_url or "") for scope, metrics in scopes.items()]
        return MetricsData([ResourceMetrics(self._resource, scope_metrics, self._resource.schema_url)])


class _Histogram(Histogram):
    """One histogram: its series by attribute set, each aggregated under its own lock."""

    def __init__(
        self, name: str, unit: str, description: str, bounds: tuple[float, ...], exemplar_filter: ExemplarFilter
    ) -> None:
        self.name, self.unit, self.description, self.bounds = name, unit, description, bounds
        self._filter = exemplar_filter
        self._exemplars = not isinstance(exemplar_filter, AlwaysOffExemplarFilter)
        self._trace_based = type(exemplar_filter) is TraceBasedExemplarFilter
        self._lock = threading.Lock()
        # The series by their attributes' items in the caller's order, and the values' types: the fast lookup.
        self._by_items: dict[tuple[Hashable, ...], _Series] = {}
        # The same series by their cleaned, sorted attributes: one per attribute set, however it was ordered.
        self._by_set: dict[tuple[tuple[str, Hashable], ...], _Series] = {}

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        if not 0 <= amount < math.inf:  # negative, infinite or NaN: the SDK drops these too
            _log.warning("histogram %s: %r is not a finite, non-negative value; dropped", self.name, amount)
            return
        try:
            series = self._by_items.get(_items_key(attributes))
        except TypeError:  # a value that cannot be hashed (a list): the slow path cleans it into a tuple
            series = None
        if series is None:
            series = self._series(attributes)
        index = bisect_left(self.bounds, amount)
        sample = None
        if self._exemplars:
            current = get_current() if context is None else context
            span_context = get_current_span(current).get_span_context()
            if (
                span_context.trace_flags.sampled
                if self._trace_based  # the default filter, without a second look-up of the span
                else self._filter.should_sample(amount, time_ns(), attributes, current)
            ):
                # The exemplar is built at collection; an overflow series keeps the measurement's own attributes.
                sample = (amount, time_ns(), span_context, dict(attributes) if series.overflow and attributes else None)
        with series.lock:
            series.counts[index] += 1
            series.sum += amount
            if amount < series.min:
                series.min = amount
            if amount > series.max:
                series.max = amount
            if sample is not None:
                series.samples[index] = sample

    def collect(self, now: int) -> Metric | None:
        """The cumulative metric as of `now`, with the exemplars taken since the last collection."""
        with self._lock:
            all_series = list(self._by_set.values())
        # A series is created just before its first measurement lands: one caught in between has nothing yet.
        points = [point for point in (series.point(now, self.bounds) for series in all_series) if point.count]
        if not points:
            return None
        data = HistogramData(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)

    def _overflow(self) -> _Series:
        """The series every new attribute set joins past the limit (held: `self._lock`)."""
        series = self._by_set.get(_OVERFLOW_KEY)
        if series is None:
            series = _Series(dict(_OVERFLOW_ATTRIBUTES), len(self.bounds), overflow=True)
            self._by_set[_OVERFLOW_KEY] = series
        return series

    def _series(self, attributes: Attributes) -> _Series:
        """Find or create the series of `attributes` (cleaned as the SDK cleans them), past the limit the overflow."""
        cleaned = dict(BoundedAttributes(attributes=attributes)) if attributes else {}
        key = tuple((name, _frozen(cleaned[name])) for name in sorted(cleaned))
        with self._lock:
            series = self._by_set.get(key)
            if series is None:
                if len(self._by_set) >= _CARDINALITY_LIMIT:
                    return self._overflow()  # not remembered by its items: those are unbounded past the limit
                series = self._by_set[key] = _Series(cleaned, len(self.bounds))
            try:
                if len(self._by_items) < 4 * _CARDINALITY_LIMIT:  # each set in a few key orders at most
                    self._by_items[_items_key(attributes)] = series
            except TypeError:
                pass  # unhashable values: this set always takes the slow path
            return series


class _Series:
    """The aggregation of one attribute set: bucket counts, sum, min, max and the newest exemplar per bucket."""

    __slots__ = ("attributes", "counts", "lock", "max", "min", "overflow", "samples", "start", "sum")

    def __init__(self, attributes: dict[str, AnyValue], buckets: int, *, overflow: bool = False) -> None:
        self.attributes = attributes
        self.overflow = overflow
        self.lock = threading.Lock()
        self.counts = [0] * (buckets + 1)
        self.sum: float = 0
        self.min, self.max = math.inf, -math.inf
        # Per bucket: value, time, the span's context, and the attributes an overflow measurement had.
        self.samples: dict[int, tuple[float, int, SpanContext, dict[str, AnyValue] | None]] = {}
        self.start = time_ns()

    def point(self, now: int, bounds: tuple[float, ...]) -> HistogramDataPoint:
        """The cumulative data point; the exemplars are those offered since the last call, as the SDK's are."""
        with self.lock:
            counts, total, low, high = list(self.counts), self.sum, self.min, self.max
            samples, self.samples = self.samples, {}
        return HistogramDataPoint(
            attributes=dict(self.attributes),
            start_time_unix_nano=self.start,
            time_unix_nano=now,
            count=sum(counts),
            sum=total,
            bucket_counts=counts,
            explicit_bounds=list(bounds),
            min=low,
            max=high,
            exemplars=[self._exemplar(*samples[index]) for index in sorted(samples)],
        )

    def _exemplar(
        self, value: float, time: int, span_context: SpanContext, extra: dict[str, AnyValue] | None
    ) -> Exemplar:
        """As the SDK's bucket reservoir makes it: the span's ids, and only the attributes not on the point."""
        filtered: dict[str, AnyValue] | None
        if extra is not None:
            filtered = {k: v for k, v in extra.items() if k not in self.attributes}
        else:
            filtered = {} if self.attributes else None
        valid = span_context.is_valid
        span_id = span_context.span_id if valid else None
        trace_id = span_context.trace_id if valid else None
        return Exemplar(filtered, value, time, span_id, trace_id)


def _items_key(attributes: Attributes) -> tuple[Hashable, ...]:
    """The fast lookup key: the items as given, and their values' types (1, 1.0 and True are equal, not the same)."""
    if not attributes:
        return ()
    return (tuple(attributes.items()), tuple(map(type, attributes.values())))


def _frozen(value: AnyValue) -> Hashable:
    """A cleaned attribute value as a dict key that tells 1, 1.0 and True apart (nested mappings as sorted pairs)."""
    if isinstance(value, Mapping):
        return tuple((name, _frozen(value[name])) for name in sorted(value))
    if isinstance(value, tuple):
        return tuple(_frozen(item) for item in value)
    return (type(value).__name__, value)


_OVERFLOW_KEY = tuple((name, _frozen(value)) for name, value in _OVERFLOW_ATTRIBUTES.items())


def _boundaries(name: str, boundaries: Sequence[float] | None) -> tuple[float, ...]:
    """The advisory boundaries as floats; the SDK's defaults if there are none or they are not sorted numbers."""
    if boundaries is None:
        return DEFAULT_BOUNDARIES
    try:
        bounds = tuple(float(b) for b in boundaries if not isinstance(b, bool))
    except (TypeError, ValueError):
        bounds = ()
    if bounds and len(bounds) == len(boundaries) and list(bounds) == sorted(set(bounds)):
        return bounds
    _log.warning("histogram %s: advisory boundaries must be increasing numbers; using the defaults", name)
    return DEFAULT_BOUNDARIES
