"""The prediction log's write-behind queue: request threads hand over rows, one thread commits them in batches.

`put` queues an operation and returns at once with a ticket, or refuses it (returns None) when the queue already
holds `queue_size` rows or the writer thread is dead: serving never waits for a disk that is full or a lock that is
held. `wait(ticket, timeout)` lets the caller hold its answer until its rows are committed (the durable mode): the
writer commits whatever is queued as soon as anyone waits, so concurrent requests share one transaction (group
commit), and a writer that is failing or stuck in a commit answers `wait` at once with False instead of holding
requests. The writer thread retries a failed batch with back-off until it commits, and runs the log's purge every
`purge_interval` seconds or after `purge_every_rows` rows. What an operation means, how a batch turns into SQL and
which database takes it is the caller's (`encode`, `write`, `purge` and `errors`); this module owns the queue, the
thread and the order of commits, for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog

__all__ = ["WriteBehind", "WriterState", "WriterStats"]

# Every event of the prediction log comes from one logger, whichever module raises it: its name is in each record.
_log = structlog.get_logger("service.groundtruth.store")

_MAX_BATCH_ROWS = 20_000  # rows per write transaction (a request is one insert), so producers get room back soon
# The writer commits queued rows once they are this old, or sooner when this many are waiting (or the queue is
# full, or on flush and close): one wake-up and one transaction per ~50 ms instead of one per request, which on
# the request threads' side is the difference between a lock hand-off per request and almost nothing.
_LINGER = 0.05
_WAKE_ROWS = 4096

Operation = TypeVar("Operation")  # what `put` queues
Encoded = TypeVar("Encoded")  # a batch of operations, ready to write (encoded once, however often it is retried)


class _Closable(Protocol):
    def close(self) -> Any: ...


class WriterState(enum.Enum):
    """new → open (→ failed: the writer thread died) → closing → closed; one never opened goes new → closed."""

    NEW = "new"
    OPEN = "open"
    FAILED = "failed"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class WriterStats:
    """The queue's counters: rows not yet committed, and trouble seen."""

    pending: int  # rows queued or being written
    refused: int  # `put` calls refused: the queue was full, or the writer thread had died
    write_errors: int  # failed write attempts (each retried)
    failing: bool  # the last write attempt failed (cleared by the next commit), or the writer thread died


