"""Calibrated probabilities and the confidence-based expected accuracy (CBPE) a classifier's service reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from service.artifact.calibration import calibrate, fit_temperature
from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.model import load_model
from service.artifact.training import split_dataset, to_matrix
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry


class TestTemperature:
    def test_an_overconfident_model_is_cooled_by_its_factor(self) -> None:
        rng = np.random.default_rng(0)
        logits = rng.normal(0, 1.5, size=(20_000, 3))
        truth = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
        overconfident = softmax(logits * 3.0, axis=1)  # what a model 3× too sure of itself says
        assert fit_temperature(overconfident, truth) == pytest.approx(3.0, rel=0.05)
        calibrated = calibrate(overconfident, fit_temperature(overconfident, truth))
        # Calibrated: the mean confidence of the predicted class is the accuracy it achieves.
        predicted = calibrated.argmax(axis=1)
        assert calibrated.max(axis=1).mean() == pytest.approx((predicted == truth).mean(), abs=0.01)

    def test_calibration_never_changes_the_predicted_class(self) -> None:
        probabilities = softmax(np.random.default_rng(1).normal(size=(1000, 4)), axis=1)
        for temperature in (0.3, 1.0, 7.0):
            calibrated = calibrate(probabilities, temperature)
            assert (calibrated.argmax(axis=1) == probabilities.argmax(axis=1)).all()
            assert calibrated.sum(axis=1) == pytest.approx(np.ones(1000))


class TestModel:
    def test_labels_from_the_probabilities_are_the_estimators_predictions(self, classification_model_dir: Path) -> None:
        model = load_model(classification_model_dir)
        rows = to_matrix(load_bundled("breast_cancer").frame, model.card)
        labels, probabilities = model.predict_with_probabilities(rows)
        assert probabilities is not None and probabilities.shape == (len(rows), 2)
        assert (labels == model.predict_array(rows)).all()

    def test_regressors_have_no_probabilities(self, regression_model_dir: Path) -> None:
        model = load_model(regression_model_dir)
        assert model.card.calibration_temperature is None
        rows = to_matrix(load_bundled("diabetes").frame, model.card)[:5]
        assert model.predict_with_probabilities(rows)[1] is None


def _counter(client: FlaskClient, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


class TestExpectedAccuracy:
    """Before any label arrives, the service estimates its accuracy; when labels arrive, the two can be compared."""

    def test_expected_accuracy_tracks_the_realized_one_on_unseen_rows(
        self, classification_model_dir: Path, telemetry: InMemoryTelemetry, tmp_path: Path
    ) -> None:
        card = ModelCard.load(classification_model_dir)
        _, holdout = split_dataset(load_bundled("breast_cancer"))  # rows the model never trained on
        rows = to_matrix(holdout.frame, card)
        settings = Settings.from_env(
            {}, model_dir=classification_model_dir, max_batch=500, prediction_log=str(tmp_path / "log.sqlite3")
        )
        app = create_app(settings, telemetry=telemetry.telemetry)
        try:
            client = app.test_client()
            instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows]
            body = client.post("/predict", json={"instances": instances}).get_json()
            estimated = client.get("/monitoring").get_json()["estimated_performance"]
            truth = holdout.target.tolist()
            labels = [{"prediction_id": p, "actual": y} for p, y in zip(body["prediction_ids"], truth, strict=True)]
            assert client.post("/feedback", json={"feedback": labels}).status_code == 200
            performance = client.get("/monitoring").get_json()["realized_performance"]
            realized = performance["accuracy"]
            expected_correct = _counter(client, "model_prediction_expected_correct_total")
            scored = _counter(client, "model_prediction_confidence_rows_total")
        finally:
            app.extensions["modellens"].close()
        assert estimated["method"] == "cbpe" and estimated["rows"] == len(rows)
        assert estimated["calibration_temperature"] == pytest.approx(card.calibration_temperature)
        assert estimated["expected_accuracy"] == pytest.approx(realized, abs=0.05)
        direct = load_model(classification_model_dir).predict_with_probabilities(rows)[1]
        assert direct is not None
        assert expected_correct == pytest.approx(float(direct.max(axis=1).sum()), rel=1e-9)
        assert scored == len(rows)
        # With the probabilities logged, the labels give ROC AUC (at the 20 bins' resolution) and a reliability
        # table whose rows add up to the labels.
        positive = card.classes[1]
        exact = roc_auc_score([y == positive for y in holdout.target], direct[:, 1])
        assert set(performance["roc_auc"]) == {positive}
        assert performance["roc_auc"][positive] == pytest.approx(exact, abs=0.01)
        table = performance["calibration"]
        assert sum(row["labels"] for row in table) == len(rows)
        assert all(0 <= row["accuracy"] <= 1 and row["confidence"][0] >= 0.5 for row in table)  # binary: ≥ 0.5

    def test_a_regressor_reports_no_estimate(self, client: FlaskClient) -> None:
        assert client.get("/monitoring").get_json()["estimated_performance"] is None
        assert "model_prediction_expected_correct" not in client.get("/metrics").get_data(as_text=True)
