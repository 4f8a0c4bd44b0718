"""`modellens triage` on real components: a latency spike injected into gunicorn, found through a real Prometheus.

The service runs with MODELLENS_FAULTS=1 and honours `X-Modellens-Fault: latency=<seconds>` by running its stage
span (`feature_lookup`) with `fault.injected=true`; the test sends those headers itself, on every third request of
the spike phase, so it does not depend on the load generator. Prometheus scrapes /metrics (OpenMetrics with
exemplars) every second; the service pushes its spans to the OTLP test receiver, which tells which trace ids were
faulted. Tempo and Loki are switched off: the report stops at the exemplar trace ids.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import requests

from service.artifact.card import ModelCard
from service.cli import main
from service.triage.options import ENV
from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port
from tests.support.prometheus import PrometheusServer
from tests.test_serving import instance, serve

pytestmark = pytest.mark.slow

FAULT_HEADER = "X-Modellens-Fault"
DELAY = 0.3
PHASE = 7.0  # seconds of steady traffic, then of spike, then of steady traffic
RATE_INTERVAL = 5  # rate() window: five 1 s scrapes
TOLERANCE = 1.0  # one scrape interval: Prometheus sees a request at the first scrape after it ended


@dataclass
class Sent:
    """Trace ids and completion times (client clock) of what the test sent."""

    slow: dict[str, float] = field(default_factory=dict)
    fast: dict[str, float] = field(default_factory=dict)


def traffic(http: requests.Session, base: str, row: dict[str, float], sent: Sent, seconds: float, spike: bool) -> None:
    """/predict for `seconds`, about 30 requests a second; in a spike every third request carries the fault."""
    deadline = time.monotonic() + seconds
    number = 0
    while time.monotonic() < deadline:
        number += 1
        slow = spike and number % 3 == 0
        headers = {FAULT_HEADER: f"latency={DELAY}"} if slow else {}
        response = http.post(f"{base}/predict", json={"instances": [row]}, headers=headers, timeout=10)
        response.raise_for_status()
        (sent.slow if slow else sent.fast)[response.headers["X-Trace-Id"]] = time.time()
        time.sleep(0.03)


def faulted_trace_ids(otlp: OTLPReceiver) -> set[str]:
    return {span.trace_id for span in otlp.spans() if span.attributes.get("fault.injected") is True}


def test_latency_spike_is_found_with_its_exemplar_traces(
    regression_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `latency-spike` run: triage names /predict, its window holds the slow requests, its traces are faulted."""
    for variable in ENV.values():
        monkeypatch.delenv(variable, raising=False)
    row = instance(ModelCard.load(regression_model_dir))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sent = Sent()
    with (
        OTLPReceiver() as otlp,
        serve(regression_model_dir, port, otlp, MODELLENS_FAULTS="1"),
        PrometheusServer([("modellens", f"127.0.0.1:{port}", "/metrics")]) as prometheus,
        requests.Session() as http,
    ):
        begin = time.time()
        traffic(http, base, row, sent, 1.0, spike=False)  # every series exists before the measured traffic
        prometheus.wait_for_scrapes(2)
        traffic(http, base, row, sent, PHASE, spike=False)
        traffic(http, base, row, sent, PHASE, spike=True)
        traffic(http, base, row, sent, PHASE, spike=False)
        prometheus.wait_for_scrapes(2)
        otlp.wait_for(lambda r: set(sent.slow) <= faulted_trace_ids(r))
        assert not set(sent.fast) & faulted_trace_ids(otlp)

        since = math.ceil(time.time() - begin) + 2
        code = main(
            ["triage", "--prometheus", prometheus.url, "--tempo", "", "--loki", "", "--json",
             "--since", f"{since}s", "--step", "1s", "--rate-interval", f"{RATE_INTERVAL}s"]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)

    worst = report["worst"]
    assert (worst["route"], worst["method"]) == ("/predict", "POST"), report["headline"]
    assert worst["peak_s"] > 0.25 > worst["baseline_s"]
    start, end = (datetime.fromisoformat(worst["window"][edge]).timestamp() for edge in ("start", "end"))
    outside = {t: at for t, at in sent.slow.items() if not start - TOLERANCE <= at <= end + TOLERANCE}
    assert not outside, f"slow requests outside the window {worst['window']}: {outside}"
    assert end - start < 3 * PHASE  # the window is the spike, not the whole run

    reported = [trace["trace_id"] for trace in report["traces"]]
    assert reported, report["notes"]
    assert set(reported) <= faulted_trace_ids(otlp), (reported, report["notes"])
    assert all(trace["duration_s"] >= DELAY for trace in report["traces"])
    assert any("stops at the exemplar trace ids" in note for note in report["notes"])
