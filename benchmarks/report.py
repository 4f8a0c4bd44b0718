"""Turn raw runs into per-configuration medians, same-round ratios, goal checks and a Markdown report."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.configs import CONFIGS, GOALS, Config
from benchmarks.processes import REPO

__all__ = ["evaluate", "main", "markdown", "results_section", "summarize", "update_benchmarks_md"]

BENCHMARKS_MD = REPO / "BENCHMARKS.md"
_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")

_BY_NAME = {config.name: config for config in CONFIGS}


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration: medians over rounds, and the median of the per-round ratios against its reference.

    Runs marked contended (other processes took a good part of the server's core even after retries) are left
    out when the configuration has clean runs; a ratio uses the rounds where both runs are clean, if any.
    """
    rounds: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)  # (group, round) → runs
    for run in runs:
        if "error" not in run:
            rounds[(run.get("group", ""), run["round"])][run["config"]] = run
    names = [config.name for config in CONFIGS if any(config.name in by_config for by_config in rounds.values())]
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        own = _clean_if_any([by_config[name] for by_config in rounds.values() if name in by_config])
        reference = _BY_NAME[name].reference
        pairs = _clean_if_any(
            [
                (by_config[name], by_config[reference])
                for by_config in rounds.values()
                if name in by_config and reference is not None and reference in by_config
            ]
        )
        summary[name] = {
            "reference": reference,
            "rounds": len(own),
            "contended_runs_used": sum(1 for run in own if run.get("contended")),
            "rps": _median(run["rps"] for run in own),
            "rows_per_s": _median(run["rows_per_s"] for run in own),
            "p50_ms": _median(run["latency_ms"]["50"] for run in own),
            "p90_ms": _median(run["latency_ms"]["90"] for run in own),
            "p99_ms": _median(run["latency_ms"]["99"] for run in own),
            "cpu_per_request_us": _median(run["cpu_per_request_us"] for run in own),
            "server_cores": _median(run["server_cores"] for run in own),
            "other_on_server_core_s": _median(run["other_on_server_core_s"] for run in own),
            "stdout_bytes_per_request": _median(run["stdout_bytes_per_request"] for run in own),
            "exported_per_request": {
                key: _median(run["exported_per_request"].get(key) for run in own)
                for key in sorted({key for run in own for key in run["exported_per_request"]})
            },
            "errors": sum(sum(run["errors"].values()) for run in own),
            "ratio_rounds": len(pairs),
            "rps_ratio": _median(_ratio(run["rps"], ref["rps"]) for run, ref in pairs),
            "cpu_ratio": _median(_ratio(run["cpu_per_request_us"], ref["cpu_per_request_us"]) for run, ref in pairs),
            "p99_ratio": _median(_ratio(run["latency_ms"]["99"], ref["latency_ms"]["99"]) for run, ref in pairs),
            "instances": _per_instance(pairs),
        }
    return summary


