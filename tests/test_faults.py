"""Fault injection: off by default; when on, every injected fault is in the trace and in the logs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from service.artifact.card import ModelCard
from service.rehearsal.faults import FAULT_HEADER, FaultInjector, FaultPlan
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry


def _client(model_dir: Path, telemetry: InMemoryTelemetry, **settings: Any) -> FlaskClient:
    return create_app(
        Settings.from_env({}, model_dir=model_dir, **settings), telemetry=telemetry.telemetry
    ).test_client()


def _row(model_dir: Path) -> dict[str, float]:
    card = ModelCard.load(model_dir)
    return {spec.name: (spec.min + spec.max) / 2 for spec in card.features}  # type: ignore[operator]


class TestDisabled:
    """Without MODELLENS_FAULTS the header does nothing and there is no fault stage."""

    def test_header_is_ignored(
        self, client: FlaskClient, regression_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        response = client.post(
            "/predict", json={"instances": [_row(regression_model_dir)]}, headers={FAULT_HEADER: "latency=1,error"}
        )
        assert response.status_code == 200  # the requested error did not fire
        assert "feature_lookup" not in {span.name for span in telemetry.spans.get_finished_spans()}
        assert not [line for line in telemetry.console_lines() if "fault injected" in line]


class TestLatency:
    """Injected latency lands in the named stage span, with attributes, an event and a log line."""

    def test_requested_latency_is_traced_and_logged(
        self, regression_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        client = _client(regression_model_dir, telemetry, faults=True)
        response = client.post(
            "/predict", json={"instances": [_row(regression_model_dir)]}, headers={FAULT_HEADER: "latency=0.2"}
        )
        assert response.status_code == 200
        trace_id = response.headers["X-Trace-Id"]
        stage = next(span for span in telemetry.spans.get_finished_spans() if span.name == "feature_lookup")
        assert format(stage.context.trace_id, "032x") == trace_id
        assert stage.attributes is not None
        assert stage.attributes["fault.injected"] is True
        assert stage.attributes["fault.type"] == "latency"
        assert stage.attributes["fault.delay_s"] == 0.2
        assert [event.name for event in stage.events] == ["fault injected"]
        assert (stage.end_time or 0) - (stage.start_time or 0) >= 0.2e9
        lines = [json.loads(line) for line in telemetry.console_lines()]
        fault_lines = [line for line in lines if line["event"] == "fault injected"]
        assert len(fault_lines) == 1
        assert fault_lines[0]["trace_id"] == trace_id
        assert fault_lines[0]["span_id"] == format(stage.context.span_id, "016x")

    def test_requested_delay_is_capped(self) -> None:
        slept: list[float] = []
        injector = FaultInjector(
            FaultPlan(max_latency_seconds=0.05),
            TracerProvider().get_tracer("t"),
            MeterProvider().get_meter("t"),
            sleep=slept.append,
        )
        injector.run_stage("latency=600", {})
        injector.run_stage("latency=0.01", {})
        injector.run_stage("latency=nonsense", {})
        assert slept == [0.05, 0.01]

    def test_random_latency_follows_the_probability(self) -> None:
        slept: list[float] = []
        injector = FaultInjector(
            FaultPlan(latency_probability=0.25, latency_seconds=1.0),
            TracerProvider().get_tracer("t"),
            MeterProvider().get_meter("t"),
            random.Random(3),
            sleep=slept.append,
        )
        for _ in range(4000):
            injector.run_stage(None, {})
        assert set(slept) == {1.0}
        assert 0.22 < len(slept) / 4000 < 0.28


class TestErrors:
    """An injected error is a 500 problem document, an error span and a log line."""

    def test_requested_error(self, regression_model_dir: Path, telemetry: InMemoryTelemetry) -> None:
        client = _client(regression_model_dir, telemetry, faults=True)
        response = client.post(
            "/predict", json={"instances": [_row(regression_model_dir)]}, headers={FAULT_HEADER: "error"}
        )
        assert response.status_code == 500
        assert response.content_type == "application/problem+json"
        assert response.get_json()["title"] == "Injected fault"
        spans = {span.name: span for span in telemetry.spans.get_finished_spans()}
        assert spans["feature_lookup"].attributes["fault.type"] == "error"  # type: ignore[index]
        assert not spans["POST /predict"].status.is_ok
        assert "inference" not in spans
        lines = [json.loads(line) for line in telemetry.console_lines()]
        assert any(line["event"] == "fault injected" and line["fault_type"] == "error" for line in lines)

    def test_error_rate_setting_is_validated(self, regression_model_dir: Path) -> None:
        with pytest.raises(ValueError, match="between 0 and 1"):
            Settings.from_env({"MODELLENS_FAULT_ERROR_RATE": "1.5"}, model_dir=regression_model_dir)
