"""MetricsData put together: one collection's data with what a producer adds, grouped as the SDK groups it."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

__all__ = ["merge"]


def merge(data: MetricsData | None, produced: MetricsData | None) -> MetricsData | None:
    """`data` with `produced`'s metrics added: into the scope of the same resource they share, else alongside."""
    if produced is None or data is None:
        return data if produced is None else produced
    resources = list(data.resource_metrics)
    for extra in produced.resource_metrics:
        index = next((i for i, r in enumerate(resources) if r.resource == extra.resource), None)
        if index is None:
            resources.append(extra)
            continue
        scopes = list(resources[index].scope_metrics)
        for extra_scope in extra.scope_metrics:
            same = next((i for i, s in enumerate(scopes) if s.scope == extra_scope.scope), None)
            if same is None:
                scopes.append(extra_scope)
            else:
                merged = [*scopes[same].metrics, *extra_scope.metrics]
                scopes[same] = ScopeMetrics(scopes[same].scope, merged, scopes[same].schema_url)
        resource = resources[index]
        resources[index] = ResourceMetrics(resource.resource, scopes, resource.schema_url)
    return MetricsData(resources)
