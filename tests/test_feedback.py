"""Delayed ground truth: request parsing, and realized performance counters checked against direct computation."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from otel.openmetrics import OpenMetricsReader
from service.artifact.datasets import load_bundled
from service.artifact.model import Model, load_model
from service.artifact.training import to_matrix
from service.groundtruth.ids import new_prediction_ids
from service.groundtruth.metrics import DELAY_BUCKETS, FeedbackInstruments
from service.groundtruth.records import FeedbackItem, FeedbackResult, JoinedLabel, PredictionRequest
from service.groundtruth.store import PredictionLog
from service.web.feedback_body import parse_feedback, summarize
from service.web.problems import Problem
from tests.support.metrics import data_points

PID = "0123456789abcdef0123456789abcdef"
OLD_VERSION = "aaaaaaaaaaaa"


@pytest.fixture(scope="module")
def regression(regression_model_dir: Path) -> Model:
    return load_model(regression_model_dir)


@pytest.fixture(scope="module")
def classification(classification_model_dir: Path) -> Model:
    return load_model(classification_model_dir)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter(reader: InMemoryMetricReader) -> Iterator[Meter]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider.get_meter("test")
    provider.shutdown()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[PredictionLog]:
    with PredictionLog(tmp_path / "predictions.db", retention_seconds=None, max_rows=None) as opened:
        yield opened


def _points(reader: InMemoryMetricReader, name: str, **attributes: str) -> list[Any]:
    return [
        point
        for point in data_points(reader.get_metrics_data(), name)
        if attributes.items() <= dict(point.attributes or {}).items()
    ]


def _total(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    return float(sum(point.value for point in _points(reader, name, **attributes)))


class _Scored(NamedTuple):
    prediction_id: str
    prediction: float | str


def _score(
    model: Model, log: PredictionLog, rows: np.ndarray, *, created_at: float = 1000.0, **fields: Any
) -> list[_Scored]:
    """Predict `rows` with the real model and record them as the service would: one request."""
    card = model.card
    predictions: list[float | str] = list(model.predict(rows))
    row_slices: Sequence[dict[str, str]] | None = fields.get("slices")
    request_id, ids = new_prediction_ids(len(rows))
    instances = [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows]
    log.record(
        [
            PredictionRequest(
                request_id=request_id,
                trace_id=None,
                created_at=created_at,
                model_name=card.name,
                model_version=fields.get("model_version", card.version),
                body=json.dumps({"instances": instances}).encode(),
                predictions=predictions,
                slices=None if row_slices is None else {name: [s[name] for s in row_slices] for name in row_slices[0]},
            )
        ]
    )
    return [_Scored(pid, prediction) for pid, prediction in zip(ids, predictions, strict=True)]


def _send(
    log: PredictionLog, instruments: FeedbackInstruments, pairs: Sequence[tuple[str, Any]], *, now: float = 1060.0
) -> FeedbackResult:
    """One POST /feedback: parse, join, count."""
    payload = {"feedback": [{"prediction_id": pid, "actual": actual} for pid, actual in pairs]}
    result = log.add_feedback(parse_feedback(payload, instruments.card, max_items=1000), now=now)
    instruments.record(result)
    return result


class TestParseFeedback:
    """Every bad value in a feedback body is a 422 naming it by JSON Pointer; too many labels is a 413."""

    @pytest.mark.parametrize(
        ("payload", "pointer", "reason"),
        [
            ([], "", "expected a JSON object with a 'feedback' array, got array"),
            ({}, "/feedback", "expected an array of objects, got nothing"),
            ({"feedback": {}}, "/feedback", "expected an array of objects, got object"),
            ({"feedback": []}, "/feedback", "expected at least one label"),
            ({"feedback": [{"prediction_id": PID, "actual": 1}], "extra": 1}, "/extra", "unknown member"),
            ({"feedback": [1]}, "/feedback/0", "expected an object, got number"),
            ({"feedback": [{"prediction_id": PID}]}, "/feedback/0/actual", "missing member"),
            ({"feedback": [{"actual": 1.0}]}, "/feedback/0/prediction_id", "missing member"),
            ({"feedback": [{"prediction_id": PID, "actual": 1, "a/b": 2}]}, "/feedback/0/a~1b", "unknown member"),
            ({"feedback": [{"prediction_id": 7, "actual": 1}]}, "/feedback/0/prediction_id", "expected a string"),
            ({"feedback": [{"prediction_id": "abc", "actual": 1}]}, "/feedback/0/prediction_id", "32 hexadecimal"),
            ({"feedback": [{"prediction_id": "g" * 32, "actual": 1}]}, "/feedback/0/prediction_id", "hexadecimal"),
            ({"feedback": [{"prediction_id": PID, "actual": "1.5"}]}, "/feedback/0/actual", "got string"),
            ({"feedback": [{"prediction_id": PID, "actual": True}]}, "/feedback/0/actual", "got boolean"),
            ({"feedback": [{"prediction_id": PID, "actual": None}]}, "/feedback/0/actual", "got null"),
            ({"feedback": [{"prediction_id": PID, "actual": float("nan")}]}, "/feedback/0/actual", "finite"),
            ({"feedback": [{"prediction_id": PID, "actual": 10**400}]}, "/feedback/0/actual", "out of range"),
        ],
    )
    def test_regression_errors(self, regression: Model, payload: Any, pointer: str, reason: str) -> None:
        with pytest.raises(Problem) as raised:
            parse_feedback(payload, regression.card, max_items=10)
        problem = raised.value
        assert (problem.status, problem.slug) == (422, "invalid-feedback")
        first = problem.errors[0]
        assert first.pointer == pointer
        assert reason in first.reason

    def test_every_bad_item_is_named(self, regression: Model) -> None:
        payload = {"feedback": [{"prediction_id": PID, "actual": 1.0}, {"prediction_id": "x", "actual": "y"}, 3]}
        with pytest.raises(Problem) as raised:
            parse_feedback(payload, regression.card, max_items=10)
        pointers = [error.pointer for error in raised.value.errors]
        assert pointers == ["/feedback/1/prediction_id", "/feedback/1/actual", "/feedback/2"]

    @pytest.mark.parametrize(
        ("actual", "reason"),
        [
            (1, "expected a class label (a string, or an integer the model was trained on), got number"),
            (True, "expected a class label (a string, or an integer the model was trained on), got boolean"),
            ("cat", "expected one of the model's classes: 'benign', 'malignant'"),
        ],
    )
    def test_classification_errors(self, classification: Model, actual: Any, reason: str) -> None:
        with pytest.raises(Problem) as raised:
            parse_feedback({"feedback": [{"prediction_id": PID, "actual": actual}]}, classification.card, 10)
        assert [(e.pointer, e.reason) for e in raised.value.errors] == [("/feedback/0/actual", reason)]

    def test_integer_labels_for_a_model_trained_on_integers(self, classification: Model) -> None:
        card = dataclasses.replace(classification.card, classes=("0", "1"))  # what `train` writes for 0/1 targets
        payload = {"feedback": [{"prediction_id": PID, "actual": 1}, {"prediction_id": PID, "actual": "0"}]}
        assert parse_feedback(payload, card, 10) == [FeedbackItem(PID, "1"), FeedbackItem(PID, "0")]
        with pytest.raises(Problem) as raised:
            parse_feedback({"feedback": [{"prediction_id": PID, "actual": 2}]}, card, 10)
        assert raised.value.errors[0].reason == "expected one of the model's classes: '0', '1'"

    def test_long_class_lists_are_truncated(self, classification: Model) -> None:
        card = dataclasses.replace(classification.card, classes=tuple(f"class-{i}" for i in range(25)))
        with pytest.raises(Problem) as raised:
            parse_feedback({"feedback": [{"prediction_id": PID, "actual": "x"}]}, card, 10)
        reason = raised.value.errors[0].reason
        assert "'class-9'" in reason and "'class-10'" not in reason and reason.endswith("and 15 more")

    def test_too_many_labels(self, regression: Model) -> None:
        payload = {"feedback": [{"prediction_id": PID, "actual": 1.0}] * 3}
        with pytest.raises(Problem) as raised:
            parse_feedback(payload, regression.card, max_items=2)
        assert (raised.value.status, raised.value.slug) == (413, "batch-too-large")
        assert raised.value.errors[0].pointer == "/feedback"

    def test_valid_items(self, regression: Model, classification: Model) -> None:
        payload = {"feedback": [{"prediction_id": PID.upper(), "actual": 3}, {"actual": 2.5, "prediction_id": PID}]}
        assert parse_feedback(payload, regression.card, 10) == [FeedbackItem(PID, 3.0), FeedbackItem(PID, 2.5)]
        labelled = {"feedback": [{"prediction_id": PID, "actual": "benign"}]}
        assert parse_feedback(labelled, classification.card, 10) == [FeedbackItem(PID, "benign")]


class TestSummarize:
    """The response says how many labels were accepted and which ids were not, at most 100 of each."""

    def test_small(self) -> None:
        result = FeedbackResult(joined=[], unknown_ids=["a"], duplicate_ids=[])
        assert summarize(result) == {"accepted": 0, "unknown_ids": ["a"], "duplicate_ids": []}

    def test_capped(self) -> None:
        ids = [f"{i:032x}" for i in range(150)]
        body = summarize(FeedbackResult(joined=[], unknown_ids=ids, duplicate_ids=ids[:100]))
        assert body["unknown_ids"] == ids[:100]
        assert body["unknown_ids_truncated"] == 50
        assert "duplicate_ids_truncated" not in body


class TestRegressionPerformance:
    """MAE and RMSE computed from the counters equal numpy's, over several requests and per slice."""

    def test_mae_and_rmse_match_numpy(
        self, regression: Model, log: PredictionLog, meter: Meter, reader: InMemoryMetricReader
    ) -> None:
        data = load_bundled("diabetes")
        rows = to_matrix(data.frame, regression.card)[:300]
        actual = data.target.to_numpy(dtype=float)[:300] + np.random.default_rng(0).normal(0, 5, 300)
        records = _score(regression, log, rows)
        instruments = FeedbackInstruments(meter, regression.card, slice_names=())
        for start in range(0, 300, 100):  # three requests
            chunk = slice(start, start + 100)
            _send(
                log,
                instruments,
                [(r.prediction_id, float(a)) for r, a in zip(records[chunk], actual[chunk], strict=True)],
            )
        predicted = np.array([r.prediction for r in records], dtype=float)
        labels = _total(reader, "model.feedback.labels", outcome="joined")
        assert labels == 300
        mae = _total(reader, "model.feedback.absolute_error") / labels
        rmse = np.sqrt(_total(reader, "model.feedback.squared_error") / labels)
        assert mae == pytest.approx(np.mean(np.abs(actual - predicted)), rel=1e-9)
        assert rmse == pytest.approx(np.sqrt(np.mean((actual - predicted) ** 2)), rel=1e-9)

    def test_series_exist_at_zero(self, regression: Model, meter: Meter, reader: InMemoryMetricReader) -> None:
        FeedbackInstruments(meter, regression.card, slice_names=())
        version = regression.card.version
        assert _points(reader, "model.feedback.labels", outcome="joined", **{"model.version": version})
        assert _total(reader, "model.feedback.absolute_error") == 0
        assert {p.attributes["reason"] for p in _points(reader, "model.feedback.rejected")} == {
            "unknown_id",
            "duplicate",
        }

    def test_slices(self, regression: Model, log: PredictionLog, meter: Meter, reader: InMemoryMetricReader) -> None:
        rows = to_matrix(load_bundled("diabetes").frame, regression.card)[:40]
        sexes = ["F" if i % 3 else "M" for i in range(40)]
        slices = [{"sex": sex, "bmi_band": "high", "region": "x" * 65} for sex in sexes]
        records = _score(regression, log, rows, slices=slices)
        instruments = FeedbackInstruments(meter, regression.card, slice_names=("sex", "region"))
        _send(log, instruments, [(r.prediction_id, 100.0) for r in records])
        errors = np.abs(100.0 - np.array([r.prediction for r in records], dtype=float))
        for sex in ("F", "M"):
            mine = np.array(sexes) == sex
            attributes = {"slice": "sex", "slice_value": sex}
            assert _total(reader, "model.slice.feedback.labels", outcome="joined", **attributes) == mine.sum()
            assert _total(reader, "model.slice.feedback.absolute_error", **attributes) == pytest.approx(
                errors[mine].sum(), rel=1e-9
            )
        exported = {
            (p.attributes["slice"], p.attributes["slice_value"]) for p in _points(reader, "model.slice.feedback.labels")
        }
        assert exported == {("sex", "F"), ("sex", "M")}  # bmi_band is not configured; region's value is too long


