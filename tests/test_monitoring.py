"""Model monitoring: drift against the reference profile, data quality, slices, bounded series."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from scipy.spatial.distance import jensenshannon

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled
from service.artifact.model import Model, load_model
from service.artifact.profile import ReferenceProfile
from service.artifact.training import to_matrix
from service.monitoring.drift import PSI_EPSILON, js_distance, psi
from service.monitoring.monitor import ModelMonitor
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry
from tests.support.metrics import data_points


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader
    provider.shutdown()


@pytest.fixture(scope="module")
def diabetes(regression_model_dir: Path) -> tuple[ModelCard, ReferenceProfile, Model, np.ndarray]:
    card = ModelCard.load(regression_model_dir)
    return (
        card,
        ReferenceProfile.load(regression_model_dir),
        load_model(regression_model_dir),
        to_matrix(load_bundled("diabetes").frame, card),
    )


def _monitor(
    diabetes: tuple[ModelCard, ReferenceProfile, Model, np.ndarray], **kwargs: Any
) -> tuple[ModelMonitor, InMemoryMetricReader, MeterProvider]:
    card, profile, _, _ = diabetes
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    return ModelMonitor(provider.get_meter("test"), card, profile, **kwargs), reader, provider


def _feed(monitor: ModelMonitor, model: Model, rows: np.ndarray, chunks: int = 20) -> None:
    for chunk in np.array_split(rows, chunks):
        monitor.observe(chunk, model.predict_array(chunk))


def _points(data: MetricsData | None, name: str) -> list[tuple[dict[str, Any], float]]:
    return [(dict(point.attributes or {}), point.value) for point in data_points(data, name)]


def _sample(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    return rows[np.random.default_rng(seed).integers(0, len(rows), n)]


class TestDriftScores:
    """Traffic like the training data is stable; one shifted feature drifts, and only that one."""

    def test_training_like_traffic_is_stable(self, diabetes: Any) -> None:
        card, _, model, rows = diabetes
        monitor, _, provider = _monitor(diabetes)
        _feed(monitor, model, _sample(rows, 3000, seed=1))
        scores = monitor.window_scores()
        for spec in card.features:
            psi_value, js_value = scores[("feature", spec.name, "")]
            assert psi_value < 0.1, spec.name
            assert js_value < 0.1, spec.name
        provider.shutdown()

    @pytest.mark.parametrize("feature", ["bmi", "s5", "age"])
    def test_one_standard_deviation_shift_drifts_that_feature_only(self, diabetes: Any, feature: str) -> None:
        card, _, model, rows = diabetes
        column = card.feature_names.index(feature)
        shifted = _sample(rows, 3000, seed=2)
        shifted[:, column] += rows[:, column].std()
        monitor, _, provider = _monitor(diabetes)
        _feed(monitor, model, shifted)
        scores = monitor.window_scores()
        for spec in card.features:
            psi_value, js_value = scores[("feature", spec.name, "")]
            if spec.name == feature:
                assert psi_value > 0.25
                assert js_value > 0.1
            else:
                assert psi_value < 0.1, spec.name
                assert js_value < 0.1, spec.name
        provider.shutdown()

    def test_scores_equal_a_direct_numpy_scipy_computation(self, diabetes: Any) -> None:
        card, profile, model, rows = diabetes
        traffic = _sample(rows, 1500, seed=3)
        traffic[:, 2] += 0.02
        monitor, _, provider = _monitor(diabetes)
        _feed(monitor, model, traffic)
        scores = monitor.window_scores()
        for column, spec in enumerate(card.features):
            reference = profile.features[spec.name]
            bins = np.searchsorted(np.array(reference.edges), traffic[:, column], side="left")
            counts = np.bincount(bins, minlength=len(reference.labels))
            p = np.array(reference.shares)
            q = counts / counts.sum()
            p_floor, q_floor = np.maximum(p, PSI_EPSILON), np.maximum(q, PSI_EPSILON)
            expected_psi = float(np.sum((q_floor - p_floor) * np.log(q_floor / p_floor)))
            expected_js = float(jensenshannon(p, q))
            assert scores[("feature", spec.name, "")][0] == pytest.approx(expected_psi, rel=1e-12, abs=1e-15)
            assert scores[("feature", spec.name, "")][1] == pytest.approx(expected_js, rel=1e-9, abs=1e-12)
        predictions = model.predict_array(traffic)
        bins = np.searchsorted(np.array(profile.prediction.edges), predictions, side="left")
        q = np.bincount(bins, minlength=len(profile.prediction.labels)) / len(predictions)
        assert scores[("prediction", "", "")][1] == pytest.approx(
            float(jensenshannon(np.array(profile.prediction.shares), q)), rel=1e-9
        )
        provider.shutdown()

    def test_js_distance_matches_scipy_with_empty_bins(self) -> None:
        p = np.array([0.5, 0.5, 0.0, 0.0])
        q = np.array([0.0, 3.0, 1.0, 0.0])
        assert js_distance(p, q) == pytest.approx(float(jensenshannon(p, q / q.sum())), rel=1e-12)
        assert np.isnan(psi(p, np.zeros(4)))


class TestWindows:
    """The in-process window forgets old traffic: by time or by rows."""

    def test_time_window_forgets_old_traffic(self, diabetes: Any) -> None:
        _card, _, model, rows = diabetes
        clock = _Clock()
        monitor, _, provider = _monitor(diabetes, window="60s", clock=clock)
        shifted = _sample(rows, 500, seed=4)
        shifted[:, 2] += rows[:, 2].std()
        _feed(monitor, model, shifted, chunks=5)
        assert monitor.window_scores()[("feature", "bmi", "")][0] > 0.25
        clock.now += 61
        _feed(monitor, model, _sample(rows, 2000, seed=5))
        assert monitor.window_scores()[("feature", "bmi", "")][0] < 0.1
        clock.now += 3600
        assert np.isnan(monitor.window_scores()[("feature", "bmi", "")][0])
        provider.shutdown()

    def test_rows_window_holds_exactly_the_last_rows(self, diabetes: Any) -> None:
        _card, profile, model, rows = diabetes
        monitor, _, provider = _monitor(diabetes, window="250rows")
        traffic = _sample(rows, 1000, seed=6)
        traffic[700:, 2] += rows[:, 2].std()
        for chunk in np.array_split(traffic, 37):  # uneven batches that wrap the ring mid-batch
            monitor.observe(chunk, model.predict_array(chunk))
        last = traffic[-250:, 2]
        reference = profile.features["bmi"]
        counts = np.bincount(
            np.searchsorted(np.array(reference.edges), last, side="left"), minlength=len(reference.labels)
        )
        assert monitor.window_scores()[("feature", "bmi", "")][0] == pytest.approx(
            psi(np.array(reference.shares), counts.astype(float)), rel=1e-12
        )
        assert monitor.snapshot()["features"]["bmi"]["window_rows"] == 250
        provider.shutdown()

    @pytest.mark.parametrize(
        ("spec", "described"),
        [("10m", {"seconds": 600}), ("600s", {"seconds": 600}), ("1h", {"seconds": 3600}), ("250rows", {"rows": 250})],
    )
    def test_snapshot_names_the_window_the_setting_chose(
        self, diabetes: Any, spec: str, described: dict[str, int]
    ) -> None:
        monitor, _, provider = _monitor(diabetes, window=spec)
        try:
            assert monitor.snapshot()["window"] == described
        finally:
            provider.shutdown()

    def test_bad_window_spec_is_refused(self, diabetes: Any) -> None:
        with pytest.raises(ValueError, match=r"use e\.g\. 10m"):
            _monitor(diabetes, window="ten minutes")

    @pytest.mark.parametrize(("spec", "message"), [("0s", "longer than 0 s"), ("0rows", "at least one row")])
    def test_empty_window_is_refused(self, diabetes: Any, spec: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            _monitor(diabetes, window=spec)


class TestHeldBackRows:
    """Rows are held back and binned together; whatever reads the monitor sees every row observed before."""

    @pytest.mark.parametrize("window", ["10m", "500rows"])
    def test_one_row_at_a_time_counts_what_one_batch_counts(self, diabetes: Any, window: str) -> None:
        card, _, model, rows = diabetes
        rows = _sample(rows, 401, seed=3).copy()  # not a multiple of the fold size: some rows are still held back
        bmi, bp = card.feature_names.index("bmi"), card.feature_names.index("bp")
        rows[::7, bmi] = np.nan  # missing values
        rows[1::11, bp] = card.feature("bp").max + 1.0  # above the training max
        rows[2::13, bp] = card.feature("bp").min - 1.0  # below the training min
        predictions = model.predict_array(rows)
        clock = _Clock()
        one_by_one, first_reader, first = _monitor(diabetes, slices=("sex",), window=window, clock=clock)
        batched, second_reader, second = _monitor(diabetes, slices=("sex",), window=window, clock=clock)
        try:
            for index in range(len(rows)):
                one_by_one.observe(rows[index : index + 1], predictions[index : index + 1])
            batched.observe(rows, predictions)
            snapshot = one_by_one.snapshot()
            assert snapshot == batched.snapshot()
            assert snapshot["rows_scored"] == 401
            assert snapshot["features"]["bmi"]["quality_issues"] == {"imputed": 58}
            for name in ("model.feature.observations", "model.slice.prediction.observations",
                         "model.data_quality.issues"):  # fmt: skip
                assert _points(first_reader.get_metrics_data(), name) == _points(second_reader.get_metrics_data(), name)
        finally:
            first.shutdown()
            second.shutdown()

    def test_metrics_count_the_rows_still_held_back(self, diabetes: Any) -> None:
        _card, _, model, rows = diabetes
        monitor, reader, provider = _monitor(diabetes)
        try:
            for index in range(3):  # far fewer than a fold
                monitor.observe(rows[index : index + 1], model.predict_array(rows[index : index + 1]))
            assert sum(value for _, value in _points(reader.get_metrics_data(), "model.prediction.observations")) == 3
        finally:
            provider.shutdown()

    def test_held_back_rows_keep_the_time_slot_they_arrived_in(self, diabetes: Any) -> None:
        """Rows that arrived before the window moved on leave it with their slot, though binned later."""
        _card, _, model, rows = diabetes
        clock = _Clock()
        monitor, _, provider = _monitor(diabetes, window="60s", clock=clock)
        try:
            shifted = _sample(rows, 20, seed=8)
            shifted[:, 2] += 3 * rows[:, 2].std()
            for index in range(len(shifted)):  # 20 rows: held back, not yet binned
                monitor.observe(shifted[index : index + 1], model.predict_array(shifted[index : index + 1]))
            clock.now += 120  # the window has moved past them
            fresh = _sample(rows, 30, seed=9)
            for index in range(len(fresh)):
                monitor.observe(fresh[index : index + 1], model.predict_array(fresh[index : index + 1]))
            snapshot = monitor.snapshot()
            assert snapshot["rows_scored"] == 50
            assert snapshot["features"]["bmi"]["window_rows"] == 30
        finally:
            provider.shutdown()

    def test_values_on_a_bin_edge(self, diabetes: Any) -> None:
        """A value equal to an edge falls in the bin that edge closes (edges are upper-inclusive)."""
        card, profile, model, rows = diabetes
        row = _sample(rows, 1, seed=5).copy()
        reference = profile.features["bmi"]
        column = card.feature_names.index("bmi")
        monitor, reader, provider = _monitor(diabetes)
        try:
            for edge in reference.edges:
                row[0, column] = edge
                monitor.observe(row.copy(), model.predict_array(row))
            counts = {
                attributes["bin"]: value
                for attributes, value in _points(reader.get_metrics_data(), "model.feature.observations")
                if attributes["feature"] == "bmi"
            }
            assert [counts[label] for label in reference.labels[: len(reference.edges)]] == [1] * len(reference.edges)
        finally:
            provider.shutdown()


class TestMetrics:
    """Counters published at collection time: every bin from start-up, cumulative, bounded."""

    def test_every_bin_exists_at_zero_before_traffic(self, diabetes: Any) -> None:
        card, profile, _, _ = diabetes
        _, reader, provider = _monitor(diabetes)
        points = _points(reader.get_metrics_data(), "model.feature.observations")
        expected = sum(len(profile.features[spec.name].labels) for spec in card.features)
        assert len(points) == expected
        assert all(value == 0 for _, value in points)
        references = _points(reader.get_metrics_data(), "model.feature.reference")
        by_feature: dict[str, float] = {}
        for attributes, value in references:
            by_feature[attributes["feature"]] = by_feature.get(attributes["feature"], 0.0) + value
        assert by_feature == pytest.approx(dict.fromkeys(card.feature_names, 1.0))
        provider.shutdown()

    def test_counts_and_gauges_after_traffic(self, diabetes: Any) -> None:
        _card, profile, model, rows = diabetes
        monitor, reader, provider = _monitor(diabetes)
        traffic = _sample(rows, 400, seed=7)
        _feed(monitor, model, traffic)
        data = reader.get_metrics_data()
        bmi = {
            attrs["bin"]: value
            for attrs, value in _points(data, "model.feature.observations")
            if attrs["feature"] == "bmi"
        }
        expected = np.bincount(
            np.searchsorted(np.array(profile.features["bmi"].edges), traffic[:, 2], side="left"),
            minlength=len(profile.features["bmi"].labels),
        )
        assert [bmi[label] for label in profile.features["bmi"].labels] == expected.tolist()
        assert sum(value for _, value in _points(data, "model.prediction.observations")) == 400
        drift = {(a["feature"], a["method"]): v for a, v in _points(data, "model.feature.drift.score")}
        assert drift[("bmi", "psi")] == pytest.approx(monitor.window_scores()[("feature", "bmi", "")][0])
        age = _points(data, "model.age")[0][1]
        assert 0 <= age < 3600
        provider.shutdown()


class TestDataQuality:
    """Data-quality counters count exactly the injected faults, through the HTTP API."""

    def test_injected_faults_are_counted_exactly(
        self, client: FlaskClient, telemetry: InMemoryTelemetry, regression_model_dir: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        good = {spec.name: (spec.min + spec.max) / 2 for spec in card.features}  # type: ignore[operator]
        bmi, bp = card.feature("bmi"), card.feature("bp")
        rows = [good] * 5
        rows += [{**good, "bmi": None}] * 3  # null: accepted and imputed
        rows += [{**good, "bmi": bmi.max + 1}] * 2  # above the training max
        rows += [{**good, "bp": bp.min - 1}] * 4  # below the training min
        bp_range = bp.max - bp.min  # type: ignore[operator]
        rows += [{**good, "bp": bp.max + 0.2 * bp_range}] * 6  # past the max, within RANGE_TOLERANCE: not flagged
        assert client.post("/predict", json={"instances": rows}).status_code == 200
        bad = json.dumps({"instances": [{**good, "bmi": float("nan")}, {**good, "bp": "x"}, {**good, "s2": 1e101}]})
        assert client.post("/predict", data=bad, content_type="application/json").status_code == 422
        missing_key = {key: value for key, value in good.items() if key != "s1"}
        assert client.post("/predict", json={"instances": [missing_key]}).status_code == 422
        data = telemetry.metrics.get_metrics_data()
        issues = {(a["feature"], a["reason"]): v for a, v in _points(data, "model.data_quality.issues") if v}
        assert issues == {
            ("bmi", "imputed"): 3,
            ("bmi", "above_max"): 2,
            ("bp", "below_min"): 4,
            ("bmi", "non_finite"): 1,
            ("bp", "wrong_type"): 1,
            ("s2", "too_large"): 1,  # finite, beyond ±1e100: not "non_finite"
            ("s1", "missing"): 1,  # a key absent from a rejected row: not "imputed"
        }
        assert _points(data, "model.rows.rejected")[0][1] == 4  # 3 rows + 1 row in the two rejected requests
        summary = client.get("/monitoring").get_json()
        assert summary["features"]["bp"]["quality_issues"] == {"below_min": 4, "wrong_type": 1}
        assert summary["rows_scored"] == len(rows)

    def test_series_stay_bounded_under_random_values(
        self, client: FlaskClient, telemetry: InMemoryTelemetry, regression_model_dir: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        rng = np.random.default_rng(8)

        def series() -> set[tuple[str, tuple[tuple[str, Any], ...]]]:
            data = telemetry.metrics.get_metrics_data()
            assert data is not None
            return {
                (metric.name, tuple(sorted((point.attributes or {}).items())))
                for resource in data.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
                for point in metric.data.data_points
            }

        client.post("/predict", json={"instances": [{spec.name: 0.0 for spec in card.features}]})
        client.post("/predict", json={"instances": [{"bmi": "x"}]})  # a 422 series, like the ones below
        client.get("/nope")
        before = series()
        for i in range(200):
            row: dict[str, Any] = {
                spec.name: float(rng.normal(0, 1.0)) * 10.0 ** int(rng.integers(0, 300)) for spec in card.features
            }
            if i % 3 == 0:
                row[f"feature-{rng.integers(1e9)}"] = "x"
            client.post("/predict", json={"instances": [row]})
            client.get(f"/random/{rng.integers(1e9)}")
        assert series() == before
        assert len(before) < 600  # the bound this model's monitoring can ever reach


class TestSlicesAndClassification:
    """Slices break predictions down by a low-cardinality feature; classification works the same way."""

    def test_slice_counts_partition_the_predictions(self, diabetes: Any) -> None:
        card, profile, model, rows = diabetes
        monitor, reader, provider = _monitor(diabetes, slices=["sex"])
        traffic = _sample(rows, 600, seed=9)
        _feed(monitor, model, traffic)
        data = reader.get_metrics_data()
        per_value: dict[str, float] = {}
        for attributes, value in _points(data, "model.slice.prediction.observations"):
            per_value[attributes["slice_value"]] = per_value.get(attributes["slice_value"], 0) + value
        sex = traffic[:, card.feature_names.index("sex")]
        values = sorted(profile.slices["sex"].values)
        assert [per_value[v] for v in values] == [int((np.char.mod("%.6g", sex) == v).sum()) for v in values]
        assert per_value["__other__"] == 0
        snapshot = monitor.snapshot()["slices"]["sex"]
        assert all(snapshot[v]["psi"] < 0.25 for v in values)
        provider.shutdown()

    def test_unknown_slice_feature_is_refused(self, diabetes: Any) -> None:
        with pytest.raises(ValueError, match="cannot slice by"):
            _monitor(diabetes, slices=["bmi"])

    def test_classification_counts_classes(self, classification_model_dir: Path, telemetry: InMemoryTelemetry) -> None:
        settings = Settings.from_env({}, model_dir=classification_model_dir)
        client = create_app(settings, telemetry=telemetry.telemetry).test_client()
        card = ModelCard.load(classification_model_dir)
        rows = to_matrix(load_bundled("breast_cancer").frame, card)[:50]
        instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows]
        labels = client.post("/predict", json={"instances": instances}).get_json()["predictions"]
        data = telemetry.metrics.get_metrics_data()
        per_class = {a["bin"]: v for a, v in _points(data, "model.prediction.observations")}
        assert per_class == {label: labels.count(label) for label in card.classes}
        summary = client.get("/monitoring").get_json()
        assert summary["prediction"]["window_rows"] == 50
