"""The prediction log: every acknowledged prediction in SQLite, so ground truth that arrives later still joins.

One SQLite row per `/predict` request, not per prediction: the request body exactly as received, and the
predictions as one column (`encoding`). A prediction's id names its request and its row in it (`ids`), so a label
finds its row from the id alone. Writing a 1000-row request is then one insert and no per-row encoding, which
keeps the log off the batch path's critical cost; the insert itself happens on the write-behind thread (`writer`).
"""

from __future__ import annotations

import atexit
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import structlog

from service.groundtruth.encoding import dumps
from service.groundtruth.ids import split_prediction_id
from service.groundtruth.records import (
    FeedbackItem,
    FeedbackResult,
    JoinedLabel,
    PredictionRequest,
    StoredPrediction,
)
from service.groundtruth.retention import Retention
from service.groundtruth.rows import StoredRequest, locate, request_row
from service.groundtruth.writer import WriteBehind, WriterState

__all__ = ["RETRY_AFTER", "LogStats", "PredictionLog", "PredictionLogError", "PredictionLogUnavailable"]

_log = structlog.get_logger("service.groundtruth.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    trace_id TEXT,
    created_at REAL NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    body BLOB NOT NULL,
    predictions TEXT NOT NULL,
    shadow_predictions TEXT,
    slices TEXT
);
CREATE INDEX IF NOT EXISTS requests_created_at ON requests (created_at);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY,
    actual TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""
# requests.body: the /predict body as received ({"instances": [...]}, validated JSON); predictions: float64 bytes or
# a JSON array in row order (`encoding`); shadow_predictions: a JSON array in row order; slices: {slice feature:
# [slice value per row]}. A row is written by `rows.request_row` and read back by `rows.StoredRequest`.
_INSERT = "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
_SHADOW = "UPDATE requests SET shadow_predictions = ? WHERE request_id = ?"
_SELECT_REQUESTS = (
    "SELECT request_id, trace_id, created_at, model_name, model_version, row_count, body, predictions,"
    " shadow_predictions, slices FROM requests WHERE request_id IN ({})"
)
_SELECT_LABELS = "SELECT prediction_id, actual, received_at FROM feedback WHERE prediction_id IN ({})"
_BUSY_TIMEOUT = 5.0  # seconds the writer waits for another worker's write lock before it reports "locked"
_READ_BUSY_TIMEOUT = 1.0  # the same for a request thread's join: past it, the client is told to retry
_FLUSH_TIMEOUT = 5.0  # how long `lookup` waits for this process's queued predictions to be committed
_JOIN_WAIT = 1.0  # how long a join waits for them before it answers "retry later"
RETRY_AFTER = 5  # seconds a client is asked to wait before sending a join again
_IN_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's bound-variable limit


class _ShadowUpdate(NamedTuple):
    """The challenger's predictions for a request queued earlier (an update: the writer keeps the queue's order)."""

    request_id: str
    predictions: Sequence[float | str]


_Operation = Sequence[PredictionRequest] | _ShadowUpdate  # what the writer queues: one `record` or `record_shadow`
_Rows = tuple[list[tuple[Any, ...]], list[tuple[str | None, str]]]  # (request inserts, shadow updates)


@dataclass(frozen=True)
class LogStats:
    """A snapshot of the log: rows stored, oldest prediction, rows queued in this process, and trouble seen."""

    rows: int
    oldest: float | None
    pending: int  # rows queued or being written
    failing: bool  # the last write failed (disk full, file locked for too long), or the writer thread died
    write_errors: int  # failed write attempts (each retried)
    dropped: dict[str, int]  # predictions not logged, by reason: queue_full, writer_failed, unserializable
    shadow_dropped: int  # challenger results not logged (the queue was full)


class PredictionLogUnavailable(Exception):
    """The log cannot answer a join now (it is failing, or behind); the client should retry in `RETRY_AFTER` s."""


class PredictionLogError(Exception):
    """The prediction log cannot be opened where it was asked to be; the message names the path and why."""


