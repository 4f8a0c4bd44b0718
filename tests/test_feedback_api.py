"""POST /feedback joins delayed ground truth to logged predictions — also after the service restarts."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled, load_csv
from service.artifact.training import to_matrix, train
from service.settings import Settings
from service.web.app import create_app
from service.web.feedback_body import MAX_IDS_IN_RESPONSE
from service.web.feedback_routes import LOG_HEADER
from tests.conftest import InMemoryTelemetry
from tests.support.ports import free_port
from tests.test_hostile_input import worker_pids
from tests.test_serving import instance, serve


def _instances(model_dir: Path, dataset: str, n: int) -> tuple[list[dict[str, Any]], list[Any]]:
    card = ModelCard.load(model_dir)
    data = load_bundled(dataset)
    rows = to_matrix(data.frame, card)[:n]
    return [dict(zip(card.feature_names, row.tolist(), strict=True)) for row in rows], data.target.tolist()[:n]


class TestFeedbackEndpoint:
    """Labels join their predictions; unknown and duplicate ids are reported and counted."""

    def test_join_report_and_realized_performance(
        self, client: FlaskClient, regression_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        instances, targets = _instances(regression_model_dir, "diabetes", 20)
        body = client.post("/predict", json={"instances": instances}).get_json()
        feedback = [
            {"prediction_id": pid, "actual": float(y)} for pid, y in zip(body["prediction_ids"], targets, strict=True)
        ]
        unknown = "0" * 32
        response = client.post("/feedback", json={"feedback": [*feedback, {"prediction_id": unknown, "actual": 1.0}]})
        assert response.status_code == 200
        assert response.get_json() == {"accepted": 20, "unknown_ids": [unknown], "duplicate_ids": []}
        again = client.post("/feedback", json={"feedback": feedback[:3]}).get_json()
        assert again["accepted"] == 0
        assert again["duplicate_ids"] == [item["prediction_id"] for item in feedback[:3]]
        errors = np.array(targets) - np.array(body["predictions"])
        summary = client.get("/monitoring").get_json()["realized_performance"]
        assert summary["labels"] == 20
        assert summary["mae"] == pytest.approx(float(np.abs(errors).mean()))
        assert summary["rmse"] == pytest.approx(float(np.sqrt((errors**2).mean())))
        assert summary["unknown_ids"] == 1
        assert summary["duplicate_ids"] == 3

    def test_predict_says_its_rows_are_committed(self, client: FlaskClient, regression_model_dir: Path) -> None:
        instances, _ = _instances(regression_model_dir, "diabetes", 3)
        response = client.post("/predict", json={"instances": instances})
        assert response.headers[LOG_HEADER] == "committed"

    def test_buffered_mode_says_queued(self, settings: Settings, telemetry: InMemoryTelemetry) -> None:
        app = create_app(settings.replace(prediction_log_durability="buffered"), telemetry=telemetry.telemetry)
        try:
            instances, _ = _instances(settings.model_dir, "diabetes", 3)
            response = app.test_client().post("/predict", json={"instances": instances})
            assert response.headers[LOG_HEADER] == "queued"
        finally:
            app.extensions["modellens"].close()

    def test_a_stalled_log_answers_predict_at_once_and_feedback_with_503(
        self, client: FlaskClient, settings: Settings, regression_model_dir: Path
    ) -> None:
        instances, _ = _instances(regression_model_dir, "diabetes", 2)
        path = settings.prediction_log_path
        assert path is not None
        with closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
            other_worker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            first = client.post("/predict", json={"instances": instances[:1]})  # waits out the commit wait, once
            second = client.post("/predict", json={"instances": instances[1:]})  # the writer is stuck: no wait
            assert [first.headers[LOG_HEADER], second.headers[LOG_HEADER]] == ["queued", "queued"]
            ids = first.get_json()["prediction_ids"] + second.get_json()["prediction_ids"]
            feedback = {"feedback": [{"prediction_id": pid, "actual": 1.0} for pid in ids]}
            refused = client.post("/feedback", json=feedback)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            problem = refused.get_json()
            assert problem["title"] == "Prediction log unavailable"
            assert "Send the same labels again in 5 s" in problem["detail"]
            other_worker.execute("COMMIT")
        assert client.post("/feedback", json=feedback).get_json() == {
            "accepted": 2,
            "unknown_ids": [],
            "duplicate_ids": [],
        }

    def test_bad_feedback_is_a_problem_document(self, client: FlaskClient) -> None:
        response = client.post("/feedback", json={"feedback": [{"prediction_id": "nope", "actual": "x"}]})
        assert response.status_code == 422
        pointers = {error["pointer"] for error in response.get_json()["errors"]}
        assert pointers == {"/feedback/0/prediction_id", "/feedback/0/actual"}


@pytest.mark.slow
class TestIntegerLabels:
    """A classifier trained on a 0/1 column answers 0 and 1, and takes them back as labels."""

    def test_predictions_and_labels_are_integers(self, tmp_path: Path, telemetry: InMemoryTelemetry) -> None:
        data = load_breast_cancer(as_frame=True)
        frame = data.data.iloc[:, :6].assign(malignant=data.target.to_numpy())  # an integer column, 0 and 1
        frame.to_csv(tmp_path / "cells.csv", index=False)
        model_dir = tmp_path / "cells"
        card = train(load_csv(tmp_path / "cells.csv", "malignant"), output=model_dir, name="cells")
        assert (card.classes, card.label_type) == (("0", "1"), "integer")
        settings = Settings.from_env(
            {}, model_dir=model_dir, max_batch=50, prediction_log=str(tmp_path / "predictions.sqlite3")
        )
        app = create_app(settings, telemetry=telemetry.telemetry)
        try:
            client = app.test_client()
            features = frame.drop(columns="malignant")
            instances = [dict(zip(features.columns, row, strict=True)) for row in features.to_numpy()[:40].tolist()]
            body = client.post("/predict", json={"instances": instances}).get_json()
            assert {type(p) for p in body["predictions"]} == {int}
            assert set(body["predictions"]) <= {0, 1}
            truth = frame["malignant"].to_numpy()[:40].tolist()
            feedback = [
                {"prediction_id": pid, "actual": y} for pid, y in zip(body["prediction_ids"], truth, strict=True)
            ]
            assert client.post("/feedback", json={"feedback": feedback}).get_json()["accepted"] == 40
            summary = client.get("/monitoring").get_json()["realized_performance"]
            assert summary["accuracy"] == pytest.approx(float(np.mean(np.array(body["predictions"]) == truth)))
            schema = client.get("/openapi.json").get_json()["components"]["schemas"]
            predictions = schema["PredictResponse"]["properties"]["predictions"]["items"]
            assert predictions == {"type": "integer", "enum": [0, 1]}
        finally:
            app.extensions["modellens"].close()


class TestAcrossRestarts:
    """A prediction acknowledged before a restart is in the log, and its label joins after the restart."""

    def test_feedback_after_restart(self, classification_model_dir: Path, tmp_path: Path) -> None:
        log = tmp_path / "predictions.sqlite3"
        instances, targets = _instances(classification_model_dir, "breast_cancer", 120)
        card = ModelCard.load(classification_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"MODELLENS_PREDICTION_LOG": str(log), "MODELLENS_WORKERS": "2"}
        ids: list[str] = []
        predictions: list[str] = []
        with serve(classification_model_dir, port, None, **env) as first:
            with requests.Session() as http:
                for start in range(0, len(instances), 10):
                    body = http.post(
                        f"{url}/predict", json={"instances": instances[start : start + 10]}, timeout=10
                    ).json()
                    ids += body["prediction_ids"]
                    predictions += body["predictions"]
            assert first.terminate() == 0  # SIGTERM right after the last 200
        with sqlite3.connect(log) as connection:
            stored = {
                f"{request_id}{index:08x}"
                for request_id, rows in connection.execute("SELECT request_id, row_count FROM requests")
                for index in range(rows)
            }
        connection.close()
        assert set(ids) <= stored
        truth = [str(t) for t in targets]
        assert set(truth) <= set(card.classes)
        single_worker = {**env, "MODELLENS_WORKERS": "1"}  # so /monitoring shows the worker that joined the labels
        with serve(classification_model_dir, port, None, **single_worker), requests.Session() as http:
            feedback = [{"prediction_id": pid, "actual": y} for pid, y in zip(ids, truth, strict=True)]
            response = http.post(f"{url}/feedback", json={"feedback": feedback}, timeout=10).json()
            assert response["accepted"] == len(ids)
            summary = http.get(f"{url}/monitoring", timeout=10).json()
        expected = float(np.mean([p == t for p, t in zip(predictions, truth, strict=True)]))
        assert summary["realized_performance"]["labels"] == len(ids)
        assert summary["realized_performance"]["accuracy"] == pytest.approx(expected)


# --- the log in trouble, through a real gunicorn --------------------------------------------------------------
def metric(http: requests.Session, url: str, name: str, **labels: str) -> float:
    """One sample of the service's own /metrics (Prometheus text), by name and labels."""
    for family in text_string_to_metric_families(http.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


def until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def unknown_ids(http: requests.Session, url: str, ids: list[str], actual: float = 1.0) -> list[str]:
    """Send a label for each id; the ids the log does not know (in requests small enough to list them all)."""
    unknown: list[str] = []
    for start in range(0, len(ids), MAX_IDS_IN_RESPONSE):
        chunk = [{"prediction_id": pid, "actual": actual} for pid in ids[start : start + MAX_IDS_IN_RESPONSE]]
        response = http.post(f"{url}/feedback", json={"feedback": chunk}, timeout=30)
        assert response.status_code == 200, response.text
        unknown += response.json()["unknown_ids"]
    return unknown


def outcomes_of(http: requests.Session, url: str, row: dict[str, float], count: int) -> dict[str, list[str]]:
    """Post `count` 3-row batches (each must answer 200, within 5 s); their prediction ids by what
    X-Modellens-Prediction-Log said."""
    outcomes: dict[str, list[str]] = {"committed": [], "queued": [], "dropped": []}
    for _ in range(count):
        response = http.post(f"{url}/predict", json={"instances": [row] * 3}, timeout=5)
        assert response.status_code == 200
        outcomes[response.headers[LOG_HEADER]] += response.json()["prediction_ids"]
    return outcomes


@pytest.mark.slow
class TestFullDisk:
    """The filesystem under the log fills up: serving goes on, says what it did not log, and recovers by itself.

    A full disk is played by the worker's soft file-size limit (RLIMIT_FSIZE, set from outside with prlimit):
    every write that would grow a file fails with EFBIG, as writes fail with ENOSPC on a full filesystem; raising
    the limit again is the operator freeing space.
    """

    def test_predict_answers_feedback_says_retry_metrics_say_why(
        self, regression_model_dir: Path, tmp_path: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"MODELLENS_PREDICTION_LOG": str(tmp_path / "p.sqlite3"), "MODELLENS_PREDICTION_LOG_QUEUE": "100"}
        row = instance(card)
        with serve(regression_model_dir, port, None, **env) as service, requests.Session() as http:
            (worker,) = worker_pids(service.pid)
            warm = http.post(f"{url}/predict", json={"instances": [row]}, timeout=10)
            assert warm.headers[LOG_HEADER] == "committed"
            unlimited = resource.RLIM_INFINITY
            resource.prlimit(worker, resource.RLIMIT_FSIZE, (1, unlimited))  # no file of the worker's may grow
            outcomes = outcomes_of(http, url, row, 300)  # 3 rows each: three times what the queue holds
            assert outcomes["dropped"] and outcomes["queued"], {k: len(v) for k, v in outcomes.items()}
            assert len(outcomes["queued"]) <= 100  # the queue's bound, in rows
            assert http.get(f"{url}/readyz", timeout=5).status_code == 200  # the model still serves
            assert metric(http, url, "prediction_log_failing") == 1
            assert metric(http, url, "prediction_log_queue_depth") == len(outcomes["queued"])
            dropped = metric(http, url, "prediction_log_dropped_total", reason="queue_full", record="prediction")
            assert dropped == len(outcomes["dropped"])
            assert metric(http, url, "prediction_log_write_errors_total") >= 1
            waiting = {"prediction_id": outcomes["queued"][0], "actual": 1.0}
            refused = http.post(f"{url}/feedback", json={"feedback": [waiting]}, timeout=10)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            assert refused.json()["type"] == "urn:modellens:problem:prediction-log-unavailable"

            resource.prlimit(worker, resource.RLIMIT_FSIZE, (unlimited, unlimited))  # the operator made room
            assert until(lambda: metric(http, url, "prediction_log_failing") == 0, 30)
            assert metric(http, url, "prediction_log_queue_depth") == 0
            committed = http.post(f"{url}/predict", json={"instances": [row]}, timeout=10)
            assert committed.headers[LOG_HEADER] == "committed"
            kept = outcomes["committed"] + outcomes["queued"] + committed.json()["prediction_ids"]
            assert unknown_ids(http, url, kept) == []  # everything answered "committed" or "queued" was written
            assert set(unknown_ids(http, url, outcomes["dropped"])) == set(outcomes["dropped"])  # as the header said
            # The worker's stdout is a file too, so what it logged while the disk was full is lost with the rest;
            # the lines after the recovery say what happened.
            assert until(lambda: "prediction log accepting predictions again" in service.output(), 10)
            resumed = [json.loads(line) for line in service.stdout_lines() if "prediction log writes resumed" in line]
            assert len(resumed) == 1 and resumed[0]["write_errors"] >= 1, resumed


class Burst:
    """Clients posting 3-row batches until told to stop; what each acknowledged, when, and what the header said."""

    def __init__(self, url: str, row: dict[str, float], clients: int = 4) -> None:
        self.acknowledged: list[tuple[float, list[str], str]] = []  # (monotonic time of the 200, ids, header)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._post, args=(url, row)) for _ in range(clients)]

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def _post(self, url: str, row: dict[str, float]) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"{url}/predict", json={"instances": [row] * 3}, timeout=5)
                except requests.RequestException:  # the worker died with the request: not acknowledged
                    time.sleep(0.01)
                    continue
                if response.status_code == 200:
                    with self._lock:
                        self.acknowledged.append(
                            (time.monotonic(), response.json()["prediction_ids"], response.headers[LOG_HEADER])
                        )


