"""The prediction log in one SQLite file (WAL): the embedded default, shared by every worker on one host.

The file holds raw request bodies, so it is created readable by its owner only. Every worker process opens it;
SQLite's write lock makes them take turns (`_BUSY_TIMEOUT`), and WAL lets readers and the writer overlap.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.groundtruth.database import LabelRow, RequestRow, ShadowRow
from service.groundtruth.errors import PredictionLogError
from service.groundtruth.ids import prediction_id_range
from service.groundtruth.rows import StoredRequest

__all__ = ["SqliteDatabase"]

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
    slices TEXT,
    probabilities BLOB
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
# [slice value per row]}; probabilities: a calibrated classifier's, float32 rows × classes. A row is written by
# `rows.request_row` and read back by `rows.StoredRequest`.
_INSERT = "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)"
# A file made before the probabilities column gains it (SQLite adds a nullable column without rewriting rows).
_ADD_PROBABILITIES = "ALTER TABLE requests ADD COLUMN probabilities BLOB"
_SHADOW = "UPDATE requests SET shadow_predictions = ? WHERE request_id = ?"
_SELECT_REQUESTS = (
    "SELECT request_id, trace_id, created_at, model_name, model_version, row_count, body, predictions,"
    " shadow_predictions, slices, probabilities FROM requests WHERE request_id IN ({})"
)
_SELECT_LABELS = "SELECT prediction_id, actual, received_at FROM feedback WHERE prediction_id IN ({})"
_BUSY_TIMEOUT = 5.0  # seconds the writer waits for another worker's write lock before it reports "locked"
_READ_BUSY_TIMEOUT = 1.0  # the same for a request thread's join: past it, the client is told to retry
_OPEN_ATTEMPTS = 3  # tries to open a busy file at start-up (each waits its busy timeout), 0.2 s, 0.4 s apart
_IN_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's bound-variable limit


class SqliteDatabase:
    """The log's tables in the SQLite file at `path`; request threads share one reader connection, in turn."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    busy_timeout = _BUSY_TIMEOUT

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.path)

    def open(self) -> sqlite3.Connection:
        """The writer's connection, with the schema in place. A file another worker is writing to can answer
        "locked" without waiting its busy timeout (switching to WAL, recovering the WAL index), so a starting
        worker tries again for a few seconds rather than failing to boot and taking gunicorn down with it."""
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                return self._open()
            except _Busy:
                time.sleep(0.2 * (attempt + 1))
        return self._open(retry=False)

    def _open(self, *, retry: bool = True) -> sqlite3.Connection:
        try:
            _create_private(self.path)
            writing = _connect(self.path)
        except (OSError, sqlite3.Error) as error:
            if retry and _is_busy(error):
                raise _Busy from error
            raise PredictionLogError(f"cannot open the prediction log {self.path}: {error}") from error
        try:
            writing.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            with _transaction(writing):
                columns = {row[1] for row in writing.execute("PRAGMA table_info(requests)")}
                if "probabilities" not in columns:
                    writing.execute(_ADD_PROBABILITIES)
            self._reader = _connect(self.path, busy_timeout=_READ_BUSY_TIMEOUT)
        except sqlite3.Error as error:
            writing.close()
            if retry and _is_busy(error):
                raise _Busy from error
            raise PredictionLogError(f"cannot write the prediction log {self.path}: {error}") from error
        except BaseException:
            writing.close()
            raise
        return writing

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The caller-side connection, one thread at a time (request threads look up and add feedback)."""
        with self._reader_lock:
            if self._reader is None:
                raise RuntimeError(f"prediction log {self.path} is not open")
            yield self._reader

    def write(
        self, connection: sqlite3.Connection, inserts: Sequence[RequestRow], shadows: Sequence[ShadowRow]
    ) -> None:
        with _transaction(connection):
            connection.executemany(_INSERT, inserts)
            connection.executemany(_SHADOW, shadows)

    def requests(self, connection: sqlite3.Connection, request_ids: Iterable[str]) -> dict[str, StoredRequest]:
        found: dict[str, StoredRequest] = {}
        for chunk in _chunks(list(request_ids)):
            for row in connection.execute(_SELECT_REQUESTS.format(_marks(chunk)), chunk):
                found[row[0]] = StoredRequest(row)
        return found

    def labels(self, connection: sqlite3.Connection, prediction_ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        labels: dict[str, tuple[str, float]] = {}
        for chunk in _chunks(list(prediction_ids)):
            for pid, actual, received_at in connection.execute(_SELECT_LABELS.format(_marks(chunk)), chunk):
                labels[pid] = (actual, received_at)
        return labels

    def insert_labels(self, connection: sqlite3.Connection, rows: Sequence[LabelRow]) -> set[str]:
        # Read and insert under one write lock (BEGIN IMMEDIATE): another worker cannot label an id in between.
        with _transaction(connection):
            labelled = set(self.labels(connection, [row[0] for row in rows]))
            fresh = [row for row in rows if row[0] not in labelled]
            connection.executemany("INSERT INTO feedback VALUES (?, ?, ?)", fresh)
        return {row[0] for row in fresh}

    def delete_oldest(self, connection: sqlite3.Connection, older_than: float | None, rows: float, limit: int) -> int:
        parameters: tuple[Any, ...]
        if older_than is None:
            query, parameters = (
                "SELECT rowid, request_id, row_count FROM requests ORDER BY created_at, rowid LIMIT ?",
                (limit,),
            )
        else:
            query, parameters = (
                "SELECT rowid, request_id, row_count FROM requests WHERE created_at < ? ORDER BY created_at LIMIT ?",
                (older_than, limit),
            )
        with _transaction(connection):
            victims: list[tuple[int, str]] = []
            deleted = 0
            for rowid, request_id, row_count in connection.execute(query, parameters).fetchall():
                if deleted >= rows:
                    break
                victims.append((rowid, request_id))
                deleted += row_count
            # A request's labels are the feedback ids that start with its id: one range scan of the primary key.
            connection.executemany(
                "DELETE FROM feedback WHERE prediction_id BETWEEN ? AND ?",
                [prediction_id_range(request_id) for _, request_id in victims],
            )
            connection.executemany("DELETE FROM requests WHERE rowid = ?", [(rowid,) for rowid, _ in victims])
        return deleted

    def summary(self, connection: sqlite3.Connection) -> tuple[int, float | None]:
        rows, oldest = connection.execute(
            "SELECT coalesce(sum(row_count), 0), min(created_at) FROM requests"
        ).fetchone()
        return int(rows), oldest


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


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


class _Busy(Exception):
    """Opening found the file locked by another connection; `open` tries again."""


def _is_busy(error: Exception) -> bool:
    """SQLite's "database is locked" (or "busy"): another connection holds the lock."""
    message = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and ("locked" in message or "busy" in message)


def _marks(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]
