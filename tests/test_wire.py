"""The direct OTLP encoder produces exactly the messages the SDK's encoder produces."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from otel import _wire

ATTRIBUTES: dict[str, Any] = {
    "http.route": "/predict",
    "http.response.status_code": 200,
    "negative": -5,
    "big": 2**62,
    "ratio": 0.25,
    "flag": True,
    "off": False,
    "unicode": "ünïcødé ✓",
    "empty": "",
    "strings": ("a", "b"),
    "numbers": (1, 2, 3),
    "floats": (1.5, -0.0),
}


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


class TestSpans:
    """Every span feature round-trips to the same ExportTraceServiceRequest as the SDK's encoder."""

    def test_same_message_as_the_sdk(self, spans: InMemorySpanExporter) -> None:
        remote = SpanContext(
            0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
            trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "value")]),
        )  # fmt: skip
        parent_context = trace.set_span_in_context(NonRecordingSpan(remote))
        for index, provider in enumerate(_providers(spans)):
            tracer = provider.get_tracer(f"scope-{index}", "1.2.3")
            other = provider.get_tracer("other")
            with tracer.start_as_current_span("POST /predict", context=parent_context, kind=SpanKind.SERVER,
                                              attributes=ATTRIBUTES) as server:  # fmt: skip
                server.add_event("fault injected", {"fault.type": "latency", "fault.delay_s": 0.5})
                with other.start_as_current_span("inference", links=[Link(remote, {"why": "batch"})]):
                    pass
                with tracer.start_as_current_span("broken") as broken:
                    broken.set_status(Status(StatusCode.ERROR, "it broke"))
                server.set_status(Status(StatusCode.OK))
        finished = spans.get_finished_spans()
        assert len(finished) == 6
        ours = ExportTraceServiceRequest.FromString(_wire.encode_spans(finished))
        assert ours == sdk_encode_spans(finished)

    def test_cache_does_not_confuse_equal_values_of_other_types(self, spans: InMemorySpanExporter) -> None:
        tracer = _providers(spans)[0].get_tracer("t")
        for value in (1, True, 1.0, "1"):
            with tracer.start_as_current_span("s", attributes={"v": value}):
                pass
        finished = spans.get_finished_spans()
        ours = ExportTraceServiceRequest.FromString(_wire.encode_spans(finished))
        assert ours == sdk_encode_spans(finished)
        values = [span.attributes[0].value for span in ours.resource_spans[0].scope_spans[0].spans]
        assert [v.WhichOneof("value") for v in values] == ["int_value", "bool_value", "double_value", "string_value"]


def _providers(exporter: InMemorySpanExporter) -> list[TracerProvider]:
    """Two services (two resources) exporting to one exporter."""
    providers = []
    for name in ("one", "two"):
        provider = TracerProvider(resource=Resource.create({"service.name": name, "service.instance.id": name}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
    return providers


class TestLogs:
    """Log records, with and without trace context, bodies of every kind."""

    def test_same_message_as_the_sdk(self) -> None:
        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=Resource.create({"service.name": "logs"}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        tracer_provider = TracerProvider()
        logger = provider.get_logger("otel.access", "0.1")
        with tracer_provider.get_tracer("t").start_as_current_span("request"):
            logger.emit(
                body="request", severity_number=SeverityNumber.INFO, severity_text="INFO", attributes=ATTRIBUTES
            )
            logger.emit(body={"nested": {"k": [1, "two"]}}, severity_number=SeverityNumber.WARN, event_name="fault")
        logger.emit(body=None, severity_text="DEBUG")
        logger.emit(body=b"\x00bytes", attributes={"n": 3})
        finished = exporter.get_finished_logs()
        assert len(finished) == 4
        ours = ExportLogsServiceRequest.FromString(_wire.encode_logs(finished))
        assert ours == sdk_encode_logs(finished)
        provider.shutdown()
        tracer_provider.shutdown()


class TestExporters:
    """The fast exporters send what a real OTLP receiver decodes, through the SDK's HTTP client."""

    def test_spans_and_logs_reach_a_receiver(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        from otel.exporters import FastOTLPLogExporter, FastOTLPSpanExporter
        from tests.support.otlp import OTLPReceiver

        encoded: list[str] = []  # our encoder, not the SDK's fallback (tests/test_sdk.py says why it could fall back)

        def spy(name: str) -> Any:
            encode = getattr(_wire, name)

            def call(items: Any) -> bytes:
                encoded.append(name)
                return bytes(encode(items))

            return call

        for name in ("encode_spans", "encode_logs"):
            monkeypatch.setattr(_wire, name, spy(name))
        with OTLPReceiver() as receiver:
            span_exporter = FastOTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=5)
            log_exporter = FastOTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs", timeout=5)
            tracer_provider = TracerProvider(resource=Resource.create({"service.name": "wire"}))
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
            logger_provider = LoggerProvider(resource=Resource.create({"service.name": "wire"}))
            logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
            with tracer_provider.get_tracer("t").start_as_current_span("request", attributes=ATTRIBUTES) as span:
                logger_provider.get_logger("l").emit(body="request", attributes={"route": "/predict"})
                trace_id = format(span.get_span_context().trace_id, "032x")
            logger_provider.force_flush()
            receiver.wait_for(lambda r: bool(r.spans()) and bool(r.log_records()))
            (received,) = receiver.spans()
            assert received.trace_id == trace_id
            assert received.attributes["http.route"] == "/predict"
            assert received.attributes["floats"] == [1.5, -0.0]
            (record,) = receiver.log_records()
            assert record.trace_id == trace_id
            assert record.body == "request"
            assert sorted(encoded) == ["encode_logs", "encode_spans"]
            tracer_provider.shutdown()
            logger_provider.shutdown()

    def test_without_the_sdk_steps_they_are_the_sdk_exporters(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A release without the internals `otel._sdk.otlp_http_steps` needs: the SDK's own export, same spans."""
        from otel import _sdk
        from otel.exporters import FastOTLPSpanExporter
        from tests.support.otlp import OTLPReceiver

        monkeypatch.setattr(_sdk, "otlp_http_steps", lambda exporter: None)
        monkeypatch.setattr(_wire, "encode_spans", lambda spans: pytest.fail("our encoder ran"))
        with OTLPReceiver() as receiver:
            tracer_provider = TracerProvider(resource=Resource.create({"service.name": "wire"}))
            exporter = FastOTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=5)
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            with tracer_provider.get_tracer("t").start_as_current_span("request", attributes=ATTRIBUTES):
                pass
            (received,) = receiver.spans()
            assert received.attributes["http.route"] == "/predict"
            tracer_provider.shutdown()
