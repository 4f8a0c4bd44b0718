"""The prediction log on a real SQLite file: writes, joins, restarts, back-pressure, retention, sharing."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from service.groundtruth.ids import new_prediction_ids
from service.groundtruth.records import FeedbackItem, PredictionRequest
from service.groundtruth.retention import Retention
from service.groundtruth.sqlite import SqliteDatabase
from service.groundtruth.store import PredictionLog, PredictionLogError, PredictionLogUnavailable

VERSION = "0123456789ab"
ROOT = Path(__file__).resolve().parent.parent


def _id() -> str:
    return os.urandom(16).hex()


def _request(instances: list[dict[str, Any]], predictions: list[Any], **fields: Any) -> PredictionRequest:
    request_id, _ = new_prediction_ids(0)
    return PredictionRequest(
        request_id=request_id,
        trace_id=fields.get("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        created_at=fields.get("created_at", time.time()),
        model_name="diabetes",
        model_version=fields.get("model_version", VERSION),
        body=json.dumps({"instances": instances}).encode(),
        predictions=predictions,
        slices=fields.get("slices"),
        probabilities=fields.get("probabilities"),
    )


def _records(count: int, *, created_at: float | None = None, **fields: Any) -> list[PredictionRequest]:
    """`count` one-row requests (the common case: one /predict call per prediction)."""
    now = time.time() if created_at is None else created_at
    slices = fields.pop("slices", None)
    return [
        _request(
            [fields.get("inputs", {"age": 0.01 * i, "sex": "F"})],
            [fields.get("prediction", float(i))],
            created_at=now,
            slices=None if slices is None else {name: [value] for name, value in slices.items()},
            **fields,
        )
        for i in range(count)
    ]


def _pid(request: PredictionRequest) -> str:
    (pid,) = request.prediction_ids
    return pid


def _open(path: Path, **kwargs: Any) -> PredictionLog:
    options: dict[str, Any] = {"retention_seconds": None, "max_rows": None, **kwargs}
    return PredictionLog(path, **options).open()


def _record_one_by_one(log: PredictionLog, records: list[PredictionRequest], size: int) -> None:
    """Record in requests of `size` rows, as a stream of /predict calls would."""
    for start in range(0, len(records), size):
        log.record(records[start : start + size])


def _count(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "log" / "predictions.db"


@pytest.fixture
def log(path: Path) -> Iterator[PredictionLog]:
    with PredictionLog(path, retention_seconds=None, max_rows=None) as opened:
        yield opened


class TestRecordAndLookup:
    """Recorded requests come back from `lookup` row by row, exactly as received."""

    def test_round_trip(self, log: PredictionLog) -> None:
        record = _records(1, inputs={"age": None, "bmi": 0.5, "sex": None}, slices={"sex": "F"})[0]
        log.record([record])
        stored = log.lookup([_pid(record)])[_pid(record)]
        assert stored.inputs == {"age": None, "bmi": 0.5, "sex": None}
        assert (stored.trace_id, stored.created_at, stored.model_version) == (
            record.trace_id,
            record.created_at,
            VERSION,
        )
        assert (stored.prediction, stored.shadow_prediction, stored.slices) == (0.0, None, {"sex": "F"})
        assert (stored.actual, stored.received_at) == (None, None)

    def test_classification_labels_are_strings(self, log: PredictionLog) -> None:
        record = _records(1, prediction="malignant")[0]
        log.record([record])
        assert log.lookup([_pid(record)])[_pid(record)].prediction == "malignant"

    def test_unknown_ids_are_absent_and_large_lookups_are_chunked(self, log: PredictionLog) -> None:
        records = _records(1200)
        log.record(records)
        found = log.lookup([*(_pid(r) for r in records), _id()])
        assert set(found) == {_pid(r) for r in records}

    def test_schema_and_pragmas(self, log: PredictionLog, path: Path) -> None:
        with closing(sqlite3.connect(path)) as connection:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            indexes = {row[1] for row in connection.execute("PRAGMA index_list(requests)")}
        assert mode == "wal"
        assert "requests_created_at" in indexes

    def test_lifecycle(self, path: Path) -> None:
        log = PredictionLog(path, retention_seconds=None, max_rows=None)
        with pytest.raises(RuntimeError, match="not open"):
            log.record(_records(1))
        log.open()
        with pytest.raises(RuntimeError, match="opened once"):
            log.open()
        log.close()
        log.close()  # idempotent
        with pytest.raises(RuntimeError, match="not open"):
            log.record(_records(1))
        with pytest.raises(RuntimeError, match="not open"):
            log.lookup([_id()])

    def test_the_file_and_its_wal_are_readable_by_their_owner_only(self, log: PredictionLog, path: Path) -> None:
        log.record(_records(1))
        log.flush()
        for file in (path, path.with_name(path.name + "-wal")):
            assert file.stat().st_mode & 0o777 == 0o600, file

    def test_a_path_that_cannot_be_created_names_itself(self, tmp_path: Path) -> None:
        (tmp_path / "models").write_text("a file where a directory should be")
        path = tmp_path / "models" / "predictions.sqlite3"
        with pytest.raises(PredictionLogError, match=f"cannot open the prediction log {path}"):
            PredictionLog(path, retention_seconds=None, max_rows=None).open()

    def test_a_file_that_is_not_a_database_names_itself(self, path: Path) -> None:
        path.parent.mkdir()
        path.write_bytes(b"not sqlite" * 100)
        with pytest.raises(PredictionLogError, match=f"prediction log {path}"):
            PredictionLog(path, retention_seconds=None, max_rows=None).open()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"queue_size": 0}, "queue_size"),
            ({"retention_seconds": 0}, "retention_seconds"),
            ({"max_rows": 0}, "max_rows"),
        ],
    )
    def test_rejects_bad_options(self, path: Path, options: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            PredictionLog(path, **{"retention_seconds": None, "max_rows": None, **options})


class TestBatchRequests:
    """A many-row request is one stored row; each of its predictions is still found, labelled and purged by id."""

    def test_every_row_of_a_batch_is_found_with_its_own_inputs_shadow_and_slice(self, log: PredictionLog) -> None:
        instances = [{"age": float(i), "sex": "F" if i % 2 else "M"} for i in range(1000)]
        request = _request(instances, [i * 0.5 for i in range(1000)], slices={"sex": [row["sex"] for row in instances]})
        log.record([request])
        log.record_shadow(request.request_id, [-float(i) for i in range(1000)])
        ids = request.prediction_ids
        assert len(set(ids)) == 1000 and all(len(pid) == 32 and pid.startswith(request.request_id) for pid in ids)
        found = log.lookup(ids)
        assert len(found) == 1000
        for index in (0, 1, 517, 999):
            stored = found[ids[index]]
            assert stored.inputs == instances[index]
            assert (stored.prediction, stored.shadow_prediction) == (index * 0.5, -float(index))
            assert stored.slices == {"sex": instances[index]["sex"]}
        assert log.stats().rows == 1000
        assert _count(Path(log.name), "requests") == 1

    def test_float_predictions_are_stored_exactly(self, log: PredictionLog) -> None:
        """A float array is stored as float64 bytes: the same values come back (NaN as null, like JSON)."""
        values = np.array([0.1, 1 / 3, -2.5e-300, 1e300, math.nan, 151.0000000000001])
        request = _request([{"age": float(i)} for i in range(len(values))], values)  # type: ignore[arg-type]
        log.record([request])
        found = log.lookup(request.prediction_ids)
        stored = [found[pid].prediction for pid in request.prediction_ids]
        assert stored[:4] + stored[5:] == [0.1, 1 / 3, -2.5e-300, 1e300, 151.0000000000001]
        assert stored[4] is None
        assert log.add_feedback([FeedbackItem(request.prediction_ids[1], 0.5)]).joined[0].prediction == 1 / 3

    def test_ids_past_the_end_of_a_request_or_malformed_are_unknown(self, log: PredictionLog) -> None:
        request = _request([{"age": 1.0}, {"age": 2.0}], [1.0, 2.0])
        log.record([request])
        past_end = f"{request.request_id}{2:08x}"
        malformed = ["", "xyz", request.request_id, request.request_id + "zzzzzzzz", _pid(_records(1)[0])]
        assert set(log.lookup([*request.prediction_ids, past_end, *malformed])) == set(request.prediction_ids)
        result = log.add_feedback([FeedbackItem(past_end, 1.0), FeedbackItem(request.prediction_ids[1], 2.0)])
        assert (result.unknown_ids, [label.prediction for label in result.joined]) == ([past_end], [2.0])

    def test_purge_by_max_rows_deletes_whole_requests_and_their_labels(self, path: Path) -> None:
        with _open(path, max_rows=250) as log:
            old = _request([{"age": 1.0}] * 200, [1.0] * 200, created_at=1000.0)
            new = _request([{"age": 2.0}] * 200, [2.0] * 200, created_at=2000.0)
            log.record([old, new])
            log.add_feedback([FeedbackItem(old.prediction_ids[5], 1.0), FeedbackItem(new.prediction_ids[5], 1.0)])
            assert log.purge() == 200
            assert set(log.lookup([*old.prediction_ids, *new.prediction_ids])) == set(new.prediction_ids)
            assert log.stats().rows == 200
        assert _count(path, "feedback") == 1


class TestFlushOrdering:
    """`flush` waits for everything queued before it; a shadow prediction lands after its row's insert."""

    def test_shadow_right_after_insert(self, log: PredictionLog) -> None:
        records = _records(50)
        log.record(records)
        for record in records:
            log.record_shadow(record.request_id, [100.0])
        assert log.flush(timeout=5)
        assert log.stats().pending == 0
        found = log.lookup(_pid(r) for r in records)
        assert {stored.shadow_prediction for stored in found.values()} == {100.0}

    def test_shadow_in_a_later_batch(self, log: PredictionLog) -> None:
        record = _records(1)[0]
        log.record([record])
        assert log.flush(timeout=5)
        log.record_shadow(record.request_id, ["benign"])
        assert log.lookup([_pid(record)])[_pid(record)].shadow_prediction == "benign"

    def test_lookup_sees_a_prediction_made_just_before(self, log: PredictionLog) -> None:
        for _ in range(100):
            record = _records(1)[0]
            log.record([record])
            assert _pid(record) in log.lookup([_pid(record)])


