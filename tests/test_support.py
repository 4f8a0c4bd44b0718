"""Tests for the harness in tests/support: the doubles other tests trust must be tested themselves."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from tests.support.otlp import OTLPReceiver
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, ServiceStartError
from tests.support.prometheus import PrometheusError, PrometheusServer

RESOURCE = Resource.create({"service.name": "harness-test"})
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = f"""\
# TYPE harness_requests counter
# HELP harness_requests Requests handled.
harness_requests_total{{route="/predict"}} 42
# TYPE harness_latency_seconds histogram
# HELP harness_latency_seconds Request latency.
harness_latency_seconds_bucket{{le="0.1"}} 1 # {{trace_id="{TRACE_ID}",span_id="00f067aa0ba902b7"}} 0.05
harness_latency_seconds_bucket{{le="+Inf"}} 2
harness_latency_seconds_count 2
harness_latency_seconds_sum 0.55
# EOF
"""


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, never through a proxy
    return session


def _ended_spans() -> list[ReadableSpan]:
    provider = TracerProvider(resource=RESOURCE)
    span = provider.get_tracer("harness.tests").start_span("lonely")
    span.end()
    provider.shutdown()
    assert isinstance(span, ReadableSpan)
    return [span]


def _raw_post(port: int, path: str, body: bytes, content_type: str = "application/x-protobuf") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        with conn.getresponse() as response:
            response.read()
            return response.status
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


# --- OTLPReceiver ---


class TestOTLPReceiverDecoding:
    """Telemetry sent by the real OTLP/HTTP exporters arrives decoded into plain Python objects."""

    @pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
    def test_spans_keep_ids_parentage_attributes_and_events(
        self, receiver: OTLPReceiver, compression: Compression
    ) -> None:
        exporter = OTLPSpanExporter(
            endpoint=f"{receiver.endpoint}/v1/traces", session=_session(), compression=compression
        )
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("harness.tests")
        attributes: dict[str, AttributeValue] = {
            "http.route": "/predict",
            "n": 3,
            "ratio": 0.5,
            "ok": True,
            "tags": ("a", "b"),
        }
        try:
            with (
                tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes=attributes) as parent,
                tracer.start_as_current_span("child") as child,
            ):
                child.add_event("cache.miss", {"key": "k1"})
                child.set_status(StatusCode.ERROR, "boom")
        finally:
            provider.shutdown()

        receiver.wait_for(lambda r: len(r.spans()) == 2)
        got = {span.name: span for span in receiver.spans()}
        trace_id = format(parent.get_span_context().trace_id, "032x")
        assert got["parent"].trace_id == got["child"].trace_id == trace_id
        assert got["parent"].span_id == format(parent.get_span_context().span_id, "016x")
        assert got["parent"].parent_span_id is None
        assert got["child"].parent_span_id == got["parent"].span_id
        assert got["parent"].kind == "SERVER"
        assert got["parent"].attributes == {**attributes, "tags": ["a", "b"]}
        assert got["parent"].resource["service.name"] == "harness-test"
        assert got["parent"].scope_name == "harness.tests"
        assert got["child"].kind == "INTERNAL"
        assert (got["child"].status_code, got["child"].status_message) == ("ERROR", "boom")
        assert got["child"].events == [("cache.miss", {"key": "k1"})]
        assert got["child"].start_time_unix_nano <= got["child"].end_time_unix_nano
        assert child.get_span_context().is_valid
        assert receiver.requests_by_signal == {"traces": 2, "metrics": 0, "logs": 0}
        assert receiver.errors == []

    def test_metrics_flatten_points_and_carry_exemplars_of_the_active_span(self, receiver: OTLPReceiver) -> None:
        exporter = OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics", session=_session())
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        meter_provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
        tracer_provider = TracerProvider(resource=RESOURCE)
        try:
            meter = meter_provider.get_meter("harness.tests")
            meter.create_counter("harness.requests", unit="{request}").add(3, {"route": "/predict"})
            meter.create_gauge("harness.temperature").set(21.5)
            histogram = meter.create_histogram("harness.duration", unit="s")
            with tracer_provider.get_tracer("harness.tests").start_as_current_span("work") as span:
                histogram.record(0.25, {"route": "/predict"})
            assert meter_provider.force_flush()
        finally:
            meter_provider.shutdown()
            tracer_provider.shutdown()

        counter = receiver.metrics("harness.requests")[0]
        assert (counter.kind, counter.is_monotonic, counter.temporality) == ("sum", True, "cumulative")
        assert (counter.value, counter.unit, counter.attributes) == (3, "{request}", {"route": "/predict"})
        assert counter.exemplars == []  # recorded outside any span
        assert counter.resource["service.name"] == "harness-test"
        assert receiver.metrics("harness.temperature")[0].kind == "gauge"
        assert receiver.metrics("harness.temperature")[0].value == 21.5
        point = receiver.metrics("harness.duration")[0]
        assert (point.kind, point.count, point.sum, point.unit) == ("histogram", 1, 0.25, "s")
        assert sum(point.bucket_counts) == 1
        assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
        [exemplar] = point.exemplars
        assert exemplar.value == 0.25
        assert exemplar.trace_id == format(span.get_span_context().trace_id, "032x")
        assert exemplar.span_id == format(span.get_span_context().span_id, "016x")

    def test_log_records_carry_trace_context_body_and_event_name(self, receiver: OTLPReceiver) -> None:
        exporter = OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs", session=_session())
        logger_provider = LoggerProvider(resource=RESOURCE)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        tracer_provider = TracerProvider(resource=RESOURCE)
        logger = logger_provider.get_logger("harness.tests")
        try:
            with tracer_provider.get_tracer("harness.tests").start_as_current_span("work") as span:
                logger.emit(
                    severity_number=SeverityNumber.WARN,
                    severity_text="WARN",
                    body={"msg": "drift", "psi": 0.3},
                    attributes={"feature": "age"},
                    event_name="model.drift",
                )
            logger.emit(severity_number=SeverityNumber.INFO, body="outside a span")
        finally:
            logger_provider.shutdown()
            tracer_provider.shutdown()

        receiver.wait_for(lambda r: len(r.log_records()) == 2)
        inside, outside = receiver.log_records()
        assert inside.trace_id == format(span.get_span_context().trace_id, "032x")
        assert inside.span_id == format(span.get_span_context().span_id, "016x")
        assert (inside.severity_text, inside.severity_number) == ("WARN", SeverityNumber.WARN.value)
        assert inside.body == {"msg": "drift", "psi": 0.3}
        assert (inside.attributes, inside.event_name) == ({"feature": "age"}, "model.drift")
        assert inside.resource["service.name"] == "harness-test"
        assert (outside.trace_id, outside.span_id, outside.body) == (None, None, "outside a span")

    def test_bad_requests_are_rejected_and_recorded(self, receiver: OTLPReceiver) -> None:
        assert _raw_post(receiver.port, "/v1/unknown", b"") == 404
        assert _raw_post(receiver.port, "/v1/traces", b"{}", content_type="application/json") == 415
        assert _raw_post(receiver.port, "/v1/traces", b"not a protobuf") == 400
        assert [error.split()[0] for error in receiver.errors] == ["404", "415", "400"]
        receiver.clear()
        assert receiver.errors == []
        assert receiver.requests_by_signal == {"traces": 0, "metrics": 0, "logs": 0}

    def test_wait_for_timeout_summarises_what_arrived(self, receiver: OTLPReceiver) -> None:
        with pytest.raises(TimeoutError, match=r"spans=\[\].*requests_by_signal"):
            receiver.wait_for(lambda r: bool(r.spans()), timeout=0.2)


class TestOTLPReceiverFaultModes:
    """error503 and hang simulate a collector outage; closing never waits on hanging requests."""

    def test_error503_fails_the_export_and_ok_recovers(self, receiver: OTLPReceiver) -> None:
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", session=_session(), timeout=1.0)
        try:
            receiver.mode = "error503"
            assert exporter.export(_ended_spans()) is SpanExportResult.FAILURE
            assert receiver.spans() == []
            receiver.mode = "ok"
            assert exporter.export(_ended_spans()) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert receiver.requests_by_mode["error503"] >= 1
        assert receiver.requests_by_mode["ok"] == 1
        assert [span.name for span in receiver.spans()] == ["lonely"]

    def test_hang_makes_the_export_time_out(self, receiver: OTLPReceiver) -> None:
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", session=_session(), timeout=1.0)
        receiver.mode = "hang"
        started = time.monotonic()
        try:
            result = exporter.export(_ended_spans())
        finally:
            exporter.shutdown()
        assert result is SpanExportResult.FAILURE
        assert time.monotonic() - started < 3.0
        assert receiver.requests_by_mode["hang"] >= 1
        assert receiver.spans() == []

    def test_mode_change_drops_hanging_requests_unanswered(self, receiver: OTLPReceiver) -> None:
        receiver.mode = "hang"
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(_raw_post, receiver.port, "/v1/traces", b"")
            receiver.wait_for(lambda r: r.requests_by_mode["hang"] == 1, timeout=5)
            assert not pending.done()
            receiver.mode = "ok"
            with pytest.raises(http.client.RemoteDisconnected):
                pending.result(timeout=5)
        assert _raw_post(receiver.port, "/v1/traces", b"") == 200

    def test_close_returns_promptly_with_hanging_requests_in_flight(self) -> None:
        receiver = OTLPReceiver().start()
        try:
            receiver.mode = "hang"
            with ThreadPoolExecutor(max_workers=2) as pool:
                pending = [pool.submit(_raw_post, receiver.port, "/v1/logs", b"") for _ in range(2)]
                receiver.wait_for(lambda r: r.requests_by_mode["hang"] == 2, timeout=5)
                started = time.monotonic()
                receiver.close()
                assert time.monotonic() - started < 2.0
                for future in pending:
                    with pytest.raises(http.client.RemoteDisconnected):
                        future.result(timeout=5)
        finally:
            receiver.close()

    def test_rejects_unknown_mode(self, receiver: OTLPReceiver) -> None:
        with pytest.raises(ValueError, match="mode must be one of"):
            receiver.mode = "flaky"  # type: ignore[assignment]


# --- PrometheusServer ---


class _Exposition(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = OPENMETRICS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def exposition() -> Iterator[str]:
    """A static OpenMetrics page; yields its ``127.0.0.1:port``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def prometheus(exposition: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    rules = tmp_path_factory.mktemp("rules") / "rules.yml"
    rule = {"record": "harness:requests:doubled", "expr": "harness_requests_total * 2"}
    rules.write_text(json.dumps({"groups": [{"name": "harness", "rules": [rule]}]}))
    with PrometheusServer([("static", exposition, "/metrics")], rule_files=[rules]) as server:
        server.wait_for_scrapes(1)
        yield server


@pytest.mark.slow
class TestPrometheusServer:
    """A real Prometheus scrapes loopback targets; the query helpers return its data and errors."""

    def test_query_returns_the_scraped_value(self, prometheus: PrometheusServer) -> None:
        [series] = prometheus.query("harness_requests_total")
        assert series["metric"]["job"] == "static"
        assert series["metric"]["route"] == "/predict"
        assert float(series["value"][1]) == 42

    def test_query_exemplars_returns_the_trace_id(self, prometheus: PrometheusServer) -> None:
        now = time.time()
        result = prometheus.query_exemplars("harness_latency_seconds_bucket", start=now - 300, end=now + 1)
        exemplars = [exemplar for series in result for exemplar in series["exemplars"]]
        assert exemplars, result
        assert {exemplar["labels"]["trace_id"] for exemplar in exemplars} == {TRACE_ID}
        assert float(exemplars[0]["value"]) == 0.05

    def test_query_range_returns_a_matrix(self, prometheus: PrometheusServer) -> None:
        now = time.time()
        [series] = prometheus.query_range('up{job="static"}', start=now - 60, end=now, step=1)
        assert {value for _, value in series["values"]} == {"1"}

    def test_targets_report_health(self, prometheus: PrometheusServer, exposition: str) -> None:
        [target] = prometheus.targets()
        assert target["scrapeUrl"] == f"http://{exposition}/metrics"
        assert target["health"] == "up"

    def test_rule_files_are_evaluated(self, prometheus: PrometheusServer) -> None:
        result = prometheus.wait_for("harness:requests:doubled", lambda r: bool(r) and r[0]["value"][1] == "84")
        assert result[0]["metric"]["route"] == "/predict"

    def test_wait_for_scrapes_only_counts_scrapes_after_the_call(self, prometheus: PrometheusServer) -> None:
        prometheus.wait_for_scrapes(2)  # older scrapes exist now: counting them would return at once
        started = time.monotonic()
        prometheus.wait_for_scrapes(2)
        assert time.monotonic() - started >= 0.9  # two fresh scrapes are one 1 s interval apart

    def test_query_errors_carry_prometheus_text(self, prometheus: PrometheusServer) -> None:
        with pytest.raises(PrometheusError, match=r"bad_data: .*parse error"):
            prometheus.query("sum(")

    def test_wait_for_timeout_reports_last_result_and_target_health(self, prometheus: PrometheusServer) -> None:
        with pytest.raises(TimeoutError, match=r"(?s)last result: \[\].*health=up"):
            prometheus.wait_for("harness_no_such_metric", timeout=0.5)

    def test_reload_applies_new_targets(self, prometheus: PrometheusServer, exposition: str) -> None:
        prometheus.reload([("static", exposition, "/metrics"), ("again", exposition, "/metrics")])
        try:
            prometheus.wait_for('up{job="again"} == 1')
        finally:
            prometheus.reload([("static", exposition, "/metrics")])


class TestPrometheusServerConfig:
    """Misconfiguration fails loudly instead of skipping."""

    def test_missing_binary_points_at_make_test(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="`make test` installs Debian's prometheus"):
            PrometheusServer(binary=str(tmp_path / "prometheus")).start()

    def test_only_loopback_targets(self) -> None:
        with pytest.raises(ValueError, match=r"127\.0\.0\.1:port"):
            PrometheusServer([("remote", "10.0.0.1:9100", "/metrics")])


# --- ServiceProcess ---


@pytest.mark.slow
class TestServiceProcess:
    """Starts a subprocess, detects readiness or early death, and cleans up its whole process group."""

    def test_waits_for_readiness_and_keeps_output(self, tmp_path: Path) -> None:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(tmp_path),
        ]
        with ServiceProcess(argv, ready_url=f"http://127.0.0.1:{port}/", env={"PYTHONUNBUFFERED": "1"}) as proc:
            assert proc.returncode is None
            assert any("Serving HTTP" in line for line in proc.stdout_lines())
            assert any('"GET / HTTP/1.1" 200' in line for line in proc.stderr_lines())  # the readiness probe
            assert proc.terminate() == -signal.SIGTERM
        assert "Serving HTTP" in proc.output()  # still readable after cleanup

    def test_early_exit_is_reported_with_output(self) -> None:
        argv = [sys.executable, "-c", 'import sys; print("boom"); sys.exit(3)']
        started = time.monotonic()
        with pytest.raises(ServiceStartError, match=r"(?s)exited with code 3.*boom"):
            ServiceProcess(argv, ready_url=f"http://127.0.0.1:{free_port()}/").start()
        assert time.monotonic() - started < 10

    def test_readiness_timeout_stops_the_process(self) -> None:
        proc = ServiceProcess(
            [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"],
            ready_url=f"http://127.0.0.1:{free_port()}/",
            ready_timeout=1.0,
        )
        with pytest.raises(ServiceStartError, match=r"(?s)did not answer 200.*sleeping"):
            proc.start()
        assert proc.returncode == -signal.SIGTERM

    def test_exit_kills_children_that_outlive_the_main_process(self, tmp_path: Path) -> None:
        port = free_port()
        script = f'sleep 300 & echo "$!"; exec "{sys.executable}" -m http.server {port} --bind 127.0.0.1'
        with ServiceProcess(["sh", "-c", script], ready_url=f"http://127.0.0.1:{port}/", cwd=tmp_path) as proc:
            child = int(proc.stdout_lines()[0])
            assert proc.terminate() == -signal.SIGTERM  # signals the main process only
            assert _alive(child)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)

    def test_env_values_are_merged_and_none_removes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HARNESS_DROP", "x")
        code = "import os; print(os.getenv('HARNESS_SET'), os.getenv('HARNESS_DROP'), 'PATH' in os.environ)"
        with ServiceProcess([sys.executable, "-c", code], env={"HARNESS_SET": "1", "HARNESS_DROP": None}) as proc:
            assert proc.wait(timeout=10) == 0
            assert proc.stdout_lines() == ["1 None True"]
