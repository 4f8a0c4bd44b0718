"""Tests for service.artifact.datasets: bundled datasets and CSV loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.artifact.datasets import BUNDLED, MIN_ROWS, Dataset, DatasetError, load_bundled, load_csv


def _write_csv(path: Path, rows: int = 60, seed: int = 0) -> Path:
    """A CSV with numeric and text columns, some values missing in each, and several candidate targets."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(100, 20, rows).round(2),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "flag": rng.choice([True, False], rows),
            "grade": rng.integers(1, 4, rows),
            "price": rng.normal(300, 50, rows).round(2),
            "count": rng.integers(0, 1000, rows),
            "band": rng.choice(["cheap", "dear"], rows),
            "whole": rng.choice([1.0, 2.0], rows),
        }
    )
    frame.loc[frame.index[::7], "size"] = np.nan
    frame.loc[frame.index[::5], "colour"] = None
    frame.to_csv(path, index=False)
    return path


class TestLoadBundled:
    """The bundled datasets load offline with the right task and string class labels."""

    def test_diabetes_is_regression(self) -> None:
        dataset = load_bundled("diabetes")
        assert dataset.name == "sklearn:diabetes"
        assert dataset.task == "regression"
        assert dataset.frame.shape == (442, 10)
        assert (dataset.frame.dtypes == np.float64).all()
        assert dataset.target.dtype == np.float64
        assert dataset.class_names == ()

    @pytest.mark.parametrize(
        ("name", "classes", "rows"),
        [("breast_cancer", ("benign", "malignant"), 569), ("wine", ("class_0", "class_1", "class_2"), 178)],
    )
    def test_classification_targets_are_class_names(self, name: str, classes: tuple[str, ...], rows: int) -> None:
        dataset = load_bundled(name)
        assert dataset.task == "classification"
        assert dataset.class_names == classes
        assert len(dataset.frame) == rows
        assert set(dataset.target) == set(classes)

    def test_breast_cancer_label_mapping(self) -> None:
        # sklearn codes malignant as 0: the first row of the data set is a malignant tumour.
        assert load_bundled("breast_cancer").target.iloc[0] == "malignant"

    def test_every_bundled_name_loads(self) -> None:
        assert [load_bundled(name).name for name in BUNDLED] == [f"sklearn:{name}" for name in BUNDLED]

    def test_unknown_name(self) -> None:
        with pytest.raises(DatasetError, match=r"'iris'.*'diabetes'"):
            load_bundled("iris")


