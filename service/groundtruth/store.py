"""The prediction log: every acknowledged prediction in SQLite, so ground truth that arrives later still joins.

One SQLite row per `/predict` request, not per prediction: the request body exactly as received, and the
predictions as one JSON array. The id of prediction `i` is the request's random 96-bit id followed by `i` as 8 hex
digits, so a label finds its row, and its place in it, from the id alone. Writing a 1000-row request is then one
insert and no per-row encoding, which keeps the log off the batch path's critical cost.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import structlog

__all__ = [
    "FeedbackItem",
    "FeedbackResult",
    "JoinedLabel",
    "LogStats",
    "PredictionLog",
    "PredictionRequest",
    "StoredPrediction",
    "new_prediction_ids",
    "split_prediction_id",
]

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
# requests.body: the /predict body as received ({"instances": [...]}, validated JSON); predictions and
# shadow_predictions: JSON arrays in row order; slices: {slice feature: [slice value per row]}.
_INSERT = "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
_SHADOW = "UPDATE requests SET shadow_predictions = ? WHERE request_id = ?"
_SELECT_REQUESTS = (
    "SELECT request_id, trace_id, created_at, model_name, model_version, row_count, body, predictions,"
    " shadow_predictions, slices FROM requests WHERE request_id IN ({})"
)
_SELECT_LABELS = "SELECT prediction_id, actual, received_at FROM feedback WHERE prediction_id IN ({})"
_REQUEST_ID_HEX = 24  # 96 random bits per request
_INDEX_HEX = 8  # the row's index in its request
_BUSY_TIMEOUT = 5.0  # seconds a connection waits for another worker's write lock before it reports "locked"
_FLUSH_TIMEOUT = 5.0  # how long a join waits for this process's queued predictions to be committed
_MAX_BATCH_ROWS = 20_000  # rows per write transaction (a request is one insert), so producers get room back soon
_IN_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's bound-variable limit
_PURGE_CHUNK = 5000  # rows deleted per transaction, so other workers' writes interleave with a big purge
_PURGE_PASS = 4 * _PURGE_CHUNK  # rows deleted per pass of the writer, so queued predictions wait little
_INSERT_OP, _SHADOW_OP = 0, 1
# The writer commits queued rows once they are this old, or sooner when this many are waiting (or the queue is
# full, or on flush and close): one wake-up and one transaction per ~50 ms instead of one per request, which on
# the request threads' side is the difference between a lock hand-off per request and almost nothing.
_LINGER = 0.05
_WAKE_ROWS = 4096


@dataclass(frozen=True, slots=True)
class PredictionRequest:
    """One acknowledged `/predict` request. Its predictions' ids are `prediction_ids(request_id, rows)`."""

    request_id: str  # 24 hex digits (`new_prediction_ids`)
    trace_id: str | None
    created_at: float  # unix seconds
    model_name: str
    model_version: str
    body: bytes  # the request body as received: {"instances": [...]}
    # One per row, in row order; a float array is stored as float64 bytes (no per-value text encoding).
    predictions: Sequence[float | str] | np.ndarray
    slices: Mapping[str, Sequence[str]] | None = None  # slice feature → slice value per row

    @property
    def prediction_ids(self) -> list[str]:
        return _ids(self.request_id, len(self.predictions))


