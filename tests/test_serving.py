"""End to end on real components: gunicorn serving the model, a real Prometheus scraping it, OTLP to a receiver."""

from __future__ import annotations

import atexit
import bisect
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from otel.metrics import SECONDS_BUCKETS
from service.artifact.card import ModelCard
from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.prometheus import PrometheusServer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def serve(model_dir: Path, port: int, otlp: OTLPReceiver | None, **env: str) -> ServiceProcess:
    """`modellens serve` (gunicorn, one gthread worker) on 127.0.0.1:port, pushing OTLP to the receiver.

    Each service gets its own prediction log (a temp file) unless `MODELLENS_PREDICTION_LOG` is given, so tests
    sharing a model directory never share, or corrupt, one SQLite file.
    """
    log_dir = tempfile.mkdtemp(prefix="modellens-test-log-")
    atexit.register(shutil.rmtree, log_dir, True)
    variables: dict[str, str | None] = {
        "MODELLENS_PREDICTION_LOG": str(Path(log_dir) / "predictions.sqlite3"),
        "MODELLENS_MODEL_DIR": str(model_dir),
        "MODELLENS_HOST": "127.0.0.1",
        "MODELLENS_PORT": str(port),
        "MODELLENS_THREADS": "4",
        "OTEL_SERVICE_NAME": "modellens-e2e",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint if otlp else None,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_SDK_DISABLED": None,
        **env,
    }
    return ServiceProcess(
        [sys.executable, "-m", "service.cli", "serve"],
        ready_url=f"http://127.0.0.1:{port}/readyz",
        env=variables,
        cwd=REPO,
    )


def instance(card: ModelCard, shift: float = 0.5) -> dict[str, float]:
    """A row of numeric features at `shift` of the way through each training range."""
    return {spec.name: spec.min + shift * (spec.max - spec.min) for spec in card.features}  # type: ignore[operator]


@dataclass
class Traffic:
    """What the test sent, and what the clients saw."""

    trace_ids: list[str] = field(default_factory=list)
    rows: int = 0
    rejected: int = 0
    other: int = 0


def send(
    http: requests.Session,
    base: str,
    card: ModelCard,
    traffic: Traffic,
    *,
    single: int,
    batches: int,
    bad: int,
    other: int,
) -> None:
    """Known traffic: single-row and 4-row predictions, rejected requests, and GET /model."""
    for i in range(single):
        response = http.post(f"{base}/predict", json={"instances": [instance(card, (i % 10) / 10)]}, timeout=10)
        response.raise_for_status()
        traffic.trace_ids.append(response.headers["X-Trace-Id"])
        traffic.rows += 1
    for _ in range(batches):
        response = http.post(f"{base}/predict", json={"instances": [instance(card)] * 4}, timeout=10)
        response.raise_for_status()
        traffic.trace_ids.append(response.headers["X-Trace-Id"])
        traffic.rows += 4
    for _ in range(bad):
        assert http.post(f"{base}/predict", json={"instances": [{"bmi": "x"}]}, timeout=10).status_code == 422
        traffic.rejected += 1
    for _ in range(other):
        http.get(f"{base}/model", timeout=10).raise_for_status()
        traffic.other += 1


