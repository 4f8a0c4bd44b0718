"""The prediction log: every acknowledged prediction in a database, so ground truth that arrives later still joins.

The database is SQLite on one host (`sqlite`, the embedded default) or PostgreSQL shared by every replica
(`postgresql`); `open_database` picks one from `MODELLENS_PREDICTION_LOG`. One row per `/predict` request, not per
prediction: the request body exactly as received, and the predictions as one column (`encoding`). A prediction's id
names its request and its row in it (`ids`), so a label finds its row from the id alone. Writing a 1000-row request
is then one insert and no per-row encoding, which keeps the log off the batch path's critical cost; the insert
itself happens on the write-behind thread (`writer`).
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import structlog

from service.groundtruth.database import Database, RequestRow, ShadowRow
from service.groundtruth.encoding import dumps
from service.groundtruth.errors import RETRY_AFTER, PredictionLogError, PredictionLogUnavailable
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
from service.groundtruth.sqlite import SqliteDatabase
from service.groundtruth.writer import WriteBehind, WriterState

__all__ = [
    "RETRY_AFTER",
    "LogStats",
    "PredictionLog",
    "PredictionLogError",
    "PredictionLogUnavailable",
    "is_database_url",
    "open_database",
]

_log = structlog.get_logger("service.groundtruth.store")

_CALL_GRACE = 6.0  # past close's timeout, how long the database call in progress may still take (lock, network)
_FLUSH_TIMEOUT = 5.0  # how long `lookup` waits for this process's queued predictions to be committed
_JOIN_WAIT = 1.0  # how long a join waits for them before it answers "retry later"
_URL_SCHEMES = ("postgresql://", "postgres://")


class _ShadowUpdate(NamedTuple):
    """The challenger's predictions for a request queued earlier (an update: the writer keeps the queue's order)."""

    request_id: str
    predictions: Sequence[float | str]


_Operation = Sequence[PredictionRequest] | _ShadowUpdate  # what the writer queues: one `record` or `record_shadow`
_Rows = tuple[list[RequestRow], list[ShadowRow]]  # (request inserts, shadow updates)


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


def is_database_url(location: str) -> bool:
    """Whether `MODELLENS_PREDICTION_LOG` names a PostgreSQL database rather than a SQLite file."""
    return location.strip().lower().startswith(_URL_SCHEMES)


def open_database(location: Path | str, *, password_file: Path | None = None) -> Database:
    """The database `location` names: a `postgresql://` URL, or a SQLite file path."""
    if isinstance(location, str) and is_database_url(location):
        try:
            from service.groundtruth.postgresql import PostgresDatabase  # psycopg is loaded only when it is used
        except ImportError as error:
            raise PredictionLogError(
                f"a postgresql:// prediction log needs psycopg ({error}): pip install 'modellens[postgresql]'"
            ) from None
        return PostgresDatabase(location, password_file=password_file)
    return SqliteDatabase(Path(location))


class PredictionLog:
    """Predictions in a database (every worker, and with PostgreSQL every replica, shares it), written by one
    background thread per process.

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
        database: Database | Path | str,
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
        self.database = database if not isinstance(database, Path | str) else open_database(database)
        self.name = self.database.name
        self.retention_seconds = retention_seconds
        self.max_rows = max_rows
        self._retention = Retention(self.database, retention_seconds, max_rows)
        self._writer: WriteBehind[_Operation, _Rows] = WriteBehind(
            self.name,
            queue_size=queue_size,
            purge_interval=purge_interval,
            purge_every_rows=max(1000, (max_rows or 0) // 10),
            encode=self._encode,
            write=self._write,
            purge=self._retention.purge_pass,
            errors=self.database.errors,
        )
        self._dropped = {"queue_full": 0, "writer_failed": 0, "unserializable": 0}
        self._shadow_dropped = 0
        self._dropping = False  # in an episode of refused rows: logged once when it starts and once when it ends
        self._counts_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------------
    def open(self) -> PredictionLog:
        """Create the schema if needed (or migrate it), and start the writer thread."""
        if self._writer.state is not WriterState.NEW:
            raise RuntimeError(f"prediction log {self.name} is {self._writer.state.value}; it can be opened once")
        writing = self.database.open()
        self._writer.start(writing)
        atexit.register(self.close)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, stop the writer and close the file. Idempotent; later `record`s raise."""
        if not self._writer.close(timeout, grace=_CALL_GRACE):
            return  # never opened, or another thread is closing it
        self.database.close()
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
        try:
            with self.database.reading() as connection:
                requests = self._requests(connection, wanted)
                labels = self.database.labels(connection, [pid for pid in wanted if locate(requests, pid) is not None])
        except self.database.errors as error:
            raise PredictionLogUnavailable(f"the prediction log {self.name} cannot be read: {error}") from error
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
            raise PredictionLogUnavailable(f"the prediction log {self.name} is behind or failing to write")
        try:
            return self._join(items, now)
        except self.database.errors as error:
            raise PredictionLogUnavailable(f"the prediction log {self.name} cannot store feedback: {error}") from error

    def _join(self, items: Sequence[FeedbackItem], now: float | None) -> FeedbackResult:
        received_at = time.time() if now is None else now
        unique = list(dict.fromkeys(item.prediction_id for item in items))
        with self.database.reading() as connection:
            requests = self._requests(connection, unique)
            first: dict[str, FeedbackItem] = {}  # the first label of each known id: the one that may be stored
            for item in items:
                if item.prediction_id not in first and locate(requests, item.prediction_id) is not None:
                    first[item.prediction_id] = item
            stored = self.database.insert_labels(
                connection, [(pid, dumps(item.actual), received_at) for pid, item in first.items()]
            )
        joined: list[JoinedLabel] = []
        unknown: list[str] = []
        duplicates: list[str] = []
        for item in items:
            pid = item.prediction_id
            located = locate(requests, pid)
            if located is None:
                unknown.append(pid)
            elif first.get(pid) is not item or pid not in stored:  # a repeat, or labelled already (anywhere)
                duplicates.append(pid)
            else:
                request, index = located
                joined.append(
                    JoinedLabel(
                        prediction_id=pid,
                        model_name=request.model_name,
                        model_version=request.model_version,
                        prediction=request.prediction(index),
                        actual=item.actual,
                        delay_seconds=max(0.0, received_at - request.created_at),
                        slices=request.slices(index),
                        probabilities=request.probabilities(index),
                    )
                )
        return FeedbackResult(joined=joined, unknown_ids=unknown, duplicate_ids=duplicates)

    def purge(self, now: float | None = None) -> int:
        """Delete predictions (and their labels) past retention or beyond `max_rows` now; returns rows deleted."""
        with self.database.reading() as connection:
            return self._retention.purge(connection, time.time() if now is None else now)

    def stats(self) -> LogStats:
        """Counts for diagnostics (`rows` is a full count: not for the request path)."""
        with self.database.reading() as connection:
            rows, oldest = self.database.summary(connection)
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
                path=self.name,
                reason=reason,
            )
        elif ticket is not None and ended:
            _log.info("prediction log accepting predictions again", path=self.name, dropped=dropped)

    def _flush_for_read(self) -> None:
        if not self.flush(_FLUSH_TIMEOUT):
            _log.warning("prediction log flush timed out; recent predictions may not join", path=self.name)

    def _requests(self, connection: Any, prediction_ids: Iterable[str]) -> dict[str, StoredRequest]:
        """The stored requests that `prediction_ids` point into, by request id."""
        request_ids = dict.fromkeys(split[0] for pid in prediction_ids if (split := split_prediction_id(pid)))
        return self.database.requests(connection, request_ids)

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
                    _log.error("prediction not serializable; dropped", path=self.name, error=type(error).__name__)
        return inserts, shadows

    def _write(self, connection: Any, rows: _Rows) -> None:
        self.database.write(connection, *rows)