class TestLoadCsv:
    """CSV columns become float or str-with-NaN features, and the task follows the target column."""

    def test_feature_types(self, tmp_path: Path) -> None:
        dataset = load_csv(_write_csv(tmp_path / "houses.csv"), "price")
        frame = dataset.frame
        assert dataset.name == "csv:houses.csv"
        assert dataset.target_name == "price"
        assert "price" not in frame.columns
        assert frame["size"].dtype == np.float64
        assert frame["grade"].dtype == np.float64
        assert frame["colour"].dtype == object
        assert frame["flag"].dtype == object
        assert set(frame["flag"]) == {"True", "False"}
        assert frame["size"].isna().sum() == 9
        assert frame["colour"].isna().sum() == 12
        assert {type(value) for value in frame["colour"].dropna()} == {str}
        assert all(isinstance(value, float) and np.isnan(value) for value in frame["colour"][frame["colour"].isna()])

    @pytest.mark.parametrize(
        ("target", "task"),
        [
            ("price", "regression"),
            ("count", "regression"),
            ("grade", "classification"),
            ("band", "classification"),
        ],
    )
    def test_task_inference(self, tmp_path: Path, target: str, task: str) -> None:
        assert load_csv(_write_csv(tmp_path / "d.csv"), target).task == task

    def test_integer_classes_become_strings(self, tmp_path: Path) -> None:
        dataset = load_csv(_write_csv(tmp_path / "d.csv"), "grade")
        assert dataset.class_names == ("1", "2", "3")
        assert set(dataset.target) == {"1", "2", "3"}
        assert dataset.label_type == "integer"  # answered as 1, 2, 3

    @pytest.mark.parametrize(("target", "label_type"), [("whole", "integer"), ("band", "string"), ("flag", "string")])
    def test_label_type_follows_the_target_column(self, tmp_path: Path, target: str, label_type: str) -> None:
        dataset = load_csv(_write_csv(tmp_path / "d.csv"), target, task="classification")
        assert dataset.label_type == label_type

    def test_explicit_task_overrides_inference(self, tmp_path: Path) -> None:
        dataset = load_csv(_write_csv(tmp_path / "d.csv"), "whole", task="classification")
        assert dataset.class_names == ("1", "2")
        assert load_csv(tmp_path / "d.csv", "grade", task="regression").target.dtype == np.float64

    def test_unknown_task(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="'ranking'"):
            load_csv(_write_csv(tmp_path / "d.csv"), "band", task="ranking")  # type: ignore[arg-type]

    def test_regression_on_text_target(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="numeric target"):
            load_csv(_write_csv(tmp_path / "d.csv"), "band", task="regression")

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match=r"nope\.csv: no such file"):
            load_csv(tmp_path / "nope.csv", "price")

    def test_missing_target_lists_columns(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match=r"no target column 'cost'.*'size', 'colour'"):
            load_csv(_write_csv(tmp_path / "d.csv"), "cost")

    def test_empty_file(self, tmp_path: Path) -> None:
        (tmp_path / "d.csv").write_text("")
        with pytest.raises(DatasetError, match="empty"):
            load_csv(tmp_path / "d.csv", "price")

    def test_header_only(self, tmp_path: Path) -> None:
        (tmp_path / "d.csv").write_text("size,price\n")
        with pytest.raises(DatasetError, match="no data rows"):
            load_csv(tmp_path / "d.csv", "price")

    def test_too_few_rows(self, tmp_path: Path) -> None:
        path = _write_csv(tmp_path / "d.csv", rows=MIN_ROWS - 1)
        with pytest.raises(DatasetError, match=f"{MIN_ROWS - 1} rows, at least {MIN_ROWS}"):
            load_csv(path, "price")

    def test_enough_rows(self, tmp_path: Path) -> None:
        assert len(load_csv(_write_csv(tmp_path / "d.csv", rows=MIN_ROWS), "price").frame) == MIN_ROWS

    def test_target_with_missing_values(self, tmp_path: Path) -> None:
        path = _write_csv(tmp_path / "d.csv")
        frame = pd.read_csv(path)
        frame.loc[[3, 4], "price"] = np.nan
        frame.to_csv(path, index=False)
        with pytest.raises(DatasetError, match="'price' has 2 missing values"):
            load_csv(path, "price")

    def test_no_feature_columns(self, tmp_path: Path) -> None:
        (tmp_path / "d.csv").write_text("price\n" + "\n".join(str(i) for i in range(30)))
        with pytest.raises(DatasetError, match="no feature columns"):
            load_csv(tmp_path / "d.csv", "price")

    def test_single_class(self, tmp_path: Path) -> None:
        (tmp_path / "d.csv").write_text("x,label\n" + "\n".join(f"{i},a" for i in range(30)))
        with pytest.raises(DatasetError, match="at least two classes"):
            load_csv(tmp_path / "d.csv", "label")

    def test_not_text(self, tmp_path: Path) -> None:
        (tmp_path / "d.csv").write_bytes(b"\xff\xfe\x00\x81" * 40)
        with pytest.raises(DatasetError, match="cannot be read as CSV"):
            load_csv(tmp_path / "d.csv", "price")


class TestDataset:
    """A dataset insists on usable column names and one target per row."""

    def _dataset(self, frame: pd.DataFrame, target_rows: int | None = None) -> Dataset:
        rows = len(frame) if target_rows is None else target_rows
        return Dataset("test", frame, pd.Series(np.arange(rows, dtype=float)), "regression", "y")

    def test_duplicate_column_names(self) -> None:
        frame = pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])
        with pytest.raises(DatasetError, match=r"duplicate column names \['a'\]"):
            self._dataset(frame)

    @pytest.mark.parametrize("column", ["", 0])
    def test_column_names_are_non_empty_strings(self, column: object) -> None:
        frame = pd.DataFrame({column: [1.0], "b": [2.0]})
        with pytest.raises(DatasetError, match="non-empty strings"):
            self._dataset(frame)

    def test_target_length_matches_rows(self) -> None:
        with pytest.raises(DatasetError, match="2 targets for 1 rows"):
            self._dataset(pd.DataFrame({"a": [1.0]}), target_rows=2)

    def test_classification_needs_classes(self) -> None:
        frame = pd.DataFrame({"a": [1.0]})
        with pytest.raises(DatasetError, match="two classes"):
            Dataset("test", frame, pd.Series(["x"]), "classification", "y", ("x",))
