"""`Telemetry.from_env(env=…)`: the mapping it is given decides where every signal goes, not the process's env."""

from __future__ import annotations

import pytest

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
