"""Telemetry backend outages against a real gunicorn: requests never wait, memory stays bounded, export resumes.

The OTLP endpoint (a) refuses connections, (b) accepts them and never answers, (c) answers 503, with the exporter
timeout at 10 s. Four client threads keep /predict busy for longer than one export timeout; then the endpoint
comes back and the same process exports again, without a restart.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from service.artifact.card import ModelCard
from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.test_hostile_input import rss_kib, worker_pids
from tests.test_serving import instance, serve

pytestmark = pytest.mark.slow

LOAD_SECONDS = 12.0  # longer than one export timeout: every signal has failed at least once by the end
CLIENTS = 4
EXPORT_TIMEOUT_MS = "10000"
# No request may wait for telemetry: with exports stuck for 10 s, the slowest request stays far below a second.
MAX_LATENCY_S = 1.0
# Memory: after the first seconds of load the span and log queues are full (2048 items each, the SDK's
# default); what follows must not grow. 16 MiB is room for allocator noise, far below one more queue-full of
# retained batches per export attempt (see docs/reliability.md for the measured numbers).
RSS_GROWTH_KIB = 16 * 1024
SDK_EXPORT_LINES = ("Transient error", "Failed to export", "Queue full", "Exception while exporting")


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, base: str, body: dict[str, Any], seconds: float, clients: int) -> None:
        deadline = time.monotonic() + seconds

        def client() -> None:
            with requests.Session() as http:
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    try:
                        status = http.post(f"{base}/predict", json=body, timeout=30).status_code
                    except requests.RequestException as error:
                        with self.lock:
                            self.errors.append(repr(error))
                        continue
                    elapsed = time.perf_counter() - started
                    with self.lock:
                        self.latencies.append(elapsed)
                        self.statuses[status] = self.statuses.get(status, 0) + 1

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _events(service: ServiceProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.stdout_lines() if line.startswith("{")]


def _dropped(base: str) -> dict[tuple[str, str], float]:
    text = requests.get(f"{base}/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith("otel_exporter_dropped_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            found[(labels["signal"].strip('"'), labels["error_type"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return found


@pytest.fixture
def model(regression_model_dir: Path) -> tuple[Path, ModelCard]:
    return regression_model_dir, ModelCard.load(regression_model_dir)


@pytest.mark.parametrize("mode", ["refused", "hang", "error503"])
def test_outage(mode: str, model: tuple[Path, ModelCard], tmp_path: Path) -> None:
    model_dir, card = model
    otlp_port = free_port()
    receiver = OTLPReceiver(port=otlp_port)
    if mode != "refused":  # refused: nothing listens on the port until the backend "comes back"
        receiver.start()
        receiver.mode = mode  # type: ignore[assignment]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "OTEL_EXPORTER_OTLP_TIMEOUT": EXPORT_TIMEOUT_MS,
        "MODELLENS_PREDICTION_LOG": str(tmp_path / "predictions.sqlite3"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
    }
    body = {"instances": [instance(card)]}
    try:
        with serve(model_dir, port, None, **env) as service:
            (worker,) = worker_pids(service.pid)
            load = Load()
            rss: list[int] = []
            sampler = threading.Thread(target=_sample_rss, args=(worker, rss, LOAD_SECONDS))
            sampler.start()
            load.run(base, body, LOAD_SECONDS, CLIENTS)
            sampler.join()
            dropped = _dropped(base)
            outage_events = _events(service)

            # Recovery: the backend answers again; the same process exports again.
            if mode == "refused":
                receiver.start()
            else:
                receiver.mode = "ok"
            trace_ids = [
                requests.post(f"{base}/predict", json=body, timeout=10).headers["X-Trace-Id"] for _ in range(5)
            ]
            started = time.monotonic()
            receiver.wait_for(lambda r: set(trace_ids) <= {s.trace_id for s in r.spans()}, timeout=40)
            recovered_after = time.monotonic() - started
            receiver.wait_for(lambda r: bool(r.metrics("model.predictions")) and bool(r.log_records()), timeout=20)
            time.sleep(0.5)
            events = _events(service)
            output = service.output()
    finally:
        receiver.close()

    p99, worst = load.quantile(0.99), max(load.latencies)
    growth = max(rss[len(rss) // 4 :]) - rss[len(rss) // 4] if rss else 0
    print(
        f"\n{mode}: {len(load.latencies)} requests, p50 {load.quantile(0.5) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {worst * 1000:.1f} ms; RSS {rss[0]}→{max(rss)} KiB (growth after warm-up {growth} KiB);"
        f" dropped {dropped}; spans again {recovered_after:.1f} s after recovery"
    )
    assert load.statuses == {200: len(load.latencies)} and not load.errors, (load.statuses, load.errors[:3])
    assert worst < MAX_LATENCY_S, f"a request waited {worst:.2f}s"
    assert growth < RSS_GROWTH_KIB, rss

    # Telemetry was dropped and counted, per signal, and said once per signal: not per batch, not per request.
    assert dropped[("traces", "export_failed")] + dropped[("traces", "queue_full")] > 0
    assert dropped[("metrics", "export_failed")] > 0
    failing = [e for e in outage_events if e.get("event") == "telemetry export failing"]
    assert sorted(e["signal"] for e in failing) == ["logs", "metrics", "traces"], failing
    sdk_lines = [
        line
        for line in output.splitlines()
        if '"otel.resilience"' not in line and any(s in line for s in SDK_EXPORT_LINES)
    ]
    assert not sdk_lines, f"the SDK logged per batch: {sdk_lines[:3]}"
    recovered = [e for e in events if e.get("event") == "telemetry export recovered"]
    assert {e["signal"] for e in recovered} >= {"traces", "metrics"}
    assert len([e for e in events if e.get("event") == "telemetry export failing"]) == 3


def _sample_rss(pid: int, samples: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_kib(pid))
        time.sleep(0.25)


def test_sigterm_during_an_outage_is_not_held_up_by_telemetry(model: tuple[Path, ModelCard], tmp_path: Path) -> None:
    """With the backend black-holed, a SIGTERM still exits well within gunicorn's 30 s graceful timeout."""
    model_dir, card = model
    port = free_port()
    env = {
        "OTEL_EXPORTER_OTLP_TIMEOUT": EXPORT_TIMEOUT_MS,
        "MODELLENS_PREDICTION_LOG": str(tmp_path / "predictions.sqlite3"),
    }
    with OTLPReceiver() as receiver, serve(model_dir, port, receiver, **env) as service:
        receiver.mode = "hang"
        deadline = time.monotonic() + 11  # one export has timed out: the exporters know the backend is down
        while time.monotonic() < deadline:
            requests.post(f"http://127.0.0.1:{port}/predict", json={"instances": [instance(card)]}, timeout=10)
        started = time.monotonic()
        assert service.terminate(timeout=40) == 0
        took = time.monotonic() - started
    print(f"\nSIGTERM with a black-holed backend: exited in {took:.1f} s")
    # At most one export already in flight runs to its 10 s timeout; what is left is dropped, not retried.
    assert took < 15, took
