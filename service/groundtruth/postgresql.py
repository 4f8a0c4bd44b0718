"""The prediction log in PostgreSQL: one database that every replica writes to and joins feedback against.

A label sent to any replica finds the prediction any other replica served. Each process keeps the same write-behind
queue as with SQLite (`writer`): its writer thread holds one connection of its own, reconnecting after the server
went away, and request threads borrow from a small pool for lookups and joins. Two replicas labelling the same id
at once store it once: the insert is `ON CONFLICT DO NOTHING ... RETURNING`, and only the returned ids count as
joined. Purges take `FOR UPDATE SKIP LOCKED`, so replicas purging together delete different requests and never
wait on each other or on writers.

The password comes from the URL, from libpq's own `PGPASSWORD` or `PGPASSFILE`, or from `password_file` (a file
holding only the password, as container secrets are mounted). It never appears in `name`, nor in any message this
module raises or logs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import structlog
from psycopg.conninfo import conninfo_to_dict

from service.groundtruth.database import LabelRow, RequestRow, ShadowRow
from service.groundtruth.errors import PredictionLogError
from service.groundtruth.ids import prediction_id_range
from service.groundtruth.rows import StoredRequest

__all__ = ["MIGRATIONS", "PostgresDatabase"]

_log = structlog.get_logger("service.groundtruth.store")

# Forward migrations: version n is MIGRATIONS[n - 1]. Append a new version; never edit one that has shipped.
# Tables carry a `prediction_` prefix: the database may be shared with other applications. Ids are hex text in
# the "C" collation, so a request's prediction ids sort together byte by byte (one index range scan per request).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE prediction_requests (
            request_id text COLLATE "C" PRIMARY KEY,
            trace_id text,
            created_at double precision NOT NULL,
            model_name text NOT NULL,
            model_version text NOT NULL,
            row_count integer NOT NULL,
            body bytea NOT NULL,
            predictions bytea,
            predictions_json text,
            shadow_predictions text,
            slices text,
            CHECK ((predictions IS NULL) <> (predictions_json IS NULL))
        )""",
        "CREATE INDEX prediction_requests_created_at ON prediction_requests (created_at)",
        """CREATE TABLE prediction_feedback (
            prediction_id text COLLATE "C" PRIMARY KEY,
            actual text NOT NULL,
            received_at double precision NOT NULL
        )""",
    ),
    # 2: a calibrated classifier's class probabilities per row (float32 bytes), for ROC AUC and calibration.
    ("ALTER TABLE prediction_requests ADD COLUMN probabilities bytea",),
)
# predictions: float64 bytes for a regression model's floats; predictions_json: a JSON array otherwise (`encoding`).
# The two bytea columns go in binary (%b), as they are: text format would hex-escape every byte of the body.
_INSERT = (
    "INSERT INTO prediction_requests (request_id, trace_id, created_at, model_name, model_version, row_count, body,"
    " predictions, predictions_json, slices, probabilities) VALUES (%s, %s, %s, %s, %s, %s, %b, %b, %s, %s, %b)"
    " ON CONFLICT (request_id) DO NOTHING"  # a batch retried after a commit whose answer was lost
)
_SHADOW = "UPDATE prediction_requests SET shadow_predictions = %s WHERE request_id = %s"
_SELECT_REQUESTS = (
    "SELECT request_id, trace_id, created_at, model_name, model_version, row_count, body,"
    " coalesce(predictions, convert_to(predictions_json, 'UTF8')), predictions IS NULL, shadow_predictions, slices,"
    " probabilities FROM prediction_requests WHERE request_id = ANY(%s)"
)
_SELECT_LABELS = "SELECT prediction_id, actual, received_at FROM prediction_feedback WHERE prediction_id = ANY(%s)"
_INSERT_LABELS = (
    "INSERT INTO prediction_feedback (prediction_id, actual, received_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[])"
    " ON CONFLICT (prediction_id) DO NOTHING RETURNING prediction_id"
)
_SCHEMA_LOCK = 0x6D6F64656C6C656E  # pg_advisory_xact_lock key ("modellen"): replicas starting together migrate once
_CONNECT_TIMEOUT = 3  # seconds to reach the server before a connection attempt counts as failed
_POOL_WAIT = 1.0  # how long a request thread waits for a pooled connection before it answers "retry later"
_POOL_SIZE = 4  # request-thread connections per process (joins and lookups; writes have their own)
# Server-side bounds on one statement and on a lock wait: a stuck server fails the call instead of holding it.
_OPTIONS = "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000"