class TestClassificationPerformance:
    """Accuracy and the confusion matrix from the counters equal a direct count."""

    def test_accuracy_and_confusion(
        self, classification: Model, log: PredictionLog, meter: Meter, reader: InMemoryMetricReader
    ) -> None:
        data = load_bundled("breast_cancer")
        rows = to_matrix(data.frame, classification.card)[:200]
        actual = [str(label) for label in data.target[:200]]
        rng = np.random.default_rng(1)
        flip = {"benign": "malignant", "malignant": "benign"}
        actual = [flip[label] if rng.random() < 0.2 else label for label in actual]  # some wrong predictions
        records = _score(classification, log, rows)
        instruments = FeedbackInstruments(meter, classification.card, slice_names=())
        _send(log, instruments, [(r.prediction_id, a) for r, a in zip(records, actual, strict=True)])
        predicted = [r.prediction for r in records]
        correct = _total(reader, "model.feedback.labels", outcome="correct")
        incorrect = _total(reader, "model.feedback.labels", outcome="incorrect")
        assert 0 < incorrect < correct
        assert correct / (correct + incorrect) == np.mean(np.array(actual) == np.array(predicted))
        expected = Counter(zip(actual, predicted, strict=True))
        classes = classification.card.classes
        for actual_class in classes:
            for predicted_class in classes:
                count = _total(
                    reader, "model.feedback.class_labels", actual_class=actual_class, predicted_class=predicted_class
                )
                assert count == expected[(actual_class, predicted_class)]

    def test_unknown_predicted_classes_stay_out_of_the_matrix(
        self, classification: Model, meter: Meter, reader: InMemoryMetricReader
    ) -> None:
        instruments = FeedbackInstruments(meter, classification.card, slice_names=())
        label = JoinedLabel(PID, "breast_cancer", OLD_VERSION, "retired-class", "benign", 1.0, None)
        instruments.record(FeedbackResult(joined=[label], unknown_ids=[], duplicate_ids=[]))
        assert _total(reader, "model.feedback.labels", outcome="incorrect", **{"model.version": OLD_VERSION}) == 1
        assert not _points(reader, "model.feedback.class_labels", **{"model.version": OLD_VERSION})


