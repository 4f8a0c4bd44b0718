"""Tests for service.artifact.training: splitting, the pipeline, and the written artifact and card."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline

from service.artifact.card import CARD_FILE, MODEL_FILE, FeatureSpec, ModelCard
from service.artifact.datasets import Dataset, DatasetError, load_bundled, load_csv
from service.artifact.digest import model_digest
from service.artifact.model import load_model
from service.artifact.profile import PROFILE_FILE
from service.artifact.training import (
    MISSING_CATEGORY,
    build_pipeline,
    describe_features,
    fit_pipeline,
    split_dataset,
    to_matrix,
    train,
    train_bundled,
)


def _write_houses_csv(path: Path, target: str = "price", rows: int = 200, seed: int = 0) -> Path:
    """Price (or price band) driven by a numeric and a categorical column, with values missing in both."""
    rng = np.random.default_rng(seed)
    size = rng.normal(100, 20, rows)
    colour = rng.choice(["red", "green", "blue"], rows).astype(object)
    bonus = np.select([colour == "red", colour == "green"], [80.0, -80.0], 0.0)
    price = 3 * size + bonus + rng.normal(0, 5, rows)
    frame = pd.DataFrame({"size": size, "colour": colour, "price": price})
    frame["band"] = np.where(price > np.median(price), "dear", "cheap")
    frame.loc[rng.random(rows) < 0.1, "size"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "colour"] = np.nan
    frame[["size", "colour", target]].to_csv(path, index=False)
    return path


def _dump(pipeline: Pipeline) -> bytes:
    buffer = io.BytesIO()
    sio.dump(pipeline, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, Path]:
    """Diabetes, trained once for the module."""
    output = tmp_path_factory.mktemp("diabetes")
    return train_bundled("diabetes", output), output


@pytest.fixture(scope="module")
def houses(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The houses CSV, loaded with price as the target."""
    return load_csv(_write_houses_csv(tmp_path_factory.mktemp("csv") / "houses.csv"), "price")


