"""Tests for service.artifact.card: the model card, its JSON form and its content version."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import Ridge

from service.artifact.card import CARD_FILE, FeatureSpec, ModelCard, content_version


def _model(alpha: float = 1.0) -> bytes:
    """A skops file of a small fitted model (a fresh dump each call: its bytes differ, its content does not)."""
    rows = np.arange(12.0).reshape(6, 2)
    return sio.dumps(Ridge(alpha=alpha).fit(rows, rows.sum(axis=1)))


def _card(**changes: Any) -> ModelCard:
    card = ModelCard(
        name="houses",
        version="0123456789ab",
        trained_at="2026-11-26T12:00:00Z",
        dataset="csv:houses.csv",
        task="classification",
        target="band",
        features=(
            FeatureSpec("size", "numeric", min=20.0, max=250.5, missing_rate=0.1),
            FeatureSpec("colour", "categorical", categories=("blue", "red"), missing_rate=0.05),
        ),
        classes=("cheap", "dear"),
        metrics={"accuracy": 0.93, "f1_macro": 0.92, "roc_auc": 0.97},
        training_duration_seconds=0.012,
        estimator="Pipeline(ColumnTransformer, LogisticRegression)",
        n_train=120,
        n_holdout=30,
        library_versions={"scikit-learn": "1.9.1", "numpy": "2.4.6", "skops": "0.16.0", "python": "3.11.7"},
    )
    return dataclasses.replace(card, **changes)


class TestFeatureSpec:
    """A feature spec rejects combinations that cannot come from training data."""

    def test_numeric_with_categories_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'categories'"):
            FeatureSpec("size", "numeric", categories=("a",))

    def test_categorical_with_range_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'min' and 'max'"):
            FeatureSpec("colour", "categorical", min=0.0)

    def test_min_above_max_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'min'"):
            FeatureSpec("size", "numeric", min=2.0, max=1.0)

    def test_missing_rate_outside_unit_interval_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'missing_rate'"):
            FeatureSpec("size", "numeric", missing_rate=1.5)

    def test_unknown_type_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'type'"):
            FeatureSpec("size", "text")  # type: ignore[arg-type]


class TestModelCard:
    """The card looks features up by name and checks task, classes and features agree."""

    def test_feature_names_follow_feature_order(self) -> None:
        assert _card().feature_names == ("size", "colour")

    def test_feature_by_name(self) -> None:
        assert _card().feature("colour").categories == ("blue", "red")
        with pytest.raises(KeyError):
            _card().feature("nope")

    def test_regression_with_classes_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'classes'"):
            _card(task="regression")

    def test_classification_needs_two_classes(self) -> None:
        with pytest.raises(ValueError, match="'classes'"):
            _card(classes=("cheap",))

    def test_duplicate_feature_names_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="unique"):
            _card(features=(FeatureSpec("a", "numeric"), FeatureSpec("a", "numeric")))


class TestCardDict:
    """to_dict/from_dict round-trip, and from_dict names the key it rejects."""

    def test_round_trip(self) -> None:
        card = _card()
        data = card.to_dict()
        assert json.loads(json.dumps(data)) == data
        assert ModelCard.from_dict(data) == card

    def test_features_and_classes_become_lists(self) -> None:
        data = _card().to_dict()
        assert data["classes"] == ["cheap", "dear"]
        assert data["features"][1] == {
            "name": "colour",
            "type": "categorical",
            "min": None,
            "max": None,
            "categories": ["blue", "red"],
            "missing_rate": 0.05,
        }

    def test_integer_labels_round_trip_and_string_labels_write_no_key(self) -> None:
        integer = _card(classes=("0", "1"), label_type="integer")
        assert integer.to_dict()["label_type"] == "integer"
        assert ModelCard.from_dict(integer.to_dict()) == integer
        # A card written before label_type existed has no key: it loads, and its version is unchanged.
        assert "label_type" not in _card().to_dict()
        assert ModelCard.from_dict(_card().to_dict()).label_type == "string"

    def test_integer_labels_need_integer_classes(self) -> None:
        with pytest.raises(ValueError, match="'label_type' integer"):
            _card(label_type="integer")  # classes cheap, dear
        with pytest.raises(ValueError, match="'label_type' must be one of"):
            _card(classes=("0", "1"), label_type="float")

    @pytest.mark.parametrize(
        ("change", "key"),
        [
            (lambda d: d.pop("target"), "'target'"),
            (lambda d: d.update(owner="me"), "'owner'"),
            (lambda d: d.update(name=3), "'name'"),
            (lambda d: d.update(version="not-a-hash"), "'version'"),
            (lambda d: d.update(trained_at="yesterday"), "'trained_at'"),
            (lambda d: d.update(task="clustering"), "'task'"),
            (lambda d: d.update(n_train=True), "'n_train'"),
            (lambda d: d.update(n_holdout=-1), "'n_holdout'"),
            (lambda d: d.update(training_duration_seconds="fast"), "'training_duration_seconds'"),
            (lambda d: d.update(classes="cheap"), "'classes'"),
            (lambda d: d["metrics"].update(accuracy="high"), "'metrics.accuracy'"),
            (lambda d: d["library_versions"].update(numpy=2), "'library_versions.numpy'"),
            (lambda d: d.update(features={}), "'features'"),
            (lambda d: d["features"][0].update(min="low"), "'features[0].min'"),
            (lambda d: d["features"][1].pop("categories"), "'features[1].categories'"),
            (lambda d: d["features"][1].update(colour="x"), "'features[1].colour'"),
        ],
    )
    def test_bad_key_is_named(self, change: Any, key: str) -> None:
        data = _card().to_dict()
        change(data)
        with pytest.raises(ValueError, match=re.escape(key)):
            ModelCard.from_dict(data)

    def test_non_finite_metric_is_rejected(self) -> None:
        data = _card().to_dict()
        data["metrics"]["accuracy"] = float("nan")
        with pytest.raises(ValueError, match=r"'metrics\.accuracy'"):
            ModelCard.from_dict(data)


class TestCardFile:
    """save writes model-card.json; load reads it back and names the file when it is broken."""

    def test_save_and_load(self, tmp_path: Path) -> None:
        path = _card().save(tmp_path)
        assert path == tmp_path / CARD_FILE
        assert path.read_text().startswith('{\n  "name": "houses"')
        assert ModelCard.load(tmp_path) == _card()
        assert [p.name for p in tmp_path.iterdir()] == [CARD_FILE]

    def test_invalid_json_names_the_file(self, tmp_path: Path) -> None:
        (tmp_path / CARD_FILE).write_text("{not json")
        with pytest.raises(ValueError, match=CARD_FILE):
            ModelCard.load(tmp_path)

    def test_invalid_content_names_file_and_key(self, tmp_path: Path) -> None:
        data = _card().to_dict()
        del data["metrics"]
        (tmp_path / CARD_FILE).write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"{CARD_FILE}.*'metrics'"):
            ModelCard.load(tmp_path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            ModelCard.load(tmp_path)


class TestContentVersion:
    """The version hashes the fitted model and what the card says about the model, not about the run."""

    def test_twelve_hex_chars(self) -> None:
        version = content_version(_model(), _card())
        assert len(version) == 12
        assert int(version, 16) >= 0

    def test_model_bytes_change_the_version(self) -> None:
        assert content_version(_model(), _card()) != content_version(_model(alpha=2.0), _card())

    def test_card_content_changes_the_version(self) -> None:
        assert content_version(_model(), _card()) != content_version(_model(), _card(metrics={"accuracy": 0.5}))

    def test_run_details_do_not_change_the_version(self) -> None:
        rerun = _card(version="ba9876543210", trained_at="2027-01-01T00:00:00Z", training_duration_seconds=9.0)
        assert content_version(_model(), _card()) == content_version(_model(), rerun)

    def test_stable_across_a_json_round_trip(self, tmp_path: Path) -> None:
        _card().save(tmp_path)
        assert content_version(_model(), ModelCard.load(tmp_path)) == content_version(_model(), _card())
