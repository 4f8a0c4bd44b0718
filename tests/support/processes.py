"""Run a subprocess for a test: wait until it answers HTTP, always stop its whole process group."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["ServiceProcess", "ServiceStartError"]

_TAIL_LINES = 50
_POLL_INTERVAL = 0.1


class ServiceStartError(RuntimeError):
    """The process exited early or was not ready in time; the message ends with its last output lines."""


class ServiceProcess:
    """A subprocess in a new session, with stdout and stderr captured to temp files.

    ``with ServiceProcess(argv, ready_url=...) as proc:`` starts it and waits until an HTTP GET of
    ``ready_url`` answers 200. Leaving the block stops the whole process group (SIGTERM, then SIGKILL after
    ``stop_timeout``) and deletes the temp files; the captured output stays readable afterwards.
    ``env`` is merged over ``os.environ``; a ``None`` value removes that variable.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ready_url: str | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.argv = list(argv)
        self.ready_url = ready_url
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._env = dict(env or {})
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._final_output: tuple[str, str] | None = None

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, ``None`` while running; ``-N`` means killed by signal N."""
        return self._popen.poll()

    def start(self) -> ServiceProcess:
        """Start the process and wait for readiness; on failure stop it and raise ``ServiceStartError``."""
        if self._proc is not None:
            raise RuntimeError("ServiceProcess can only be started once")
        env = dict(os.environ)
        for key, value in self._env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self._dir = Path(tempfile.mkdtemp(prefix="modellens-proc-"))
        try:
            with open(self._dir / "stdout", "wb") as out, open(self._dir / "stderr", "wb") as err:
                self._proc = subprocess.Popen(
                    self.argv,
                    env=env,
                    cwd=self._cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit on its own; returns the exit code (raises ``TimeoutExpired``)."""
        return self._popen.wait(timeout)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` to the main process only (as ``docker stop`` does) and wait for it to exit.

        After ``timeout`` seconds the whole process group is killed. Returns the exit code.
        """
        if self._popen.poll() is None:
            try:
                self._popen.send_signal(sig)
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGKILL)
                self._popen.wait()
        return self._popen.returncode

    def stop(self) -> int | None:
        """Stop the whole process group and delete the temp files (idempotent); returns the exit code."""
        if self._proc is None:
            return None
        try:
            if self._proc.poll() is None:
                self._kill_group(signal.SIGTERM)
                try:
                    self._proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._kill_group(signal.SIGKILL)
                    self._proc.wait()
            self._kill_group(signal.SIGKILL)  # children that outlived the main process
        finally:
            if self._dir is not None:
                self._final_output = (self._read("stdout"), self._read("stderr"))
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
        return self._proc.returncode

    def output(self) -> str:
        """Everything written so far: stdout, then stderr."""
        return self._read("stdout") + self._read("stderr")

    def stdout_lines(self) -> list[str]:
        """Lines written to stdout so far."""
        return self._read("stdout").splitlines()

    def stderr_lines(self) -> list[str]:
        """Lines written to stderr so far."""
        return self._read("stderr").splitlines()

    @property
    def _popen(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("ServiceProcess has not been started")
        return self._proc

    def _read(self, stream: str) -> str:
        if self._dir is None:
            if self._final_output is None:
                return ""
            return self._final_output[0 if stream == "stdout" else 1]
        return (self._dir / stream).read_bytes().decode("utf-8", errors="replace")

    def _kill_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, sig)

    def _wait_ready(self) -> None:
        if self.ready_url is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                raise ServiceStartError(f"{self.argv[0]} exited with code {code} before it was ready{self._tail()}")
            if _answers_200(self.ready_url, timeout=2.0):
                return
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"{self.argv[0]} did not answer 200 at {self.ready_url} within {self.ready_timeout}s{self._tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _tail(self) -> str:
        lines = self.output().splitlines()[-_TAIL_LINES:]
        return f"\n--- argv: {self.argv}\n--- last {len(lines)} lines of output:\n" + "\n".join(lines)


def _answers_200(url: str, timeout: float) -> bool:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", target)
        with conn.getresponse() as response:
            response.read()
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
