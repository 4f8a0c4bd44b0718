"""Retention: the prediction log's oldest requests deleted, whole and with their labels, past an age or a count."""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service.groundtruth.ids import prediction_id_range

__all__ = ["Retention"]

# Every event of the prediction log comes from one logger, whichever module raises it: its name is in each record.
_log = structlog.get_logger("service.groundtruth.store")


@dataclass(frozen=True)
class Retention:
    """What the log at `path` keeps: predictions newer than `seconds`, and at most `max_rows`; `None` keeps all.

    A purge deletes `chunk_rows` per transaction, so other workers' writes interleave with a big purge, and the
    writer's pass stops after `pass_rows`, so predictions queued behind it wait little.
    """

    path: Path
    seconds: float | None
    max_rows: int | None
    chunk_rows: int = 5000
    pass_rows: int = 20_000

    def purge(self, connection: sqlite3.Connection, now: float, budget: int | None = None) -> int:
        """Delete whole requests, oldest first, with their labels; returns the predictions deleted."""
        deleted = 0
        left = math.inf if budget is None else budget
        if self.seconds is not None:
            cutoff = now - self.seconds
            query = "SELECT rowid, request_id, row_count FROM requests WHERE created_at < ? ORDER BY created_at LIMIT ?"
            while left > 0 and (count := _delete_chunk(connection, query, (cutoff, self.chunk_rows), left)):
                deleted += count
                left -= count
        if self.max_rows is not None and left > 0:
            (rows,) = connection.execute("SELECT coalesce(sum(row_count), 0) FROM requests").fetchone()
            excess = min(rows - self.max_rows, left)
            query = "SELECT rowid, request_id, row_count FROM requests ORDER BY created_at, rowid LIMIT ?"
            while excess > 0 and (count := _delete_chunk(connection, query, (self.chunk_rows,), excess)):
                deleted += count
                excess -= count
        return deleted

    def purge_pass(self, connection: sqlite3.Connection) -> bool:
        """One bounded purge pass; True when nothing is left to purge (or a retry can wait for the next pass)."""
        if self.seconds is None and self.max_rows is None:
            return True
        try:
            deleted = self.purge(connection, time.time(), budget=self.pass_rows)
        except sqlite3.Error as error:
            _log.warning("prediction log purge failed", path=str(self.path), error=str(error))
            return True
        if deleted:
            _log.info("prediction log purged", path=str(self.path), rows=deleted)
        return deleted < self.pass_rows


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
            [prediction_id_range(request_id) for _, request_id in victims],
        )
        connection.executemany("DELETE FROM requests WHERE rowid = ?", [(rowid,) for rowid, _ in victims])
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return deleted
