"""Shadow mode: a challenger scores the same rows off the request path, in the request's trace."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.model import Model, load_model
from service.artifact.profile import slice_label
from service.artifact.training import to_matrix, train
from service.groundtruth.store import PredictionLog
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry
from tests.support.metrics import data_points


@pytest.fixture(scope="module")
def challenger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different diabetes model: another split seed and a smaller training share."""
    output = tmp_path_factory.mktemp("models") / "challenger"
    train(load_bundled("diabetes"), output=output, name="diabetes", seed=7, holdout=0.5)
    return output


@pytest.fixture(scope="module")
def classification_challenger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("models") / "bc-challenger"
    train(load_bundled("breast_cancer"), output=output, name="breast_cancer", seed=5, holdout=0.7)
    return output


def _app(
    model_dir: Path, challenger: Path, telemetry: InMemoryTelemetry, model: Model | None = None, **settings: Any
) -> Flask:
    """The service with `challenger` in shadow; `model`, when given, is that challenger already loaded (and
    patched by the test)."""
    return create_app(
        Settings.from_env({}, model_dir=model_dir, shadow_model_dir=challenger, **settings),
        telemetry=telemetry.telemetry,
        challenger=model,
    )


def _instances(model_dir: Path, dataset: str, n: int) -> tuple[list[dict[str, float]], np.ndarray]:
    card = ModelCard.load(model_dir)
    rows = to_matrix(load_bundled(dataset).frame, card)[:n]
    return [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows], rows


def _metric(telemetry: InMemoryTelemetry, name: str) -> list[Any]:
    return data_points(telemetry.metrics.get_metrics_data(), name)


