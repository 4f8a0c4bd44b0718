"""Measured runs: configurations serving (with their OTLP endpoints), loaded with wrk in bursts, read from /proc."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import procstat
from benchmarks.configs import COMMON, Config
from benchmarks.load import LoadResult, run_wrk
from benchmarks.processes import REPO, ServerProcess, SinkProcess, free_port

__all__ = ["Served", "Setup", "burst", "serving", "started"]


@dataclass(frozen=True)
class Setup:
    """What every run shares: the model, the request bodies, where files go, and the CPU placement."""

    model_dir: Path
    bodies: dict[str, Path]  # load ("single", "batch") → bodies file, one JSON body per line
    rows: dict[str, int]  # load → rows per request
    workdir: Path
    server_cpus: str | None  # e.g. "1": the server (master and worker) runs there
    client_cpus: str | None  # e.g. "0": wrk and the OTLP sink run there
    threads: int = 2
    connections: int = 8
    count_exports: bool = True  # the sink decodes exports and counts spans, points and log records
    source_dir: Path = REPO  # where service/ and otel/ are imported from (a snapshot, see `snapshot_sources`)
    postgresql: Callable[[], str] | None = None  # a URL of a new database, for configurations that log there


@contextlib.contextmanager
def started(config: Config, setup: Setup, run_dir: Path) -> Iterator[tuple[ServerProcess, SinkProcess | None]]:
    """The configuration's service, serving on a free port, with its OTLP endpoint (a sink process, or none)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sink = None
        env = {key: value.format(run_dir=run_dir) for key, value in config.env.items()}
        if config.postgresql:
            if setup.postgresql is None:
                raise RuntimeError(f"{config.name} needs a PostgreSQL server; none was started")
            env["MODELLENS_PREDICTION_LOG"] = setup.postgresql()
        if config.otlp == "refused":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        elif config.otlp is not None:
            sink = stack.enter_context(
                SinkProcess(config.otlp, count=setup.count_exports and config.otlp == "ok", cpus=setup.client_cpus)
            )
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        env.update(COMMON)
        env.update({"MODELLENS_MODEL_DIR": str(setup.model_dir), "MODELLENS_PORT": str(free_port())})
        server = stack.enter_context(
            ServerProcess(env, log_path=run_dir / "server.log", cpus=setup.server_cpus, cwd=setup.source_dir)
        )
        yield server, sink


def load(server: ServerProcess, config: Config, setup: Setup, seconds: float) -> LoadResult:
    return run_wrk(
        f"{server.url}/predict",
        load=config.load,
        bodies=setup.bodies[config.load],
        seconds=seconds,
        threads=setup.threads,
        connections=setup.connections,
        cpus=setup.client_cpus,
    )


@dataclass
class Served:
    """A configuration serving (with its OTLP sink) for a whole group of runs, and how its warm-up went."""

    config: Config
    server: ServerProcess
    sink: SinkProcess | None
    warm: LoadResult
    sent: int = 0  # requests answered so far: the warm-up and every burst

    def exported_per_request(self) -> dict[str, float]:
        """Spans, metric points and log records the sink received per request sent, over the server's whole life
        so far (a burst's own count misses what its last export batch delivers after it ends)."""
        if self.sink is None or not self.sent:
            return {}
        stats = self.sink.stats()
        return {
            key.removesuffix("_items"): round(v / self.sent, 3) for key, v in stats.items() if key.endswith("_items")
        }


@contextlib.contextmanager
def serving(
    configs: list[Config], setup: Setup, *, warmup: float
) -> Iterator[tuple[dict[str, Served], dict[str, str]]]:
    """Every configuration started and warmed up, serving until the block ends: their runs then take turns
    (A B A B …) as bursts against servers that stay up, so the two runs of a pair are seconds apart, not the
    minutes that starting each run afresh takes. Yields the served configurations by name, and the error of each
    configuration that could not start (the others still run)."""
    with contextlib.ExitStack() as stack:
        served: dict[str, Served] = {}
        failed: dict[str, str] = {}
        for config in configs:
            try:
                server, sink = stack.enter_context(started(config, setup, setup.workdir / config.name))
                warm = load(server, config, setup, warmup)
                served[config.name] = Served(config, server, sink, warm, sent=warm.requests)
            except Exception as error:
                failed[config.name] = f"{type(error).__name__}: {error}"
        yield served, failed