class PostgresDatabase:
    """The log's tables in the PostgreSQL database `url` names (`postgresql://user@host:port/dbname`)."""

    errors: tuple[type[Exception], ...] = (psycopg.Error,)  # psycopg_pool.PoolTimeout is an OperationalError

    def __init__(self, url: str, *, password_file: Path | None = None, pool_size: int = _POOL_SIZE) -> None:
        try:
            parts = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise PredictionLogError(
                "MODELLENS_PREDICTION_LOG is not a valid postgresql:// URL (the value is not repeated here: it may"
                " hold a password)"
            ) from None
        self._url = url
        self._secrets = [str(parts["password"])] if parts.get("password") else []
        self._kwargs: dict[str, Any] = {
            "autocommit": True,  # transactions are explicit: `connection.transaction()`
            "connect_timeout": _CONNECT_TIMEOUT,
            "application_name": "modellens",
            "options": _OPTIONS,
        }
        if password_file is not None:
            try:
                password = password_file.read_text().strip()
            except OSError as error:
                raise PredictionLogError(
                    f"cannot read the prediction log's password file {password_file}: {error}"
                ) from None
            self._kwargs["password"] = password
            self._secrets.append(password)
        self._pool_size = pool_size
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        user = f"{parts['user']}@" if parts.get("user") else ""
        port = f":{parts['port']}" if parts.get("port") else ""
        self._name = f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"

    @property
    def name(self) -> str:
        return self._name

    def open(self) -> _WriterConnection:
        writer = _WriterConnection(self)
        try:
            _migrate(writer.get())
        except psycopg.Error as error:
            writer.close()
            raise PredictionLogError(f"cannot open the prediction log {self.name}: {self.scrub(error)}") from None
        except BaseException:
            writer.close()
            raise
        self._pool = psycopg_pool.ConnectionPool(
            self._url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=_POOL_WAIT,
            check=psycopg_pool.ConnectionPool.check_connection,  # a connection the server dropped is replaced
            name="modellens-prediction-log",
        )
        self._pool.open(wait=False)
        return writer

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close(timeout=5.0)
            self._pool = None

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is None:
            raise RuntimeError(f"prediction log {self.name} is not open")
        try:
            with self._pool.connection() as connection:
                yield connection
        except psycopg.Error as error:
            raise type(error)(self.scrub(error)) from None

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection (the writer's; the pool makes its own)."""
        try:
            return psycopg.connect(self._url, **self._kwargs)
        except psycopg.Error as error:
            raise type(error)(self.scrub(error)) from None

    def scrub(self, error: BaseException) -> str:
        """`error`'s message with any password this database was given masked (libpq may quote a conninfo)."""
        message = str(error).strip()
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    # --- the writer thread's connection -------------------------------------------------------------------
    def write(self, connection: _WriterConnection, inserts: Sequence[RequestRow], shadows: Sequence[ShadowRow]) -> None:
        with connection.transaction() as cursor:
            cursor.executemany(_INSERT, [_split_predictions(row) for row in inserts])
            cursor.executemany(_SHADOW, shadows)

    def delete_oldest(self, connection: Any, older_than: float | None, rows: float, limit: int) -> int:
        where = "" if older_than is None else "WHERE created_at < %(cutoff)s "
        query = (
            f"SELECT request_id, row_count FROM prediction_requests {where}"
            "ORDER BY created_at, request_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
        )
        with _transaction(connection) as cursor:
            victims: list[str] = []
            deleted = 0
            for request_id, row_count in cursor.execute(query, {"cutoff": older_than, "limit": limit}).fetchall():
                if deleted >= rows:
                    break
                victims.append(request_id)
                deleted += row_count
            cursor.executemany(
                "DELETE FROM prediction_feedback WHERE prediction_id BETWEEN %s AND %s",
                [prediction_id_range(request_id) for request_id in victims],
            )
            cursor.execute("DELETE FROM prediction_requests WHERE request_id = ANY(%s)", (victims,))
        return deleted

    def summary(self, connection: Any) -> tuple[int, float | None]:
        with _cursor(connection) as cursor:
            row = cursor.execute(
                "SELECT coalesce(sum(row_count), 0), min(created_at) FROM prediction_requests"
            ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    # --- request threads' connections ---------------------------------------------------------------------
    def requests(self, connection: psycopg.Connection[Any], request_ids: Iterable[str]) -> dict[str, StoredRequest]:
        found: dict[str, StoredRequest] = {}
        for row in connection.execute(_SELECT_REQUESTS, (list(request_ids),)):
            *head, predictions, is_json, shadow, slices, probabilities = row
            found[row[0]] = StoredRequest(
                (*head, predictions.decode() if is_json else predictions, shadow, slices, probabilities)
            )
        return found

    def labels(
        self, connection: psycopg.Connection[Any], prediction_ids: Sequence[str]
    ) -> dict[str, tuple[str, float]]:
        rows = connection.execute(_SELECT_LABELS, (list(prediction_ids),))
        return {pid: (actual, received_at) for pid, actual, received_at in rows}

    def insert_labels(self, connection: psycopg.Connection[Any], rows: Sequence[LabelRow]) -> set[str]:
        if not rows:
            return set()
        # In id order: two replicas labelling overlapping ids in different orders would otherwise each hold a row
        # the other waits for, and PostgreSQL would abort one of them as a deadlock.
        ids, actuals, received = (list(column) for column in zip(*sorted(rows), strict=True))
        with connection.transaction():
            return {pid for (pid,) in connection.execute(_INSERT_LABELS, (ids, actuals, received))}


class _WriterConnection:
    """The writer thread's connection: made on first use, and made again after the server dropped it."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # `close` may come from another thread (a close that abandons the writer)

    def get(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._connection is None or self._connection.closed or self._connection.broken:
                self._connection = self._database.connect()
            return self._connection

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        connection = self.get()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                yield cursor
        except psycopg.OperationalError as error:
            self.close()  # the next attempt reconnects
            raise type(error)(self._database.scrub(error)) from None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


@contextmanager
def _transaction(connection: _WriterConnection | psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
    if isinstance(connection, _WriterConnection):
        with connection.transaction() as cursor:
            yield cursor
    else:
        with connection.transaction(), connection.cursor() as cursor:
            yield cursor


@contextmanager
def _cursor(connection: _WriterConnection | psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
    raw = connection.get() if isinstance(connection, _WriterConnection) else connection
    with raw.cursor() as cursor:
        yield cursor


def _migrate(connection: psycopg.Connection[Any]) -> None:
    """Bring the schema to the newest version, once however many replicas start at the same moment."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS prediction_log_schema (version integer PRIMARY KEY, applied_at timestamptz"
            " NOT NULL DEFAULT now())"
        )
        row = connection.execute("SELECT coalesce(max(version), 0) FROM prediction_log_schema").fetchone()
        current = int(row[0]) if row else 0
        if current > len(MIGRATIONS):
            raise PredictionLogError(
                f"the prediction log's schema is at version {current}, newer than this modellens knows"
                f" ({len(MIGRATIONS)}); upgrade modellens, or point it at another database"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1]:
                connection.execute(statement)
            connection.execute("INSERT INTO prediction_log_schema (version) VALUES (%s)", (version,))
            _log.info("prediction log schema migrated", version=version)


def _split_predictions(row: RequestRow) -> RequestRow:
    """`rows.request_row`'s predictions column as the two columns PostgreSQL types: float64 bytes, or JSON."""
    predictions = row[7]
    is_json = isinstance(predictions, str)
    return (*row[:7], None if is_json else predictions, predictions if is_json else None, row[8], row[9])
