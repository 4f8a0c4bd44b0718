"""The process's telemetry: one Resource, three providers, their exporters chosen by the `OTEL_*` variables."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from otel.destinations import exporter_options
from otel.environment import batch_settings, exemplar_filter, sampler
from otel.exporters import FastOTLPLogExporter, FastOTLPSpanExporter
from otel.logs import configure_logging, setup_logs
from otel.metrics import MetricPusher, setup_metrics
from otel.openmetrics import OpenMetricsReader
from otel.requestseries import RequestSeries
from otel.resilience import (
    ExportHealth,
    ResilientLogExporter,
    ResilientMetricExporter,
    ResilientSpanExporter,
    register_instruments,
)
from otel.resource import build_resource
from otel.spanstore import SpanStore
from otel.tracing import setup_tracing

__all__ = ["Telemetry", "install", "installed"]

_log = logging.getLogger(__name__)
_installed: Telemetry | None = None


@dataclass
class Telemetry:
    """Everything a service needs to emit telemetry, passed explicitly to the app (tests build their own)."""

    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider | None = None
    # The pull reader behind `GET /metrics`; None when the SDK is disabled.
    metrics_reader: OpenMetricsReader | None = None
    exporting: dict[str, str] = field(default_factory=dict)
    # One per pushed signal: dropped items and outages (otel.resilience).
    export_health: list[ExportHealth] = field(default_factory=list)
    # Pushes the pull reader's collections over OTLP (no second reader); None when metrics are not pushed.
    metric_pusher: MetricPusher | None = None
    # What an in-process console reads (`keep_recent=True`): recent traces with their logs, and the last hour of
    # requests per route. None otherwise.
    span_store: SpanStore | None = None
    request_series: RequestSeries | None = None

    @classmethod
    def disabled(cls) -> Telemetry:
        """No-op providers: what `OTEL_SDK_DISABLED=true` gives (the baseline for benchmarks)."""
        return cls(Resource.get_empty(), NoOpTracerProvider(), NoOpMeterProvider())

    @classmethod
    def from_env(
        cls,
        *,
        service_name: str,
        service_version: str,
        environment: str = "local",
        env: Mapping[str, str] | None = None,
        keep_recent: bool = False,
    ) -> Telemetry:
        """Build providers as the standard variables in `env` (default `os.environ`) say.

        Each signal is pushed over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` or its per-signal variable is set
        and its `OTEL_*_EXPORTER` is not `none`; metrics are always readable at `GET /metrics` as well. Every
        setting is read from `env` and passed to the SDK explicitly: endpoints, headers, compression and TLS files
        (`otel.destinations`); the export timeout from `OTEL_EXPORTER_OTLP[_<SIGNAL>]_TIMEOUT` in milliseconds,
        as the specification says (`otel.resilience.export_timeout`); the sampler, the batch processors' bounds
        (`OTEL_BSP_*`, `OTEL_BLRP_*`), the resource attributes and the exemplar filter (`otel.environment`, which
        also lists the few the SDK reads only from `os.environ`); the push interval (`OTEL_METRIC_EXPORT_*`).
        An invalid value is a `ValueError` naming its variable. Every exporter is wrapped to count what an outage
        drops. `keep_recent` also keeps recent traces and their logs in the process (`otel.spanstore`) and the
        last hour of requests per route (`otel.requestseries`), for a console the service serves itself.
        """
        env = os.environ if env is None else env
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls.disabled()
        protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        if protocol != "http/protobuf":
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use http/protobuf")
        resource = build_resource(
            service_name=service_name, service_version=service_version, environment=environment, env=env
        )
        exporting: dict[str, str] = {}

        span_exporter = None
        if _wants_otlp(env, "TRACES"):
            span_exporter = ResilientSpanExporter(FastOTLPSpanExporter(**exporter_options(env, "TRACES")))
            exporting["traces"] = "otlp"
        tracer_provider = setup_tracing(
            resource, span_exporter, sampler=sampler(env), batch_settings=batch_settings(env, "BSP")
        )

        reader = OpenMetricsReader()
        meter_provider = setup_metrics(resource, [reader], exemplar_filter=exemplar_filter(env))
        metric_exporter = pusher = None
        if _wants_otlp(env, "METRICS"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            metric_exporter = ResilientMetricExporter(OTLPMetricExporter(**exporter_options(env, "METRICS")))
            pusher = MetricPusher(
                reader.collect_data,
                metric_exporter,
                interval=_milliseconds(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000) / 1000,
                timeout=_milliseconds(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30_000) / 1000,
            )
            exporting["metrics"] = "otlp"

        log_exporter = None
        if _wants_otlp(env, "LOGS"):
            log_exporter = ResilientLogExporter(FastOTLPLogExporter(**exporter_options(env, "LOGS")))
            exporting["logs"] = "otlp"
        logger_provider = None
        if log_exporter is not None:
            logger_provider = setup_logs(resource, log_exporter, batch_settings=batch_settings(env, "BLRP"))
        health = [e.health for e in (span_exporter, metric_exporter, log_exporter) if e is not None]
        register_instruments(meter_provider.get_meter("otel.resilience"), health)
        store = series = None
        if keep_recent:
            store, series = SpanStore(), RequestSeries()
            tracer_provider.add_span_processor(store)
        return cls(
            resource, tracer_provider, meter_provider, logger_provider, reader, exporting, health, pusher, store, series
        )

    def shutdown(self) -> None:
        """Flush and stop every provider (spans, logs and a last metric export); safe to call twice.

        A signal whose backend is down drops what is left instead of waiting an export timeout per batch.
        """
        for health in self.export_health:
            health.abandon_if_failing()
        if self.metric_pusher is not None:
            self.metric_pusher.shutdown()  # the last push, while the reader can still collect
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception:  # a backend being down must never turn a clean exit into a crash
                    _log.warning("telemetry shutdown failed", exc_info=True)


def _milliseconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive duration variable in milliseconds, as the SDK's readers parse it; the default if unset or bad."""
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        _log.warning("ignoring %s=%r: not a number of milliseconds", name, raw)
        return default
    return value if value > 0 else default


def _wants_otlp(env: Mapping[str, str], signal: str) -> bool:
    if env.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def install(
    telemetry: Telemetry,
    *,
    log_level: int | str = logging.INFO,
    log_flush_interval: float = 0.0,
    log_format: str = "json",
) -> None:
    """Make `telemetry` the process's global providers and configure logging. Once per process, at start-up."""
    global _installed
    if _installed is not None:
        raise RuntimeError("telemetry is already installed in this process")
    trace.set_tracer_provider(telemetry.tracer_provider)
    metrics.set_meter_provider(telemetry.meter_provider)
    if telemetry.logger_provider is not None:
        set_logger_provider(telemetry.logger_provider)
    configure_logging(
        telemetry.logger_provider,
        level=log_level,
        flush_interval=log_flush_interval,
        log_format=log_format,
        taps=[telemetry.span_store.add_log] if telemetry.span_store is not None else [],
    )
    _installed = telemetry


def installed() -> Telemetry | None:
    """The telemetry `install` set for this process, if any."""
    return _installed
