"""Counters from /proc: a process's CPU time and RSS, its children, and per-CPU busy time of the machine."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = ["CpuSample", "children", "cpu_seconds", "machine", "rss_kib", "sample_cpus"]

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces): state is [0]."""
    text = (_PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (utime + stime, all its threads)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) in KiB."""
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no VmRSS (a zombie?)")


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (a scan of /proc, which needs no kernel option)."""
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):  # the process exited while we looked
                continue
    return sorted(found)


@dataclass(frozen=True)
class CpuSample:
    """Busy and total seconds per CPU since boot, from /proc/stat (busy excludes idle and iowait)."""

    busy: tuple[float, ...]
    total: tuple[float, ...]

    def busy_since(self, earlier: CpuSample) -> tuple[float, ...]:
        """Busy seconds of each CPU between `earlier` and this sample."""
        return tuple(now - then for now, then in zip(self.busy, earlier.busy, strict=True))


def sample_cpus() -> CpuSample:
    busy, total = [], []
    for line in (_PROC / "stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(value) for value in values[:8]]  # user nice system idle iowait irq softirq steal
            total.append(sum(ticks) / _TICKS)
            busy.append((sum(ticks) - ticks[3] - ticks[4]) / _TICKS)
    return CpuSample(tuple(busy), tuple(total))


def machine() -> dict[str, object]:
    """What the results were measured on: CPUs, memory, kernel, Python and the packages that matter."""
    model = "unknown"
    for line in (_PROC / "cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in (_PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    packages: dict[str, str | None] = {}
    for name in ("flask", "gunicorn", "numpy", "scipy", "scikit-learn", "structlog", "opentelemetry-sdk",
                 "opentelemetry-exporter-otlp-proto-http", "opentelemetry-instrumentation-logging"):  # fmt: skip
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": packages,
        "loadavg_at_start": (_PROC / "loadavg").read_text().split()[:3],
    }
