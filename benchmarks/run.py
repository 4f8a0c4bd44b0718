"""The benchmark driver: every configuration under the same load, interleaved, plus micro and memory benchmarks.

    python -m benchmarks.run [--short] [--out benchmarks/results/<timestamp>.json] [--update-benchmarks-md]

Trains a diabetes model into a temp dir, writes request bodies from its training rows, runs the in-process
micro-benchmarks, then, group by group (overhead, outages, batch), starts every configuration of the group under
gunicorn at once, warms each up and runs `--rounds` rounds of short wrk bursts, one per configuration (the order
rotates each round: A B C, B C A, …), so the runs compared in a ratio are seconds apart and machine drift shows
instead of biasing one configuration. The servers are started `--instances` times, each start running its share of
the rounds, so one process's luck (hash seed, memory layout) does not decide a ratio; then the memory run. Writes
the raw runs, medians, ratios and goal checks as JSON, and the same as Markdown beside it. `--short` proves the
harness works in seconds; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import procstat, report
from benchmarks.bodies import write_bodies
from benchmarks.configs import CONFIGS, Config
from benchmarks.load import wrk_available
from benchmarks.measure import Served, Setup, burst, serving
from benchmarks.memory import checkpoints, measure_memory
from benchmarks.processes import REPO, pinned, snapshot_sources, source_fingerprint
from service.artifact.card import ModelCard
from tests.support.postgres import PostgresServer

__all__ = ["main", "prepare"]

RESULTS = REPO / "benchmarks" / "results"
_SKIPPABLE = ("micro", "memory", "outages", "batch")
_SETTLE = 6.0  # seconds after a group's last burst before its sinks are read (the batch exporters' 5 s delay)
_CONTENDED = 0.25  # share of a run's duration other processes may take on the server's core before it is redone


def prepare(workdir: Path, *, pin: bool) -> Setup:
    """Snapshot the sources, train the model, write the request bodies, decide where server and client run."""
    source_dir = snapshot_sources(workdir / "src")
    model_dir = workdir / "model"
    subprocess.run(
        [sys.executable, "-m", "service.cli", "train", "--output", str(model_dir)],
        cwd=source_dir, check=True, capture_output=True,
    )  # fmt: skip
    card = ModelCard.load(model_dir)
    bodies = {
        "single": write_bodies(card, workdir / "single.jsonl", bodies=256, rows=1),
        "batch": write_bodies(card, workdir / "batch.jsonl", bodies=4, rows=1000, seed=1),
    }
    server_cpus = client_cpus = None
    if pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        # Two cores: the server (one worker, so at most about one core) gets CPU 1, everything else CPU 0.
        server_cpus, client_cpus = "1", "0"
        os.sched_setaffinity(0, {0})  # this driver too: it mostly waits, but never on the server's core
    return Setup(
        model_dir=model_dir, bodies=bodies, rows={"single": 1, "batch": 1000}, workdir=workdir,
        server_cpus=server_cpus, client_cpus=client_cpus, source_dir=source_dir,
    )  # fmt: skip


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        completed = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return completed.stdout.strip()

    return {
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--", "service", "otel")),
    }


def _selected(args: argparse.Namespace) -> list[Config]:
    names = [name.strip() for name in args.configs.split(",")] if args.configs else None
    configs = [config for config in CONFIGS if names is None or config.name in names]
    if names is not None and len(configs) != len(names):
        known = ", ".join(config.name for config in CONFIGS)
        raise SystemExit(f"unknown configuration in --configs {args.configs!r}; known: {known}")
    skipped = {{"outages": "outage", "batch": "batch"}.get(part) for part in args.skip}
    return [config for config in configs if names is not None or config.group not in skipped]


def _micro(setup: Setup, *, short: bool, window_rows: int | None) -> dict[str, Any]:
    out = setup.workdir / "micro.json"
    argv = [sys.executable, "-m", "benchmarks.micro", "--model", str(setup.model_dir), "--json", str(out)]
    argv += ["--short"] if short else []
    argv += ["--window-rows", str(window_rows)] if window_rows else []
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
    }  # benchmarks/ from the repository, service/ and otel/ from the snapshot
    subprocess.run(pinned(argv, setup.server_cpus), cwd=setup.source_dir, env=env, check=True)
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def _groups(configs: list[Config]) -> list[tuple[str, list[Config]]]:
    """The configurations by report group (overhead, outage, batch), each with the references its ratios need
    (which may belong to another group: `full` is measured again beside the outages)."""
    by_name = {config.name: config for config in CONFIGS}
    groups: dict[str, list[Config]] = {}
    for config in configs:
        groups.setdefault(config.group, []).append(config)
    for members in groups.values():
        for config in list(members):
            if config.reference is not None and all(member.name != config.reference for member in members):
                members.insert(0, by_name[config.reference])
    return list(groups.items())


def _burst(served: Served, setup: Setup, group: str, round_: int, args: argparse.Namespace) -> dict[str, Any]:
    try:
        record = burst(served, setup, round_=round_, seconds=args.seconds)
    except Exception as error:  # a configuration that stopped answering is reported; the others still run
        return {
            "config": served.config.name,
            "group": group,
            "round": round_,
            "error": f"{type(error).__name__}: {error}",
        }
    record["group"] = group
    # Other processes ran on the server's core for a good part of the run: the server was not measured alone.
    others = record["other_on_server_core_s"]
    record["contended"] = others is not None and others > _CONTENDED * record["seconds"]
    return record


def _rounds_of(instance: int, rounds: int, instances: int) -> list[int]:
    """The rounds (1-based) that server instance `instance` of `instances` runs: consecutive, shared out evenly."""
    return [r for r in range(1, rounds + 1) if (r - 1) * instances // rounds + 1 == instance]


def _measured(
    one: Served, setup: Setup, group: str, round_: int, instance: int, args: argparse.Namespace, results: dict[str, Any]
) -> dict[str, Any]:
    """One burst of `one`, redone up to `--retries` times while other processes crowd the server's core."""
    for attempt in range(1, args.retries + 2):
        print(f"round {round_}/{args.rounds} {one.config.name:<17}", end=" ", flush=True)
        record = _burst(one, setup, group, round_, args)
        record["instance"] = instance
        print(_line(record), flush=True)
        if not record.get("contended") or attempt > args.retries:
            break
        results["discarded"].append(record)  # kept in the JSON, left out of the medians
    record["attempts"] = attempt
    return record