def new_prediction_ids(count: int) -> tuple[str, list[str]]:
    """A new random request id, and the ids of its `count` predictions (32 hex digits each)."""
    request_id = os.urandom(_REQUEST_ID_HEX // 2).hex()
    return request_id, _ids(request_id, count)


def split_prediction_id(prediction_id: str) -> tuple[str, int] | None:
    """The request id and row index a prediction id stands for; None if it is not one of ours."""
    if len(prediction_id) != _REQUEST_ID_HEX + _INDEX_HEX:
        return None
    try:
        int(prediction_id, 16)
    except ValueError:
        return None
    return prediction_id[:_REQUEST_ID_HEX], int(prediction_id[_REQUEST_ID_HEX:], 16)


_suffixes: list[str] = []  # "00000000", "00000001", …: formatted once, shared by every request


def _ids(request_id: str, count: int) -> list[str]:
    global _suffixes  # replaced whole, never mutated: safe to read from any thread
    suffixes = _suffixes
    if len(suffixes) < count:
        suffixes = _suffixes = [f"{index:08x}" for index in range(max(count, 2 * len(suffixes)))]
    return [request_id + suffix for suffix in suffixes[:count]]


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """A prediction read back from the log, with its ground truth if some has arrived."""

    prediction_id: str
    trace_id: str | None
    created_at: float
    model_name: str
    model_version: str
    inputs: dict[str, Any]
    prediction: Any
    shadow_prediction: Any
    slices: dict[str, str] | None
    actual: Any = None
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One ground-truth label for an earlier prediction."""

    prediction_id: str
    actual: float | str


@dataclass(frozen=True, slots=True)
class JoinedLabel:
    """A label joined to its prediction; the model name and version are the prediction's, not today's."""

    prediction_id: str
    model_name: str
    model_version: str
    prediction: Any
    actual: float | str
    delay_seconds: float
    slices: Mapping[str, str] | None


@dataclass(frozen=True)
class FeedbackResult:
    """What one batch of feedback did: the labels joined, and the ids that could not be (in request order)."""

    joined: list[JoinedLabel]
    unknown_ids: list[str]
    duplicate_ids: list[str]


@dataclass(frozen=True)
class LogStats:
    """A snapshot of the log: rows stored, oldest prediction, rows queued in this process, and trouble seen."""

    rows: int
    oldest: float | None
    pending: int
    blocked_count: int  # `record` calls that waited for room in the queue
    write_errors: int  # failed write attempts (each retried)
    dropped: int  # rows that could not be serialized at all (a bug upstream; logged)


class PredictionLog:
    """Predictions in a SQLite file (WAL, shared by every worker process), written by one background thread.

    `record` hands rows to the writer and returns at once; when `queue_size` rows are waiting it blocks until
    the writer catches up, so an acknowledged prediction is never dropped. `flush` waits for everything queued
    so far; `close` flushes and stops the writer (call it when the worker exits; `open` also registers it with
    `atexit`). Rows older than `retention_seconds`, and the oldest rows beyond `max_rows`, are purged by the
    writer every `purge_interval` seconds or after enough inserts; `None` keeps them.
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
        self._queue_size = queue_size
        self._purge_interval = purge_interval
        self._purge_every_rows = max(1000, (max_rows or 0) // 10)
        self._wake_rows = min(_WAKE_ROWS, queue_size)  # a full queue wakes the writer at once
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for rows
        self._space = threading.Condition(self._lock)  # producers wait here for room
        self._done = threading.Condition(self._lock)  # flushers wait here for commits
        self._queue: deque[tuple[int, Any, int]] = deque()  # (operation, payload, rows)
        self._pending_rows = 0  # rows queued or being written
        self._enqueued = 0  # operations accepted so far
        self._committed = 0  # operations written so far (a prefix of the queue order)
        self._writer_idle = False
        self._oldest = 0.0  # when the oldest queued operation arrived
        self._flushers = 0  # threads waiting in flush(): the writer does not linger for them
        self._state = "new"  # new → open (→ failed: the writer died) → closing → closed
        self._abandon = threading.Event()
        self._blocked = self._write_errors = self._dropped = 0
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    def open(self) -> PredictionLog:
        """Create the file and schema if needed, and start the writer thread."""
        if self._state != "new":
            raise RuntimeError(f"prediction log {self.path} is {self._state}; it can be opened once")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(self.path)
        try:
            writer.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            self._reader = _connect(self.path)
        except BaseException:
            writer.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(writer,), name="prediction-log", daemon=True)
        self._state = "open"
        self._thread.start()
        atexit.register(self.close)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, stop the writer and close the file. Idempotent; later `record`s raise."""
        with self._lock:
            if self._state in ("new", "closing", "closed"):  # "closing": another thread is closing it
                self._state = "closed" if self._state == "new" else self._state
                return
            self._state = "closing"  # from "open", or "failed" (the writer died; its thread is gone)
            self._work.notify()
            self._space.notify_all()
        thread = self._thread
        assert thread is not None
        thread.join(timeout)
        if thread.is_alive():
            self._abandon.set()
            thread.join(_BUSY_TIMEOUT + 1.0)
            _log.error("prediction log closed with unwritten rows", path=str(self.path), rows=self._pending_rows)
        with self._lock:
            self._state = "closed"
            self._done.notify_all()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        atexit.unregister(self.close)

    def __enter__(self) -> PredictionLog:
        return self.open() if self._state == "new" else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------------------
    def record(self, requests: Sequence[PredictionRequest]) -> None:
        """Queue requests for the writer. Blocks (counted in `blocked_count`) while the queue is full."""
        count = sum(len(request.predictions) for request in requests)
        if count:
            self._put(_INSERT_OP, requests, count)

    def record_shadow(self, request_id: str, shadow_predictions: Sequence[float | str]) -> None:
        """Queue the challenger's predictions for a request recorded earlier (written after its insert)."""
        self._put(_SHADOW_OP, (request_id, shadow_predictions), 1)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._enqueued
            self._flushers += 1
            self._work.notify()
            try:
                while self._committed < target and self._state in ("open", "closing"):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._done.wait(remaining)
                return self._committed >= target
            finally:
                self._flushers -= 1

    def _put(self, kind: int, payload: Any, rows: int) -> None:
        with self._lock:
            if self._state != "open":
                raise RuntimeError(f"prediction log {self.path} is not open ({self._state})")
            if self._pending_rows and self._pending_rows + rows > self._queue_size:
                self._blocked += 1
                while self._pending_rows and self._pending_rows + rows > self._queue_size:
                    self._space.wait()
                    if self._state != "open":
                        raise RuntimeError(f"prediction log {self.path} closed while waiting for room")
            if not self._queue:
                self._oldest = time.monotonic()
            self._queue.append((kind, payload, rows))
            self._pending_rows += rows
            self._enqueued += 1
            if self._writer_idle and self._pending_rows >= self._wake_rows:
                self._writer_idle = False
                self._work.notify()

    # --- reading and joining ------------------------------------------------------------------------------
    def lookup(self, ids: Iterable[str]) -> dict[str, StoredPrediction]:
        """The stored predictions among `ids` (after committing this process's queued rows)."""
        self._flush_for_read()
        wanted = list(dict.fromkeys(ids))
        found: dict[str, StoredPrediction] = {}
        with self._reading() as connection:
            requests = _requests(connection, wanted)
            labels: dict[str, tuple[str, float]] = {}
            for chunk in _chunks([pid for pid in wanted if _locate(requests, pid) is not None]):
                for pid, actual, received_at in connection.execute(_SELECT_LABELS.format(_marks(chunk)), chunk):
                    labels[pid] = (actual, received_at)
        for pid in wanted:
            located = _locate(requests, pid)
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
        `items`, is a duplicate (the first occurrence wins). Neither is stored.
        """
        self._flush_for_read()
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
                for chunk in _chunks([pid for pid in unique if _locate(requests, pid) is not None]):
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
                    located = _locate(requests, pid)
                    if pid in seen or pid in labelled:
                        duplicates.append(pid)
                    elif located is None:
                        unknown.append(pid)
                    else:
                        stored, index = located
                        inserts.append((pid, _dumps(item.actual), received_at))
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
            return self._purge(connection, time.time() if now is None else now)

    def stats(self) -> LogStats:
        """Counts for diagnostics (`rows` is a full count: not for the request path)."""
        with self._reading() as connection:
            rows, oldest = connection.execute(
                "SELECT coalesce(sum(row_count), 0), min(created_at) FROM requests"
            ).fetchone()
        with self._lock:
            return LogStats(
                rows=rows,
                oldest=oldest,
                pending=self._pending_rows,
                blocked_count=self._blocked,
                write_errors=self._write_errors,
                dropped=self._dropped,
            )

    def _flush_for_read(self) -> None:
        if not self.flush(_FLUSH_TIMEOUT):
            _log.warning("prediction log flush timed out; recent predictions may not join", path=str(self.path))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The caller-side connection, one thread at a time (request threads look up and add feedback)."""
        with self._reader_lock:
            if self._reader is None:
                raise RuntimeError(f"prediction log {self.path} is not open ({self._state})")
            yield self._reader

    # --- the writer thread --------------------------------------------------------------------------------
    def _run(self, connection: sqlite3.Connection) -> None:
        try:
            next_purge, inserted = time.monotonic(), 0  # purge first: the file may have aged while we were down
            while True:
                with self._lock:
                    while self._state == "open" and not self._due() and time.monotonic() < next_purge:
                        self._writer_idle = True
                        self._work.wait(_LINGER)
                    self._writer_idle = False
                    batch, rows = self._take()
                    if not batch and self._state != "open":
                        return
                if batch:
                    if not self._write(connection, batch):
                        return
                    with self._lock:
                        self._pending_rows -= rows
                        self._committed += len(batch)
                        self._space.notify_all()
                        self._done.notify_all()
                    inserted += rows
                if inserted >= self._purge_every_rows or time.monotonic() >= next_purge:
                    finished = self._purge_safely(connection)
                    # A big backlog (after a long downtime) is purged a pass at a time, between write batches.
                    next_purge = time.monotonic() + (self._purge_interval if finished else 0.0)
                    inserted = 0
        except Exception:
            _log.exception("prediction log writer failed; predictions are no longer recorded", path=str(self.path))
        finally:
            connection.close()
            with self._lock:
                if self._state == "open":
                    self._state = "failed"  # `record` raises from now on: no 200 for a row that is not logged
                self._space.notify_all()
                self._done.notify_all()

    def _due(self) -> bool:
        """Whether the queued operations should be written now (called with the lock held)."""
        if not self._queue:
            return False
        if self._flushers > 0 or self._pending_rows >= self._wake_rows:
            return True
        return time.monotonic() - self._oldest >= _LINGER

    def _take(self) -> tuple[list[tuple[int, Any, int]], int]:
        batch: list[tuple[int, Any, int]] = []
        rows = 0
        while self._queue and rows < _MAX_BATCH_ROWS:
            operation = self._queue.popleft()
            batch.append(operation)
            rows += operation[2]
        return batch, rows

    def _write(self, connection: sqlite3.Connection, batch: list[tuple[int, Any, int]]) -> bool:
        inserts: list[tuple[Any, ...]] = []
        shadows: list[tuple[str | None, str]] = []
        for kind, payload, _rows in batch:
            if kind == _SHADOW_OP:
                shadows.append((_dumps(list(payload[1])), str(payload[0])))
                continue
            for request in payload:
                try:
                    inserts.append(_row(request))
                except Exception as error:  # a bug upstream; log no message, it might quote a raw feature
                    self._dropped += 1
                    _log.error("prediction not serializable; dropped", path=str(self.path), error=type(error).__name__)
        delay = 0.05
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(_INSERT, inserts)
                connection.executemany(_SHADOW, shadows)
                connection.execute("COMMIT")
                return True
            except sqlite3.Error as error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                self._write_errors += 1
                _log.warning("prediction log write failed; retrying", path=str(self.path), error=str(error))
            if self._abandon.wait(delay):
                return False
            delay = min(2 * delay, 1.0)

    def _purge_safely(self, connection: sqlite3.Connection) -> bool:
        """One bounded purge pass; True when nothing is left to purge (or a retry can wait for the next pass)."""
        if self.retention_seconds is None and self.max_rows is None:
            return True
        try:
            deleted = self._purge(connection, time.time(), budget=_PURGE_PASS)
        except sqlite3.Error as error:
            _log.warning("prediction log purge failed", path=str(self.path), error=str(error))
            return True
        if deleted:
            _log.info("prediction log purged", path=str(self.path), rows=deleted)
        return deleted < _PURGE_PASS

    def _purge(self, connection: sqlite3.Connection, now: float, budget: int | None = None) -> int:
        """Delete whole requests, oldest first, with their labels; returns the predictions deleted."""
        deleted = 0
        left = math.inf if budget is None else budget
        if self.retention_seconds is not None:
            cutoff = now - self.retention_seconds
            query = "SELECT rowid, request_id, row_count FROM requests WHERE created_at < ? ORDER BY created_at LIMIT ?"
            while left > 0 and (count := _delete_chunk(connection, query, (cutoff, _PURGE_CHUNK), left)):
                deleted += count
                left -= count
        if self.max_rows is not None and left > 0:
            (rows,) = connection.execute("SELECT coalesce(sum(row_count), 0) FROM requests").fetchone()
            excess = min(rows - self.max_rows, left)
            query = "SELECT rowid, request_id, row_count FROM requests ORDER BY created_at, rowid LIMIT ?"
            while excess > 0 and (count := _delete_chunk(connection, query, (_PURGE_CHUNK,), excess)):
                deleted += count
                excess -= count
        return deleted


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode (isolation_level=None): transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
    # `timeout` is SQLite's busy_timeout: several worker processes share the file and take turns writing.
    connection = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        connection.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; fsync at checkpoints
        connection.execute("PRAGMA journal_size_limit=67108864")  # WAL file truncated back to 64 MiB
    except BaseException:
        connection.close()
        raise
    return connection


def _delete_chunk(connection: sqlite3.Connection, query: str, parameters: tuple[Any, ...], rows: float) -> int:
    """Delete the requests `query` selects, oldest first, until at least `rows` predictions are gone."""
    connection.execute("BEGIN IMMEDIATE")
    try:
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
            [(request_id, request_id + "f" * _INDEX_HEX) for _, request_id in victims],
        )
        connection.executemany("DELETE FROM requests WHERE rowid = ?", [(rowid,) for rowid, _ in victims])
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return deleted


