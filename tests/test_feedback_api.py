"""POST /feedback joins delayed ground truth to logged predictions — also after the service restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.training import to_matrix
from tests.conftest import InMemoryTelemetry
from tests.support.ports import free_port
from tests.test_serving import serve


def _instances(model_dir: Path, dataset: str, n: int) -> tuple[list[dict[str, Any]], list[Any]]:
    card = ModelCard.load(model_dir)
    data = load_bundled(dataset)
    rows = to_matrix(data.frame, card)[:n]
    return [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows], data.target.tolist()[:n]


class TestFeedbackEndpoint:
    """Labels join their predictions; unknown and duplicate ids are reported and counted."""

    def test_join_report_and_realized_performance(
        self, client: FlaskClient, regression_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        instances, targets = _instances(regression_model_dir, "diabetes", 20)
        body = client.post("/predict", json={"instances": instances}).get_json()
        feedback = [
            {"prediction_id": pid, "actual": float(y)} for pid, y in zip(body["prediction_ids"], targets, strict=True)
        ]
        unknown = "0" * 32
        response = client.post("/feedback", json={"feedback": [*feedback, {"prediction_id": unknown, "actual": 1.0}]})
        assert response.status_code == 200
        assert response.get_json() == {"accepted": 20, "unknown_ids": [unknown], "duplicate_ids": []}
        again = client.post("/feedback", json={"feedback": feedback[:3]}).get_json()
        assert again["accepted"] == 0
        assert again["duplicate_ids"] == [item["prediction_id"] for item in feedback[:3]]
        errors = np.array(targets) - np.array(body["predictions"])
        summary = client.get("/monitoring").get_json()["realized_performance"]
        assert summary["labels"] == 20
        assert summary["mae"] == pytest.approx(float(np.abs(errors).mean()))
        assert summary["rmse"] == pytest.approx(float(np.sqrt((errors**2).mean())))
        assert summary["unknown_ids"] == 1
        assert summary["duplicate_ids"] == 3

    def test_bad_feedback_is_a_problem_document(self, client: FlaskClient) -> None:
        response = client.post("/feedback", json={"feedback": [{"prediction_id": "nope", "actual": "x"}]})
        assert response.status_code == 422
        pointers = {error["pointer"] for error in response.get_json()["errors"]}
        assert pointers == {"/feedback/0/prediction_id", "/feedback/0/actual"}


@pytest.mark.slow
class TestAcrossRestarts:
    """A prediction acknowledged before a restart is in the log, and its label joins after the restart."""

    def test_feedback_after_restart(self, classification_model_dir: Path, tmp_path: Path) -> None:
        log = tmp_path / "predictions.sqlite3"
        instances, targets = _instances(classification_model_dir, "breast_cancer", 120)
        card = ModelCard.load(classification_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"MODELLENS_PREDICTION_LOG": str(log), "MODELLENS_WORKERS": "2"}
        ids: list[str] = []
        predictions: list[str] = []
        with serve(classification_model_dir, port, None, **env) as first:
            with requests.Session() as http:
                for start in range(0, len(instances), 10):
                    body = http.post(
                        f"{url}/predict", json={"instances": instances[start : start + 10]}, timeout=10
                    ).json()
                    ids += body["prediction_ids"]
                    predictions += body["predictions"]
            assert first.terminate() == 0  # SIGTERM right after the last 200
        with sqlite3.connect(log) as connection:
            stored = {
                f"{request_id}{index:08x}"
                for request_id, rows in connection.execute("SELECT request_id, row_count FROM requests")
                for index in range(rows)
            }
        connection.close()
        assert set(ids) <= stored
        truth = [str(t) for t in targets]
        assert set(truth) <= set(card.classes)
        single_worker = {**env, "MODELLENS_WORKERS": "1"}  # so /monitoring shows the worker that joined the labels
        with serve(classification_model_dir, port, None, **single_worker), requests.Session() as http:
            feedback = [{"prediction_id": pid, "actual": y} for pid, y in zip(ids, truth, strict=True)]
            response = http.post(f"{url}/feedback", json={"feedback": feedback}, timeout=10).json()
            assert response["accepted"] == len(ids)
            summary = http.get(f"{url}/monitoring", timeout=10).json()
        expected = float(np.mean([p == t for p, t in zip(predictions, truth, strict=True)]))
        assert summary["realized_performance"]["labels"] == len(ids)
        assert summary["realized_performance"]["accuracy"] == pytest.approx(expected)
