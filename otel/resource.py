"""The one Resource that every signal of a process shares."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__ as _sdk_version

from otel.environment import resource_attributes

__all__ = ["build_resource"]


def build_resource(
    *,
    service_name: str,
    service_version: str,
    environment: str = "local",
    instance_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Resource:
    """Build the process Resource: our defaults, overridden by `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`
    as `env` (default `os.environ`) gives them, as the specification's precedence says.

    `service.instance.id` is new for every process (a gunicorn worker is an instance), so PromQL can sum across
    replicas and workers without double counting.
    """
    attributes = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _sdk_version,
        "service.name": service_name,
        "service.version": service_version,
        "deployment.environment.name": environment,
        "service.instance.id": instance_id or str(uuid.uuid4()),
    }
    # Not Resource.create(): it reads os.environ whatever mapping we were given, and lets its argument win over
    # the environment where the standard says the environment wins.
    attributes.update(resource_attributes(os.environ if env is None else env))
    return Resource(attributes)
