"""`Telemetry.from_env(env=…)`: the mapping it is given decides where every signal goes, not the process's env."""

from __future__ import annotations

import pytest
from opentelemetry._logs import SeverityNumber

from otel.telemetry import Telemetry
from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port


def test_the_given_env_decides_the_endpoint_even_against_the_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process's own variables point at a port nothing listens on; the mapping points at the receiver.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{free_port()}/v1/traces")
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
        }
        telemetry = Telemetry.from_env(service_name="destinations", service_version="1", env=env)
        try:
            with telemetry.tracer_provider.get_tracer("test").start_as_current_span("checkout"):
                pass
            telemetry.meter_provider.get_meter("test").create_counter("checkouts", unit="1").add(3)
        finally:
            telemetry.shutdown()  # flushes the span batch and pushes the metrics once more
        receiver.wait_for(lambda r: bool(r.spans("checkout")) and bool(r.metrics("checkouts")))
        (span,) = receiver.spans("checkout")
        assert span.resource["service.name"] == "destinations"
        assert [point.value for point in receiver.metrics("checkouts")][-1] == 3
        assert receiver.errors == []


def test_sampler_batching_resource_and_exemplars_come_from_the_given_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each of the process's variables, if it were read, would make an assertion below fail: no sampled spans, a
    # one-item queue that drops all but the first span and log record, batches held for an hour, the wrong service
    # name and team, no exemplars.
    for name, value in {
        "OTEL_TRACES_SAMPLER": "always_off",
        "OTEL_BSP_MAX_QUEUE_SIZE": "1",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "3600000",
        "OTEL_BLRP_MAX_QUEUE_SIZE": "1",
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "1",
        "OTEL_BLRP_SCHEDULE_DELAY": "3600000",
        "OTEL_SERVICE_NAME": "from-the-process",
        "OTEL_RESOURCE_ATTRIBUTES": "team=process",
        "OTEL_METRICS_EXEMPLAR_FILTER": "always_off",
    }.items():
        monkeypatch.setenv(name, value)
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BLRP_SCHEDULE_DELAY": "50",
            "OTEL_RESOURCE_ATTRIBUTES": "team=checkout%20squad,region=eu",
            "OTEL_SERVICE_NAME": "from-the-mapping",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
        }
        telemetry = Telemetry.from_env(service_name="destinations", service_version="1", env=env)
        assert telemetry.logger_provider is not None
        try:
            tracer = telemetry.tracer_provider.get_tracer("test")
            latency = telemetry.meter_provider.get_meter("test").create_histogram("checkout.duration", unit="s")
            logger = telemetry.logger_provider.get_logger("test")
            for index in range(20):
                with tracer.start_as_current_span(f"checkout {index}"):
                    latency.record(0.01 * index)
                    logger.emit(severity_number=SeverityNumber.INFO, body=f"checkout {index}")
            # Before shutdown: only a 50 ms schedule delay gets them there this early.
            receiver.wait_for(lambda r: len(r.spans()) == 20 and len(r.log_records()) == 20)
        finally:
            telemetry.shutdown()
        receiver.wait_for(lambda r: bool(r.metrics("checkout.duration")))
        resource = receiver.spans()[0].resource
        assert resource["service.name"] == "from-the-mapping"
        assert (resource["team"], resource["region"]) == ("checkout squad", "eu")
        assert receiver.log_records()[0].resource["team"] == "checkout squad"
        (point,) = receiver.metrics("checkout.duration")
        sampled = {span.trace_id for span in receiver.spans()}
        assert point.exemplars and {exemplar.trace_id for exemplar in point.exemplars} <= sampled


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER='sometimes' is not one of"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "-3", "OTEL_BSP_MAX_QUEUE_SIZE must be a positive integer"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "soon", "OTEL_BLRP_SCHEDULE_DELAY must be a positive number"),
        ("OTEL_METRICS_EXEMPLAR_FILTER", "never", "OTEL_METRICS_EXEMPLAR_FILTER='never' is not one of"),
    ],
)
def test_an_invalid_setting_in_the_given_env_is_refused_by_name(name: str, value: str, message: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", name: value}
    with pytest.raises(ValueError, match=message):
        Telemetry.from_env(service_name="t", service_version="0", env=env)
