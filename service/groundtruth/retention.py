"""Retention: the prediction log's oldest requests deleted, whole and with their labels, past an age or a count."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import structlog

from service.groundtruth.database import Database

__all__ = ["Retention"]

# Every event of the prediction log comes from one logger, whichever module raises it: its name is in each record.
_log = structlog.get_logger("service.groundtruth.store")


@dataclass(frozen=True)
class Retention:
    """What the log in `database` keeps: predictions newer than `seconds`, and at most `max_rows`; `None` keeps all.

    A purge deletes `chunk_rows` requests per transaction, so other writers interleave with a big purge, and the
    writer's pass stops after `pass_rows` predictions, so predictions queued behind it wait little.
    """

    database: Database
    seconds: float | None
    max_rows: int | None
    chunk_rows: int = 5000
    pass_rows: int = 20_000

    def purge(self, connection: Any, now: float, budget: int | None = None) -> int:
        """Delete whole requests, oldest first, with their labels; returns the predictions deleted."""
        deleted = 0
        left = math.inf if budget is None else budget
        delete = self.database.delete_oldest
        if self.seconds is not None:
            cutoff = now - self.seconds
            while left > 0 and (count := delete(connection, cutoff, left, self.chunk_rows)):
                deleted += count
                left -= count
        if self.max_rows is not None and left > 0:
            rows, _ = self.database.summary(connection)
            excess = min(rows - self.max_rows, left)
            while excess > 0 and (count := delete(connection, None, excess, self.chunk_rows)):
                deleted += count
                excess -= count
        return deleted

    def purge_pass(self, connection: Any) -> bool:
        """One bounded purge pass; True when nothing is left to purge (or a retry can wait for the next pass)."""
        if self.seconds is None and self.max_rows is None:
            return True
        try:
            deleted = self.purge(connection, time.time(), budget=self.pass_rows)
        except self.database.errors as error:
            _log.warning("prediction log purge failed", path=self.database.name, error=str(error))
            return True
        if deleted:
            _log.info("prediction log purged", path=self.database.name, rows=deleted)
        return deleted < self.pass_rows