class PredictionLog:
    """Predictions in a SQLite file (WAL, shared by every worker process), written by one background thread.

    `record` hands rows to the writer and returns at once with a ticket; `wait(ticket, timeout)` holds the caller
    until those rows are committed (a commit survives the process being killed). When `queue_size` rows are
    already waiting, or the writer has died, `record` refuses the rows instead of blocking: it returns None and
    the rows are counted in `stats().dropped`. `flush` waits for everything queued so far; `close` flushes and
    stops the writer (call it when the worker exits; `open` also registers it with `atexit`). Rows older than
    `retention_seconds`, and the oldest rows beyond `max_rows`, are purged by the writer every `purge_interval`
    seconds or after enough inserts; `None` keeps them.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_seconds: float | None,
        max_rows: int | None,
        queue_size: int = 10_000,
        purge_interval: float = 60.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if retention_seconds is not None and retention_seconds <= 0:
            raise ValueError(f"retention_seconds must be positive, got {retention_seconds}")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.path = Path(path)
        self.retention_seconds = retention_seconds
        self.max_rows = max_rows
        self._retention = Retention(self.path, retention_seconds, max_rows)
        self._writer: WriteBehind[_Operation, _Rows] = WriteBehind(
            self.path,
            queue_size=queue_size,
            purge_interval=purge_interval,
            purge_every_rows=max(1000, (max_rows or 0) // 10),
            encode=self._encode,
            write=_write,
            purge=self._retention.purge_pass,
        )
        self._dropped = {"queue_full": 0, "writer_failed": 0, "unserializable": 0}
        self._shadow_dropped = 0
        self._dropping = False  # in an episode of refused rows: logged once when it starts and once when it ends
        self._counts_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------------
    def open(self) -> PredictionLog:
        """Create the file and schema if needed, and start the writer thread."""
        if self._writer.state is not WriterState.NEW:
            raise RuntimeError(f"prediction log {self.path} is {self._writer.state.value}; it can be opened once")
        try:
            _create_private(self.path)
            writing = _connect(self.path)
        except (OSError, sqlite3.Error) as error:
            raise PredictionLogError(f"cannot open the prediction log {self.path}: {error}") from error
        try:
            writing.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            self._reader = _connect(self.path, busy_timeout=_READ_BUSY_TIMEOUT)
        except sqlite3.Error as error:
            writing.close()
            raise PredictionLogError(f"cannot write the prediction log {self.path}: {error}") from error
        except BaseException:
            writing.close()
            raise
        self._writer.start(writing)
        atexit.register(self.close)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, stop the writer and close the file. Idempotent; later `record`s raise."""
        if not self._writer.close(timeout, grace=_BUSY_TIMEOUT + 1.0):
            return  # never opened, or another thread is closing it
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        atexit.unregister(self.close)

    def __enter__(self) -> PredictionLog:
        return self.open() if self._writer.state is WriterState.NEW else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------------------
    def record(self, requests: Sequence[PredictionRequest]) -> int | None:
        """Queue requests for the writer; their ticket for `wait`, or None if they were refused (and counted).
        Never blocks."""
        count = sum(len(request.predictions) for request in requests)
        if not count:
            return 0  # nothing to write: "committed" already
        ticket = self._writer.put(requests, count)
        self._account(ticket, count)
        return ticket

    def record_shadow(self, request_id: str, shadow_predictions: Sequence[float | str]) -> None:
        """Queue the challenger's predictions for a request recorded earlier (written after its insert)."""
        if self._writer.put(_ShadowUpdate(request_id, shadow_predictions), 1) is None:
            with self._counts_lock:
                self._shadow_dropped += 1

    def wait(self, ticket: int, timeout: float) -> bool:
        """Wait up to `timeout` for the rows `record` returned `ticket` for to be committed. False at once when
        the writer is failing or stuck: the caller answers in normal time, with its rows still queued."""
        return self._writer.wait(ticket, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False if `timeout` passed first."""
        return self._writer.flush(timeout)

    # --- reading and joining ------------------------------------------------------------------------------
    def lookup(self, ids: Iterable[str]) -> dict[str, StoredPrediction]:
        """The stored predictions among `ids` (after committing this process's queued rows)."""
        self._flush_for_read()
        wanted = list(dict.fromkeys(ids))
        found: dict[str, StoredPrediction] = {}
        with self._reading() as connection:
            requests = _requests(connection, wanted)
            labels: dict[str, tuple[str, float]] = {}
            for chunk in _chunks([pid for pid in wanted if locate(requests, pid) is not None]):
                for pid, actual, received_at in connection.execute(_SELECT_LABELS.format(_marks(chunk)), chunk):
                    labels[pid] = (actual, received_at)
        for pid in wanted:
            located = locate(requests, pid)
            if located is None:
                continue
            stored, index = located
            label = labels.get(pid)
            found[pid] = StoredPrediction(
                prediction_id=pid,
                trace_id=stored.trace_id,
                created_at=stored.created_at,
                model_name=stored.model_name,
                model_version=stored.model_version,
                inputs=stored.inputs(index),
                prediction=stored.prediction(index),
                shadow_prediction=stored.shadow(index),
                slices=stored.slices(index),
                actual=None if label is None else json.loads(label[0]),
                received_at=None if label is None else label[1],
            )
        return found

    def add_feedback(self, items: Sequence[FeedbackItem], *, now: float | None = None) -> FeedbackResult:
        """Store each label once and join it to its prediction, in one transaction.

        An id with no stored prediction is unknown; an id that already has a label, or that appears again in
        `items`, is a duplicate (the first occurrence wins). Neither is stored. Raises `PredictionLogUnavailable`,
        storing nothing, while this process's predictions cannot be committed in time (an id may be among them,
        so "unknown" would be a lie) or the feedback cannot be written.
        """
        if self._writer.stats().failing or not self.flush(_JOIN_WAIT):
            raise PredictionLogUnavailable(f"the prediction log {self.path} is behind or failing to write")
        try:
            return self._join(items, now)
        except sqlite3.Error as error:
            raise PredictionLogUnavailable(f"the prediction log {self.path} cannot store feedback: {error}") from error

    def _join(self, items: Sequence[FeedbackItem], now: float | None) -> FeedbackResult:
        received_at = time.time() if now is None else now
        unique = list(dict.fromkeys(item.prediction_id for item in items))
        joined: list[JoinedLabel] = []
        unknown: list[str] = []
        duplicates: list[str] = []
        with self._reading() as connection:
            connection.execute("BEGIN IMMEDIATE")  # read and insert under one write lock: no double labels
            try:
                requests = _requests(connection, unique)
                labelled: set[str] = set()
                for chunk in _chunks([pid for pid in unique if locate(requests, pid) is not None]):
                    marks = _marks(chunk)
                    labelled.update(
                        row[0]
                        for row in connection.execute(
                            f"SELECT prediction_id FROM feedback WHERE prediction_id IN ({marks})", chunk
                        )
                    )
                seen: set[str] = set()
                inserts: list[tuple[str, str, float]] = []
                for item in items:
                    pid = item.prediction_id
                    located = locate(requests, pid)
                    if pid in seen or pid in labelled:
                        duplicates.append(pid)
                    elif located is None:
                        unknown.append(pid)
                    else:
                        stored, index = located
                        inserts.append((pid, dumps(item.actual), received_at))
                        joined.append(
                            JoinedLabel(
                                prediction_id=pid,
                                model_name=stored.model_name,
                                model_version=stored.model_version,
                                prediction=stored.prediction(index),
                                actual=item.actual,
                                delay_seconds=max(0.0, received_at - stored.created_at),
                                slices=stored.slices(index),
                            )
                        )
                    seen.add(pid)
                connection.executemany("INSERT INTO feedback VALUES (?, ?, ?)", inserts)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        return FeedbackResult(joined=joined, unknown_ids=unknown, duplicate_ids=duplicates)

    def purge(self, now: float | None = None) -> int:
        """Delete predictions (and their labels) past retention or beyond `max_rows` now; returns rows deleted."""
        with self._reading() as connection:
            return self._retention.purge(connection, time.time() if now is None else now)

    def stats(self) -> LogStats:
        """Counts for diagnostics (`rows` is a full count: not for the request path)."""
        with self._reading() as connection:
            rows, oldest = connection.execute(
                "SELECT coalesce(sum(row_count), 0), min(created_at) FROM requests"
            ).fetchone()
        return self.health(rows=rows, oldest=oldest)

    def health(self, *, rows: int = 0, oldest: float | None = None) -> LogStats:
        """`stats` without the count of stored rows: cheap, for metric callbacks."""
        queue = self._writer.stats()
        with self._counts_lock:
            dropped, shadow_dropped = dict(self._dropped), self._shadow_dropped
        return LogStats(
            rows=rows,
            oldest=oldest,
            pending=queue.pending,
            failing=queue.failing,
            write_errors=queue.write_errors,
            dropped=dropped,
            shadow_dropped=shadow_dropped,
        )

    def _account(self, ticket: int | None, rows: int) -> None:
        """Count refused rows, and log when an episode of refusals starts and ends (not once per request)."""
        if ticket is not None and not self._dropping:
            return
        with self._counts_lock:
            if ticket is None:
                reason = "writer_failed" if self._writer.state is WriterState.FAILED else "queue_full"
                self._dropped[reason] += rows
                started, self._dropping = not self._dropping, True
            else:
                started, ended, self._dropping = False, self._dropping, False
            dropped = dict(self._dropped)
        if ticket is None and started:
            _log.warning(
                "prediction log cannot keep up; predictions are answered but not logged",
                path=str(self.path),
                reason=reason,
            )
        elif ticket is not None and ended:
            _log.info("prediction log accepting predictions again", path=str(self.path), dropped=dropped)

    def _flush_for_read(self) -> None:
        if not self.flush(_FLUSH_TIMEOUT):
            _log.warning("prediction log flush timed out; recent predictions may not join", path=str(self.path))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The caller-side connection, one thread at a time (request threads look up and add feedback)."""
        with self._reader_lock:
            if self._reader is None:
                raise RuntimeError(f"prediction log {self.path} is not open ({self._writer.state.value})")
            yield self._reader

    # --- on the writer thread -----------------------------------------------------------------------------
    def _encode(self, batch: list[_Operation]) -> _Rows:
        inserts: list[tuple[Any, ...]] = []
        shadows: list[tuple[str | None, str]] = []
        for operation in batch:
            if isinstance(operation, _ShadowUpdate):
                shadows.append((dumps(list(operation.predictions)), str(operation.request_id)))
                continue
            for request in operation:
                try:
                    inserts.append(request_row(request))
                except Exception as error:  # a bug upstream; log no message, it might quote a raw feature
                    with self._counts_lock:
                        self._dropped["unserializable"] += len(request.predictions)
                    _log.error("prediction not serializable; dropped", path=str(self.path), error=type(error).__name__)
        return inserts, shadows


def _write(connection: sqlite3.Connection, rows: _Rows) -> None:
    inserts, shadows = rows
    connection.executemany(_INSERT, inserts)
    connection.executemany(_SHADOW, shadows)


def _create_private(path: Path) -> None:
    """Create the file readable by its owner only, if it does not exist: it holds raw request bodies. SQLite gives
    its -wal and -shm files the database file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def _connect(path: Path, busy_timeout: float = _BUSY_TIMEOUT) -> sqlite3.Connection:
    # Autocommit mode (isolation_level=None): transactions are explicit BEGIN IMMEDIATE ... COMMIT.
    # `timeout` is SQLite's busy_timeout: several worker processes share the file and take turns writing.
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        connection.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; fsync at checkpoints
        connection.execute("PRAGMA journal_size_limit=67108864")  # WAL file truncated back to 64 MiB
    except BaseException:
        connection.close()
        raise
    return connection


def _requests(connection: sqlite3.Connection, prediction_ids: Iterable[str]) -> dict[str, StoredRequest]:
    """The stored requests that `prediction_ids` point into, by request id."""
    request_ids = list(dict.fromkeys(split[0] for pid in prediction_ids if (split := split_prediction_id(pid))))
    found: dict[str, StoredRequest] = {}
    for chunk in _chunks(request_ids):
        for row in connection.execute(_SELECT_REQUESTS.format(_marks(chunk)), chunk):
            found[row[0]] = StoredRequest(row)
    return found


def _marks(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]