class WriteBehind(Generic[Operation, Encoded]):
    """Operations queued by any thread, committed in order by one background thread.

    `encode(batch)` runs once per batch on the writer thread; `write(connection, encoded)` writes it in one
    transaction and is retried, with back-off, while it raises one of `errors` (the database's own: disk full, a
    lock held, the server gone); `purge(connection)` runs one bounded purge pass and says whether nothing is left
    to purge. `name` says which log this is in messages (a path, or a URL without its password).
    """

    def __init__(
        self,
        name: str,
        *,
        queue_size: int,
        purge_interval: float,
        purge_every_rows: int,
        encode: Callable[[list[Operation]], Encoded],
        write: Callable[[Any, Encoded], None],
        purge: Callable[[Any], bool],
        errors: tuple[type[Exception], ...],
    ) -> None:
        self._name = name  # for messages and log events
        self._queue_size = queue_size
        self._purge_interval = purge_interval
        self._purge_every_rows = purge_every_rows
        self._wake_rows = min(_WAKE_ROWS, queue_size)  # a full queue wakes the writer at once
        self._encode = encode
        self._write = write
        self._purge = purge
        self._errors = errors
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for rows
        self._done = threading.Condition(self._lock)  # flush() and wait() wait here for commits
        self._queue: deque[tuple[Operation, int]] = deque()  # (operation, rows)
        self._pending_rows = 0  # rows queued or being written
        self._enqueued = 0  # operations accepted so far
        self._committed = 0  # operations written so far (a prefix of the queue order)
        self._writer_idle = False
        self._oldest = 0.0  # when the oldest queued operation arrived
        self._waiters = 0  # threads in flush() or wait(): the writer does not linger for them
        self._writing_since: float | None = None  # when the batch being written was taken
        self._failing = False
        self._state = WriterState.NEW
        self._abandon = threading.Event()
        self._refused = self._write_errors = 0
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> WriterState:
        return self._state

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self, connection: _Closable) -> None:
        """Start the writer thread on `connection` (it closes the connection when it stops)."""
        if self._state is not WriterState.NEW:
            raise RuntimeError(f"prediction log {self._name} is {self._state.value}; it can be opened once")
        self._thread = threading.Thread(target=self._run, args=(connection,), name="prediction-log", daemon=True)
        self._state = WriterState.OPEN
        self._thread.start()

    def close(self, timeout: float, *, grace: float) -> bool:
        """Write everything queued and stop the thread, abandoning the queue after `timeout` (+ `grace` for the
        database call in progress). False if there was nothing to stop: never started, or closed by another call."""
        with self._lock:
            if self._state in (WriterState.NEW, WriterState.CLOSING, WriterState.CLOSED):  # closing: another thread
                self._state = WriterState.CLOSED if self._state is WriterState.NEW else self._state
                return False
            self._state = WriterState.CLOSING  # from open, or failed (the writer died; its thread is gone)
            self._work.notify()
        thread = self._thread
        assert thread is not None
        thread.join(timeout)
        if thread.is_alive():
            self._abandon.set()
            thread.join(grace)
            _log.error("prediction log closed with unwritten rows", path=self._name, rows=self._pending_rows)
        with self._lock:
            self._state = WriterState.CLOSED
            self._done.notify_all()
        return True

    # --- producers ----------------------------------------------------------------------------------------
    def put(self, operation: Operation, rows: int) -> int | None:
        """Queue `operation` (`rows` rows' worth) and return its ticket for `wait`, or None (counted in `refused`)
        if the queue is full or the writer thread has died. Never blocks. An operation larger than the whole
        queue is accepted when the queue is empty."""
        with self._lock:
            if self._state is WriterState.FAILED or (
                self._pending_rows and self._pending_rows + rows > self._queue_size
            ):
                self._refused += 1
                return None
            if self._state is not WriterState.OPEN:
                raise RuntimeError(f"prediction log {self._name} is not open ({self._state.value})")
            if not self._queue:
                self._oldest = time.monotonic()
            self._queue.append((operation, rows))
            self._pending_rows += rows
            self._enqueued += 1
            if self._writer_idle and self._pending_rows >= self._wake_rows:
                self._writer_idle = False
                self._work.notify()
            return self._enqueued

    def wait(self, ticket: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the operation `ticket` names to be committed. False at once, without
        waiting, when the writer is failing, or has been inside one commit for longer than `timeout` already:
        a request then answers in normal time, and says its rows are only queued."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._waiters += 1
            if self._writer_idle:
                self._work.notify()
            try:
                while self._committed < ticket:
                    now = time.monotonic()
                    stuck = self._writing_since is not None and now - self._writing_since > timeout
                    if self._failing or stuck or now >= deadline or self._state is not WriterState.OPEN:
                        return False
                    self._done.wait(deadline - now)
                return True
            finally:
                self._waiters -= 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._enqueued
            self._waiters += 1
            self._work.notify()
            try:
                while self._committed < target and self._state in (WriterState.OPEN, WriterState.CLOSING):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._done.wait(remaining)
                return self._committed >= target
            finally:
                self._waiters -= 1

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                pending=self._pending_rows,
                refused=self._refused,
                write_errors=self._write_errors,
                failing=self._failing or self._state is WriterState.FAILED,
            )

    # --- the writer thread --------------------------------------------------------------------------------
    def _run(self, connection: Any) -> None:
        try:
            next_purge, inserted = time.monotonic(), 0  # purge first: the file may have aged while we were down
            while True:
                with self._lock:
                    while self._state is WriterState.OPEN and not self._due() and time.monotonic() < next_purge:
                        self._writer_idle = True
                        self._work.wait(_LINGER)
                    self._writer_idle = False
                    batch, rows = self._take()
                    if not batch and self._state is not WriterState.OPEN:
                        return
                    self._writing_since = time.monotonic() if batch else None
                if batch:
                    if not self._commit(connection, batch):
                        return
                    with self._lock:
                        self._writing_since = None
                        self._pending_rows -= rows
                        self._committed += len(batch)
                        self._done.notify_all()
                    inserted += rows
                if inserted >= self._purge_every_rows or time.monotonic() >= next_purge:
                    finished = self._purge(connection)
                    # A big backlog (after a long downtime) is purged a pass at a time, between write batches.
                    next_purge = time.monotonic() + (self._purge_interval if finished else 0.0)
                    inserted = 0
        except Exception:
            _log.exception("prediction log writer failed; predictions are no longer recorded", path=self._name)
        finally:
            connection.close()
            with self._lock:
                if self._state is WriterState.OPEN:
                    self._state = WriterState.FAILED  # `put` refuses from now on: each refusal is counted
                self._done.notify_all()

    def _due(self) -> bool:
        """Whether the queued operations should be written now (called with the lock held)."""
        if not self._queue:
            return False
        if self._waiters > 0 or self._pending_rows >= self._wake_rows:
            return True
        return time.monotonic() - self._oldest >= _LINGER

    def _take(self) -> tuple[list[Operation], int]:
        batch: list[Operation] = []
        rows = 0
        while self._queue and rows < _MAX_BATCH_ROWS:
            operation, count = self._queue.popleft()
            batch.append(operation)
            rows += count
        return batch, rows

    def _commit(self, connection: Any, batch: list[Operation]) -> bool:
        """Write `batch` in one transaction, retrying until it commits; False if `close` abandoned it."""
        encoded = self._encode(batch)
        delay, failed_at = 0.05, 0.0
        while True:
            try:
                self._write(connection, encoded)
                if failed_at:
                    with self._lock:
                        self._failing = False
                    _log.info(
                        "prediction log writes resumed",
                        path=self._name,
                        outage_seconds=round(time.monotonic() - failed_at, 3),
                        write_errors=self._write_errors,
                    )
                return True
            except self._errors as error:
                with self._lock:
                    self._write_errors += 1
                    self._failing = True
                    self._done.notify_all()  # durable waiters answer now: their rows are only queued
                if not failed_at:  # once per outage; the count of attempts is a metric
                    failed_at = time.monotonic()
                    _log.warning("prediction log write failed; retrying", path=self._name, error=str(error))
            if self._abandon.wait(delay):
                return False
            delay = min(2 * delay, 1.0)
