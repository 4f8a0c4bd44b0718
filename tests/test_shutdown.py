"""SIGTERM under load (what `docker stop` sends the master): nothing acknowledged is lost.

gunicorn's guarantee, which this test measures: once SIGTERM arrives the master closes its listening socket and
each worker stops accepting, finishes every connection it had accepted (requests running, and requests queued
for its threads), answers one more request on a kept-alive connection with `Connection: close` (for at most
2 s), then exits; `worker_exit` flushes the prediction log, then spans, logs and a last metric export. A
connection still in the kernel's accept queue, or opened after the socket closed, is refused or reset: the client
sees a connection error, never a 5xx and never a 200 that was not recorded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from service.artifact.card import ModelCard
from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port
from tests.test_serving import instance, serve

pytestmark = pytest.mark.slow

SLOW_REQUESTS = 6  # in flight at SIGTERM, below the 2 workers × 4 threads
SLOW_SECONDS = 1.5  # each of them sleeps this long inside the request (fault injection) after SIGTERM
CLIENTS = 4


@dataclass
class Outcomes:
    ok: list[tuple[list[str], str]] = field(default_factory=list)  # (prediction ids, trace id) of each 200
    refused: list[str] = field(default_factory=list)  # connection errors (never accepted, or closed idle)
    other: list[str] = field(default_factory=list)  # anything else: must stay empty
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, http: requests.Session, url: str, body: object, headers: dict[str, str] | None = None) -> None:
        try:
            response = http.post(url, json=body, headers=headers or {}, timeout=30)
        except requests.ConnectionError as error:
            with self.lock:
                self.refused.append(type(error).__name__)
            return
        with self.lock:
            if response.status_code == 200:
                self.ok.append((response.json()["prediction_ids"], response.headers["X-Trace-Id"]))
            else:
                self.other.append(f"{response.status_code} {response.text[:200]}")


def test_sigterm_under_load_loses_nothing(regression_model_dir: Path, tmp_path: Path) -> None:
    card = ModelCard.load(regression_model_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    log_path = tmp_path / "predictions.sqlite3"
    env = {
        "MODELLENS_WORKERS": "2",
        "MODELLENS_THREADS": "4",
        "MODELLENS_FAULTS": "1",
        "MODELLENS_PREDICTION_LOG": str(log_path),
        # Batches would wait a minute: only the flush at worker exit can deliver them.
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "OTEL_BLRP_SCHEDULE_DELAY": "60000",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    }
    background, slow = Outcomes(), Outcomes()
    with OTLPReceiver() as otlp:
        service = serve(regression_model_dir, port, otlp, **env)
        with service:
            stop = threading.Event()

            def client(index: int) -> None:
                with requests.Session() as http:
                    while not stop.is_set():
                        background.send(http, url, {"instances": [instance(card, (index % 10) / 10)] * 3})

            def slow_client() -> None:
                with requests.Session() as http:
                    slow.send(
                        http, url, {"instances": [instance(card)]}, {"X-Modellens-Fault": f"latency={SLOW_SECONDS}"}
                    )

            clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
            for thread in clients:
                thread.start()
            time.sleep(2.0)  # steady load
            slow_threads = [threading.Thread(target=slow_client) for _ in range(SLOW_REQUESTS)]
            for thread in slow_threads:
                thread.start()
            time.sleep(0.5)  # the slow requests are inside the app now
            acknowledged_before = len(background.ok)
            started = time.monotonic()
            exit_code = service.terminate(timeout=45)
            took = time.monotonic() - started
            stop.set()
            for thread in [*clients, *slow_threads]:
                thread.join(30)
        received_spans = {s.trace_id for s in otlp.spans("POST /predict")}
        received_logs = {r.trace_id for r in otlp.log_records() if r.body == "request"}
        received_metrics = otlp.metrics("model.predictions")

    print(
        f"\nSIGTERM under load: exit {exit_code} after {took:.1f} s; {len(background.ok)} background 200s "
        f"({acknowledged_before} before SIGTERM), {len(background.refused)} connection errors after it; "
        f"{len(slow.ok)}/{SLOW_REQUESTS} in-flight slow requests answered 200"
    )
    assert exit_code == 0, service.output()[-4000:]
    assert not background.other and not slow.other, (background.other[:3], slow.other[:3])
    # Every request that was inside the service when SIGTERM arrived finished, with a 200.
    assert len(slow.ok) == SLOW_REQUESTS, (slow.refused, slow.other)
    assert acknowledged_before > 50

    # Every prediction that got a 200 is in the prediction log.
    answered = {pid for ids, _ in [*background.ok, *slow.ok] for pid in ids}
    with sqlite3.connect(log_path) as connection:
        stored = {
            f"{request_id}{index:08x}"
            for request_id, rows in connection.execute("SELECT request_id, row_count FROM requests")
            for index in range(rows)
        }
    assert answered <= stored, f"{len(answered - stored)} acknowledged predictions are missing from the log"

    # Their spans and access-log records reached the OTLP endpoint: the flush at exit delivered them.
    traces = {trace_id for _, trace_id in [*background.ok, *slow.ok]}
    assert traces <= received_spans, f"{len(traces - received_spans)} traces missing"
    assert traces <= received_logs, f"{len(traces - received_logs)} access-log records missing"
    # And one last metric export per worker carried the prediction counts.
    workers = {point.resource["service.instance.id"] for point in received_metrics}
    assert len(workers) == 2
    counted = sum(
        max(p.value or 0 for p in received_metrics if p.resource["service.instance.id"] == worker) for worker in workers
    )
    rows = 3 * len(background.ok) + len(slow.ok)
    assert counted == rows, (counted, rows)
