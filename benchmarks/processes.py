"""The processes a benchmark starts: the service under gunicorn, and the OTLP sink; optionally pinned to CPUs."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks import procstat

__all__ = ["REPO", "ServerProcess", "SinkProcess", "free_port", "pinned", "snapshot_sources", "source_fingerprint"]

REPO = Path(__file__).resolve().parent.parent
_READY_TIMEOUT = 90.0


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    """`argv` run under `taskset -c cpus` (taskset execs the command: the pid stays the same)."""
    if cpus is None or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", cpus, *argv]


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel picked it): free to bind, and refusing connections."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


_PACKAGES = ("service", "otel")


def source_fingerprint(root: Path = REPO) -> str:
    """A hash of the service's Python sources (service/, otel/) under `root`."""
    digest = hashlib.sha256()
    for path in sorted(path for package in _PACKAGES for path in (root / package).glob("**/*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def snapshot_sources(destination: Path) -> Path:
    """Copy service/ and otel/ to `destination`, which then serves as the working directory of every process.

    Others may edit the tree while a benchmark runs; started from the snapshot (`python -m` puts the working
    directory first on sys.path, before the editable install), every configuration measures the same code.
    """
    for package in _PACKAGES:
        shutil.copytree(REPO / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def _clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any OTEL_* or MODELLENS_* variable, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "MODELLENS_"))}
    env.update(extra)
    return env


class ServerProcess:
    """`python -m service.cli serve` (gunicorn: a master and one worker) with stdout and stderr in `log_path`."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path, cpus: str | None = None, cwd: Path = REPO) -> None:
        self.port = int(env["MODELLENS_PORT"])
        self._cwd = cwd
        self.log_path = log_path
        self._argv = pinned([sys.executable, "-m", "service.cli", "serve"], cpus)
        self._env = _clean_environment(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self.worker_pid = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def master_pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self._argv, env=self._env, cwd=self._cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def cpu_seconds(self) -> float:
        """CPU time of the master and the worker so far."""
        return procstat.cpu_seconds(self.master_pid) + procstat.cpu_seconds(self.worker_pid)

    def rss_kib(self) -> int:
        """The worker's resident set size."""
        return procstat.rss_kib(self.worker_pid)

    def master_rss_kib(self) -> int:
        return procstat.rss_kib(self.master_pid)

    def current_worker(self) -> int:
        """The worker's pid now (it differs from `worker_pid` if gunicorn had to restart the worker)."""
        workers = procstat.children(self.master_pid)
        return workers[0] if workers else 0

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM to gunicorn; after `grace` seconds (an exporter stuck on a dead endpoint) SIGKILL the group."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def tail(self, lines: int = 30) -> str:
        with self.log_path.open("rb") as log:
            log.seek(max(self.log_size() - 16384, 0))
            return "\n".join(log.read().decode("utf-8", "replace").splitlines()[-lines:])

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the service exited with code {self._proc.returncode}:\n{self.tail()}")
            if _get(self.port, "/readyz")[0] == 200:
                self.worker_pid = self.current_worker()
                if self.worker_pid:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready within {_READY_TIMEOUT}s:\n{self.tail()}")
            time.sleep(0.1)


class SinkProcess:
    """`python -m benchmarks.sink` in a process of its own; `stats()` reads its counters."""

    def __init__(self, mode: str, *, count: bool = False, cpus: str | None = None) -> None:
        argv = [sys.executable, "-m", "benchmarks.sink", "--mode", mode, *(["--count"] if count else [])]
        self._argv = pinned(argv, cpus)
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SinkProcess:
        self._proc = subprocess.Popen(
            self._argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the OTLP sink did not start: {line!r}")
        self.port = int(line.split()[-1])
        return self

    def stats(self) -> dict[str, int]:
        status, body = _get(self.port, "/stats")
        if status != 200:
            raise RuntimeError(f"the OTLP sink answered {status} to /stats")
        stats: dict[str, int] = {key: value for key, value in json.loads(body).items() if key != "mode"}
        return stats

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        with conn.getresponse() as response:
            return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()
