"""Multivariate drift: the PCA reference, the calibrated decision, and what `/monitoring` and `/metrics` show."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from service.artifact.datasets import load_bundled, load_csv
from service.artifact.profile import PROFILE_FILE, ReferenceProfile
from service.artifact.reconstruction import ReconstructionReference, fit_reconstruction
from service.artifact.training import split_dataset, train
from service.monitoring.multivariate import MIN_ROWS, critical_z, decide
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry

FEATURES = 10
CORRELATION = 0.8
ALARMS = ("warn", "drift")


def _covariance(correlation: float) -> np.ndarray:
    """Features 0 and 1 correlated, the others independent; every marginal is N(0, 1) whatever the sign."""
    covariance = np.eye(FEATURES)
    covariance[0, 1] = covariance[1, 0] = correlation
    return covariance


def _draw(rng: np.random.Generator, n: int, correlation: float = CORRELATION) -> np.ndarray:
    return rng.multivariate_normal(np.zeros(FEATURES), _covariance(correlation), size=n)


@pytest.fixture(scope="module")
def reference() -> ReconstructionReference:
    fitted = fit_reconstruction(tuple(f"f{i}" for i in range(FEATURES)), _draw(np.random.default_rng(1), 8000))
    assert fitted is not None
    return fitted


def _binomial_bound(rate: float, windows: int) -> float:
    """The stated rate plus three standard errors: what a seeded run may show while meeting it."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / windows)


class TestReference:
    def test_held_out_error_predicts_the_error_of_fresh_rows(self, reference: ReconstructionReference) -> None:
        fresh = reference.errors(_draw(np.random.default_rng(2), 20_000))
        assert fresh.mean() == pytest.approx(reference.error_mean, rel=0.03)
        assert fresh.std() == pytest.approx(reference.error_std, rel=0.05)
        components = np.asarray(reference.components)
        assert components @ components.T == pytest.approx(np.eye(len(components)), abs=1e-9)
        assert 1 <= len(components) < FEATURES

    def test_missing_values_are_imputed_with_the_training_median(self, reference: ReconstructionReference) -> None:
        row = np.full((1, FEATURES), np.nan)
        assert reference.errors(row) == pytest.approx(reference.errors(np.asarray([reference.center])))

    def test_nothing_to_learn_gives_no_reference(self) -> None:
        rng = np.random.default_rng(3)
        assert fit_reconstruction(("a",), rng.normal(size=(500, 1))) is None
        constant = np.column_stack([rng.normal(size=500), np.ones(500)])
        assert fit_reconstruction(("a", "b"), constant) is None  # one feature varies
        assert fit_reconstruction(("a", "b"), rng.normal(size=(10, 2))) is None  # too few rows


class TestDecision:
    """docs/metrics.md, "Multivariate drift": the stated false-alarm rate, and what the per-feature tests miss."""

    @pytest.mark.parametrize("rows", [100, 200, 500])
    def test_no_drift_alarms_in_at_most_one_percent_of_windows(
        self, reference: ReconstructionReference, rows: int
    ) -> None:
        rng = np.random.default_rng(rows)
        windows = 1000
        alarms = sum(decide(reference, reference.errors(_draw(rng, rows))).status in ALARMS for _ in range(windows))
        assert alarms / windows <= _binomial_bound(0.01, windows)

    @pytest.mark.parametrize("rows", [100, 500])
    def test_a_correlation_turned_around_is_drift(self, reference: ReconstructionReference, rows: int) -> None:
        rng = np.random.default_rng(7)
        statuses = [decide(reference, reference.errors(_draw(rng, rows, -CORRELATION))).status for _ in range(200)]
        assert statuses.count("drift") == 200

    def test_too_few_rows_is_insufficient_data_with_the_reason(self, reference: ReconstructionReference) -> None:
        decision = decide(reference, reference.errors(_draw(np.random.default_rng(4), MIN_ROWS - 1, -CORRELATION)))
        assert decision.status == "insufficient_data"
        assert decision.reason == f"{MIN_ROWS - 1} rows in the window; the multivariate test needs {MIN_ROWS}"

    def test_the_decision_is_the_formula(self, reference: ReconstructionReference) -> None:
        errors = reference.errors(_draw(np.random.default_rng(5), 300, 0.2))
        decision = decide(reference, errors)
        se = reference.error_std * math.sqrt(1 / 300 + 1 / reference.rows)
        assert decision.z == pytest.approx((errors.mean() - reference.error_mean) / se, rel=1e-12)
        z = 2.3263478740408408  # norm.ppf(0.99), as prometheus/rules/drift.rules.yml carries it
        expected = z + (z**2 - 1) / 6 * reference.error_skewness / math.sqrt(300)
        assert decision.critical_value == critical_z(reference.error_skewness, 300) == pytest.approx(expected)

    def test_the_default_model_is_quiet_on_its_own_data(self) -> None:
        data = load_bundled("diabetes")
        training, _ = split_dataset(data)
        fitted = fit_reconstruction(tuple(data.frame.columns), training.frame.to_numpy(np.float64))
        assert fitted is not None
        rows, rng = data.frame.to_numpy(np.float64), np.random.default_rng(6)
        for size in (100, 200, 500):
            statuses = [
                decide(fitted, fitted.errors(rows[rng.integers(0, len(rows), size)])).status for _ in range(300)
            ]
            assert not set(statuses) & set(ALARMS), size


