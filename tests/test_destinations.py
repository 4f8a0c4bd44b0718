"""Where each signal goes: endpoints, headers and compression read from the mapping `Telemetry.from_env` is given."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression

from otel.destinations import compression, endpoint, exporter_options, headers


class TestEndpoint:
    def test_the_general_endpoint_gets_the_signal_path(self) -> None:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example:4318/"}
        assert endpoint(env, "TRACES") == "http://collector.example:4318/v1/traces"
        assert endpoint(env, "METRICS") == "http://collector.example:4318/v1/metrics"
        assert endpoint(env, "LOGS") == "http://collector.example:4318/v1/logs"

    def test_a_per_signal_endpoint_is_used_as_is_and_wins(self) -> None:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example:4318",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "https://logs.example/ingest",
        }
        assert endpoint(env, "LOGS") == "https://logs.example/ingest"
        assert endpoint(env, "TRACES") == "http://collector.example:4318/v1/traces"

    def test_none_when_unset(self) -> None:
        assert endpoint({}, "TRACES") is None


class TestHeaders:
    def test_pairs_are_percent_decoded_and_the_per_signal_list_wins(self) -> None:
        env = {
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc, x-tenant = team-a",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-tenant=metrics-team",
        }
        assert headers(env, "TRACES") == {"authorization": "Bearer abc", "x-tenant": "team-a"}
        assert headers(env, "METRICS") == {"x-tenant": "metrics-team"}

    def test_malformed_parts_are_skipped(self) -> None:
        assert headers({"OTEL_EXPORTER_OTLP_HEADERS": "novalue,=x,a=b"}, "LOGS") == {"a": "b"}


class TestCompression:
    def test_default_and_choices(self) -> None:
        assert compression({}, "TRACES") is Compression.NoCompression
        assert compression({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, "LOGS") is Compression.Gzip
        env = {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate"}
        assert compression(env, "TRACES") is Compression.Deflate

    def test_an_unknown_algorithm_is_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_COMPRESSION='zstd'"):
            compression({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "TRACES")


def test_exporter_options_carry_tls_files_only_when_named() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/etc/ca.pem"}
    options = exporter_options(env, "TRACES")
    assert options["endpoint"] == "https://c:4318/v1/traces"
    assert options["certificate_file"] == "/etc/ca.pem"
    assert "certificate_file" not in exporter_options(env, "LOGS")