class TestRegressionShadow:
    """Disagreement is measured row by row, and the shadow span joins the request's trace."""

    def test_disagreement_matches_a_direct_computation(
        self, regression_model_dir: Path, challenger_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        app = _app(regression_model_dir, challenger_dir, telemetry)
        instances, rows = _instances(regression_model_dir, "diabetes", 30)
        client = app.test_client()
        response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200
        app.extensions["modellens"].close()
        expected = np.abs(
            load_model(regression_model_dir).predict_array(rows) - load_model(challenger_dir).predict_array(rows)
        )
        assert expected.sum() > 0
        (histogram,) = _metric(telemetry, "model.shadow.disagreement")
        assert histogram.count == 30
        assert histogram.sum == pytest.approx(float(expected.sum()))
        assert histogram.attributes["shadow_model.version"] == ModelCard.load(challenger_dir).version
        (comparisons,) = _metric(telemetry, "model.shadow.comparisons")
        assert comparisons.value == 30
        assert _metric(telemetry, "model.shadow.duration")[0].count == 1
        summary = client.get("/monitoring").get_json()["shadow"]
        assert summary["rows_compared"] == 30
        assert summary["mean_absolute_difference"] == pytest.approx(float(expected.mean()))

    def test_shadow_span_is_in_the_request_trace(
        self, regression_model_dir: Path, challenger_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        app = _app(regression_model_dir, challenger_dir, telemetry)
        instances, _ = _instances(regression_model_dir, "diabetes", 2)
        trace_id = app.test_client().post("/predict", json={"instances": instances}).headers["X-Trace-Id"]
        app.extensions["modellens"].close()
        spans = [s for s in telemetry.spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
        by_name = {span.name: span for span in spans}
        assert set(by_name) == {"POST /predict", "validate", "inference", "shadow inference"}
        shadow = by_name["shadow inference"]
        assert shadow.parent is not None
        assert shadow.parent.span_id == by_name["POST /predict"].context.span_id
        assert shadow.attributes is not None
        assert shadow.attributes["shadow_model.version"] == ModelCard.load(challenger_dir).version


class TestPredictionLog:
    """Each row's challenger prediction lands in the prediction log beside the live one, with its inputs."""

    def test_shadow_predictions_are_stored_per_row(
        self, regression_model_dir: Path, challenger_dir: Path, telemetry: InMemoryTelemetry, tmp_path: Path
    ) -> None:
        path = tmp_path / "predictions.sqlite3"
        app = _app(regression_model_dir, challenger_dir, telemetry, prediction_log=str(path), slices="sex")
        instances, rows = _instances(regression_model_dir, "diabetes", 30)
        body = app.test_client().post("/predict", json={"instances": instances}).get_json()
        app.extensions["modellens"].close()  # the challenger finishes, then the log writes
        challenger = load_model(challenger_dir).predict_array(rows)
        sex = ModelCard.load(regression_model_dir).feature_names.index("sex")
        with PredictionLog(path, retention_seconds=None, max_rows=None) as log:
            found = log.lookup(body["prediction_ids"])
        assert len(found) == 30
        for index, pid in enumerate(body["prediction_ids"]):
            stored = found[pid]
            assert stored.inputs == instances[index]
            assert stored.prediction == pytest.approx(body["predictions"][index])
            assert stored.shadow_prediction == pytest.approx(float(challenger[index]))
            assert stored.slices == {"sex": slice_label(rows[index, sex])}


class TestIsolation:
    """A slow or failing challenger never slows or breaks the live response."""

    def test_slow_shadow_does_not_hold_the_live_response(
        self,
        regression_model_dir: Path,
        challenger_dir: Path,
        telemetry: InMemoryTelemetry,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        challenger = load_model(challenger_dir)
        original = challenger.predict_array
        release = threading.Event()

        def stuck(rows: np.ndarray) -> np.ndarray:
            # Blocks until the test has all ten live answers: if a live request waited for its shadow run, the
            # loop below would never finish and the wait would time out with the shadow still stuck.
            release.wait(timeout=30)
            return original(rows)

        monkeypatch.setattr(challenger, "predict_array", stuck)
        app = _app(regression_model_dir, challenger_dir, telemetry, challenger, shadow_queue=2)
        state = app.extensions["modellens"]
        instances, _ = _instances(regression_model_dir, "diabetes", 1)
        client = app.test_client()
        statuses = [client.post("/predict", json={"instances": instances}).status_code for _ in range(10)]
        assert not release.is_set()
        assert statuses == [200] * 10  # all answered while the challenger was still stuck on the first row
        release.set()
        state.close()
        (skipped,) = _metric(telemetry, "model.shadow.skipped")
        assert skipped.value == 8  # two requests fit in the queue, the other eight were skipped
        assert _metric(telemetry, "model.shadow.comparisons")[0].value == 2

    def test_failing_shadow_is_counted_and_live_still_answers(
        self,
        regression_model_dir: Path,
        challenger_dir: Path,
        telemetry: InMemoryTelemetry,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        challenger = load_model(challenger_dir)

        def broken(rows: np.ndarray) -> np.ndarray:
            raise RuntimeError("challenger exploded")

        monkeypatch.setattr(challenger, "predict_array", broken)
        app = _app(regression_model_dir, challenger_dir, telemetry, challenger)
        state = app.extensions["modellens"]
        instances, _ = _instances(regression_model_dir, "diabetes", 1)
        assert app.test_client().post("/predict", json={"instances": instances}).status_code == 200
        state.close()
        assert _metric(telemetry, "model.shadow.errors")[0].value == 1
        span = next(s for s in telemetry.spans.get_finished_spans() if s.name == "shadow inference")
        assert not span.status.is_ok

    def test_mismatched_challenger_is_refused(
        self, regression_model_dir: Path, classification_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        with pytest.raises(ValueError, match="takes features"):
            _app(regression_model_dir, classification_model_dir, telemetry)


class TestClassificationShadow:
    """Classification disagreement is a count of rows whose class differs."""

    def test_disagreements_counted(
        self, classification_model_dir: Path, classification_challenger_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        app = _app(classification_model_dir, classification_challenger_dir, telemetry)
        instances, rows = _instances(classification_model_dir, "breast_cancer", 200)
        app.test_client().post("/predict", json={"instances": instances})
        app.extensions["modellens"].close()
        live = load_model(classification_model_dir).predict_array(rows)
        challenger = load_model(classification_challenger_dir).predict_array(rows)
        outcomes = {p.attributes["outcome"]: p.value for p in _metric(telemetry, "model.shadow.comparisons")}
        assert outcomes.get("disagree", 0) == int((live != challenger).sum())
        assert outcomes.get("agree", 0) == int((live == challenger).sum())