@dataclass
class Stack:
    card: ModelCard
    service: ServiceProcess
    prometheus: PrometheusServer
    otlp: OTLPReceiver
    traffic: Traffic
    base: str
    started: float

    def access_lines(
        self, enough: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The access-log lines on stdout, once `enough` holds (INFO lines reach stdout in batches, every 50 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = []
            for line in self.service.stdout_lines():
                if line.startswith("{"):
                    entry = json.loads(line)
                    if entry.get("event") == "request":
                        lines.append(entry)
            if enough(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(regression_model_dir: Path) -> Iterator[Stack]:
    card = ModelCard.load(regression_model_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        OTLPReceiver() as otlp,
        serve(regression_model_dir, port, otlp) as service,
        PrometheusServer([("modellens", f"127.0.0.1:{port}", "/metrics")]) as prometheus,
    ):
        started = time.time()
        traffic = Traffic()
        with requests.Session() as http:
            # Warm-up: one request of each kind, so every series exists before the measured traffic (as in
            # production, where Prometheus is scraping long before an incident); rate() ignores a series' birth.
            send(http, base, card, traffic, single=1, batches=0, bad=1, other=1)
            prometheus.wait_for_scrapes(2)
            send(http, base, card, traffic, single=20, batches=5, bad=3, other=2)
        # Every series must have at least two samples for rate() to see it.
        prometheus.wait_for_scrapes(3)
        yield Stack(card, service, prometheus, otlp, traffic, base, started)


class TestPrometheusScrapesTheService:
    """A real Prometheus scraping the real gunicorn answers the questions an on-call engineer asks."""

    def test_request_counts_and_rate_by_route(self, stack: Stack) -> None:
        served = len(stack.traffic.trace_ids)
        stack.prometheus.wait_for(
            'sum(http_server_request_duration_seconds_count{http_route="/predict"})',
            lambda result: bool(result) and float(result[0]["value"][1]) == served + stack.traffic.rejected,
        )
        by_status = stack.prometheus.query(
            'sum by (http_response_status_code) (http_server_request_duration_seconds_count{http_route="/predict"})'
        )
        assert {r["metric"]["http_response_status_code"]: float(r["value"][1]) for r in by_status} == {
            "200": served,
            "422": stack.traffic.rejected,
        }
        rate = stack.prometheus.query("sum by (http_route) (rate(http_server_request_duration_seconds_count[1m]))")
        rates = {r["metric"]["http_route"]: float(r["value"][1]) for r in rate}
        assert rates["/predict"] > 0 and rates["/model"] > 0
        assert "/metrics" in rates  # scrapes are requests too, but never traced

    def test_average_latency_and_p95(self, stack: Stack) -> None:
        selector = '{http_route="/predict",http_response_status_code="200"}'
        stack.prometheus.wait_for(f"sum(http_server_request_duration_seconds_count{selector})")
        predicted = len(stack.traffic.trace_ids)
        lines = stack.access_lines(lambda lines: sum(e["route"] == "/predict" for e in lines) >= predicted)
        durations = sorted(e["duration_ms"] / 1000 for e in lines if e["status"] == 200 and e["route"] == "/predict")
        assert len(durations) == len(stack.traffic.trace_ids)
        average = stack.prometheus.query(
            f"sum(rate(http_server_request_duration_seconds_sum{selector}[1m]))"
            f" / sum(rate(http_server_request_duration_seconds_count{selector}[1m]))"
        )
        value = float(average[0]["value"][1])
        # rate(sum)/rate(count) is the mean of the requests inside the window: bounded by their extremes.
        assert durations[0] * 0.999 <= value <= durations[-1] * 1.001
        p95 = stack.prometheus.query(
            f"histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{selector}[1m])))"
        )
        estimate = float(p95[0]["value"][1])
        true_p95 = durations[math.ceil(0.95 * len(durations)) - 1]
        edges = (0.0, *SECONDS_BUCKETS)
        bucket = bisect.bisect_left(edges, true_p95)  # histogram_quantile interpolates inside the true p95's bucket
        assert edges[bucket - 1] <= estimate <= edges[bucket], (estimate, true_p95)

    def test_predictions_by_model_version(self, stack: Stack) -> None:
        result = stack.prometheus.wait_for(
            "sum by (model_name, model_version) (model_predictions_total)",
            lambda r: bool(r) and float(r[0]["value"][1]) == stack.traffic.rows,
        )
        assert result[0]["metric"] == {"model_name": stack.card.name, "model_version": stack.card.version}
        info = stack.prometheus.query("model_info")
        assert [r["metric"]["model_version"] for r in info] == [stack.card.version]

    def test_exemplar_leads_to_the_request_and_its_logs(self, stack: Stack) -> None:
        selector = 'http_server_request_duration_seconds_bucket{http_route="/predict"}'
        stack.prometheus.wait_for(f"sum({selector})")
        exemplars = stack.prometheus.query_exemplars(selector, stack.started - 60, time.time() + 60)
        trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
        ours = trace_ids & set(stack.traffic.trace_ids)
        assert ours, f"no exemplar points at a request we sent: {trace_ids}"
        trace_id = sorted(ours)[0]
        lines = stack.access_lines(lambda lines: any(entry.get("trace_id") == trace_id for entry in lines))
        lines = [entry for entry in lines if entry.get("trace_id") == trace_id]
        assert len(lines) == 1 and lines[0]["route"] == "/predict"


class TestOTLPPush:
    """With an OTLP endpoint set, spans, metrics with exemplars and logs arrive, tied together by trace id."""

    def test_spans_for_every_request(self, stack: Stack) -> None:
        wanted = set(stack.traffic.trace_ids)
        stack.otlp.wait_for(lambda r: wanted <= {s.trace_id for s in r.spans("POST /predict")})
        for trace_id in stack.traffic.trace_ids[:3]:
            stack.otlp.wait_for(lambda r, t=trace_id: len([s for s in r.spans() if s.trace_id == t]) == 3)
            names = sorted(s.name for s in stack.otlp.spans() if s.trace_id == trace_id)
            assert names == ["POST /predict", "inference", "validate"]
        span = stack.otlp.spans("POST /predict")[0]
        assert span.resource["service.name"] == "modellens-e2e"
        assert span.resource["service.instance.id"]
        assert span.resource["deployment.environment.name"] == "local"

    def test_metrics_with_exemplars(self, stack: Stack) -> None:
        def has_exemplar(receiver: OTLPReceiver) -> bool:
            points = receiver.metrics("http.server.request.duration")
            return any(e.trace_id in stack.traffic.trace_ids for p in points for e in p.exemplars)

        stack.otlp.wait_for(has_exemplar)
        point = next(
            p
            for p in stack.otlp.metrics("http.server.request.duration")
            if p.attributes.get("http.route") == "/predict"
        )
        assert point.unit == "s" and point.temporality == "cumulative"
        assert point.explicit_bounds == list(SECONDS_BUCKETS)

    def test_every_request_log_record_carries_its_trace_id(self, stack: Stack) -> None:
        wanted = set(stack.traffic.trace_ids)
        stack.otlp.wait_for(lambda r: wanted <= {rec.trace_id for rec in r.log_records()})
        access = [rec for rec in stack.otlp.log_records() if rec.body == "request"]
        assert access and all(rec.trace_id and len(rec.trace_id) == 32 for rec in access)
        for record in access:
            assert not any(key.startswith("_") for key in record.attributes)
        predict = [
            rec for rec in access if rec.attributes.get("route") == "/predict" and rec.attributes["status"] == 200
        ]
        assert {rec.trace_id for rec in predict} == wanted


class TestShutdown:
    """SIGTERM flushes what the exporters buffered: nothing the service acknowledged is lost from telemetry."""

    def test_sigterm_flushes_buffered_spans_and_logs(self, regression_model_dir: Path) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        # Batches would wait a minute: only the worker-exit flush can deliver them in time.
        slow_export = {"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_BLRP_SCHEDULE_DELAY": "60000"}
        with OTLPReceiver() as otlp, serve(regression_model_dir, port, otlp, **slow_export) as service:
            response = requests.post(
                f"http://127.0.0.1:{port}/predict", json={"instances": [instance(card)]}, timeout=10
            )
            trace_id = response.headers["X-Trace-Id"]
            time.sleep(0.5)
            assert not [s for s in otlp.spans() if s.trace_id == trace_id]
            assert service.terminate() == 0
            assert {s.name for s in otlp.spans() if s.trace_id == trace_id} == {
                "POST /predict",
                "validate",
                "inference",
            }
            assert [r.body for r in otlp.log_records() if r.trace_id == trace_id] == ["request"]


class TestStartup:
    """A service that cannot start says why in one line a person can act on, and exits."""

    def test_a_prediction_log_that_cannot_be_opened_names_its_path_and_setting(
        self, regression_model_dir: Path, tmp_path: Path
    ) -> None:
        (tmp_path / "read-only").write_text("a file where the log's directory should be")
        log = tmp_path / "read-only" / "predictions.sqlite3"
        environment = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("MODELLENS_", "OTEL_"))},
            "MODELLENS_MODEL_DIR": str(regression_model_dir),
            "MODELLENS_PREDICTION_LOG": str(log),
            "MODELLENS_HOST": "127.0.0.1",
            "MODELLENS_PORT": str(free_port()),
        }
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "serve"],
            env=environment, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode != 0
        lines = (done.stdout + done.stderr).splitlines()
        assert any(
            line.startswith(f"cannot open the prediction log {log}") and "MODELLENS_PREDICTION_LOG" in line
            for line in lines
        ), lines[-10:]
