"""service/web/app.py: each optional feature serves only when it is on, and says how to turn it on when it is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.artifact.card import ModelCard
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry
from tests.support.metrics import data_points


@pytest.fixture
def build(telemetry: InMemoryTelemetry) -> Iterator[Any]:
    apps: list[Flask] = []

    def build(settings: Settings) -> Flask:
        app = create_app(settings, telemetry=telemetry.telemetry)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["modellens"].close()


def _instance(model_dir: Path) -> dict[str, float]:
    card = ModelCard.load(model_dir)
    return {spec.name: ((spec.min or 0.0) + (spec.max or 0.0)) / 2 for spec in card.features}


class TestFeaturesOff:
    """A feature that is off answers its routes with a 404 problem naming the setting; /predict still serves."""

    def test_monitoring_off(self, build: Any, settings: Settings, regression_model_dir: Path) -> None:
        client = build(settings.replace(monitoring=False)).test_client()
        for path in ("/monitoring", "/model/reference"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.content_type == "application/problem+json"
            assert "MODELLENS_MONITORING" in response.get_json()["detail"]
        assert client.post("/predict", json={"instances": [_instance(regression_model_dir)]}).status_code == 200

    def test_prediction_log_off(self, build: Any, settings: Settings, regression_model_dir: Path) -> None:
        client = build(settings.replace(prediction_log="off")).test_client()
        response = client.post("/feedback", json={"feedback": []})
        assert response.status_code == 404
        assert response.get_json()["title"] == "Feedback is off"
        assert "MODELLENS_PREDICTION_LOG" in response.get_json()["detail"]
        assert client.get("/feedback").status_code == 405  # the route exists, for POST only, as when it is on
        assert client.post("/predict", json={"instances": [_instance(regression_model_dir)]}).status_code == 200
        assert "realized_performance" not in client.get("/monitoring").get_json()

    def test_faults_off_ignore_the_fault_header(
        self, build: Any, settings: Settings, regression_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        client = build(settings).test_client()
        response = client.post(
            "/predict", json={"instances": [_instance(regression_model_dir)]}, headers={"X-Modellens-Fault": "error"}
        )
        assert response.status_code == 200
        assert data_points(telemetry.metrics.get_metrics_data(), "model.faults.injected") == []
        assert "feature_lookup" not in {span.name for span in telemetry.spans.get_finished_spans()}


class TestFeaturesOn:
    """With every feature on, each contributes what it promises to the same request."""

    def test_faults_on_inject_on_request(self, build: Any, settings: Settings, regression_model_dir: Path) -> None:
        client = build(settings.replace(faults=True)).test_client()
        response = client.post(
            "/predict", json={"instances": [_instance(regression_model_dir)]}, headers={"X-Modellens-Fault": "error"}
        )
        assert response.status_code == 500
        assert response.get_json()["type"] == "urn:modellens:problem:injected-fault"

    def test_prediction_log_and_monitoring_on(self, build: Any, settings: Settings, regression_model_dir: Path) -> None:
        client = build(settings).test_client()
        response = client.post("/predict", json={"instances": [_instance(regression_model_dir)]})
        [prediction_id] = response.get_json()["prediction_ids"]
        joined = client.post("/feedback", json={"feedback": [{"prediction_id": prediction_id, "actual": 150.0}]})
        assert joined.status_code == 200, joined.get_json()
        realized = client.get("/monitoring").get_json()["realized_performance"]
        assert realized["labels"] == 1
        assert realized["mae"] == pytest.approx(abs(response.get_json()["predictions"][0] - 150.0))