# --- through the service --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def correlated_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A regressor on 10 numeric features, two of them correlated, trained from a CSV of 8,000 rows."""
    directory = tmp_path_factory.mktemp("correlated")
    rng = np.random.default_rng(8)
    rows = _draw(rng, 8000)
    frame = pd.DataFrame(rows, columns=[f"f{i}" for i in range(FEATURES)])
    frame["y"] = rows @ np.linspace(1, 2, FEATURES) + rng.normal(0, 0.1, len(rows))
    frame.to_csv(directory / "train.csv", index=False)
    train(load_csv(directory / "train.csv", "y"), output=directory / "model", name="correlated")
    return directory / "model"


@pytest.fixture
def correlated_app(correlated_model: Path, telemetry: InMemoryTelemetry, tmp_path: Path) -> Iterator[Flask]:
    settings = Settings.from_env(
        {}, model_dir=correlated_model, drift_window="500rows", max_batch=500, prediction_log="off"
    )
    app = create_app(settings, telemetry=telemetry.telemetry)
    yield app
    app.extensions["modellens"].close()


def _instances(rows: np.ndarray) -> list[dict[str, float]]:
    return [{f"f{i}": float(value) for i, value in enumerate(row)} for row in rows]


def _predict(client: FlaskClient, rows: np.ndarray) -> None:
    assert client.post("/predict", json={"instances": _instances(rows)}).status_code == 200


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted((k, v) for k, v in sample.labels.items() if k == "statistic")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


class TestThroughTheService:
    def test_only_the_multivariate_check_sees_a_broken_correlation(self, correlated_app: Flask) -> None:
        client = correlated_app.test_client()
        rows = _draw(np.random.default_rng(9), 500, -CORRELATION)
        _predict(client, rows[:50])
        early = client.get("/monitoring").get_json()["multivariate"]
        assert early["status"] == "insufficient_data" and early["window_rows"] == 50
        _predict(client, rows[50:])
        monitoring = client.get("/monitoring").get_json()
        multivariate = monitoring["multivariate"]
        assert multivariate["status"] == "drift"
        assert multivariate["window_rows"] == 500
        assert multivariate["features"] == [f"f{i}" for i in range(FEATURES)]
        assert multivariate["effect"] >= 0.1 and multivariate["test"]["z"] > multivariate["test"]["critical_value"]
        # Every feature's own distribution is where it was: the per-feature tests do not call it drift.
        assert {entry["status"] for entry in monitoring["features"].values()} <= {"stable", "warn"}

    def test_fresh_rows_like_training_read_stable(self, correlated_app: Flask) -> None:
        client = correlated_app.test_client()
        rows = _draw(np.random.default_rng(10), 500)
        _predict(client, rows)
        assert client.get("/monitoring").get_json()["multivariate"]["status"] == "stable"

    def test_metrics_carry_what_promql_needs(self, correlated_app: Flask, correlated_model: Path) -> None:
        client = correlated_app.test_client()
        rows = _draw(np.random.default_rng(11), 300, -CORRELATION)
        _predict(client, rows)
        text = client.get("/metrics").get_data(as_text=True)
        reference = ReferenceProfile.load(correlated_model).multivariate
        assert reference is not None
        assert _samples(text, "model_multivariate_rows_total") == {(): 300}
        (errors,) = _samples(text, "model_multivariate_errors_total").values()
        assert errors == pytest.approx(float(reference.errors(rows).sum()), rel=1e-9)
        moments = _samples(text, "model_multivariate_reference_error")
        assert moments[(("statistic", "mean"),)] == reference.error_mean
        assert moments[(("statistic", "skewness"),)] == reference.error_skewness
        assert _samples(text, "model_multivariate_reference_rows") == {(): reference.rows}
        # A second read scores nothing twice.
        again = client.get("/metrics").get_data(as_text=True)
        assert _samples(again, "model_multivariate_rows_total") == {(): 300}

    def test_a_profile_written_before_has_no_multivariate_check(
        self, correlated_model: Path, tmp_path: Path, telemetry: InMemoryTelemetry
    ) -> None:
        old = tmp_path / "old"
        old.mkdir()
        for path in correlated_model.iterdir():
            (old / path.name).write_bytes(path.read_bytes())
        profile = ReferenceProfile.load(old)
        data = profile.to_dict()
        del data["multivariate"]
        ReferenceProfile.from_dict(data).save(old)
        assert "multivariate" in (correlated_model / PROFILE_FILE).read_text()
        app = create_app(Settings.from_env({}, model_dir=old, prediction_log="off"), telemetry=telemetry.telemetry)
        try:
            client = app.test_client()
            assert client.get("/monitoring").get_json()["multivariate"] is None
            assert "model_multivariate" not in client.get("/metrics").get_data(as_text=True)
        finally:
            app.extensions["modellens"].close()