class TestDelayAndRejections:
    """Label delay is a histogram; unknown and duplicate ids are reported and counted; versions are the stored ones."""

    def test_delay_histogram(
        self, regression: Model, log: PredictionLog, meter: Meter, reader: InMemoryMetricReader
    ) -> None:
        rows = to_matrix(load_bundled("diabetes").frame, regression.card)[:6]
        delays = [0.5, 10.0, 100.0, 4000.0, 90_000.0, 1_000_000.0]
        records = _score(regression, log, rows, created_at=1000.0)
        instruments = FeedbackInstruments(meter, regression.card, slice_names=())
        for record, delay in zip(records, delays, strict=True):
            _send(log, instruments, [(record.prediction_id, 1.0)], now=1000.0 + delay)
        (point,) = _points(reader, "model.feedback.delay")
        assert isinstance(point, HistogramDataPoint)
        assert tuple(point.explicit_bounds) == DELAY_BUCKETS
        assert (point.count, point.sum) == (6, pytest.approx(sum(delays)))
        expected = [0] * (len(DELAY_BUCKETS) + 1)
        for delay in delays:
            expected[bisect_left(DELAY_BUCKETS, delay)] += 1
        assert list(point.bucket_counts) == expected

    def test_unknown_and_duplicate_ids(
        self, regression: Model, log: PredictionLog, meter: Meter, reader: InMemoryMetricReader
    ) -> None:
        rows = to_matrix(load_bundled("diabetes").frame, regression.card)[:3]
        first, second, third = (r.prediction_id for r in _score(regression, log, rows))
        instruments = FeedbackInstruments(meter, regression.card, slice_names=())
        _send(log, instruments, [(first, 1.0)])
        strangers = [os.urandom(16).hex() for _ in range(2)]
        pairs = [(first, 1.0), (strangers[0], 1.0), (second, 2.0), (second, 3.0), (strangers[1], 1.0), (third, 4.0)]
        body = summarize(_send(log, instruments, pairs))
        assert body == {"accepted": 2, "unknown_ids": strangers, "duplicate_ids": [first, second]}
        assert _total(reader, "model.feedback.rejected", reason="unknown_id") == 2
        assert _total(reader, "model.feedback.rejected", reason="duplicate") == 2
        assert _total(reader, "model.feedback.labels") == 3

    def test_labels_carry_the_predictions_model_version(
        self, regression: Model, log: PredictionLog, meter: Meter, reader: InMemoryMetricReader
    ) -> None:
        rows = to_matrix(load_bundled("diabetes").frame, regression.card)[:4]
        records = _score(regression, log, rows, model_version=OLD_VERSION)
        instruments = FeedbackInstruments(meter, regression.card, slice_names=())
        _send(log, instruments, [(r.prediction_id, 1.0) for r in records] + [(PID, 1.0)])
        old = {"model.version": OLD_VERSION}
        current = {"model.version": regression.card.version}
        assert _total(reader, "model.feedback.labels", **old) == 4
        assert _total(reader, "model.feedback.labels", **current) == 0
        assert len(_points(reader, "model.feedback.delay", **old)) == 1
        assert _total(reader, "model.feedback.rejected", reason="unknown_id", **current) == 1