class TestRestart:
    """Predictions recorded before a graceful restart join feedback sent to the next process."""

    def test_feedback_after_restart_joins(self, path: Path) -> None:
        records = _records(300, created_at=time.time() - 3600)
        before = _open(path)
        before.record(records)
        before.close()  # no explicit flush: close() writes what is queued

        after = _open(path)
        try:
            result = after.add_feedback([FeedbackItem(_pid(r), 1.5) for r in records])
        finally:
            after.close()
        assert len(result.joined) == 300
        assert (result.unknown_ids, result.duplicate_ids) == ([], [])
        assert all(3599 < label.delay_seconds < 3700 for label in result.joined)

    def test_process_exit_without_close_still_writes_everything(self, path: Path) -> None:
        script = (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from service.groundtruth.records import PredictionRequest\n"
            "from service.groundtruth.store import PredictionLog\n"
            "log = PredictionLog(Path(sys.argv[1]), retention_seconds=None, max_rows=None).open()\n"
            "for i in range(2000):\n"
            "    log.record([PredictionRequest(f'{i:024x}', None, time.time(), 'm', 'v', b'{}', [1.0])])\n"
        )  # no close(): the atexit hook that open() registered must write the queue before the process ends
        done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        assert _count(path, "requests") == 2000


class TestAddFeedback:
    """Labels are stored once: unknown ids and repeats (in one request or across requests) are rejected."""

    def test_joins_and_rejects(self, log: PredictionLog) -> None:
        first, second, third = _records(3, created_at=1000.0, slices={"sex": "M"})
        log.record([first, second, third])
        log.add_feedback([FeedbackItem(_pid(third), 9.0)])
        stranger = _id()
        result = log.add_feedback(
            [
                FeedbackItem(_pid(first), 2.5),
                FeedbackItem(stranger, 1.0),
                FeedbackItem(_pid(first), 7.0),
                FeedbackItem(_pid(second), 3.0),
                FeedbackItem(_pid(third), 9.0),
            ],
            now=1060.0,
        )
        assert [label.prediction_id for label in result.joined] == [_pid(first), _pid(second)]
        assert result.unknown_ids == [stranger]
        assert result.duplicate_ids == [_pid(first), _pid(third)]
        label = result.joined[0]
        assert (label.prediction, label.actual, label.delay_seconds) == (0.0, 2.5, 60.0)
        assert (label.model_name, label.model_version, label.slices) == ("diabetes", VERSION, {"sex": "M"})
        stored = log.lookup([_pid(first)])[_pid(first)]
        assert (stored.actual, stored.received_at) == (2.5, 1060.0)  # the first label wins

    def test_a_joined_label_carries_its_predictions_class_probabilities(self, log: PredictionLog) -> None:
        probabilities = np.array([[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]])
        record = _request([{"x": 1}, {"x": 2}, {"x": 3}], ["no", "yes", "no"], probabilities=probabilities)
        plain = _request([{"x": 4}], ["no"])
        log.record([record, plain])
        result = log.add_feedback([FeedbackItem(pid, "yes") for pid in [*record.prediction_ids, _pid(plain)]])
        joined = {label.prediction_id: label.probabilities for label in result.joined}
        for index, pid in enumerate(record.prediction_ids):
            assert joined[pid] == pytest.approx(probabilities[index], abs=1e-7)  # float32: 7 digits
        assert joined[_pid(plain)] is None

    def test_a_file_from_before_probabilities_gains_the_column(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as old:
            old.executescript(
                "CREATE TABLE requests (request_id TEXT PRIMARY KEY, trace_id TEXT, created_at REAL NOT NULL,"
                " model_name TEXT NOT NULL, model_version TEXT NOT NULL, row_count INTEGER NOT NULL,"
                " body BLOB NOT NULL, predictions TEXT NOT NULL, shadow_predictions TEXT, slices TEXT);"
                "CREATE TABLE feedback (prediction_id TEXT PRIMARY KEY, actual TEXT NOT NULL,"
                " received_at REAL NOT NULL);"
            )
            request_id, _ = new_prediction_ids(0)
            old.execute(
                "INSERT INTO requests VALUES (?, NULL, 1.0, 'diabetes', ?, 1, ?, ?, NULL, NULL)",
                (request_id, VERSION, b'{"instances": [{"x": 1}]}', '["no"]'),
            )
            old.commit()
        with _open(path) as log:
            (label,) = log.add_feedback([FeedbackItem(request_id + "00000000", "no")]).joined
            assert label.prediction == "no" and label.probabilities is None
            fresh = _request([{"x": 2}], ["yes"], probabilities=np.array([[0.2, 0.8]]))
            log.record([fresh])
            (again,) = log.add_feedback([FeedbackItem(_pid(fresh), "yes")]).joined
            assert again.probabilities == pytest.approx([0.2, 0.8])

    def test_clock_skew_never_gives_a_negative_delay(self, log: PredictionLog) -> None:
        record = _records(1, created_at=2000.0)[0]
        log.record([record])
        assert log.add_feedback([FeedbackItem(_pid(record), 1.0)], now=1999.0).joined[0].delay_seconds == 0


class TestBackPressure:
    """A full queue refuses rows instead of blocking the request: they are counted, the rest are all written."""

    def test_a_stalled_writer_refuses_rows_beyond_the_queue_and_counts_them(self, path: Path) -> None:
        log = _open(path, queue_size=3)
        with capture_logs() as events:
            try:
                with closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
                    other_worker.execute("BEGIN IMMEDIATE")  # holds the write lock: our writer stalls
                    accepted = _records(3)
                    assert log.record(accepted) is not None
                    late = _records(5)
                    assert [log.record([record]) for record in late] == [None] * 5  # at once, never waiting
                    health = log.health()
                    assert (health.pending, health.dropped["queue_full"]) == (3, 5)
                    other_worker.execute("COMMIT")
                assert log.flush(timeout=10)
                again = _records(2)
                assert log.record(again) is not None
                assert log.flush(timeout=10)
                assert log.stats().rows == 5
            finally:
                log.close()
        said = [event["event"] for event in events if event["event"].startswith("prediction log")]
        assert said == [  # once per episode, not once per refused request
            "prediction log cannot keep up; predictions are answered but not logged",
            "prediction log accepting predictions again",
        ]
        with _open(path) as reopened:
            found = reopened.lookup(_pid(r) for r in accepted + again + late)
        assert set(found) == {_pid(r) for r in accepted + again}

    def test_a_batch_larger_than_the_queue_still_goes_through(self, path: Path) -> None:
        log = _open(path, queue_size=2)
        try:
            for _ in range(2):
                ticket = log.record(_records(50))
                assert ticket is not None and log.wait(ticket, timeout=10)
            assert log.stats().rows == 100
        finally:
            log.close()


class TestUnavailable:
    """While this process's predictions cannot be committed, a join says "retry later" instead of "unknown"."""

    def test_a_join_during_a_stall_is_refused_then_succeeds(self, path: Path) -> None:
        log = _open(path)
        try:
            with closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
                other_worker.execute("BEGIN IMMEDIATE")
                record = _records(1)[0]
                ticket = log.record([record])
                assert ticket is not None
                with pytest.raises(PredictionLogUnavailable, match="behind or failing"):
                    log.add_feedback([FeedbackItem(_pid(record), 1.0)])
                other_worker.execute("COMMIT")
            assert log.wait(ticket, timeout=10)
            result = log.add_feedback([FeedbackItem(_pid(record), 1.0)])
            assert [label.prediction_id for label in result.joined] == [_pid(record)]
            assert not log.health().failing
        finally:
            log.close()

    def test_a_feedback_write_that_fails_stores_nothing(self, path: Path) -> None:
        log = _open(path)
        try:
            record = _records(1)[0]
            ticket = log.record([record])
            assert ticket is not None and log.wait(ticket, timeout=10)
            with closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
                other_worker.execute("BEGIN IMMEDIATE")  # the join's own write lock times out
                with pytest.raises(PredictionLogUnavailable, match="cannot store feedback"):
                    log.add_feedback([FeedbackItem(_pid(record), 1.0)])
                other_worker.execute("COMMIT")
            assert _count(path, "feedback") == 0
            assert log.add_feedback([FeedbackItem(_pid(record), 1.0)]).joined
        finally:
            log.close()


class TestRetention:
    """Rows older than the retention, or beyond max_rows, are deleted with their labels."""

    def test_purge_by_age(self, path: Path) -> None:
        now = time.time()
        log = _open(path, retention_seconds=3600)
        try:
            old, new = _records(5, created_at=now - 7200), _records(5, created_at=now - 60)
            log.record([*old, *new])
            log.add_feedback([FeedbackItem(_pid(r), 1.0) for r in (old[0], new[0])])
            assert log.purge(now) == 5
            assert set(log.lookup(_pid(r) for r in old + new)) == {_pid(r) for r in new}
        finally:
            log.close()
        assert _count(path, "feedback") == 1

    def test_purge_by_max_rows(self, path: Path) -> None:
        log = _open(path, max_rows=4)
        try:
            records = [_records(1, created_at=1000.0 + i)[0] for i in range(10)]
            log.record(records)
            log.add_feedback([FeedbackItem(_pid(r), 1.0) for r in records])
            assert log.purge() == 6
            assert set(log.lookup(_pid(r) for r in records)) == {_pid(r) for r in records[-4:]}
        finally:
            log.close()
        assert _count(path, "feedback") == 4

    def test_writer_purges_periodically(self, path: Path) -> None:
        log = _open(path, retention_seconds=3600, purge_interval=0.05)
        try:
            log.record(_records(20, created_at=time.time() - 7200))
            log.record(_records(3))
            deadline = time.monotonic() + 5
            while log.stats().rows != 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert log.stats().rows == 3
        finally:
            log.close()

    def test_a_backlog_is_purged_a_pass_at_a_time(self, path: Path) -> None:
        with _open(path) as unbounded:
            unbounded.record(_records(50, created_at=time.time() - 7200))
            unbounded.record(_records(1))
        retention = Retention(SqliteDatabase(path), seconds=3600, max_rows=None, chunk_rows=3, pass_rows=6)
        left = []
        with closing(sqlite3.connect(path, isolation_level=None)) as connection:
            while not retention.purge_pass(connection):
                left.append(_count(path, "requests"))
            left.append(_count(path, "requests"))
        # Six rows a pass, three per transaction, until the last pass finds fewer than six: only the fresh row stays.
        assert left == [51 - 6 * n for n in range(1, 9)] + [1]

    def test_writer_purges_at_start(self, path: Path) -> None:
        with _open(path) as unbounded:
            unbounded.record(_records(20, created_at=time.time() - 7200))
        with _open(path, retention_seconds=3600) as bounded:
            bounded.record(_records(1))
            assert bounded.flush(timeout=5)  # queued after the start-up purge
            assert bounded.stats().rows == 1


class TestSharedFile:
    """Two logs on one file, like two gunicorn workers, see each other's rows and never double-label."""

    def test_two_workers(self, path: Path) -> None:
        first, second = _open(path), _open(path)
        try:
            mine, theirs = _records(300), _records(300)
            writers = [
                threading.Thread(target=_record_one_by_one, args=(first, mine, 3)),
                threading.Thread(target=_record_one_by_one, args=(second, theirs, 3)),
            ]
            for thread in writers:
                thread.start()
            for thread in writers:
                thread.join()
            assert second.flush(timeout=10)
            result = first.add_feedback([FeedbackItem(_pid(r), 1.0) for r in theirs])
            assert len(result.joined) == 300
            again = second.add_feedback([FeedbackItem(_pid(r), 1.0) for r in theirs[:10]])
            assert (again.joined, len(again.duplicate_ids)) == ([], 10)
            assert first.stats().rows == 600
        finally:
            first.close()
            second.close()

    @pytest.mark.slow
    def test_a_worker_starting_while_another_holds_the_file_locked_waits_its_turn(self, path: Path) -> None:
        _open(path).close()
        held = threading.Event()

        def hold_the_write_lock() -> None:
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN EXCLUSIVE")
                held.set()
                time.sleep(SqliteDatabase.busy_timeout + 1)  # longer than one attempt waits
                other.execute("COMMIT")

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        assert held.wait(10)
        try:
            late = _open(path)  # a worker booting now: it boots once the lock is released, instead of failing
        finally:
            holder.join()
        try:
            assert late.stats().rows == 0
        finally:
            late.close()


class TestThreadSafety:
    """Many request threads recording rows and shadows at once: every row and every shadow is written."""

    def test_concurrent_producers(self, path: Path) -> None:
        log = _open(path, queue_size=64)
        batches: list[list[PredictionRequest]] = [[] for _ in range(8)]

        def produce(mine: list[PredictionRequest]) -> None:
            for _ in range(100):
                records = _records(5)
                ticket = log.record(records)
                assert ticket is not None and log.wait(ticket, timeout=10)  # as /predict does by default
                mine.extend(records)
                log.record_shadow(records[0].request_id, [-1.0])

        try:
            threads = [threading.Thread(target=produce, args=(mine,)) for mine in batches]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert log.flush(timeout=10)
            everything = [record for mine in batches for record in mine]
            found = log.lookup(_pid(r) for r in everything)
            assert len(found) == 4000
            assert sum(stored.shadow_prediction == -1.0 for stored in found.values()) == 800
            assert log.stats().write_errors == 0
        finally:
            log.close()
