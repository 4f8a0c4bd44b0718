"""Shared fixtures: trained models, in-memory telemetry, the app and its test client."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.logs import configure_logging, setup_logs
from otel.metrics import setup_metrics
from otel.openmetrics import OpenMetricsReader
from otel.resource import build_resource
from otel.telemetry import Telemetry
from otel.tracing import setup_tracing
from service.artifact.datasets import load_bundled
from service.artifact.training import train
from service.settings import Settings
from service.web.app import create_app
from tests.support.logging_state import restored_logging
from tests.support.postgres import PostgresServer


# --- models ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def regression_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model (Ridge on scikit-learn's diabetes data), trained once per test session."""
    output = tmp_path_factory.mktemp("models") / "diabetes"
    train(load_bundled("diabetes"), output=output, name="diabetes")
    return output


@pytest.fixture(scope="session")
def classification_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("models") / "breast_cancer"
    train(load_bundled("breast_cancer"), output=output, name="breast_cancer")
    return output


# --- telemetry ------------------------------------------------------------------------------------------------
class CollectedMetrics:
    """What the service's one reader collects, the SDK's instruments and the in-process histograms together."""

    def __init__(self, reader: OpenMetricsReader) -> None:
        self._reader = reader

    def get_metrics_data(self) -> MetricsData | None:
        return self._reader.collect_data()


@dataclass
class InMemoryTelemetry:
    """A Telemetry whose exporters keep everything in memory, plus the captured JSON console lines."""

    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: CollectedMetrics
    logs: InMemoryLogRecordExporter
    console: io.StringIO

    def console_lines(self) -> list[str]:
        return [line for line in self.console.getvalue().splitlines() if line.strip()]


@pytest.fixture
def telemetry() -> Iterator[InMemoryTelemetry]:
    """Providers with in-memory exporters; logging configured to them for the test and reset afterwards."""
    resource = build_resource(service_name="modellens-test", service_version="0.0.0", instance_id="test-instance")
    spans = InMemorySpanExporter()
    logs = InMemoryLogRecordExporter()
    openmetrics = OpenMetricsReader()
    bundle = Telemetry(
        resource=resource,
        tracer_provider=setup_tracing(resource, spans, batch=False),
        meter_provider=setup_metrics(resource, [openmetrics]),
        logger_provider=setup_logs(resource, logs, batch=False),
        metrics_reader=openmetrics,
    )
    console = io.StringIO()
    with restored_logging():
        configure_logging(bundle.logger_provider, stream=console)
        structlog.contextvars.clear_contextvars()
        try:
            yield InMemoryTelemetry(bundle, spans, CollectedMetrics(openmetrics), logs, console)
        finally:
            bundle.shutdown()


# --- the app --------------------------------------------------------------------------------------------------
@pytest.fixture
def settings(regression_model_dir: Path, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {},
        model_dir=regression_model_dir,
        max_batch=50,
        max_body_bytes=64 * 1024,
        prediction_log=str(tmp_path / "predictions.sqlite3"),
    )


@pytest.fixture
def app(settings: Settings, telemetry: InMemoryTelemetry) -> Iterator[Flask]:
    app = create_app(settings, telemetry=telemetry.telemetry)
    yield app
    app.extensions["modellens"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster, one per test worker process, started when a test first asks for it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A URL (with the run's password) of a new, empty database on that cluster."""
    return postgres.url(postgres.create_database())
