"""The one Resource that every signal of a process shares."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.resources import OTELResourceDetector, Resource

__all__ = ["build_resource"]


def build_resource(
    *,
    service_name: str,
    service_version: str,
    environment: str = "local",
    instance_id: str | None = None,
) -> Resource:
    """Build the process Resource: our defaults, overridden by `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.

    `service.instance.id` is new for every process (a gunicorn worker is an instance), so PromQL can sum across
    replicas and workers without double counting.
    """
    defaults = {
        "service.name": service_name,
        "service.version": service_version,
        "deployment.environment.name": environment,
        "service.instance.id": instance_id or str(uuid.uuid4()),
    }
    # Resource.create() lets its *argument* win over the environment; the standard says the environment wins, so
    # merge the environment once more on top.
    return Resource.create(defaults).merge(OTELResourceDetector().detect())