def _schema(model_bytes: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
        return archive.read("schema.json").decode()


class TestTrainRegression:
    """Training on diabetes writes a model and a card on the train split with honest holdout metrics."""

    def test_writes_model_and_card(self, trained: tuple[ModelCard, Path]) -> None:
        card, output = trained
        assert sorted(path.name for path in output.iterdir()) == sorted([CARD_FILE, MODEL_FILE, PROFILE_FILE])
        assert ModelCard.load(output) == card

    def test_card_describes_the_run(self, trained: tuple[ModelCard, Path]) -> None:
        card, _ = trained
        assert card.name == "diabetes"
        assert card.dataset == "sklearn:diabetes"
        assert card.task == "regression"
        assert card.target == "target"
        assert card.classes == ()
        assert re.fullmatch(r"[0-9a-f]{12}", card.version)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", card.trained_at)
        assert 0 < card.training_duration_seconds < 5
        assert card.estimator == "Pipeline(ColumnTransformer, Ridge)"
        assert (card.n_train, card.n_holdout) == (353, 89)
        assert set(card.library_versions) == {"scikit-learn", "numpy", "skops", "python"}

    def test_features_describe_the_train_split(self, trained: tuple[ModelCard, Path]) -> None:
        card, _ = trained
        train_split, _ = split_dataset(load_bundled("diabetes"))
        assert card.feature_names == tuple(train_split.frame.columns)
        for spec in card.features:
            assert spec.type == "numeric"
            assert spec.min == train_split.frame[spec.name].min()
            assert spec.max == train_split.frame[spec.name].max()
            assert spec.missing_rate == 0.0

    def test_metrics(self, trained: tuple[ModelCard, Path]) -> None:
        metrics = trained[0].metrics
        assert set(metrics) == {"r2", "mae", "rmse"}
        assert metrics["r2"] > 0.3
        assert 0 < metrics["mae"] <= metrics["rmse"]


class TestTrainClassification:
    """Classification cards carry string classes and accuracy, f1_macro and (binary only) roc_auc."""

    def test_breast_cancer(self, tmp_path: Path) -> None:
        card = train_bundled("breast_cancer", tmp_path)
        assert card.task == "classification"
        assert card.classes == ("benign", "malignant")
        assert card.estimator == "Pipeline(ColumnTransformer, LogisticRegression)"
        assert set(card.metrics) == {"accuracy", "f1_macro", "roc_auc", "expected_accuracy"}
        assert card.metrics["accuracy"] > 0.9
        assert card.metrics["roc_auc"] > 0.95
        # Calibrated on this holdout, the expected accuracy (CBPE) lands near the measured one.
        assert card.calibration_temperature is not None and card.calibration_temperature > 0
        assert card.metrics["expected_accuracy"] == pytest.approx(card.metrics["accuracy"], abs=0.05)

    def test_wine_has_no_roc_auc(self, tmp_path: Path) -> None:
        card = train_bundled("wine", tmp_path, model_name="cellar")
        assert card.name == "cellar"
        assert card.classes == ("class_0", "class_1", "class_2")
        assert set(card.metrics) == {"accuracy", "f1_macro", "expected_accuracy"}
        assert card.metrics["accuracy"] > 0.9

    def test_holdout_is_stratified(self, tmp_path: Path) -> None:
        dataset = load_bundled("wine")
        _, holdout = split_dataset(dataset)
        shares = holdout.target.value_counts(normalize=True)
        expected = dataset.target.value_counts(normalize=True)
        assert (shares - expected).abs().max() < 0.02


class TestVersions:
    """Different models get different versions; the same data and seed the same one, though skops artifacts are
    not byte-for-byte reproducible."""

    def test_different_models_get_different_versions(self, tmp_path: Path) -> None:
        versions = {
            train_bundled("diabetes", tmp_path / "a", seed=0).version,
            train_bundled("diabetes", tmp_path / "b", seed=1).version,
            train_bundled("diabetes", tmp_path / "c", holdout=0.3).version,
            train_bundled("wine", tmp_path / "d").version,
        }
        assert len(versions) == 4

    def test_skops_output_is_not_byte_deterministic(self) -> None:
        # skops names zip entries and stamps schema.json with Python id()s (and zip entries carry the
        # write time), so two dumps of equal models differ in bytes while loading to the same model.
        train_split, holdout = split_dataset(load_bundled("diabetes"))
        features = describe_features(train_split.frame)
        first, second = fit_pipeline(train_split, features), fit_pipeline(train_split, features)
        first_bytes, second_bytes = _dump(first), _dump(second)
        assert first_bytes != second_bytes
        assert model_digest(first_bytes) == model_digest(second_bytes)  # what the version hashes
        assert '"__id__"' in json.dumps(json.loads(_schema(first_bytes)))
        rows = to_matrix(holdout.frame, features)
        trusted = ["numpy.dtype"]
        np.testing.assert_array_equal(
            sio.load(io.BytesIO(first_bytes), trusted=trusted).predict(rows),
            sio.load(io.BytesIO(second_bytes), trusted=trusted).predict(rows),
        )

    @pytest.mark.parametrize("dataset", ["breast_cancer", "diabetes"])
    def test_retraining_reproduces_the_model_and_its_version(self, tmp_path: Path, dataset: str) -> None:
        # Same data and seed: same split, features, metrics, predictions, and version: it hashes the fitted
        # model, not the artifact's bytes (which differ per dump, see above). Both artifacts load.
        first = train_bundled(dataset, tmp_path / "a")
        second = train_bundled(dataset, tmp_path / "b")
        unversioned = {"trained_at", "training_duration_seconds"}
        first_content = {k: v for k, v in first.to_dict().items() if k not in unversioned}
        second_content = {k: v for k, v in second.to_dict().items() if k not in unversioned}
        assert first_content == second_content
        assert load_model(tmp_path / "a").card.version == load_model(tmp_path / "b").card.version == first.version


class TestSplitDataset:
    """The split is reproducible from the seed and refuses what cannot be split."""

    def test_same_seed_same_rows(self) -> None:
        dataset = load_bundled("diabetes")
        first, _ = split_dataset(dataset, seed=3)
        again, _ = split_dataset(dataset, seed=3)
        other, _ = split_dataset(dataset, seed=4)
        assert list(first.frame.index) == list(again.frame.index)
        assert list(first.frame.index) != list(other.frame.index)

    @pytest.mark.parametrize("holdout", [0.0, 1.0, -0.1])
    def test_holdout_share_out_of_range(self, holdout: float) -> None:
        with pytest.raises(ValueError, match="holdout"):
            split_dataset(load_bundled("wine"), holdout=holdout)

    def test_class_with_a_single_row(self) -> None:
        frame = pd.DataFrame({"x": np.arange(30, dtype=float)})
        target = pd.Series(["a"] * 15 + ["b"] * 14 + ["c"], dtype=object)
        dataset = Dataset("test", frame, target, "classification", "y", ("a", "b", "c"))
        with pytest.raises(DatasetError, match=r"classes \['c'\] have a single row"):
            split_dataset(dataset)


class TestToMatrix:
    """Model input follows card feature order: float64 if all numeric, else object with NaN for missing."""

    def test_numeric_is_float64_in_card_order(self) -> None:
        frame = pd.DataFrame({"b": [1.0, 2.0], "a": [3.0, np.nan]})
        features = (FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric"))
        matrix = to_matrix(frame, features)
        assert matrix.dtype == np.float64
        np.testing.assert_array_equal(matrix, [[3.0, 1.0], [np.nan, 2.0]])

    def test_mixed_is_object_with_nan_for_missing(self) -> None:
        frame = pd.DataFrame({"n": [1, 2, 3], "c": ["x", None, 7]}, dtype=object)
        matrix = to_matrix(frame, (FeatureSpec("c", "categorical"), FeatureSpec("n", "numeric")))
        assert matrix.dtype == object
        assert matrix[0].tolist() == ["x", 1.0]
        assert np.isnan(matrix[1, 0])
        assert matrix[2, 0] == "7"

    def test_missing_column(self) -> None:
        with pytest.raises(KeyError, match="'b'"):
            to_matrix(pd.DataFrame({"a": [1.0]}), (FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric")))


class TestPipeline:
    """The pipeline reads columns by position and copes with missing and unseen categories."""

    def test_steps(self) -> None:
        features = (FeatureSpec("a", "numeric"), FeatureSpec("b", "categorical"), FeatureSpec("c", "numeric"))
        columns = build_pipeline(features, "regression")["features"]
        assert [(name, cols) for name, _, cols in columns.transformers] == [
            ("numeric", [0, 2]),
            ("categorical", [1]),
        ]

    def test_none_and_nan_are_the_same_missing_category(self, houses: Dataset) -> None:
        train_split, _ = split_dataset(houses)
        features = describe_features(train_split.frame)
        pipeline = fit_pipeline(train_split, features)
        encoder = pipeline["features"].named_transformers_["categorical"]["encode"]
        assert MISSING_CATEGORY in encoder.categories_[0]
        with_nan = np.array([[100.0, np.nan]], dtype=object)
        with_none = np.array([[100.0, None]], dtype=object)
        missing = np.array([[100.0, MISSING_CATEGORY]], dtype=object)
        assert pipeline.predict(with_nan) == pipeline.predict(with_none) == pipeline.predict(missing)

    def test_unknown_category_and_missing_number(self, houses: Dataset) -> None:
        train_split, _ = split_dataset(houses)
        features = describe_features(train_split.frame)
        pipeline = fit_pipeline(train_split, features)
        rows = np.array([[np.nan, "purple"], [120.0, "red"]], dtype=object)
        predictions = pipeline.predict(rows)
        assert np.isfinite(predictions).all()


class TestTrainCsv:
    """A CSV with numeric and categorical columns and gaps in both trains end to end."""

    def test_regression(self, tmp_path: Path) -> None:
        path = _write_houses_csv(tmp_path / "houses.csv")
        card = train(load_csv(path, "price"), output=tmp_path / "model")
        assert card.name == "houses"
        assert card.dataset == "csv:houses.csv"
        size, colour = card.feature("size"), card.feature("colour")
        assert size.type == "numeric"
        assert size.min is not None
        assert 0.03 < size.missing_rate < 0.2
        assert colour.type == "categorical"
        assert colour.categories == ("blue", "green", "red")
        assert 0.03 < colour.missing_rate < 0.2
        assert card.metrics["r2"] > 0.8

    def test_classification(self, tmp_path: Path) -> None:
        path = _write_houses_csv(tmp_path / "houses.csv", target="band")
        card = train(load_csv(path, "band"), output=tmp_path / "model", name="bands")
        assert card.name == "bands"
        assert card.classes == ("cheap", "dear")
        assert card.metrics["accuracy"] > 0.8