def _per_instance(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The same-round ratios again, for each start of the servers: how far one process's luck moves them."""
    instances: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for run, ref in pairs:
        instances[str(run.get("instance", 1))].append((run, ref))
    return {
        instance: {
            "ratio_rounds": len(own),
            "rps_ratio": _median(_ratio(run["rps"], ref["rps"]) for run, ref in own),
            "cpu_ratio": _median(_ratio(run["cpu_per_request_us"], ref["cpu_per_request_us"]) for run, ref in own),
        }
        for instance, own in sorted(instances.items())
    }


def _clean_if_any(items: list[Any]) -> list[Any]:
    """The items (runs, or pairs of runs) without a contended run, unless that leaves none."""

    def contended(item: Any) -> bool:
        runs = item if isinstance(item, tuple) else (item,)
        return any(run.get("contended") for run in runs)

    clean = [item for item in items if not contended(item)]
    return clean or items


def _goal_value(goal_subject: str, metric: str, results: dict[str, Any]) -> float | None:
    if goal_subject == "micro":
        micro = results.get("micro") or {}
        if not micro:
            return None
        values = {
            # The best of the repeats: on a shared machine, interference only ever adds CPU time.
            "monitor_single_us": micro["monitor"]["single_row_us"]["min"],
            "monitor_batch100_us_per_row": micro["monitor"]["batch100_us_per_row"]["min"],
            "drift_speedup": micro["drift"]["speedup"],
            "drift_identical": 1.0 if micro["drift"]["identical"] else 0.0,
        }
        return values.get(metric)
    if goal_subject == "memory":
        memory = results.get("memory") or {}
        return memory.get(metric)
    value = results["summary"].get(goal_subject, {}).get(metric)
    return float(value) if value is not None else None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue with its measured value and PASS/FAIL (n/a when the part was skipped)."""
    checks = []
    for goal in GOALS:
        value = _goal_value(goal.subject, goal.metric, results)
        checks.append({
            "goal": goal.name, "subject": goal.subject, "metric": goal.metric, "value": value,
            "op": goal.op, "target": goal.target, "unit": goal.unit, "result": goal.check(value),
        })  # fmt: skip
    return checks


# --- Markdown -------------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _runs(entry: dict[str, Any]) -> str:
    """Runs behind the medians, e.g. `3`, or `1*` when only contended runs were available."""
    return f"{entry['rounds']}{'*' if entry['contended_runs_used'] else ''}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _goal_value_text(check: dict[str, Any]) -> str:
    value, unit = check["value"], check["unit"]
    if value is None:
        return "–"
    if check["metric"] == "rss_growth":
        return f"{value * 100:+.1f}%"
    if check["metric"] == "drift_identical":
        return "yes" if value else "no"
    if unit == "×":
        return f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"
    return f"{value:,.0f} {unit}" if value >= 1000 else f"{value:,.1f} {unit}"


def _target_text(check: dict[str, Any]) -> str:
    target, unit = check["target"], check["unit"]
    if check["metric"] == "rss_growth":
        return f"≤ +{target * 100:.0f}%"
    if check["metric"] == "drift_identical":
        return "yes"
    op = "≥" if check["op"] == ">=" else "≤"
    return f"{op} {target:,g}{'×' if unit == '×' else ' ' + unit}"


def _code(meta: dict[str, Any]) -> str:
    text = f"commit {meta['git']['commit']}"
    text += " with uncommitted changes in service/ or otel/" if meta["git"]["dirty"] else ""
    code = meta.get("code")
    if code:
        text += f", sources {code['measured']}"
        if code["tree_at_end"] != code["measured"]:
            text += f" (copied at the start; the working tree has changed since, to {code['tree_at_end']})"
    return text


def _contention(results: dict[str, Any]) -> str:
    redone = len(results.get("discarded", []))
    still = sum(1 for run in results["runs"] if run.get("contended"))
    if not redone and not still:
        return ""
    text = f" Other processes took over 25% of the server's core in {redone + still} run(s): {redone} redone"
    if still:
        text += f", {still} still contended after retries (flagged in *Every run*; left out of the medians and "
        text += "ratios where the configuration has clean runs)"
    return text + "."


def results_section(results: dict[str, Any]) -> str:
    """The results part of the report (also what BENCHMARKS.md embeds)."""
    meta, summary = results["meta"], results["summary"]
    machine = meta["machine"]
    lines = [
        f"Measured {meta['finished_at']} on {machine['nproc']} × {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}; "
        f"{_code(meta)}. "
        f"{meta['rounds']} round(s) of one {meta['seconds']:g} s burst per configuration, every server of a group "
        f"serving throughout after {meta['warmup']:g} s of warm-up"
        + (
            f" (servers started {meta['instances']} times, rounds shared out), "
            if meta.get("instances", 1) > 1
            else ", "
        )
        + f"wrk -t{meta['threads']} -c{meta['connections']}, "
        + (
            f"server pinned to CPU {meta['server_cpus']}, wrk and the OTLP sink to CPU {meta['client_cpus']}. "
            if meta["server_cpus"]
            else "no CPU pinning. "
        )
        + f"Load average at start: {' '.join(machine['loadavg_at_start'])}, at the end: "
        f"{' '.join(meta['loadavg_at_end'])}.{_contention(results)}",
        "",
        "### Goals",
        "",
    ]
    lines += _table(
        ["goal", "measured", "target", "result"],
        ([check["goal"], _goal_value_text(check), _target_text(check), f"**{check['result']}**"]
         for check in results["goals"]),
    )  # fmt: skip
    lines += [
        "",
        "### Throughput, latency, CPU (median over rounds; ratios against the reference in the same round)",
        "",
        "*runs*: clean runs behind the medians (`*`: only contended runs were available).",
        "",
    ]
    lines += _table(
        ["config", "vs", "runs", "req/s", "× ref", "p50 ms", "p90 ms", "p99 ms", "p99 × ref", "CPU µs/req",
         "CPU × ref", "server cores", "spans/req", "log records/req", "stdout B/req"],
        ([name, entry["reference"] or "", _runs(entry), _num(entry["rps"]), _times(entry["rps_ratio"]),
          _num(entry["p50_ms"], 1), _num(entry["p90_ms"], 1), _num(entry["p99_ms"], 1), _times(entry["p99_ratio"]),
          _num(entry["cpu_per_request_us"]), _times(entry["cpu_ratio"]), _num(entry["server_cores"], 2),
          _num(entry["exported_per_request"].get("traces"), 2), _num(entry["exported_per_request"].get("logs"), 2),
          _num(entry["stdout_bytes_per_request"])]
         for name, entry in summary.items() if _BY_NAME[name].group != "batch"),
    )  # fmt: skip
    lines += _instances_section(summary)
    batch = {name: entry for name, entry in summary.items() if _BY_NAME[name].group == "batch"}
    if batch:
        lines += ["", "### Batch path (1000-row requests)", ""]
        lines += _table(
            ["config", "runs", "rows/s", "× ref", "req/s", "p50 ms", "p99 ms", "CPU µs/row", "CPU × ref"],
            ([name, _runs(entry), _num(entry["rows_per_s"]), _times(entry["rps_ratio"]), _num(entry["rps"], 1),
              _num(entry["p50_ms"], 1), _num(entry["p99_ms"], 1),
              _num(entry["cpu_per_request_us"] / 1000 if entry["cpu_per_request_us"] else None, 2),
              _times(entry["cpu_ratio"])]
             for name, entry in batch.items()),
        )  # fmt: skip
    lines += _micro_section(results.get("micro"))
    lines += _memory_section(results.get("memory"))
    return "\n".join(lines) + "\n"


def _instances_text(meta: dict[str, Any]) -> str:
    instances = meta.get("instances", 1)
    return f" (servers started {instances} times, rounds shared out), " if instances > 1 else ", "


def _instances_section(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The ratios of each server start, when the servers were started more than once."""
    rows = [
        [name, instance, str(entry["ratio_rounds"]), _times(entry["rps_ratio"]), _times(entry["cpu_ratio"])]
        for name, summary_entry in summary.items()
        if len(summary_entry.get("instances", {})) > 1
        for instance, entry in summary_entry["instances"].items()
    ]
    if not rows:
        return []
    lines = [
        "",
        "### Per server instance (each group's servers started afresh for each share of the rounds)",
        "",
        "A process's hash seed, memory layout and the machine's state at its start move its ratios as a whole; the "
        "medians above pool the instances.",
        "",
    ]
    return lines + _table(["config", "instance", "rounds", "× ref", "CPU × ref"], rows)


def _micro_section(micro: dict[str, Any] | None) -> list[str]:
    if not micro:
        return []
    monitor, drift, pieces = micro["monitor"], micro["drift"], micro["pieces_us"]
    lines = [
        "",
        "### In-process micro-benchmarks (CPU µs per call: the best of the repeats, and their median)",
        "",
    ]
    rows = [
        ["ModelMonitor.observe, 1-row request", *_best_median(monitor["single_row_us"], 1)],
        ["ModelMonitor.observe, 100-row request", *_best_median(monitor["batch100_us_per_request"], 1)],
        ["ModelMonitor.observe, per row of a 100-row request", *_best_median(monitor["batch100_us_per_row"], 2)],
        [f"drift scores at collection time ({drift['scores']} PSI+JS pairs, {drift['window_rows']:,}-row window)",
         *_best_median(drift["collection_us"], 0)],
        [f"recompute the same from raw rows (numpy + scipy): {drift['speedup']:,.0f}× the median, largest score "
         f"difference {drift['max_abs_difference']:.1e}", *_best_median(drift["recompute_us"], 0)],
    ]  # fmt: skip
    labels = {
        "span_start_end_sampled": "span start+end (start_as_current_span), sampled",
        "span_start_end_10pct": "span start+end, parent-based 10% sampler",
        "counter_add": "Counter.add (3 attributes), one reader (pull, also pushed over OTLP: as the service)",
        "counter_add_two_readers": "Counter.add (3 attributes), two readers (pull + PeriodicExportingMetricReader)",
        "histogram_record": "Histogram.record (2 attributes), no span: in process, as the service (otel.histograms)",
        "histogram_record_http": "Histogram.record (the 4 HTTP attributes), in process",
        "histogram_record_sdk": "Histogram.record (2 attributes), the SDK's own histogram, one reader",
        "histogram_record_sdk_http": "Histogram.record (the 4 HTTP attributes), the SDK's own histogram",
        "histogram_record_in_sampled_span": "Histogram.record in process, inside a sampled span (exemplar taken)",
        "log_line_stdout_and_otel": "access-log line: structlog → JSON on a stream + OTel log record",
        "log_line_stdout_only": "access-log line: structlog → JSON on a stream only",
        "log_line_filtered_by_level": "access-log line below the log level",
        "otlp_encode_per_span": "OTLP protobuf encoding per span (exporter thread, otel._wire as the service)",
        "otlp_encode_per_log_record": "OTLP protobuf encoding per log record (otel._wire as the service)",
        "otlp_encode_per_span_sdk": "the same per span with the SDK's encoder",
        "otlp_encode_per_log_record_sdk": "the same per log record with the SDK's encoder",
    }
    rows += [[labels.get(key, key), *_best_median(value, 1)] for key, value in pieces.items()]
    return lines + _table(["piece", "best µs", "median µs"], rows)


def _best_median(timing: dict[str, float], digits: int) -> list[str]:
    return [_num(timing["min"], digits), _num(timing["median"], digits)]


def _memory_section(memory: dict[str, Any] | None) -> list[str]:
    if not memory:
        return []
    lines = [
        "",
        f"### Memory ({memory['config']}: worker RSS by requests served; growth {memory['rss_growth'] * 100:+.1f}%)",
        "",
    ]
    return lines + _table(
        ["requests", "worker RSS MiB", "elapsed s"],
        ([f"{s['requests']:,}", _num(s["worker_rss_kib"] / 1024, 1), _num(s["elapsed_s"], 0)]
         for s in memory["samples"]),
    )  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    """The full report: results, then every run, then what each configuration is."""
    lines = [f"# modellens benchmark, {results['meta']['finished_at']}", "", results_section(results).rstrip(), ""]
    lines += ["### Every run", ""]
    lines += _table(
        ["round", "config", "req/s", "p50 ms", "p90 ms", "p99 ms", "CPU µs/req", "server cores",
         "others on server core (s)", "errors, notes"],
        ([str(run["round"]), run["config"], "–", "–", "–", "–", "–", "–", "–", run["error"]] if "error" in run else
         [str(run["round"]), run["config"], _num(run["rps"]), _num(run["latency_ms"]["50"], 1),
          _num(run["latency_ms"]["90"], 1), _num(run["latency_ms"]["99"], 1), _num(run["cpu_per_request_us"]),
          _num(run["server_cores"], 2), _num(run["other_on_server_core_s"], 1),
          str(sum(run["errors"].values())) + (" (worker restarted)" if run["worker_restarted"] else "")
          + (" CONTENDED" if run.get("contended") else "")]
         for run in results["runs"]),
    )  # fmt: skip
    lines += ["", "### Configurations", ""]
    lines += _table(["config", "what"], ([config.name, config.description] for config in _used(results)))
    return "\n".join(lines) + "\n"


def _used(results: dict[str, Any]) -> list[Config]:
    names = {run["config"] for run in results["runs"]}
    return [config for config in CONFIGS if config.name in names]


def update_benchmarks_md(results: dict[str, Any], markdown_path: Path) -> None:
    """Replace the results block of BENCHMARKS.md (between its two marker comments) with these results."""
    text = BENCHMARKS_MD.read_text()
    start, end = _MARKERS
    path = markdown_path.resolve()
    link = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    block = f"{start}\n{results_section(results)}\nFull report with every run: [{link}]({link}).\n{end}"
    updated, count = re.subn(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
    if count != 1:
        raise SystemExit(f"{BENCHMARKS_MD} has no {start} … {end} block to update")
    BENCHMARKS_MD.write_text(updated)


def main(argv: Sequence[str] | None = None) -> int:
    """Re-derive the summary, goals and Markdown of a results JSON (after changing how they are computed)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("results", type=Path, help="a results JSON written by benchmarks.run")
    parser.add_argument("--update-benchmarks-md", action="store_true", help="put the results into BENCHMARKS.md")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    results["summary"] = summarize(results["runs"])
    results["goals"] = evaluate(results)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    markdown_path = args.results.with_suffix(".md")
    markdown_path.write_text(markdown(results))
    if args.update_benchmarks_md:
        update_benchmarks_md(results, markdown_path)
    print(results_section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
