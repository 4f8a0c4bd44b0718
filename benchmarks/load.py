"""Drive a server with wrk (a separate C program: the client never shares the server's interpreter)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.processes import pinned

__all__ = ["SCRIPTS", "LoadResult", "run_wrk", "wrk_available"]

SCRIPTS = {
    "single": Path(__file__).resolve().parent / "wrk_post.lua",
    "batch": Path(__file__).resolve().parent / "wrk_batch.lua",
}
_MARKER = "WRK_JSON "


@dataclass(frozen=True)
class LoadResult:
    """What wrk saw: completed requests, their latency percentiles (ms), errors; and wrk's own CPU time."""

    requests: int
    seconds: float
    latency_ms: dict[str, float]  # "50", "75", "90", "99", "99.9", "mean", "max"
    errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, status (non-2xx/3xx), timeout
    client_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 2)}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    load: str,
    bodies: Path | None,
    seconds: float,
    threads: int = 2,
    connections: int = 8,
    cpus: str | None = None,
    timeout: float = 30.0,
) -> LoadResult:
    """`wrk -t{threads} -c{connections} -d{seconds}s --latency` POSTing `load` bodies to `url`.

    `timeout` is wrk's per-request timeout: generous, so a slow response is measured, not dropped as an error.
    """
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(round(seconds), 1)}s", f"--timeout={round(timeout)}s",
        "--latency", "-s", str(SCRIPTS[load]), url,
    ]  # fmt: skip
    if bodies is not None:
        argv += ["--", str(bodies)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        pinned(argv, cpus), capture_output=True, text=True, timeout=seconds + timeout + 60, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}")
    return _parse(completed.stdout, client_cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))


def _parse(stdout: str, *, client_cpu: float) -> LoadResult:
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line.removeprefix(_MARKER))
            break
    else:
        raise RuntimeError(f"wrk printed no summary line (is the script's done() running?):\n{stdout}")
    latency = data["latency_us"]
    latency_ms = {key: value / 1000 for key, value in latency["percentiles"].items()}
    latency_ms["mean"], latency_ms["max"] = latency["mean"] / 1000, latency["max"] / 1000
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        latency_ms={key: round(value, 3) for key, value in latency_ms.items()},
        errors={key: int(value) for key, value in data["errors"].items()},
        client_cpu_seconds=round(client_cpu, 3),
    )
