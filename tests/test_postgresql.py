"""The prediction log on a real PostgreSQL server: the SQLite log's contract, shared by replicas, through outages.

Every test runs Debian's PostgreSQL (`tests/support/postgres.py`): in-process logs for the contract, real
`modellens serve` processes for replicas and outages.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import requests
from structlog.testing import capture_logs

from service.artifact.card import ModelCard
from service.groundtruth.database import Database
from service.groundtruth.ids import new_prediction_ids
from service.groundtruth.postgresql import MIGRATIONS
from service.groundtruth.records import FeedbackItem, PredictionRequest
from service.groundtruth.retention import Retention
from service.groundtruth.store import PredictionLog, PredictionLogError, PredictionLogUnavailable, open_database
from service.settings import Settings
from service.web.app import create_app
from service.web.feedback_routes import LOG_HEADER
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.test_feedback_api import metric, outcomes_of, ready, unknown_ids, until
from tests.test_serving import instance, serve

pytestmark = pytest.mark.slow


def _request(rows: int, *, created_at: float | None = None, classes: bool = False) -> PredictionRequest:
    request_id, _ = new_prediction_ids(0)
    predictions: Any = ["yes" if i % 2 else "no" for i in range(rows)] if classes else np.arange(rows, dtype=float) / 3
    return PredictionRequest(
        request_id=request_id,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        created_at=time.time() if created_at is None else created_at,
        model_name="diabetes",
        model_version="0123456789ab",
        body=json.dumps({"instances": [{"age": i / 100, "sex": "F"} for i in range(rows)]}).encode(),
        predictions=predictions,
        slices={"sex": ["F"] * rows},
    )


def _open(url: str, **options: Any) -> PredictionLog:
    return PredictionLog(url, **{"retention_seconds": None, "max_rows": None, **options}).open()


@pytest.fixture
def log(postgres_url: str) -> Iterator[PredictionLog]:
    with _open(postgres_url) as opened:
        yield opened


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


class TestContract:
    """What the SQLite log promises, the PostgreSQL log keeps."""

    def test_round_trip_of_every_row_exactly(self, log: PredictionLog) -> None:
        floats, labels = _request(1000), _request(3, classes=True)
        assert log.wait(log.record([floats, labels]) or -1, 10)
        found = log.lookup([*floats.prediction_ids, *labels.prediction_ids])
        for index in (0, 1, 517, 999):
            stored = found[floats.prediction_ids[index]]
            assert stored.prediction == index / 3  # float64 bytes: not a digit lost
            assert stored.inputs == {"age": index / 100, "sex": "F"}
            assert stored.slices == {"sex": "F"}
            assert stored.trace_id == floats.trace_id
        assert [found[pid].prediction for pid in labels.prediction_ids] == ["no", "yes", "no"]
        assert log.stats().rows == 1003

    def test_class_probabilities_join_with_their_labels(self, log: PredictionLog) -> None:
        request = _request(3, classes=True)
        probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
        request = dataclasses.replace(request, probabilities=probabilities)
        plain = _request(1, classes=True)
        log.record([request, plain])
        result = log.add_feedback(
            [FeedbackItem(pid, "yes") for pid in [*request.prediction_ids, *plain.prediction_ids]]
        )
        joined = {label.prediction_id: label.probabilities for label in result.joined}
        for index, pid in enumerate(request.prediction_ids):
            assert joined[pid] == pytest.approx(probabilities[index], abs=1e-7)
        assert joined[plain.prediction_ids[0]] is None

    def test_shadow_predictions_follow_their_request(self, log: PredictionLog) -> None:
        request = _request(2)
        log.record([request])
        log.record_shadow(request.request_id, [0.5, 1.5])
        assert log.flush(10)
        assert [log.lookup([pid])[pid].shadow_prediction for pid in request.prediction_ids] == [0.5, 1.5]

    def test_joins_unknown_and_duplicate_ids(self, log: PredictionLog) -> None:
        request = _request(3)
        log.record([request])
        first, second, third = request.prediction_ids
        missing, malformed = request.request_id + "000000ff", "not-an-id"
        result = log.add_feedback(
            [
                FeedbackItem(first, 1.0),
                FeedbackItem(first, 9.0),  # a repeat in one batch: the first wins
                FeedbackItem(second, 2.0),
                FeedbackItem(missing, 1.0),
                FeedbackItem(malformed, 1.0),
            ]
        )
        assert [label.prediction_id for label in result.joined] == [first, second]
        assert result.joined[0].prediction == 0.0 and result.joined[0].actual == 1.0
        assert result.unknown_ids == [missing, malformed]
        assert result.duplicate_ids == [first]
        later = log.add_feedback([FeedbackItem(first, 5.0), FeedbackItem(third, 3.0)])
        assert [label.prediction_id for label in later.joined] == [third]
        assert later.duplicate_ids == [first]
        assert log.lookup([first])[first].actual == 1.0

    def test_retention_by_age_and_by_rows_takes_whole_requests_and_their_labels(self, postgres_url: str) -> None:
        old = [_request(2, created_at=time.time() - 7200) for _ in range(5)]
        fresh = [_request(2) for _ in range(5)]
        with _open(postgres_url) as unbounded:
            unbounded.record(old + fresh)
            unbounded.add_feedback(
                [FeedbackItem(pid, 1.0) for request in old + fresh for pid in request.prediction_ids]
            )
        with _open(postgres_url, retention_seconds=3600, max_rows=6) as bounded:
            # The writer purges as it starts: five old requests by age, then the two oldest fresh ones by count.
            assert until(lambda: bounded.stats().rows == 6, 10)
            assert bounded.purge() == 0
        assert _count(postgres_url, "prediction_requests") == 3
        assert _count(postgres_url, "prediction_feedback") == 6


class TestReplicasShareOneDatabase:
    """Two logs on one database, as two replicas have: either joins what the other served, each label once."""

    def test_feedback_to_b_joins_predictions_served_by_a(self, postgres_url: str) -> None:
        with _open(postgres_url) as a, _open(postgres_url) as b:
            request = _request(10)
            assert a.wait(a.record([request]) or -1, 10)
            result = b.add_feedback([FeedbackItem(pid, 1.0) for pid in request.prediction_ids])
        assert len(result.joined) == 10 and not result.unknown_ids

    def test_concurrent_labels_for_the_same_ids_join_once(self, postgres_url: str) -> None:
        with _open(postgres_url) as a, _open(postgres_url) as b:
            requests_ = [_request(50) for _ in range(8)]
            assert a.wait(a.record(requests_) or -1, 10)
            ids = [pid for request in requests_ for pid in request.prediction_ids]
            joined: dict[str, list[str]] = {"a": [], "b": []}

            def label(name: str, log: PredictionLog, order: list[str]) -> None:
                for start in range(0, len(order), 40):
                    result = log.add_feedback([FeedbackItem(pid, 1.0) for pid in order[start : start + 40]])
                    joined[name] += [label.prediction_id for label in result.joined]

            threads = [
                threading.Thread(target=label, args=("a", a, ids)),
                threading.Thread(target=label, args=("b", b, ids[::-1])),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert sorted(joined["a"] + joined["b"]) == sorted(ids)  # every id joined, and none twice
        assert _count(postgres_url, "prediction_feedback") == len(ids)

    def test_replicas_purging_together_delete_each_request_once(self, postgres_url: str) -> None:
        with _open(postgres_url) as loader:
            loader.record([_request(1, created_at=time.time() - 7200) for _ in range(400)])
        databases = [open_database(postgres_url) for _ in range(2)]
        connections = [database.open() for database in databases]  # each replica's writer connection
        counts: list[int] = []

        def purge(database: Database, connection: Any) -> None:
            retention = Retention(database, seconds=3600, max_rows=None, chunk_rows=10)
            counts.append(retention.purge(connection, time.time()))

        threads = [threading.Thread(target=purge, args=pair) for pair in zip(databases, connections, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for database, connection in zip(databases, connections, strict=True):
            connection.close()
            database.close()
        assert sum(counts) == 400  # SKIP LOCKED: neither waited for, nor counted, the other's requests
        assert _count(postgres_url, "prediction_requests") == 0


class TestSchema:
    """A schema version table and forward migrations, run once however many replicas start together."""

    def test_versions_are_recorded_once(self, postgres_url: str) -> None:
        logs = [PredictionLog(postgres_url, retention_seconds=None, max_rows=None) for _ in range(4)]
        threads = [threading.Thread(target=log.open) for log in logs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for log in logs:
            log.close()
        with psycopg.connect(postgres_url) as connection:
            versions = [row[0] for row in connection.execute("SELECT version FROM prediction_log_schema")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))

    def test_a_database_at_version_1_is_migrated_forward(self, postgres_url: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(
                "CREATE TABLE prediction_log_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL"
                " DEFAULT now())"
            )
            for statement in MIGRATIONS[0]:
                connection.execute(statement)
            connection.execute("INSERT INTO prediction_log_schema (version) VALUES (1)")
        with _open(postgres_url) as log:
            request = dataclasses.replace(_request(1, classes=True), probabilities=np.array([[0.4, 0.6]]))
            log.record([request])
            (label,) = log.add_feedback([FeedbackItem(request.prediction_ids[0], "yes")]).joined
            assert label.probabilities == pytest.approx([0.4, 0.6])
        with psycopg.connect(postgres_url) as connection:
            versions = [row[0] for row in connection.execute("SELECT version FROM prediction_log_schema ORDER BY 1")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))

    def test_a_schema_newer_than_this_release_is_refused_by_name(self, postgres_url: str) -> None:
        _open(postgres_url).close()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("INSERT INTO prediction_log_schema (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
        with pytest.raises(PredictionLogError, match="newer than this modellens knows"):
            _open(postgres_url)


class TestPassword:
    """The password comes from the URL, PGPASSWORD or a file, and never shows in a name, an error or a log line."""

    def test_from_a_file_or_pgpassword(
        self, postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bare = postgres.url(postgres.create_database(), password=False)
        secret = tmp_path / "password"
        secret.write_text(postgres.password + "\n")
        database = open_database(bare, password_file=secret)
        with PredictionLog(database, retention_seconds=None, max_rows=None) as log:
            assert log.stats().rows == 0
        monkeypatch.setenv("PGPASSWORD", postgres.password)
        with _open(bare) as log:
            assert log.stats().rows == 0

    def test_a_wrong_password_names_the_database_never_the_password(self, postgres: PostgresServer) -> None:
        url = postgres.url(postgres.create_database()).replace(postgres.password, "s3cr3t-but-wrong")
        with capture_logs() as logs, pytest.raises(PredictionLogError) as raised:
            _open(url)
        message = str(raised.value)
        assert "password authentication failed" in message
        assert f"127.0.0.1:{postgres.port}" in message
        assert "s3cr3t-but-wrong" not in message + repr(logs)

    def test_the_name_shows_where_not_the_password(self, postgres: PostgresServer) -> None:
        database = postgres.create_database()
        with _open(postgres.url(database)) as log:
            assert log.name == f"postgresql://modellens@127.0.0.1:{postgres.port}/{database}"


class TestStartup:
    """A database the service cannot reach stops it from starting, with a message naming where, not the password."""

    def test_an_unreachable_server_names_itself_and_the_setting(self, regression_model_dir: Path) -> None:
        closed = free_port()
        url = f"postgresql://modellens:s3cr3t-never-shown@127.0.0.1:{closed}/modellens"
        settings = Settings.from_env({}, model_dir=regression_model_dir, prediction_log=url)
        with pytest.raises(PredictionLogError) as raised:
            create_app(settings)
        message = str(raised.value)
        assert f"postgresql://modellens@127.0.0.1:{closed}/modellens" in message
        assert "MODELLENS_PREDICTION_LOG" in message
        assert "s3cr3t-never-shown" not in message and "s3cr3t-never-shown" not in repr(settings)


class TestOutage:
    """PostgreSQL stops under load: serving goes on, drops are counted, joins say "retry", writes resume alone."""

    def test_in_process(self) -> None:
        with PostgresServer() as server:
            url = server.url(server.create_database())
            with capture_logs() as logs, _open(url, queue_size=50) as log:
                before = _request(1)
                assert log.wait(log.record([before]) or -1, 10)
                server.stop(mode="immediate")
                tickets = [log.record([_request(1)]) for _ in range(80)]
                accepted = [ticket for ticket in tickets if ticket is not None]
                assert until(lambda: log.health().failing, 15)
                started = time.monotonic()
                assert not log.wait(accepted[-1], 0.25)  # a failing log never holds a request
                assert time.monotonic() - started < 0.25
                assert len(accepted) == 50 and log.health().dropped["queue_full"] == 30
                with pytest.raises(PredictionLogUnavailable):
                    log.add_feedback([FeedbackItem(before.prediction_ids[0], 1.0)])
                server.start()
                assert log.flush(30)  # the writer reconnected by itself
                assert not log.health().failing
                assert log.stats().rows == 51
                assert len(log.add_feedback([FeedbackItem(before.prediction_ids[0], 1.0)]).joined) == 1
            events = [entry["event"] for entry in logs]
            assert "prediction log write failed; retrying" in events
            assert "prediction log writes resumed" in events
            assert server.password not in repr(logs)


# --- real service processes ---------------------------------------------------------------------------------
class TestTwoServices:
    """Two `modellens serve` processes on one database, as two replicas behind a load balancer."""

    def test_predictions_on_a_feedback_on_b_realized_mae_over_all(
        self, regression_model_dir: Path, postgres_url: str
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        ports = free_port(), free_port()
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        # One worker each: /monitoring then reports the worker that joined the labels (each worker counts its own).
        env = {"MODELLENS_PREDICTION_LOG": postgres_url, "MODELLENS_WORKERS": "1"}
        with (
            serve(regression_model_dir, ports[0], None, **env),
            serve(regression_model_dir, ports[1], None, **env),
            requests.Session() as http,
        ):
            rows = [instance(card, shift) for shift in np.linspace(0.1, 0.9, 40)]
            served = http.post(f"{urls[0]}/predict", json={"instances": rows}, timeout=10).json()
            actuals = [100.0 + 3 * index for index in range(40)]
            feedback = [
                {"prediction_id": pid, "actual": actual}
                for pid, actual in zip(served["prediction_ids"], actuals, strict=True)
            ]
            joined = http.post(f"{urls[1]}/feedback", json={"feedback": feedback}, timeout=10).json()
            assert joined == {"accepted": 40, "unknown_ids": [], "duplicate_ids": []}
            again = http.post(f"{urls[0]}/feedback", json={"feedback": feedback[:5]}, timeout=10).json()
            assert again["accepted"] == 0 and len(again["duplicate_ids"]) == 5  # labelled on B, seen from A
            summary = http.get(f"{urls[1]}/monitoring", timeout=10).json()["realized_performance"]
        expected = float(np.mean(np.abs(np.array(actuals) - np.array(served["predictions"]))))
        assert summary["labels"] == 40
        assert summary["mae"] == pytest.approx(expected)

    def test_the_same_labels_sent_to_both_at_once_join_once(
        self, regression_model_dir: Path, postgres_url: str
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        ports = free_port(), free_port()
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        env = {"MODELLENS_PREDICTION_LOG": postgres_url, "MODELLENS_WORKERS": "2"}
        with serve(regression_model_dir, ports[0], None, **env), serve(regression_model_dir, ports[1], None, **env):
            rows = [instance(card, shift) for shift in np.linspace(0.1, 0.9, 200)]
            ids = requests.post(f"{urls[0]}/predict", json={"instances": rows}, timeout=10).json()["prediction_ids"]
            feedback = [{"prediction_id": pid, "actual": 150.0} for pid in ids]
            answers: list[dict[str, Any]] = []

            def send(url: str, order: list[dict[str, Any]]) -> None:
                with requests.Session() as http:
                    for start in range(0, len(order), 50):
                        response = http.post(
                            f"{url}/feedback", json={"feedback": order[start : start + 50]}, timeout=30
                        )
                        assert response.status_code == 200, response.text
                        answers.append(response.json())

            clients = [  # two clients per replica, half of them in reverse order
                threading.Thread(target=send, args=(url, order)) for url in urls for order in (feedback, feedback[::-1])
            ]
            for client in clients:
                client.start()
            for client in clients:
                client.join(60)
        assert len(answers) == 4 * 4
        assert sum(answer["accepted"] for answer in answers) == 200  # each id joined once, on whichever came first
        assert sum(len(answer["duplicate_ids"]) for answer in answers) == 3 * 200
        assert _count(postgres_url, "prediction_feedback") == 200

    def test_postgresql_stopped_mid_burst(self, regression_model_dir: Path) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        row = instance(card)
        with PostgresServer() as server:
            env = {
                "MODELLENS_PREDICTION_LOG": server.url(server.create_database()),
                "MODELLENS_PREDICTION_LOG_QUEUE": "100",
            }
            with serve(regression_model_dir, port, None, **env) as service, requests.Session() as http:
                assert (
                    http.post(f"{url}/predict", json={"instances": [row]}, timeout=10).headers[LOG_HEADER]
                    == "committed"
                )
                server.stop(mode="immediate")
                outcomes = outcomes_of(http, url, row, 100)  # 3 rows each: three times what the queue holds
                assert outcomes["queued"] and outcomes["dropped"], {k: len(v) for k, v in outcomes.items()}
                assert len(outcomes["queued"]) <= 100
                assert ready(http, url)  # the model still serves
                assert metric(http, url, "prediction_log_failing") == 1
                dropped = metric(http, url, "prediction_log_dropped_total", reason="queue_full", record="prediction")
                assert dropped == len(outcomes["dropped"])
                refused = http.post(
                    f"{url}/feedback", json={"feedback": [{"prediction_id": outcomes["queued"][0], "actual": 1}]},
                    timeout=10,
                )  # fmt: skip
                assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
                server.start()
                assert until(lambda: metric(http, url, "prediction_log_failing") == 0, 30)
                assert unknown_ids(http, url, outcomes["committed"] + outcomes["queued"]) == []
                assert server.password not in service.output()
