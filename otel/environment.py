"""The SDK settings the standard `OTEL_*` variables give, read from a mapping instead of `os.environ`.

The SDK's constructors read these variables from `os.environ` when an argument is left out. `Telemetry.from_env`
reads them from the mapping it is given and passes every value explicitly, so that mapping decides (a test, or a
process configuring a second pipeline, is not overridden by the process's own environment). Where the endpoints,
headers, compression and TLS files come from is `otel.destinations`.

Three things the SDK reads only from `os.environ`, with no constructor argument, stay there: `OTEL_SDK_DISABLED`
as the providers check it (`Telemetry.from_env` also honours it in the mapping), the span and log attribute limits
(`OTEL_SPAN_*`, `OTEL_ATTRIBUTE_*`, `OTEL_LOGRECORD_*`) and `OTEL_PYTHON_*` extension points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import unquote

from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

__all__ = ["BatchSettings", "batch_settings", "exemplar_filter", "resource_attributes", "sampler"]

_FIXED_SAMPLERS: dict[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
_RATIO_SAMPLERS = {"traceidratio": TraceIdRatioBased, "parentbased_traceidratio": ParentBasedTraceIdRatio}
_EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}


@dataclass(frozen=True)
class BatchSettings:
    """A batch processor's bounds: the keyword arguments of the SDK's `BatchSpanProcessor` and
    `BatchLogRecordProcessor`. The defaults are the specification's for spans (`OTEL_BSP_*`)."""

    max_queue_size: int = 2048
    schedule_delay_millis: float = 5000
    max_export_batch_size: int = 512
    export_timeout_millis: float = 30_000

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


# The specification's defaults differ in one place: log batches leave every second, span batches every five.
_BATCH_DEFAULTS = {"BSP": BatchSettings(), "BLRP": BatchSettings(schedule_delay_millis=1000)}


def sampler(env: Mapping[str, str]) -> Sampler:
    """`OTEL_TRACES_SAMPLER` (and `_ARG` for the ratio samplers); `parentbased_always_on` when unset.

    An unknown sampler or a ratio outside [0, 1] is a `ValueError` naming the variable: sampling every trace, or
    none, because of a typo would go unnoticed until an incident.
    """
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    if name not in _RATIO_SAMPLERS:
        choices = ", ".join([*_FIXED_SAMPLERS, *_RATIO_SAMPLERS])
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {choices}")
    raw = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(raw) if raw else 1.0
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1 for {name}, got {raw!r}")
    return _RATIO_SAMPLERS[name](ratio)


def batch_settings(env: Mapping[str, str], prefix: Literal["BSP", "BLRP"]) -> BatchSettings:
    """`OTEL_BSP_*` (spans) or `OTEL_BLRP_*` (logs): queue size, schedule delay, batch size, export timeout.

    Each must be a positive number (the delays in milliseconds), and the batch no larger than the queue; anything
    else is a `ValueError` naming the variable.
    """
    defaults = _BATCH_DEFAULTS[prefix]
    values = {
        "max_queue_size": _positive(env, f"OTEL_{prefix}_MAX_QUEUE_SIZE", defaults.max_queue_size, int),
        "schedule_delay_millis": _positive(env, f"OTEL_{prefix}_SCHEDULE_DELAY", defaults.schedule_delay_millis, float),
        "max_export_batch_size": _positive(
            env, f"OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE", defaults.max_export_batch_size, int
        ),
        "export_timeout_millis": _positive(env, f"OTEL_{prefix}_EXPORT_TIMEOUT", defaults.export_timeout_millis, float),
    }
    settings = BatchSettings(**values)
    if settings.max_export_batch_size > settings.max_queue_size:
        raise ValueError(
            f"OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE={settings.max_export_batch_size} is larger than "
            f"OTEL_{prefix}_MAX_QUEUE_SIZE={settings.max_queue_size}"
        )
    return settings


def resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """`OTEL_RESOURCE_ATTRIBUTES` (`key=value,…`, values percent-decoded), then `OTEL_SERVICE_NAME` over it."""
    attributes: dict[str, str] = {}
    for part in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, separator, value = part.partition("=")
        if separator and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    service_name = env.get("OTEL_SERVICE_NAME", "").strip()
    if service_name:
        attributes["service.name"] = service_name
    return attributes


def exemplar_filter(env: Mapping[str, str]) -> ExemplarFilter:
    """`OTEL_METRICS_EXEMPLAR_FILTER`: `trace_based` (the default), `always_on` or `always_off`."""
    name = env.get("OTEL_METRICS_EXEMPLAR_FILTER", "").strip().lower() or "trace_based"
    if name not in _EXEMPLAR_FILTERS:
        raise ValueError(f"OTEL_METRICS_EXEMPLAR_FILTER={name!r} is not one of {', '.join(_EXEMPLAR_FILTERS)}")
    return _EXEMPLAR_FILTERS[name]()


def _positive(env: Mapping[str, str], name: str, default: float, kind: type[int] | type[float]) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not value > 0:
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {raw!r}")
    return value
