"""Label drift: the ground truth /feedback joins, judged against the training target's distribution."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import chi2_contingency

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.profile import PROFILE_FILE, ReferenceProfile
from service.artifact.training import split_dataset, to_matrix
from service.monitoring.drift import ALPHA
from service.monitoring.labels import LabelDrift
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry
from tests.support.metrics import data_points
from tests.test_openapi import schema_validator


@pytest.fixture
def meter() -> Iterator[tuple[Meter, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider.get_meter("test"), reader
    provider.shutdown()


def _diabetes_targets() -> tuple[np.ndarray, np.ndarray]:
    """The default model's training targets, and every target of its dataset (training and holdout)."""
    dataset = load_bundled("diabetes")
    train, _ = split_dataset(dataset)
    return train.target.to_numpy(), dataset.target.to_numpy()


def _copy_model(source: Path, model: Path) -> Path:
    """A model directory of one's own (the card, the model and its profile), to change its profile."""
    model.mkdir()
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith("predictions"):
            (model / item.name).write_bytes(item.read_bytes())
    return model


class TestProfile:
    def test_train_profiles_the_target_at_its_quantiles(self, regression_model_dir: Path) -> None:
        profile = ReferenceProfile.load(regression_model_dir)
        target = profile.target
        assert target is not None and target.kind == "numeric" and not target.has_missing
        training, _ = _diabetes_targets()
        assert target.counts is not None and sum(target.counts) == len(training)
        assert len(target.labels) == 10 and max(target.shares) < 0.11  # deciles

    def test_a_classifier_profiles_its_classes(self, classification_model_dir: Path) -> None:
        card = ModelCard.load(classification_model_dir)
        target = ReferenceProfile.load(classification_model_dir).target
        assert target is not None and target.labels == card.classes
        train, _ = split_dataset(load_bundled("breast_cancer"))
        assert target.counts == tuple(int((train.target == name).sum()) for name in card.classes)

    def test_profile_from_a_csv_without_the_target_says_label_drift_is_off(
        self, regression_model_dir: Path, tmp_path: Path
    ) -> None:
        model = _copy_model(regression_model_dir, tmp_path / "model")
        frame = load_bundled("diabetes").frame
        frame.to_csv(tmp_path / "features.csv", index=False)
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", "profile", "--model", str(model), "--data",
             str(tmp_path / "features.csv")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "no 'target' column: label drift stays off" in run.stdout
        assert json.loads((model / PROFILE_FILE).read_text())["target"] is None
        frame.assign(target=load_bundled("diabetes").target).to_csv(tmp_path / "with-target.csv", index=False)
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", "profile", "--model", str(model), "--data",
             str(tmp_path / "with-target.csv")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "label drift" not in run.stdout
        target = ReferenceProfile.load(model).target
        assert target is not None and target.rows == len(frame)


class TestDecision:
    """The held-out checks of docs/metrics.md, "Label drift", on the default model's reference (353 targets)."""

    def test_labels_like_the_training_data_rarely_alarm(self, regression_model_dir: Path, meter: tuple) -> None:
        target = ReferenceProfile.load(regression_model_dir).target
        assert target is not None
        card = ModelCard.load(regression_model_dir)
        _, every = _diabetes_targets()
        rng = np.random.default_rng(7)
        alarms = 0
        for _ in range(300):
            labels = LabelDrift(meter[0], card, target, window="100rows")
            labels.observe(rng.choice(every, 100).tolist())
            alarms += labels.decision().status != "stable"
        assert alarms / 300 <= ALPHA  # the stated rate (measured ~0.2 %: docs/metrics.md)

    @pytest.mark.parametrize(
        ("change", "window"),
        [
            (lambda y, sd: y + 0.5 * sd, 100),  # the target shifted by half a standard deviation
            (lambda y, sd: y.mean() + 1.5 * (y - y.mean()), 200),  # spread ×1.5
        ],
    )
    def test_a_changed_target_reads_drift(self, regression_model_dir: Path, meter: tuple, change, window) -> None:
        target = ReferenceProfile.load(regression_model_dir).target
        assert target is not None
        _, every = _diabetes_targets()
        rng = np.random.default_rng(3)
        labels = LabelDrift(meter[0], ModelCard.load(regression_model_dir), target, window=f"{window}rows")
        labels.observe(change(rng.choice(every, window), every.std()).tolist())
        assert labels.decision().status == "drift"

    def test_few_labels_are_insufficient_data_and_say_why(self, regression_model_dir: Path, meter: tuple) -> None:
        target = ReferenceProfile.load(regression_model_dir).target
        assert target is not None
        labels = LabelDrift(meter[0], ModelCard.load(regression_model_dir), target)
        labels.observe([500.0] * 30)  # far out, but 30 labels cannot say so
        entry = labels.summary()
        assert entry["status"] == "insufficient_data"
        assert entry["reason"].startswith("30 rows in the window; the test needs")

    def test_the_statistic_is_scipys_two_sample_chi2(self, regression_model_dir: Path, meter: tuple) -> None:
        target = ReferenceProfile.load(regression_model_dir).target
        assert target is not None and target.counts is not None
        _, every = _diabetes_targets()
        labels = LabelDrift(meter[0], ModelCard.load(regression_model_dir), target, window="500rows")
        labels.observe((np.random.default_rng(5).choice(every, 300) * 1.1).tolist())
        entry = labels.summary()
        table = np.array([target.counts, entry["window_counts"]])
        statistic, p_value, _, _ = chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
        decision = labels.decision()
        assert decision.statistic == pytest.approx(statistic, rel=1e-9)
        assert decision.p_value == pytest.approx(p_value, rel=1e-9)
        assert entry["test"]["statistic"] == pytest.approx(statistic, abs=1e-6)  # JSON keeps six decimals

    def test_a_class_growing_from_its_training_share_reads_drift(
        self, classification_model_dir: Path, meter: tuple
    ) -> None:
        card = ModelCard.load(classification_model_dir)
        target = ReferenceProfile.load(classification_model_dir).target
        assert target is not None
        first, second = card.classes
        share = target.shares[0]  # the first class's training share (~37 % malignant)
        labels = LabelDrift(meter[0], card, target, window="400rows")
        grown = int(400 * min(share + 0.25, 1.0))
        labels.observe([first] * grown + [second] * (400 - grown) + ["not a class"] * 5)
        entry = labels.summary()
        assert entry["status"] == "drift" and sum(entry["window_counts"]) == 400  # the unknown label counts nowhere