def _mean_per_key(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean of the values the dicts have for it (server instances of one configuration)."""
    keys = {key for values in dicts for key in values}
    return {key: sum(d[key] for d in dicts if key in d) / sum(1 for d in dicts if key in d) for key in sorted(keys)}


def _line(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"FAILED: {record['error']}"
    latency = record["latency_ms"]
    return (
        f"{record['rps']:8.1f} req/s  p50 {latency['50']:6.1f}  p99 {latency['99']:7.1f} ms  "
        f"CPU {record['cpu_per_request_us']:7.0f} µs/req  cores {record['server_cores']:.2f}  "
        f"errors {sum(record['errors'].values())}"
        + ("  CONTENDED (others on the server's core)" if record["contended"] else "")
    )


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    git_at_start, machine = _git(), procstat.machine()
    setup = prepare(workdir, pin=not args.no_pin)
    configs = _selected(args)
    exit_stack = contextlib.ExitStack()
    if any(config.postgresql for config in configs):
        # Debian's PostgreSQL, as the tests run it, with fsync on: a commit costs what it costs in production.
        # Its processes inherit the client's CPUs, so the server's core measures only the service.
        server = exit_stack.enter_context(PostgresServer(durable=True, cpus=setup.client_cpus))
        setup = dataclasses.replace(setup, postgresql=lambda: server.url(server.create_database()))
    with exit_stack:
        return _run(args, setup, configs, started_at, git_at_start, machine)


def _run(
    args: argparse.Namespace,
    setup: Setup,
    configs: list[Config],
    started_at: dt.datetime,
    git_at_start: dict[str, Any],
    machine: dict[str, Any],
) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": [], "discarded": [], "micro": None, "memory": None, "exports": {}}
    placement = f"server CPUs {setup.server_cpus or 'any'}, client CPUs {setup.client_cpus or 'any'}"
    print(f"benchmark: {len(configs)} configurations × {args.rounds} rounds, {args.warmup:g} s warm-up + "
          f"{args.seconds:g} s each; {placement}")  # fmt: skip
    if "micro" not in args.skip:
        print("micro-benchmarks (in-process)…", flush=True)
        results["micro"] = _micro(setup, short=args.short, window_rows=args.window_rows)
    for group, members in _groups(configs):
        exports: dict[str, list[dict[str, float]]] = {}
        names = ", ".join(config.name for config in members)
        for instance in range(1, args.instances + 1):
            which = f" (server instance {instance}/{args.instances})" if args.instances > 1 else ""
            print(f"{group}: starting and warming up {names}{which}…", flush=True)
            rounds = _rounds_of(instance, args.rounds, args.instances)
            with serving(members, setup, warmup=args.warmup) as (served, failed):
                for name, error in failed.items():
                    print(f"{name}: FAILED to start: {error}", flush=True)
                    results["runs"].append({"config": name, "group": group, "round": rounds[0], "error": error})
                order = [served[config.name] for config in members if config.name in served]
                for round_ in rounds:
                    shift = (round_ - 1) % max(len(order), 1)
                    for one in order[shift:] + order[:shift]:
                        results["runs"].append(_measured(one, setup, group, round_, instance, args, results))
                time.sleep(0 if args.short else _SETTLE)  # the exporters' last batches (spans and logs: every 5 s)
                for one in order:
                    if one.config.otlp == "ok" and setup.count_exports:
                        exports.setdefault(one.config.name, []).append(one.exported_per_request())
        for name, per_instance in exports.items():
            results["exports"][name] = _mean_per_key(per_instance)
    if "memory" not in args.skip:
        memory_config = next(config for config in CONFIGS if config.name == "full")
        targets = checkpoints(args.memory_first, args.memory_requests, steps=args.memory_steps)
        print(f"memory: {memory_config.name}, RSS at {', '.join(f'{t:,}' for t in targets)} requests", flush=True)
        results["memory"] = measure_memory(memory_config, setup, targets=targets, progress=True)
    finished_at = dt.datetime.now(dt.UTC)
    results["meta"] = {
        "started_at": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "finished_at": finished_at.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round((finished_at - started_at).total_seconds()),
        "short": args.short,
        "retries": args.retries,
        "rounds": args.rounds,
        "instances": args.instances,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "threads": setup.threads,
        "connections": setup.connections,
        "server_cpus": setup.server_cpus,
        "client_cpus": setup.client_cpus,
        "machine": machine,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "git": git_at_start,
        "code": {"measured": source_fingerprint(setup.source_dir), "tree_at_end": source_fingerprint()},
        "configs": {
            config.name: {
                "description": config.description,
                "reference": config.reference,
                "load": config.load,
                "otlp": config.otlp,
            }
            for config in configs
        },
    }
    results["summary"] = report.summarize(results["runs"])
    for name, exported in results["exports"].items():  # whole-life counts beat the per-burst medians
        if name in results["summary"] and exported:
            results["summary"][name]["exported_per_request"] = exported
    results["goals"] = report.evaluate(results)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI smoke: 1 round of 1 s, tiny memory run")
    parser.add_argument("--out", type=Path, help="results JSON (Markdown beside it); default benchmarks/results/")
    parser.add_argument("--rounds", type=int, help="rounds of all configurations (default 10; 1 with --short)")
    parser.add_argument(
        "--instances", type=int, help="start each group's servers this often, rounds shared out (default 2; 1 short)"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 6; 1 with --short)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per server (default 5; 1 with --short)")
    parser.add_argument("--configs", help="comma-separated configurations to run (default: all)")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(_SKIPPABLE)}")
    parser.add_argument("--memory-requests", type=int, help="last memory checkpoint (default 1M; 2k with --short)")
    parser.add_argument("--memory-first", type=int, help="first memory checkpoint (default 10k; 500 with --short)")
    parser.add_argument("--memory-steps", type=int, default=10, help="checkpoints after the first")
    parser.add_argument("--window-rows", type=int, help="rows in the micro drift window (default 600k)")
    parser.add_argument(
        "--retries", type=int, help="redo a run this often when others took >25%% of the server's core (default 2)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs, model)")
    parser.add_argument("--update-benchmarks-md", action="store_true", help="put the results into BENCHMARKS.md")
    return parser


def _stop(signum: int, _frame: object) -> None:
    # SIGTERM and SIGINT (ignored by default in background jobs) unwind the stack, so every server and sink
    # started in a `with` block is stopped and the work directory removed.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    args = _parser().parse_args(argv)
    short = args.short
    args.rounds = args.rounds or (1 if short else 10)
    args.instances = max(1, min(args.instances or (1 if short else 2), args.rounds))
    args.seconds = args.seconds or (1.0 if short else 6.0)
    args.warmup = args.warmup or (1.0 if short else 5.0)
    args.memory_requests = args.memory_requests or (2_000 if short else 1_000_000)
    args.memory_first = args.memory_first or (500 if short else 10_000)
    args.retries = args.retries if args.retries is not None else (0 if short else 2)
    if short:
        args.memory_steps = min(args.memory_steps, 2)
    args.skip = [part.strip() for part in args.skip.split(",") if part.strip()]
    unknown = set(args.skip) - set(_SKIPPABLE)
    if unknown:
        raise SystemExit(f"--skip: unknown parts {sorted(unknown)}; choose from {', '.join(_SKIPPABLE)}")
    if not wrk_available():
        raise SystemExit("wrk is not installed: run `make system-deps` (Debian's wrk package)")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    # Short runs only prove the harness works: unless told otherwise, their results go to the temp directory.
    default_dir = Path(tempfile.gettempdir()) / "modellens-bench-short" if short else RESULTS
    out = args.out or default_dir / f"{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix="modellens-bench-"))
    try:
        started = time.monotonic()
        results = run(args, workdir)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        markdown_path = out.with_suffix(".md")
        markdown_path.write_text(report.markdown(results))
        if args.update_benchmarks_md:
            report.update_benchmarks_md(results, markdown_path)
        print()
        print(report.results_section(results))
        print(f"wrote {out} and {markdown_path.name} in {time.monotonic() - started:.0f} s")
        if args.keep:
            print(f"work directory kept: {workdir}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
