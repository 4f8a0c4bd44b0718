"""The benchmark harness: its parsers and summaries, and its short mode end to end (no timing assertions)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.configs import CONFIGS, GOALS
from benchmarks.load import _parse
from benchmarks.memory import checkpoints
from benchmarks.report import evaluate, summarize
from benchmarks.run import _groups, _rounds_of

REPO = Path(__file__).resolve().parent.parent


def _run(config: str, round_: int, rps: float, cpu_us: float, p99_ms: float) -> dict[str, Any]:
    return {
        "config": config,
        "round": round_,
        "load": "single",
        "rows_per_request": 1,
        "requests": int(rps * 10),
        "seconds": 10.0,
        "rps": rps,
        "rows_per_s": rps,
        "latency_ms": {"50": p99_ms / 4, "90": p99_ms / 2, "99": p99_ms},
        "errors": {"status": 0},
        "server_cpu_s": 1.0,
        "cpu_per_request_us": cpu_us,
        "server_cores": 1.0,
        "other_on_server_core_s": 0.1,
        "stdout_bytes_per_request": 0.0,
        "exported_per_request": {},
        "worker_restarted": False,
    }


class TestWrkSummary:
    """The line wrk_common.lua prints is parsed into requests, percentiles in ms and errors."""

    def test_parse(self) -> None:
        stdout = (
            "Running 1s test @ http://127.0.0.1:1/predict\n"
            'WRK_JSON {"requests": 500, "duration_us": 2000000, "bytes": 1, "errors": {"connect": 0, "read": 0, '
            '"write": 0, "status": 2, "timeout": 0}, "latency_us": {"mean": 1500.0, "stdev": 1.0, "max": 9000, '
            '"percentiles": {"50": 1000, "75": 1200, "90": 2000, "99": 5000, "99.9": 8000}}}\n'
        )
        result = _parse(stdout, client_cpu=0.5)
        assert result.rps == 250
        assert result.latency_ms["99"] == 5.0
        assert result.latency_ms["99.9"] == 8.0
        assert result.failed == 2

    def test_no_summary_line_is_an_error(self) -> None:
        with pytest.raises(RuntimeError, match="no summary line"):
            _parse("Running 1s test\n", client_cpu=0.0)


class TestSummary:
    """Ratios compare runs of the same round, and the median is taken over rounds."""

    def test_ratios_are_per_round_then_median(self) -> None:
        runs = [
            _run("bare", 1, rps=1000, cpu_us=1000, p99_ms=10),
            _run("full", 1, rps=700, cpu_us=1500, p99_ms=12),
            _run("bare", 2, rps=500, cpu_us=2000, p99_ms=20),  # a slower machine in round 2: ratios unaffected
            _run("full", 2, rps=350, cpu_us=3000, p99_ms=24),
            _run("bare", 3, rps=900, cpu_us=1000, p99_ms=10),
            _run("full", 3, rps=540, cpu_us=1600, p99_ms=30),
        ]
        summary = summarize(runs)
        assert summary["full"]["rps_ratio"] == pytest.approx(0.7)
        assert summary["full"]["cpu_ratio"] == pytest.approx(1.5)
        assert summary["full"]["p99_ratio"] == pytest.approx(1.2)
        assert summary["bare"]["rps"] == 900
        assert summary["bare"]["rps_ratio"] is None

    def test_ratios_pair_runs_of_the_same_group(self) -> None:
        """`full` is measured in the overhead group and again beside the outages: each ratio uses its own group."""
        runs = [
            {**_run("bare", 1, rps=1000, cpu_us=1000, p99_ms=10), "group": "overhead"},
            {**_run("full", 1, rps=700, cpu_us=1500, p99_ms=12), "group": "overhead"},
            {**_run("full", 1, rps=350, cpu_us=3000, p99_ms=24), "group": "outage"},  # a slower machine by then
            {**_run("outage-refused", 1, rps=350, cpu_us=3000, p99_ms=24), "group": "outage"},
        ]
        summary = summarize(runs)
        assert summary["full"]["rps_ratio"] == pytest.approx(0.7)
        assert summary["outage-refused"]["p99_ratio"] == pytest.approx(1.0)
        assert summary["full"]["rounds"] == 2

    def test_each_group_serves_the_references_its_ratios_need(self) -> None:
        groups = {group: [config.name for config in members] for group, members in _groups(list(CONFIGS))}
        assert groups["overhead"] == ["bare", "full", "sampled", "full-buffered", "full-no-console", "monitoring-only"]
        assert groups["outage"] == ["full", "outage-refused", "outage-blackhole", "outage-503"]
        assert groups["batch"] == ["batch-bare", "batch-full", "batch-full-postgresql"]
        only = _groups([config for config in CONFIGS if config.name == "outage-503"])
        assert [(group, [config.name for config in members]) for group, members in only] == [
            ("outage", ["full", "outage-503"])
        ]

    def test_contended_runs_are_left_out_when_clean_ones_exist(self) -> None:
        slow = {**_run("full", 2, rps=100, cpu_us=9000, p99_ms=90), "contended": True}
        runs = [_run("bare", 1, 1000, 1000, 10), _run("full", 1, 700, 1500, 12), _run("bare", 2, 1000, 1000, 10), slow]
        summary = summarize(runs)
        assert summary["full"]["rps"] == 700
        assert summary["full"]["rps_ratio"] == pytest.approx(0.7)
        assert summary["full"]["contended_runs_used"] == 0
        only_contended = summarize([_run("bare", 2, 1000, 1000, 10), slow])
        assert only_contended["full"]["rps"] == 100
        assert only_contended["full"]["contended_runs_used"] == 1

    def test_ratios_per_server_instance(self) -> None:
        """The pooled median hides how far one start of the servers moved the ratios: they are shown apart."""
        runs = [
            {**_run("bare", 1, rps=1000, cpu_us=1000, p99_ms=10), "instance": 1},
            {**_run("full", 1, rps=900, cpu_us=1100, p99_ms=10), "instance": 1},
            {**_run("bare", 2, rps=1000, cpu_us=1000, p99_ms=10), "instance": 2},
            {**_run("full", 2, rps=800, cpu_us=1300, p99_ms=10), "instance": 2},
            {**_run("bare", 3, rps=1000, cpu_us=1000, p99_ms=10), "instance": 2},
            {**_run("full", 3, rps=700, cpu_us=1200, p99_ms=10), "instance": 2},
        ]
        instances = summarize(runs)["full"]["instances"]
        assert instances["1"] == {"ratio_rounds": 1, "rps_ratio": pytest.approx(0.9), "cpu_ratio": pytest.approx(1.1)}
        assert instances["2"] == {"ratio_rounds": 2, "rps_ratio": pytest.approx(0.75), "cpu_ratio": pytest.approx(1.25)}

    @pytest.mark.parametrize(("rounds", "instances"), [(10, 2), (10, 3), (1, 1), (7, 7), (5, 1)])
    def test_rounds_are_shared_out_among_server_instances(self, rounds: int, instances: int) -> None:
        shares = [_rounds_of(instance, rounds, instances) for instance in range(1, instances + 1)]
        assert [r for share in shares for r in share] == list(range(1, rounds + 1))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1

    def test_failed_runs_are_left_out(self) -> None:
        runs = [_run("bare", 1, 1000, 1000, 10), {"config": "full", "round": 1, "error": "RuntimeError: boom"}]
        assert set(summarize(runs)) == {"bare"}

    def test_goals_without_data_are_not_applicable(self) -> None:
        results = {"summary": summarize([_run("bare", 1, 1000, 1000, 10), _run("full", 1, 700, 1700, 10)])}
        checks = {check["goal"]: check["result"] for check in evaluate(results)}
        assert checks["full fidelity: throughput vs bare"] == "PASS"
        assert checks["full fidelity: server CPU per request vs bare"] == "FAIL"
        assert checks["production sampling (10%): throughput vs bare"] == "n/a"


class TestCheckpoints:
    """Memory checkpoints: the baseline first, then evenly spaced up to the last."""

    def test_default_spacing(self) -> None:
        assert checkpoints(10_000, 1_000_000)[:3] == [10_000, 100_000, 200_000]
        assert checkpoints(10_000, 1_000_000)[-1] == 1_000_000

    def test_no_checkpoint_below_the_first(self) -> None:
        assert checkpoints(500, 2_000, steps=2) == [500, 1_000, 2_000]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The results of `python -m benchmarks.run --short`, plus its Markdown report under `_markdown`."""
    assert shutil.which("wrk"), "wrk is not installed: run `make system-deps`"
    out = tmp_path_factory.mktemp("bench") / "short.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--short", "--rounds", "2", "--instances", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text())
    data["_markdown"] = out.with_suffix(".md").read_text()
    return data


