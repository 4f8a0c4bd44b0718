"""The service configurations the benchmark compares, and the goals it reports against."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["COMMON", "CONFIGS", "GOALS", "Config", "Goal"]

# Every configuration: one gunicorn gthread worker with 4 threads, as `make run` serves.
COMMON = {"MODELLENS_WORKERS": "1", "MODELLENS_THREADS": "4", "MODELLENS_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"}

# Nothing but the app: the SDK's no-op providers, no ML monitoring, no prediction log, and no access log
# (the access line is INFO; with the SDK disabled the app still logs it at INFO, so the level hides it).
_BARE = {
    "OTEL_SDK_DISABLED": "true",
    "MODELLENS_MONITORING": "off",
    "MODELLENS_PREDICTION_LOG": "off",
    "MODELLENS_LOG_LEVEL": "WARNING",
}

# Everything on: every request traced, metrics with exemplars pushed every 15 s (the compose stack's interval),
# one access-log record per request on stdout and over OTLP, ML monitoring, the prediction log (SQLite, its path
# filled in per run). The exporter timeout is the SDK's default, so outages cost what they would in production.
_FULL = {
    "OTEL_TRACES_SAMPLER": "always_on",
    "OTEL_METRICS_EXEMPLAR_FILTER": "trace_based",
    "OTEL_METRIC_EXPORT_INTERVAL": "15000",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    "MODELLENS_MONITORING": "on",
    "MODELLENS_LOG_LEVEL": "INFO",
    "MODELLENS_PREDICTION_LOG": "{run_dir}/predictions.sqlite3",
}


@dataclass(frozen=True)
class Config:
    """One way of running the service, and the load it gets."""

    name: str
    description: str
    env: dict[str, str]
    otlp: str | None = None  # the OTLP endpoint: a sink mode ("ok", "503", "hang"), "refused", or None
    load: str = "single"  # "single" (one row per request) or "batch" (1000 rows)
    reference: str | None = None  # ratios against this configuration, measured in the same round
    group: str = "overhead"  # "overhead", "outage" or "batch": how the report groups it
    postgresql: bool = False  # the prediction log in a database of the run's PostgreSQL server, not SQLite


CONFIGS: tuple[Config, ...] = (
    Config("bare", "OTEL_SDK_DISABLED=true, monitoring off, prediction log off, log level WARNING", _BARE),
    Config(
        "full",
        "every request traced (always_on), metrics + exemplars, access log on stdout and OTLP, "
        "monitoring, prediction log; OTLP to a sink answering 200",
        _FULL,
        otlp="ok",
        reference="bare",
    ),
    Config(
        "sampled",
        "as full, with parentbased_traceidratio 0.1",
        {**_FULL, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
        otlp="ok",
        reference="bare",
    ),
    Config(
        "full-buffered",
        "as full, with MODELLENS_PREDICTION_LOG_DURABILITY=buffered: the 200 does not wait for the log's commit "
        "(isolates what crash durability costs)",
        {**_FULL, "MODELLENS_PREDICTION_LOG_DURABILITY": "buffered"},
        otlp="ok",
        reference="full",
    ),
    Config(
        "full-no-console",
        "as full, with MODELLENS_CONSOLE=off: no in-process trace store, log ring or request series (isolates "
        "what GET /console costs; `full` has it on, the default)",
        {**_FULL, "MODELLENS_CONSOLE": "off"},
        otlp="ok",
        reference="full",
    ),
    Config(
        "monitoring-only",
        "as bare, with ML monitoring on (isolates its request-path cost)",
        {**_BARE, "MODELLENS_MONITORING": "on"},
        reference="bare",
    ),
    Config(
        "outage-refused",
        "as full; the OTLP endpoint refuses connections (a closed port)",
        _FULL,
        otlp="refused",
        reference="full",
        group="outage",
    ),
    Config(
        "outage-blackhole",
        "as full; the OTLP endpoint accepts and never answers",
        _FULL,
        otlp="hang",
        reference="full",
        group="outage",
    ),
    Config(
        "outage-503",
        "as full; the OTLP endpoint answers 503 (the exporter retries with backoff)",
        _FULL,
        otlp="503",
        reference="full",
        group="outage",
    ),
    Config("batch-bare", "as bare; 1000-row requests", _BARE, load="batch", group="batch"),
    Config(
        "batch-full",
        "as full; 1000-row requests",
        _FULL,
        otlp="ok",
        load="batch",
        reference="batch-bare",
        group="batch",
    ),
    Config(
        "batch-full-postgresql",
        "as batch-full, with the prediction log in PostgreSQL (a local server, fsync on, a database per run)",
        _FULL,
        otlp="ok",
        load="batch",
        reference="batch-full",
        group="batch",
        postgresql=True,
    ),
)


@dataclass(frozen=True)
class Goal:
    """A target from the performance issue: `metric` of `subject` compared with `target` (`op` is >= or <=)."""

    name: str
    subject: str  # a configuration name, or "micro"/"memory"
    metric: str
    op: str
    target: float
    unit: str = "×"
    extra: dict[str, str] = field(default_factory=dict)

    def check(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        passed = value >= self.target if self.op == ">=" else value <= self.target
        return "PASS" if passed else "FAIL"


GOALS: tuple[Goal, ...] = (
    Goal("full fidelity: throughput vs bare", "full", "rps_ratio", ">=", 0.65),
    Goal("full fidelity: server CPU per request vs bare", "full", "cpu_ratio", "<=", 1.6),
    Goal("production sampling (10%): throughput vs bare", "sampled", "rps_ratio", ">=", 0.85),
    Goal("production sampling (10%): server CPU per request vs bare", "sampled", "cpu_ratio", "<=", 1.2),
    Goal("ML monitoring, single-row request (in-process)", "micro", "monitor_single_us", "<=", 25, "µs"),
    Goal(
        "ML monitoring, per row in 100-row batches (in-process)", "micro", "monitor_batch100_us_per_row", "<=", 3, "µs"
    ),
    Goal("memory: worker RSS after the last checkpoint vs the first", "memory", "rss_growth", "<=", 0.05, ""),
    Goal("drift: recompute from raw rows (scipy) / collection-time scores", "micro", "drift_speedup", ">=", 100),
    Goal("drift: identical scores for identical bins", "micro", "drift_identical", ">=", 1, ""),
    Goal(
        "batch path: rows/s per worker, monitoring on (batch-full)", "batch-full", "rows_per_s", ">=", 50_000, "rows/s"
    ),
    Goal("console off vs on (full): throughput", "full-no-console", "rps_ratio", "<=", 1.05),
    Goal("batch path: PostgreSQL log rows/s vs the SQLite log", "batch-full-postgresql", "rps_ratio", ">=", 1.0),
    Goal("outage, refused: p99 vs healthy full", "outage-refused", "p99_ratio", "<=", 1.2),
    Goal("outage, black hole: p99 vs healthy full", "outage-blackhole", "p99_ratio", "<=", 1.2),
    Goal("outage, 503: p99 vs healthy full", "outage-503", "p99_ratio", "<=", 1.2),
)