class _StoredRequest:
    """A request row read back; its JSON columns are decoded on first use (a label needs only one row's)."""

    __slots__ = ("_cache", "_raw", "created_at", "model_name", "model_version", "row_count", "trace_id")

    def __init__(self, row: tuple[Any, ...]) -> None:
        _, self.trace_id, self.created_at, self.model_name, self.model_version, self.row_count = row[:6]
        self._raw = row[6:]  # body, predictions, shadow_predictions, slices
        self._cache: dict[int, Any] = {}

    def _decoded(self, column: int) -> Any:
        if column not in self._cache:
            raw = self._raw[column]
            self._cache[column] = None if raw is None else json.loads(raw)
        return self._cache[column]

    def inputs(self, index: int) -> dict[str, Any]:
        instances = self._decoded(0)["instances"]
        return dict(instances[index])

    def prediction(self, index: int) -> Any:
        """The prediction for row `index` (the column is decoded once, however many of its rows are asked for)."""
        if 1 not in self._cache:
            raw = self._raw[1]
            if isinstance(raw, bytes):  # float64 values; NaN reads back as null, as the JSON encoding writes it
                values = np.frombuffer(raw, dtype="<f8").tolist()
                self._cache[1] = [None if math.isnan(value) else value for value in values]
            else:
                self._cache[1] = json.loads(raw)
        return self._cache[1][index]

    def shadow(self, index: int) -> Any:
        shadow = self._decoded(2)
        return None if shadow is None or index >= len(shadow) else shadow[index]

    def slices(self, index: int) -> dict[str, str] | None:
        slices = self._decoded(3)
        return None if slices is None else {name: values[index] for name, values in slices.items()}