@pytest.mark.slow
class TestShortRun:
    """`python -m benchmarks.run --short` (two rounds, the servers started afresh for the second) runs every
    configuration, the micro and memory benchmarks, and writes a well-formed JSON and Markdown report with positive
    numbers (the times themselves are not checked)."""

    def test_every_configuration_ran_without_errors(self, short_run: dict[str, Any]) -> None:
        runs = {run["config"]: run for run in short_run["runs"]}
        assert set(runs) == {config.name for config in CONFIGS}
        for name, run in runs.items():
            assert "error" not in run, f"{name}: {run.get('error')}"
            assert sum(run["errors"].values()) == 0, f"{name}: {run['errors']}"

    def test_servers_are_started_once_per_instance(self, short_run: dict[str, Any]) -> None:
        """Two starts of the servers, one round each: every configuration ran once in each."""
        ran = sorted((run["group"], run["config"], run["round"], run["instance"]) for run in short_run["runs"])
        groups = _groups(list(CONFIGS))
        assert ran == sorted(
            (group, config.name, i, i) for group, members in groups for config in members for i in (1, 2)
        )
        assert short_run["meta"]["instances"] == 2
        # Ratios per instance come from clean pairs only (when there are any): a pair that another test's
        # process contended on this shared machine is left out of the summary, as it is of the medians.
        pairs = [(run["instance"], run.get("contended", False)) for run in short_run["runs"]
                 if run["config"] in ("sampled", "bare") and run["group"] == "overhead"]  # fmt: skip
        clean = {str(i) for i in (1, 2) if not any(contended for instance, contended in pairs if instance == i)}
        assert set(short_run["summary"]["sampled"]["instances"]) == (clean or {"1", "2"})
        if len(clean or {"1", "2"}) > 1:
            assert "### Per server instance" in short_run["_markdown"]

    def test_every_run_has_positive_numbers(self, short_run: dict[str, Any]) -> None:
        for run in short_run["runs"]:
            name = run["config"]
            for key in ("requests", "rps", "rows_per_s", "server_cpu_s", "cpu_per_request_us", "worker_rss_kib"):
                assert run[key] > 0, f"{name}: {key}={run[key]}"
            for percentile in ("50", "90", "99"):
                assert run["latency_ms"][percentile] > 0, f"{name}: p{percentile}"
        runs = {run["config"]: run for run in short_run["runs"]}
        assert runs["batch-full"]["rows_per_request"] == 1000

    def test_summary_has_ratios_against_the_reference(self, short_run: dict[str, Any]) -> None:
        summary = short_run["summary"]
        assert set(summary) == {config.name for config in CONFIGS}
        for config in CONFIGS:
            entry = summary[config.name]
            assert entry["reference"] == config.reference
            for key in ("rps_ratio", "cpu_ratio", "p99_ratio"):
                if config.reference is None:
                    assert entry[key] is None
                else:
                    assert entry[key] > 0, f"{config.name}: {key}"

    def test_micro_benchmarks(self, short_run: dict[str, Any]) -> None:
        micro = short_run["micro"]
        assert micro["monitor"]["single_row_us"]["median"] > 0
        assert micro["monitor"]["batch100_us_per_row"]["median"] > 0
        assert micro["drift"]["identical"] is True
        assert micro["drift"]["speedup"] > 0
        assert micro["drift"]["scores"] == 11  # ten features and the predictions
        assert all(timing["median"] > 0 for timing in micro["pieces_us"].values())

    def test_memory_checkpoints(self, short_run: dict[str, Any]) -> None:
        memory = short_run["memory"]
        assert len(memory["samples"]) >= 2
        assert all(sample["worker_rss_kib"] > 0 for sample in memory["samples"])
        assert memory["requests"] >= 2_000
        assert memory["errors"] == 0

    def test_every_goal_is_checked(self, short_run: dict[str, Any]) -> None:
        assert [check["goal"] for check in short_run["goals"]] == [goal.name for goal in GOALS]
        assert {check["result"] for check in short_run["goals"]} <= {"PASS", "FAIL"}

    def test_markdown_report(self, short_run: dict[str, Any]) -> None:
        text = short_run["_markdown"]
        for heading in (
            "### Goals",
            "### Throughput",
            "### Batch path",
            "### In-process",
            "### Memory",
            "### Every run",
        ):
            assert heading in text
        for config in CONFIGS:
            assert f"| {config.name} |" in text
