"""Reading collected metrics in tests: the data points of one metric, whatever scope recorded it."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData

__all__ = ["data_points"]


def data_points(data: MetricsData | None, name: str) -> list[Any]:
    """Every data point of the metric `name` in `data` (which must not be empty)."""
    assert data is not None, "the reader collected nothing"
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
