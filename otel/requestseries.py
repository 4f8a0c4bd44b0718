"""The last hour of requests per route, in the process: rate, error ratio, latency quantiles and exemplars.

What an in-process console draws without a Prometheus. The Flask instrumentation hands every request to
`observe` (route template, status, duration, and the trace id when the request was sampled); requests are counted
into fixed time slots (`slot_seconds`) of `SECONDS_BUCKETS` histograms, so memory is bounded by routes × slots ×
buckets, whatever the traffic. Each slot keeps, as its exemplars, the slowest sampled request of the slot and the
newest sampled request of each latency bucket it saw: a dot on a latency chart is a real request, and its trace id
opens the trace. Quantiles are read from the bucket counts as Prometheus's `histogram_quantile` does.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from otel.metrics import SECONDS_BUCKETS

__all__ = ["RequestSeries"]

UNMATCHED = "(unmatched)"  # requests no route matched (404s of unknown paths): one series, never the raw path


@dataclass(slots=True)
class _Slot:
    count: int = 0
    errors: int = 0  # 5xx answers
    buckets: list[int] = field(default_factory=list)
    exemplars: dict[int, tuple[float, str, int]] = field(default_factory=dict)  # bucket → (seconds, trace id, time)
    slowest: tuple[float, str, int] | None = None


class RequestSeries:
    """Per route, the last `slots` × `slot_seconds` of requests (one hour of 10 s slots by default)."""

    def __init__(
        self,
        *,
        slot_seconds: float = 10.0,
        slots: int = 360,
        max_routes: int = 64,
        bounds: Sequence[float] = SECONDS_BUCKETS,
    ) -> None:
        self.slot_seconds = slot_seconds
        self._slots = slots
        self._max_routes = max_routes
        self._bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._routes: dict[str, OrderedDict[int, _Slot]] = {}

    def observe(self, route: str | None, status: int, seconds: float, trace_id: str | None) -> None:
        """One answered request (the request path: a lock, a bisect and a few increments)."""
        now = time.time_ns()
        slot_id = int(now / 1e9 // self.slot_seconds)
        bucket = bisect.bisect_left(self._bounds, seconds)
        name = route or UNMATCHED
        with self._lock:
            slots = self._routes.get(name)
            if slots is None:
                if len(self._routes) >= self._max_routes:
                    name, slots = UNMATCHED, self._routes.setdefault(UNMATCHED, OrderedDict())
                else:
                    slots = self._routes[name] = OrderedDict()
            slot = slots.get(slot_id)
            if slot is None:
                slot = slots[slot_id] = _Slot(buckets=[0] * (len(self._bounds) + 1))
                while len(slots) > self._slots:
                    slots.popitem(last=False)
            slot.count += 1
            slot.buckets[bucket] += 1
            if status >= 500:
                slot.errors += 1
            if trace_id is not None:
                sample = (seconds, trace_id, now)
                slot.exemplars[bucket] = sample
                if slot.slowest is None or seconds > slot.slowest[0]:
                    slot.slowest = sample

    def snapshot(self, window_seconds: float = 3600.0) -> dict[str, Any]:
        """Per route: a point per slot with traffic (time, rate, error ratio, p50/p95/p99 in seconds) and the
        exemplars of the window (time, seconds, trace id), oldest first."""
        oldest = int(time.time() // self.slot_seconds - window_seconds // self.slot_seconds)
        with self._lock:
            copied = {
                route: [(slot_id, slot.count, slot.errors, list(slot.buckets), dict(slot.exemplars), slot.slowest)
                        for slot_id, slot in slots.items() if slot_id >= oldest]
                for route, slots in self._routes.items()
            }  # fmt: skip
        routes: dict[str, Any] = {}
        for route, slots in copied.items():
            points, exemplars = [], []
            for slot_id, count, errors, buckets, by_bucket, slowest in slots:
                points.append(
                    {
                        "time": slot_id * self.slot_seconds,
                        "requests": count,
                        "rate": count / self.slot_seconds,
                        "error_ratio": errors / count,
                        **{name: self._quantile(q, buckets, count) for name, q in _QUANTILES},
                    }
                )
                samples = set(by_bucket.values()) | ({slowest} if slowest else set())
                exemplars += [{"time": at / 1e9, "seconds": seconds, "trace_id": tid} for seconds, tid, at in samples]
            if points:
                routes[route] = {"points": points, "exemplars": sorted(exemplars, key=lambda e: e["time"])}
        return {"slot_seconds": self.slot_seconds, "window_seconds": window_seconds, "routes": routes}

    def _quantile(self, q: float, buckets: list[int], count: int) -> float:
        """histogram_quantile: linear within the bucket that holds the q-th request; the last finite bound past
        it."""
        rank = q * count
        seen = 0
        for index, in_bucket in enumerate(buckets):
            if in_bucket and seen + in_bucket >= rank:
                if index >= len(self._bounds):
                    return self._bounds[-1]
                lower = self._bounds[index - 1] if index > 0 else 0.0
                return lower + (self._bounds[index] - lower) * (rank - seen) / in_bucket
            seen += in_bucket
        return self._bounds[-1]


_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