@pytest.mark.slow
class TestCrashDurability:
    """`kill -9` of the worker mid-burst: by default every acknowledged prediction survives; buffered mode loses
    at most what was acknowledged in the moments before the kill."""

    @pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
    @pytest.mark.parametrize("durability", ["commit", "buffered"])
    def test_kill_9_mid_burst(
        self, regression_model_dir: Path, tmp_path: Path, durability: str, backend: str, request: pytest.FixtureRequest
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        location = str(tmp_path / "p.sqlite3") if backend == "sqlite" else request.getfixturevalue("postgres_url")
        env = {"MODELLENS_PREDICTION_LOG": location, "MODELLENS_PREDICTION_LOG_DURABILITY": durability}
        with serve(regression_model_dir, port, None, **env) as service, requests.Session() as http:
            (worker,) = worker_pids(service.pid)
            with Burst(url, instance(card)) as burst:
                assert until(lambda: burst.count() >= 400, 60)
                killed_at = time.monotonic()
                os.kill(worker, signal.SIGKILL)
            assert until(lambda: worker_pids(service.pid) not in ([], [worker]), 30)  # gunicorn forked another
            assert until(lambda: ready(http, url), 60)
            acknowledged = burst.acknowledged
            lost = set(unknown_ids(http, url, [pid for _, ids, _ in acknowledged for pid in ids]))
        headers = {header for _, _, header in acknowledged}
        if durability == "commit":
            assert headers == {"committed"}
            assert lost == set()
        else:
            assert headers == {"queued"}
            # What the writer had not committed yet: acknowledged within its linger (50 ms) and one commit before
            # the kill. A second is the margin a shared machine needs; the count is bounded by the queue anyway.
            late = {pid for at, ids, _ in acknowledged if at > killed_at - 1.0 for pid in ids}
            assert lost <= late, sorted(lost - late)[:5]


def ready(http: requests.Session, url: str) -> bool:
    try:
        return http.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