def _metrics(client: FlaskClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        for sample in family.samples:
            families.setdefault(sample.name, []).append((sample.labels, sample.value))
    return families


class TestService:
    def test_feedback_feeds_the_label_window_and_the_counters(self, client: FlaskClient) -> None:
        before = _metrics(client)
        zeros = [value for _, value in before["model_label_observations_total"]]
        assert len(zeros) == 10 and not any(zeros)  # every bin from start-up, at 0
        assert len(before["model_label_reference_rows"]) == 10
        assert before["model_label_drift_min_rows"][0][1] == pytest.approx(51)
        _, every = _diabetes_targets()
        card = client.application.extensions["modellens"].model.card
        rows = to_matrix(load_bundled("diabetes").frame, card)[:40]
        instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows]
        ids = client.post("/predict", json={"instances": instances}).get_json()["prediction_ids"]
        truth = every[:40].tolist()
        feedback = [{"prediction_id": pid, "actual": y} for pid, y in zip(ids, truth, strict=True)]
        unknown = [{"prediction_id": "0" * 32, "actual": 1.0}]
        assert client.post("/feedback", json={"feedback": feedback + unknown}).status_code == 200
        assert client.post("/feedback", json={"feedback": feedback[:5]}).status_code == 200  # repeats
        document = client.get("/monitoring").get_json()
        schema_validator(client.get("/openapi.json").get_json(), "Monitoring").validate(document)
        entry = document["label_drift"]
        assert entry["labels"] == 40 and sum(entry["window_counts"]) == 40  # joined labels only, once each
        assert entry["window"] == {"seconds": 3600}
        assert entry["status"] == "insufficient_data"  # 40 labels: fewer than the 51 the test needs
        after = _metrics(client)
        assert sum(value for _, value in after["model_label_observations_total"]) == 40

    def test_without_a_target_in_the_profile_monitoring_says_how_to_add_it(
        self, regression_model_dir: Path, telemetry: InMemoryTelemetry, tmp_path: Path
    ) -> None:
        model = _copy_model(regression_model_dir, tmp_path / "model")
        profile = json.loads((model / PROFILE_FILE).read_text())
        profile.pop("target")  # a profile written before label drift
        (model / PROFILE_FILE).write_text(json.dumps(profile))
        settings = Settings.from_env({}, model_dir=model, prediction_log=str(tmp_path / "log.sqlite3"))
        app = create_app(settings, telemetry=telemetry.telemetry)
        try:
            client = app.test_client()
            document = client.get("/monitoring").get_json()
            schema_validator(client.get("/openapi.json").get_json(), "Monitoring").validate(document)
            entry = document["label_drift"]
            assert "model_label_observations" not in client.get("/metrics").get_data(as_text=True)
        finally:
            app.extensions["modellens"].close()
        assert entry["status"] == "insufficient_data"
        assert "modellens profile" in entry["reason"] and "target column" in entry["reason"]


def test_in_memory_instruments_carry_the_serving_model(regression_model_dir: Path, meter: tuple) -> None:
    card = ModelCard.load(regression_model_dir)
    target = ReferenceProfile.load(regression_model_dir).target
    assert target is not None
    LabelDrift(meter[0], card, target).observe([100.0, 200.0, float("nan"), True])  # NaN and True count nowhere
    points = data_points(meter[1].get_metrics_data(), "model.label.observations")
    assert sum(point.value for point in points) == 2
    assert {point.attributes["model.version"] for point in points} == {card.version}
