"""The write-behind queue on its own: its states, a writer thread that dies, and a close that has to give up."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.groundtruth.writer import WriteBehind, WriterState


def _connect(path: Path) -> sqlite3.Connection:
    # A short busy timeout: a test that holds the write lock sees retries within a fraction of a second.
    return sqlite3.connect(path, timeout=0.1, isolation_level=None, check_same_thread=False)


def _insert(connection: sqlite3.Connection, values: list[int]) -> None:
    with connection:  # one transaction, rolled back if the insert fails
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO t VALUES (?)", [(value,) for value in values])


def _nothing_to_purge(connection: sqlite3.Connection) -> bool:
    return True


def _writer(path: Path, encode: Callable[[list[int]], list[int]] = list) -> WriteBehind[int, list[int]]:
    with closing(_connect(path)) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return WriteBehind(
        str(path),
        queue_size=100,
        purge_interval=60.0,
        purge_every_rows=1000,
        encode=encode,
        write=_insert,
        purge=_nothing_to_purge,
        errors=(sqlite3.Error,),
    )


def _stored(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as connection:
        return [value for (value,) in connection.execute("SELECT x FROM t ORDER BY rowid")]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


class TestStates:
    """new → open → closing → closed: rows are accepted only while open, and a writer starts once."""

    def test_open_then_closed(self, path: Path) -> None:
        writer = _writer(path)
        assert writer.state is WriterState.NEW
        with pytest.raises(RuntimeError, match=r"not open \(new\)"):
            writer.put(1, 1)
        writer.start(_connect(path))
        assert writer.state is WriterState.OPEN
        for value in range(5):
            writer.put(value, 1)
        assert writer.close(10.0, grace=1.0)  # writes what is queued
        assert writer.state is WriterState.CLOSED
        assert _stored(path) == [0, 1, 2, 3, 4]
        assert not writer.close(10.0, grace=1.0)  # idempotent
        with pytest.raises(RuntimeError, match=r"not open \(closed\)"):
            writer.put(5, 1)
        with pytest.raises(RuntimeError, match="opened once"):
            writer.start(_connect(path))

    def test_closing_one_never_started(self, path: Path) -> None:
        writer = _writer(path)
        assert not writer.close(10.0, grace=1.0)
        assert writer.state is WriterState.CLOSED
        with pytest.raises(RuntimeError, match=r"is closed; it can be opened once"):
            writer.start(_connect(path))


class TestWriterFailure:
    """A writer thread that dies fails the queue: rows are refused (and counted), never queued to be lost."""

    def test_a_dead_writer_refuses_rows_and_flush_returns(self, path: Path) -> None:
        def broken(batch: list[int]) -> list[int]:
            raise ValueError("a bug in the encoding")

        writer = _writer(path, encode=broken)
        writer.start(_connect(path))
        writer.put(1, 1)
        assert not writer.flush(timeout=5)
        assert writer.state is WriterState.FAILED
        assert writer.put(2, 1) is None
        stats = writer.stats()
        assert (stats.refused, stats.failing) == (1, True)
        assert writer.close(10.0, grace=1.0)
        assert writer.state is WriterState.CLOSED
        assert _stored(path) == []


class TestNeverBlocks:
    """`put` refuses instead of waiting; `wait` gives up at once on a writer that is failing or stuck."""

    def test_a_full_queue_refuses_and_takes_rows_again_once_written(self, path: Path) -> None:
        writer = _writer(path)  # queue of 100 rows
        writer.start(_connect(path))
        try:
            with closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
                other_worker.execute("BEGIN IMMEDIATE")  # our writer cannot commit
                tickets = [writer.put(value, 10) for value in range(12)]
                assert all(ticket is not None for ticket in tickets[:10])
                assert tickets[10:] == [None, None]  # the queue holds 100 rows: the rest are refused, not waited for
                assert writer.stats().refused == 2
                other_worker.execute("COMMIT")
            assert writer.flush(timeout=10)
            assert writer.put(99, 10) is not None
            assert writer.flush(timeout=10)
        finally:
            writer.close(10.0, grace=1.0)
        assert _stored(path) == [*range(10), 99]

    def test_wait_returns_once_committed(self, path: Path) -> None:
        writer = _writer(path)
        writer.start(_connect(path))
        try:
            ticket = writer.put(7, 1)
            assert ticket is not None
            assert writer.wait(ticket, timeout=10)
            assert _stored(path) == [7]  # committed when wait returned: another connection reads it
        finally:
            writer.close(10.0, grace=1.0)

    def test_wait_gives_up_on_a_failing_writer_and_it_recovers_by_itself(self, path: Path) -> None:
        writer = _writer(path)
        writer.start(_connect(path))
        try:
            with capture_logs() as events, closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
                other_worker.execute("BEGIN IMMEDIATE")
                first = writer.put(1, 1)
                assert first is not None
                assert not writer.wait(first, timeout=0.5)  # its own busy timeout (0.1 s) passes first: failing
                assert writer.stats().failing
                second = writer.put(2, 1)
                assert second is not None
                started = time.monotonic()
                assert not writer.wait(second, timeout=30.0)
                assert time.monotonic() - started < 25.0  # it did not sit out its 30 s: the writer is failing
                other_worker.execute("COMMIT")
                assert writer.flush(timeout=10)
                assert not writer.stats().failing
            assert writer.wait(second, timeout=1.0)
        finally:
            writer.close(10.0, grace=1.0)
        assert _stored(path) == [1, 2]
        said = [event["event"] for event in events]
        assert said == ["prediction log write failed; retrying", "prediction log writes resumed"]  # once each


class TestAbandon:
    """A close that cannot write (another process holds the lock) gives up after its timeout, and says so."""

    def test_close_gives_up_on_a_locked_file(self, path: Path) -> None:
        writer = _writer(path)
        writer.start(_connect(path))
        with closing(sqlite3.connect(path, isolation_level=None)) as other_worker:
            other_worker.execute("BEGIN IMMEDIATE")  # holds the write lock for the whole close
            writer.put(1, 1)
            started = time.monotonic()
            assert writer.close(0.3, grace=2.0)
            assert time.monotonic() - started < 3.0
            assert writer.state is WriterState.CLOSED
            stats = writer.stats()
            assert (stats.pending, stats.write_errors > 0) == (1, True)
            other_worker.execute("COMMIT")
        assert _stored(path) == []
