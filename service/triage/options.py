"""`modellens triage` options: backend URLs (flag, then environment, then compose default) and the time range."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = ["DEFAULTS", "ENV", "Options", "OptionsError", "add_arguments", "parse_duration", "parse_time"]

# In-network names of the compose stack: `docker compose exec model modellens triage` needs no flags. Only Grafana
# and the model service are published on the host, so from the host pass URLs of your own (or tunnel).
DEFAULTS = {
    "prometheus": "http://prometheus:9090",
    "tempo": "http://tempo:3200",
    "loki": "http://loki:3100",
    "grafana": "http://localhost:3000",
}
ENV = {name: f"MODELLENS_{name.upper()}_URL" for name in DEFAULTS}

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_POINTS = 120  # auto step: about 120 points over the range
_MIN_RATE_INTERVAL = 60.0  # four pushes at the compose stack's 15 s OTLP export interval


class OptionsError(ValueError):
    """The options cannot make a run (a usage error: exit code 2)."""


@dataclass(frozen=True)
class Options:
    """Everything one triage run needs; `tempo`/`loki` are None when switched off (`--tempo ''`)."""

    prometheus: str
    tempo: str | None
    loki: str | None
    grafana: str
    start: float
    end: float
    step: float
    rate_interval: float
    quantile: float = 0.99
    route: str | None = None
    service: str | None = None
    traces: int = 5
    timeout: float = 10.0
    json: bool = False
    console: str | None = None  # the service's base URL: read its console instead of the three backends

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str], now: float) -> Options:
        """Resolve URLs (flag, then `MODELLENS_<BACKEND>_URL`, then the compose default) and the time range."""
        urls = {name: _url(getattr(args, name), env.get(ENV[name]), default) for name, default in DEFAULTS.items()}
        console = getattr(args, "console", None)
        if urls["prometheus"] is None and not console:
            raise OptionsError(f"--prometheus (or {ENV['prometheus']}) cannot be empty: Prometheus is required")
        end = now if args.until is None else args.until
        start = end - args.since
        step = args.step if args.step is not None else max(1.0, round((end - start) / _POINTS))
        rate_interval = args.rate_interval if args.rate_interval is not None else max(step, _MIN_RATE_INTERVAL)
        return cls(
            prometheus=urls["prometheus"] or "",
            tempo=urls["tempo"],
            loki=urls["loki"],
            grafana=urls["grafana"] or DEFAULTS["grafana"],
            start=start,
            end=end,
            step=step,
            rate_interval=rate_interval,
            quantile=args.quantile,
            route=args.route,
            service=args.service,
            traces=args.traces,
            timeout=args.timeout,
            json=args.json,
            console=console or None,
        )


def _url(flag: str | None, variable: str | None, default: str) -> str | None:
    """The flag, else the variable, else the default; an empty value switches the backend off."""
    value = flag if flag is not None else variable if variable is not None else default
    value = value.strip().rstrip("/")
    return value or None


def parse_duration(text: str) -> float:
    """`30m`, `1h30m`, `90s`, `500ms` or plain seconds -> seconds (argparse type)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        if not text or _DURATION.sub("", text):
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30m, 1h30m, 90s)") from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(text))
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def parse_time(text: str) -> float:
    """RFC 3339 (`2026-08-04T03:12:00Z`) or Unix seconds -> Unix seconds (argparse type)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use RFC 3339 or Unix seconds)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z")
    return moment.timestamp()


def _quantile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"quantile must be between 0 and 1 (exclusive): {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `triage` subcommand's flags."""
    backends = parser.add_argument_group(
        "backends",
        "Defaults are the compose stack's in-network names (run it as `docker compose exec model modellens "
        "triage`), overridden by MODELLENS_PROMETHEUS_URL, MODELLENS_TEMPO_URL, MODELLENS_LOKI_URL, "
        "MODELLENS_GRAFANA_URL, overridden by the flags. An empty --tempo or --loki skips that backend.",
    )
    for name, what in (
        ("prometheus", "Prometheus base URL (required backend)"),
        ("tempo", "Tempo base URL (optional: without it the report stops at exemplar trace ids)"),
        ("loki", "Loki base URL (optional: without it no log lines)"),
        ("grafana", "Grafana base URL for the Explore links (only used to build links)"),
    ):
        backends.add_argument(f"--{name}", metavar="URL", help=f"{what}; default {DEFAULTS[name]}")
    backends.add_argument(
        "--console",
        metavar="URL",
        help="the service's base URL (e.g. http://127.0.0.1:8000): the same report from its own console "
        "(GET /console/api/...), with no Prometheus, Tempo or Loki; what one worker served",
    )
    parser.add_argument("--since", metavar="DURATION", type=parse_duration, default=1800.0, help="look-back (30m)")
    parser.add_argument(
        "--until", metavar="TIME", type=parse_time, help="end of the range, RFC 3339 or Unix seconds (now)"
    )
    parser.add_argument(
        "--route", metavar="REGEX", help="regex on http_route (default: every route but /healthz, /readyz, /metrics)"
    )
    parser.add_argument("--quantile", metavar="Q", type=_quantile, default=0.99, help="latency quantile (0.99)")
    parser.add_argument("--step", metavar="DURATION", type=parse_duration, help="query step (range / 120, at least 1s)")
    parser.add_argument(
        "--rate-interval", metavar="DURATION", type=parse_duration, help="rate() window (max(step, 1m))"
    )
    parser.add_argument(
        "--service", metavar="NAME", help="service_name for the Loki query (default: from the trace's resource)"
    )
    parser.add_argument(
        "--traces", metavar="N", type=_count, default=5, help="exemplar traces to follow, slowest first (5)"
    )
    parser.add_argument(
        "--timeout", metavar="DURATION", type=parse_duration, default=10.0, help="per-request timeout (10s)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