def burst(served: Served, setup: Setup, *, round_: int, seconds: float) -> dict[str, Any]:
    """Measure one run of `seconds` s against a configuration that is already serving; return its record."""
    server, sink = served.server, served.sink
    before = _Counters.read(server, sink)
    result = load(server, served.config, setup, seconds)
    served.sent += result.requests
    after = _Counters.read(server, sink)
    rss = server.rss_kib()
    restarted = server.current_worker() != server.worker_pid
    return _record(served.config, setup, round_, served.warm, result, before, after, rss, restarted)


@dataclass(frozen=True)
class _Counters:
    at: float
    server_cpu: float
    sink_cpu: float
    cpus: procstat.CpuSample
    log_bytes: int
    exports: dict[str, int]

    @classmethod
    def read(cls, server: ServerProcess, sink: SinkProcess | None) -> _Counters:
        return cls(
            at=time.monotonic(),
            server_cpu=server.cpu_seconds(),
            sink_cpu=procstat.cpu_seconds(sink.pid) if sink is not None else 0.0,
            cpus=procstat.sample_cpus(),
            log_bytes=server.log_size(),
            exports=sink.stats() if sink is not None else {},
        )


def _record(
    config: Config,
    setup: Setup,
    round_: int,
    warm: LoadResult,
    result: LoadResult,
    before: _Counters,
    after: _Counters,
    rss_kib: int,
    restarted: bool,
) -> dict[str, Any]:
    requests = max(result.requests, 1)
    server_cpu = after.server_cpu - before.server_cpu
    sink_cpu = after.sink_cpu - before.sink_cpu
    busy = after.cpus.busy_since(before.cpus)
    server_core_busy = None
    if setup.server_cpus is not None and setup.server_cpus.isdigit():
        server_core_busy = busy[int(setup.server_cpus)]
    exports = {key: after.exports.get(key, 0) - before.exports.get(key, 0) for key in after.exports}
    rows = setup.rows[config.load]
    return {
        "config": config.name,
        "round": round_,
        "load": config.load,
        "rows_per_request": rows,
        "requests": result.requests,
        "seconds": round(result.seconds, 3),
        "rps": round(result.rps, 2),
        "rows_per_s": round(result.rps * rows, 1),
        "latency_ms": result.latency_ms,
        "errors": result.errors,
        "server_cpu_s": round(server_cpu, 3),
        "cpu_per_request_us": round(server_cpu / requests * 1e6, 1),
        "server_cores": round(server_cpu / result.seconds, 3) if result.seconds else 0.0,
        "client_cpu_s": result.client_cpu_seconds,
        "sink_cpu_s": round(sink_cpu, 3),
        # Busy time no process of ours accounts for (other work on the machine, kernel network processing);
        # on the server's own core it is what stole time from the server.
        "other_cpu_s": round(sum(busy) - server_cpu - result.client_cpu_seconds - sink_cpu, 3),
        "other_on_server_core_s": round(server_core_busy - server_cpu, 3) if server_core_busy is not None else None,
        "worker_rss_kib": rss_kib,
        "worker_restarted": restarted,
        "stdout_bytes_per_request": round((after.log_bytes - before.log_bytes) / requests, 1),
        "exports": exports,
        "exported_per_request": {
            key.removesuffix("_items"): round(value / requests, 3)
            for key, value in exports.items()
            if key.endswith("_items")
        },
        "warmup": {"requests": warm.requests, "rps": round(warm.rps, 2), "errors": warm.errors},
    }