class TestPrometheusNames:
    """The instruments translate to the Prometheus names in docs/metrics.md."""

    @pytest.mark.parametrize(
        ("model_fixture", "expected"),
        [
            (
                "regression",
                {
                    "model_feedback_labels_total",
                    "model_feedback_absolute_error_total",
                    "model_feedback_squared_error_total",
                    "model_feedback_delay_seconds",
                    "model_feedback_rejected_total",
                    "model_slice_feedback_labels_total",
                    "model_slice_feedback_absolute_error_total",
                    "model_slice_feedback_squared_error_total",
                },
            ),
            ("classification", {"model_feedback_class_labels_total", "model_slice_feedback_labels_total"}),
        ],
    )
    def test_names(
        self, request: pytest.FixtureRequest, tmp_path: Path, model_fixture: str, expected: set[str]
    ) -> None:
        model: Model = request.getfixturevalue(model_fixture)
        openmetrics = OpenMetricsReader()
        provider = MeterProvider(metric_readers=[openmetrics])
        try:
            instruments = FeedbackInstruments(provider.get_meter("test"), model.card, slice_names=("sex",))
            actual = "benign" if model.card.task == "classification" else 1.0
            label = JoinedLabel(PID, model.card.name, model.card.version, actual, actual, 30.0, {"sex": "F"})
            instruments.record(FeedbackResult(joined=[label], unknown_ids=[], duplicate_ids=[]))
            body, _ = openmetrics.render(None)
        finally:
            provider.shutdown()
        samples = set(re.findall(r"^(model_\w+?)(?:_bucket|_sum|_count)?\{", body.decode(), re.MULTILINE))
        assert expected <= samples
