"""Worker memory under sustained load: RSS of the gunicorn worker after N requests, at checkpoints up to 1M.

    python -m benchmarks.memory --model DIR [--requests 1000000] [--first 10000] [--config full]

Bounded queues, windows and stores mean the RSS after the last checkpoint stays within 5% of the RSS after the
first. RSS is VmRSS from /proc/<worker>/status; the worker is the gunicorn master's child. Requests are counted by
wrk, which runs in chunks of seconds sized from the rate so far (wrk stops on time, not on a request count).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.configs import CONFIGS, Config
from benchmarks.measure import Setup, load, started

__all__ = ["checkpoints", "main", "measure_memory"]

_MAX_CHUNK_SECONDS = 60.0


def checkpoints(first: int, last: int, steps: int = 10) -> list[int]:
    """`first`, then `steps` evenly spaced counts up to `last` (10k, 100k, 200k, … 1M by default)."""
    spaced = [round(last * (i + 1) / steps) for i in range(steps)]
    return [first, *(count for count in spaced if count > first)]


def measure_memory(config: Config, setup: Setup, *, targets: Sequence[int], progress: bool = False) -> dict[str, Any]:
    """Load `config` until each target request count, reading the worker's RSS at each."""
    samples: list[dict[str, Any]] = []
    served, rate, errors = 0, 0.0, 0
    started_at = time.monotonic()
    with started(config, setup, setup.workdir / f"memory-{config.name}") as (server, _sink):
        for target in targets:
            while served < target:
                seconds = (target - served) / rate if rate else 1.0
                result = load(server, config, setup, min(max(seconds, 1.0), _MAX_CHUNK_SECONDS))
                served += result.requests
                errors += result.failed
                rate = result.rps or rate
            samples.append({
                "requests": served,
                "worker_rss_kib": server.rss_kib(),
                "master_rss_kib": server.master_rss_kib(),
                "elapsed_s": round(time.monotonic() - started_at, 1),
            })  # fmt: skip
            if progress:
                print(f"  memory: {served:>9,} requests, worker RSS {samples[-1]['worker_rss_kib'] / 1024:.1f} MiB")
        restarted = server.current_worker() != server.worker_pid
    first, last = samples[0]["worker_rss_kib"], samples[-1]["worker_rss_kib"]
    return {
        "config": config.name,
        "samples": samples,
        "rss_first_kib": first,
        "rss_last_kib": last,
        "rss_growth": round(last / first - 1, 4),
        "requests": served,
        "errors": errors,
        "worker_restarted": restarted,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.run import prepare  # the driver's setup: model, bodies, CPU placement

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="the last checkpoint")
    parser.add_argument("--first", type=int, default=10_000, help="the first checkpoint (the baseline RSS)")
    parser.add_argument("--config", default="full", choices=[config.name for config in CONFIGS])
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to CPUs")
    args = parser.parse_args(argv)
    config = next(config for config in CONFIGS if config.name == args.config)
    with tempfile.TemporaryDirectory(prefix="modellens-bench-") as workdir:
        setup = prepare(Path(workdir), pin=not args.no_pin)
        result = measure_memory(config, setup, targets=checkpoints(args.first, args.requests), progress=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
