"""`modellens loadgen`: open-loop HTTP traffic for a running service, shaped by incident scenarios.

The driver: phases (`scenarios`) at a target rate through a pool of HTTP workers, rows from a `RowSource`
(`rows`), each scenario applied to the requests it sends, and a summary of what happened.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import requests

from service.rehearsal.rows import RowSource
from service.rehearsal.scenarios import DEFAULT_SCHEDULE, Phase, parse_scenarios, parse_schedule

__all__ = ["LoadGenerator", "Options", "Summary", "main_from_args"]

_BAD_KINDS = ("malformed", "wrong_type", "non_finite", "missing_feature", "out_of_range")


@dataclass
class Options:
    """Scenario knobs (the CLI flags)."""

    batch: int = 1
    drift_features: tuple[str, ...] = ()  # default: the first two numeric features
    drift_shift: float = 1.5  # standard deviations at the end of a drift phase
    spike_fraction: float = 0.3
    spike_delay: float = 0.5
    bad_fraction: float = 0.2
    feedback_delay: float = 5.0
    label_noise: float = 0.1
    concurrency: int = 8
    timeout: float = 10.0
    token: str | None = field(default=None, repr=False)  # sent as a bearer token when the service requires one


@dataclass
class Summary:
    """What happened, for people (`render`) and machines (`as_dict`)."""

    started: float = 0.0
    finished: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    bad_sent: Counter[str] = field(default_factory=Counter)
    spikes_sent: int = 0
    spikes_slowed: int = 0  # spike requests answered no sooner than the delay they asked for
    feedback: Counter[str] = field(default_factory=Counter)
    skipped: int = 0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def as_dict(self) -> dict[str, Any]:
        elapsed = max(self.finished - self.started, 1e-9)
        ok = sum(n for status, n in self.statuses.items() if status.startswith("2"))
        quantiles = np.percentile(self.latencies, [50, 90, 99]).tolist() if self.latencies else [None] * 3
        return {
            "sent": self.sent,
            "ok": ok,
            "errors": self.sent - ok,
            "by_status": dict(sorted(self.statuses.items())),
            "rate": round(self.sent / elapsed, 2),
            "seconds": round(elapsed, 2),
            "latency_ms": {
                name: (round(value * 1000, 2) if value is not None else None)
                for name, value in zip(("p50", "p90", "p99"), quantiles, strict=True)
            },
            "bad_input_sent": dict(self.bad_sent),
            "latency_spikes_requested": self.spikes_sent,
            "latency_spikes_slowed": self.spikes_slowed,
            "feedback": dict(self.feedback),
            "skipped_client_saturated": self.skipped,
        }

    def render(self) -> str:
        data = self.as_dict()
        lines = [
            f"sent {data['sent']} requests in {data['seconds']} s ({data['rate']} req/s): "
            f"{data['ok']} ok, {data['errors']} errors {data['by_status']}",
            "latency ms: " + ", ".join(f"{k} {v}" for k, v in data["latency_ms"].items()),
        ]
        if self.statuses.get("401"):
            lines.append("401: the service requires a bearer token; pass --token-file (MODELLENS_AUTH_TOKENS_FILE)")
        if self.bad_sent:
            lines.append(f"bad input sent (expected rejections except out_of_range): {dict(self.bad_sent)}")
        if self.spikes_sent:
            lines.append(f"latency spikes requested: {self.spikes_sent}, slowed by the service: {self.spikes_slowed}")
            if not self.spikes_slowed:
                lines.append(
                    "no spike took effect: the service ignores X-Modellens-Fault unless it runs with "
                    "MODELLENS_FAULTS=1 (for rehearsals only)"
                )
        if self.feedback:
            lines.append(f"feedback: {dict(self.feedback)}")
        if self.skipped:
            lines.append(f"skipped because the client was saturated: {self.skipped}")
        return "\n".join(lines)


class LoadGenerator:
    """Open-loop traffic at a target rate through a bounded pool of HTTP workers."""

    def __init__(
        self,
        url: str,
        phases: Sequence[Phase],
        rate: float,
        options: Options | None = None,
        *,
        seed: int | None = None,
        progress: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.url = url.rstrip("/")
        self.phases = list(phases)
        self.rate = rate
        self.options = options or Options()
        self._rng = np.random.default_rng(seed)
        self._random = random.Random(seed)
        self._progress = progress
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pending_feedback: list[tuple[float, str, Any]] = []
        self.summary = Summary()
        self.source: RowSource | None = None

    # --- setup --------------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # loopback and compose-network traffic only; never through a proxy
            if self.options.token:
                session.headers["Authorization"] = f"Bearer {self.options.token}"
            self._local.session = session
        return session

    def connect(self) -> RowSource:
        """Read the served model's card (and reference profile when needed)."""
        session = self._session()
        card = session.get(f"{self.url}/model", timeout=self.options.timeout).json()
        profile = None
        if not str(card.get("dataset", "")).startswith("sklearn:"):
            response = session.get(f"{self.url}/model/reference", timeout=self.options.timeout)
            profile = response.json() if response.ok else None
        self.source = RowSource(card, profile, self._rng)
        if not self.options.drift_features:
            self.options.drift_features = tuple(self.source.numeric[:2])
        return self.source

    # --- running ------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        source = self.source or self.connect()
        interval = 1.0 / self.rate
        in_flight = threading.BoundedSemaphore(self.options.concurrency * 4)
        self.summary.started = self._clock()
        next_progress = self.summary.started + 5
        with ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="loadgen") as pool:
            phase_start = self.summary.started
            for phase in self.phases:
                phase_end = phase_start + phase.seconds
                sent = 0
                while True:
                    due = phase_start + sent * interval
                    if due >= phase_end:
                        break
                    now = self._clock()
                    if due > now:
                        time.sleep(min(due - now, 0.25))
                        continue
                    sent += 1
                    if not in_flight.acquire(blocking=False):
                        with self._lock:
                            self.summary.skipped += 1
                        continue
                    progress = (due - phase_start) / phase.seconds
                    request = self._build(source, phase.scenarios, progress)
                    pool.submit(self._send, request, in_flight)
                    if "feedback" in phase.scenarios:
                        self._flush_feedback(pool, now)
                    if self._progress is not None and now >= next_progress:
                        self._report_progress(phase)
                        next_progress = now + 5
                phase_start = phase_end
            self._flush_feedback(pool, self._clock())
        self.summary.finished = self._clock()
        return self.summary

    def _build(self, source: RowSource, scenarios: frozenset[str], progress: float) -> dict[str, Any]:
        rows, actuals = [], []
        for _ in range(self.options.batch):
            row, actual = source.sample()
            if "drift" in scenarios:
                for name in self.options.drift_features:
                    if isinstance(row.get(name), int | float):
                        row[name] = row[name] + progress * self.options.drift_shift * source.std.get(name, 1.0)
            rows.append(row)
            actuals.append(actual)
        request: dict[str, Any] = {"body": json.dumps({"instances": rows}), "headers": {}, "actuals": actuals}
        if "bad-input" in scenarios and self._random.random() < self.options.bad_fraction:
            kind = self._random.choice(_BAD_KINDS)
            request["bad"] = kind
            request["body"] = self._corrupt(kind, rows, source)
        request["feedback"] = "feedback" in scenarios and "bad" not in request
        request["label_shift"] = progress * self.options.drift_shift if "label-drift" in scenarios else 0.0
        if "latency-spike" in scenarios and self._random.random() < self.options.spike_fraction:
            request["headers"]["X-Modellens-Fault"] = f"latency={self.options.spike_delay}"
            request["spike"] = True
        return request

    def _corrupt(self, kind: str, rows: list[dict[str, Any]], source: RowSource) -> str:
        row = dict(rows[0])
        name = source.numeric[0] if source.numeric else source.features[0]
        if kind == "malformed":
            return json.dumps({"instances": rows})[:-3]
        if kind == "wrong_type":
            row[name] = "not-a-number"
        elif kind == "non_finite":
            row[name] = float("nan")
        elif kind == "missing_feature":
            row.pop(name)
        elif kind == "out_of_range":
            row[name] = (row.get(name) or 0.0) + 10 * source.std.get(name, 1.0)
        return json.dumps({"instances": [row, *rows[1:]]}, allow_nan=True)

    def _send(self, request: dict[str, Any], in_flight: threading.BoundedSemaphore) -> None:
        started = time.perf_counter()
        try:
            response = self._session().post(
                f"{self.url}/predict",
                data=request["body"],
                headers={"Content-Type": "application/json", **request["headers"]},
                timeout=self.options.timeout,
            )
            status = str(response.status_code)
            body = response.json() if response.ok else None
        except (requests.RequestException, ValueError) as error:
            status, body = type(error).__name__, None
        finally:
            in_flight.release()
        elapsed = time.perf_counter() - started
        with self._lock:
            self.summary.statuses[status] += 1
            if len(self.summary.latencies) < 200_000:
                self.summary.latencies.append(elapsed)
            if "bad" in request:
                self.summary.bad_sent[request["bad"]] += 1
            if request.get("spike"):
                self.summary.spikes_sent += 1
                # An injected delay is a lower bound on the answer's time: a faster answer was not slowed.
                self.summary.spikes_slowed += elapsed >= self.options.spike_delay
            if body is not None and request["feedback"]:
                due = self._clock() + self.options.feedback_delay
                for prediction_id, prediction, actual in zip(
                    body["prediction_ids"], body["predictions"], request["actuals"], strict=True
                ):
                    label = self._label(prediction, actual, request["label_shift"])
                    self._pending_feedback.append((due, prediction_id, label))

    def _label(self, prediction: Any, actual: Any, shift: float = 0.0) -> Any:
        """The ground truth to report: the dataset's target (or the prediction) with label noise, moved by `shift`
        target standard deviations (a classifier: the first class with probability shift / 3)."""
        source = self.source
        assert source is not None
        if source.task == "classification":
            truth = actual if actual is not None else prediction
            if source.classes and self._random.random() < self.options.label_noise:
                truth = self._random.choice(source.classes)
            if source.classes and self._random.random() < shift / 3:
                truth = source.classes[0]
            return str(truth)
        truth = float(actual if actual is not None else prediction)
        truth += shift * source.target_std
        return truth + float(self._rng.normal(0, self.options.label_noise * max(abs(truth), 1.0)))

    def _flush_feedback(self, pool: ThreadPoolExecutor, now: float) -> None:
        with self._lock:
            due = [item for item in self._pending_feedback if item[0] <= now]
            self._pending_feedback = [item for item in self._pending_feedback if item[0] > now]
        for start in range(0, len(due), 100):
            batch = [{"prediction_id": pid, "actual": actual} for _, pid, actual in due[start : start + 100]]
            pool.submit(self._send_feedback, batch)

    def _send_feedback(self, batch: list[dict[str, Any]]) -> None:
        try:
            response = self._session().post(
                f"{self.url}/feedback", json={"feedback": batch}, timeout=self.options.timeout
            )
            result = response.json() if response.ok else {}
            outcome = "accepted" if response.ok else f"status_{response.status_code}"
        except (requests.RequestException, ValueError) as error:
            result, outcome = {}, type(error).__name__
        with self._lock:
            self.summary.feedback["sent"] += len(batch)
            if outcome == "accepted":
                self.summary.feedback["accepted"] += int(result.get("accepted", 0))
                self.summary.feedback["unknown"] += len(result.get("unknown_ids", []))
                self.summary.feedback["duplicate"] += len(result.get("duplicate_ids", []))
            else:
                self.summary.feedback[outcome] += len(batch)

    def _report_progress(self, phase: Phase) -> None:
        with self._lock:
            data = self.summary.as_dict() if self.summary.sent else None
        if data is None or self._progress is None:
            return
        elapsed = self._clock() - self.summary.started
        scenarios = "+".join(sorted(phase.scenarios))
        print(
            f"[{elapsed:6.0f}s] {scenarios}: sent {data['sent']}, ok {data['ok']}, errors {data['errors']}, "
            f"p99 {data['latency_ms']['p99']} ms",
            file=self._progress,
            flush=True,
        )


def main_from_args(args: Any) -> int:
    """The CLI entry (see service/cli.py for the flags)."""
    try:
        if args.schedule:
            phases = parse_schedule(DEFAULT_SCHEDULE if args.schedule == "default" else args.schedule)
            phases = phases * args.repeat
        else:
            phases = [Phase(parse_scenarios(args.scenario), args.duration)]
        options = Options(
            batch=args.batch,
            drift_features=tuple(f for f in (args.drift_features or "").split(",") if f),
            drift_shift=args.drift_shift,
            spike_fraction=args.spike_fraction,
            spike_delay=args.spike_delay,
            bad_fraction=args.bad_fraction,
            feedback_delay=args.feedback_delay,
            label_noise=args.label_noise,
            concurrency=args.concurrency,
            token=args.token,  # read from --token-file by the CLI (service.web.auth.read_tokens)
        )
        generator = LoadGenerator(
            args.url, phases, args.rate, options, seed=args.seed, progress=None if args.quiet else sys.stderr
        )
        generator.connect()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except requests.RequestException as error:
        print(f"error: cannot reach the service at {args.url}: {type(error).__name__}", file=sys.stderr)
        return 2
    summary = generator.run()
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.render())
    return 0