def _requests(connection: sqlite3.Connection, prediction_ids: Iterable[str]) -> dict[str, _StoredRequest]:
    """The stored requests that `prediction_ids` point into, by request id."""
    request_ids = list(dict.fromkeys(split[0] for pid in prediction_ids if (split := split_prediction_id(pid))))
    found: dict[str, _StoredRequest] = {}
    for chunk in _chunks(request_ids):
        for row in connection.execute(_SELECT_REQUESTS.format(_marks(chunk)), chunk):
            found[row[0]] = _StoredRequest(row)
    return found


def _locate(requests: Mapping[str, _StoredRequest], prediction_id: str) -> tuple[_StoredRequest, int] | None:
    split = split_prediction_id(prediction_id)
    if split is None:
        return None
    stored = requests.get(split[0])
    if stored is None or split[1] >= stored.row_count:
        return None
    return stored, split[1]


def _marks(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))


def _row(request: PredictionRequest) -> tuple[Any, ...]:
    return (
        str(request.request_id),
        None if request.trace_id is None else str(request.trace_id),
        float(request.created_at),
        str(request.model_name),
        str(request.model_version),
        len(request.predictions),
        bytes(request.body),
        _encode_predictions(request.predictions),
        None if request.slices is None else _dumps({name: list(values) for name, values in request.slices.items()}),
    )


def _encode_predictions(predictions: Sequence[float | str] | np.ndarray) -> bytes | str:
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind == "f":
        return predictions.astype("<f8", copy=False).tobytes()
    return _dumps(list(predictions))


def _dumps(value: Any) -> str:
    """Compact JSON; NaN and infinities (a missing numeric value) become null, numpy scalars plain numbers."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(_finite(value))


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    return tolist() if callable(tolist) else str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    tolist = getattr(value, "tolist", None)
    return _finite(tolist()) if callable(tolist) else value


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_plain)  # built once: fast


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]
