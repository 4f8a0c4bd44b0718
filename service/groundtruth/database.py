"""What the prediction log asks of a database. SQLite (`sqlite`, the embedded default: one file per host) and
PostgreSQL (`postgresql`: one database that every replica shares) each answer it; `store` and `retention` hold
the log's rules and speak only this interface, so both backends keep one contract.

Connections are the backend's own objects. The writer thread holds the one `open` returns, for writes and purges;
request threads borrow one from `reading` for lookups and the feedback join.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from service.groundtruth.rows import StoredRequest

__all__ = ["Database", "LabelRow", "RequestRow", "ShadowRow"]

RequestRow = tuple[Any, ...]  # `rows.request_row`: a request in the table's column order
ShadowRow = tuple[str | None, str]  # (the challenger's predictions as JSON, request id)
LabelRow = tuple[str, str, float]  # (prediction id, the label as JSON, received at)


class Database(Protocol):
    """Where the prediction log's rows live. Methods that take a connection run on the caller's thread with it;
    each write method is one transaction of its own."""

    @property
    def name(self) -> str:
        """Which log this is, for messages and log lines: a path, or a URL with its password masked."""

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What a failing database raises (full disk, a held lock, a server that is down): the writer retries
        them, the feedback join turns them into "retry later"."""

    def open(self) -> Any:
        """Create or migrate the schema and return the writer thread's connection (the writer closes it).
        Raises `PredictionLogError` naming the location and the cause."""

    def close(self) -> None:
        """Close the connections request threads read with."""

    def reading(self) -> AbstractContextManager[Any]:
        """A connection for one lookup or join on a request thread."""

    def write(self, connection: Any, inserts: Sequence[RequestRow], shadows: Sequence[ShadowRow]) -> None:
        """Insert requests (one already stored is kept as it is) and set challenger predictions, in one
        transaction."""

    def requests(self, connection: Any, request_ids: Iterable[str]) -> dict[str, StoredRequest]:
        """The stored requests among `request_ids`, by request id."""

    def labels(self, connection: Any, prediction_ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        """The stored labels among `prediction_ids`: (label as JSON, received at) by prediction id."""

    def insert_labels(self, connection: Any, rows: Sequence[LabelRow]) -> set[str]:
        """Store labels whose prediction has none yet, atomically against any other writer (another thread,
        worker or replica); the ids stored. An id that already had a label is not in the result."""

    def delete_oldest(self, connection: Any, older_than: float | None, rows: float, limit: int) -> int:
        """Delete whole requests with their labels, oldest first (only those created before `older_than` if it is
        given), at most `limit` requests, until at least `rows` predictions are gone; the predictions deleted."""

    def summary(self, connection: Any) -> tuple[int, float | None]:
        """Predictions stored, and when the oldest was made (a full count: not for the request path)."""
