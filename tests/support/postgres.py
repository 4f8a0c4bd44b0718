"""A real PostgreSQL server (Debian's `postgresql` package) in a temporary cluster on a free loopback port.

``with PostgresServer() as server:`` runs `initdb` into a temp dir (as the `postgres` user when the tests run as
root: PostgreSQL refuses to run as root), starts it with `pg_ctl` on 127.0.0.1 only, and on exit stops it and
deletes the cluster. Password authentication (SCRAM) is on, with a random password made for the run: no default
password exists anywhere. `stop()` and `start()` may be called in between, to play a database outage; the port and
the data survive them.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg

from .ports import LOOPBACK, free_port

__all__ = ["PostgresServer", "postgres_bindir"]

_USER = "modellens"
_START_TIMEOUT = 60


def postgres_bindir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: Debian keeps them off PATH, under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """A throw-away PostgreSQL cluster; `url(dbname)` connects to it with the run's password."""

    def __init__(self, *, durable: bool = False, cpus: str | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
        self._bindir = bindir
        self._durable = durable  # fsync on (benchmarks); tests run without it, which only risks an OS crash
        self._cpus = cpus  # e.g. "0": the server's processes run there (`taskset`; benchmarks keep it off theirs)
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self._dir: Path | None = None
        self._as_postgres = os.geteuid() == 0

    def __enter__(self) -> PostgresServer:
        self._dir = Path(tempfile.mkdtemp(prefix="modellens-pg-"))
        os.chmod(self._dir, 0o755)
        data = self._dir / "data"
        pwfile = self._dir / "password"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(self._dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(data), "-U", _USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        self.port = free_port()
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        assert self._dir is not None
        fsync = "on" if self._durable else "off"
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self._dir} -c fsync={fsync}"
            " -c max_connections=100 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl", "-D", str(self._dir / "data"), "-l", str(self._dir / "server.log"), "-w",
            "-t", str(_START_TIMEOUT), "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (clients disconnected, clean shutdown) or `immediate` (like a crash)."""
        if self._dir is None or not (self._dir / "data" / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", mode, "-w", "stop")

    def log_text(self) -> str:
        assert self._dir is not None
        path = self._dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- databases ----------------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{_USER}{secret}@{LOOPBACK}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its name."""
        name = name or f"log_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self._bindir / tool), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        if self._cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", self._cpus, *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=_START_TIMEOUT + 30, check=False)
        if result.returncode != 0:
            log = self.log_text() if self._dir is not None else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}")
