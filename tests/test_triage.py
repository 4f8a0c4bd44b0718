"""`modellens triage`: Prometheus, Tempo and Loki clients, the report, and the command's failure modes.

The Tempo and Loki answers come from tests/data/triage/: recorded from the documentation of the pinned versions
(Tempo 2.x/3.0, Loki 3.x, Prometheus 3.x; tests/data/triage/README.md names each source), or constructed in those
documented formats where the docs have no example of this service's spans and lines. They are served over real
HTTP by a stub on 127.0.0.1, so the clients' requests (paths, parameters, headers) are checked too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from service.cli import main
from service.triage.alerts import Alert, category, merge_alerts
from service.triage.backend import Backend, BackendError
from service.triage.links import explore_url
from service.triage.loki import CATEGORIZE_LABELS, LokiClient, logql_for_trace, parse_streams
from service.triage.options import ENV
from service.triage.prometheus import (
    LatencyWindow,
    PrometheusClient,
    latency_query,
    parse_exemplars,
    worst_windows,
)
from service.triage.report import Finding, Report, to_dict
from service.triage.tempo import TempoClient, decode_id, parse_search, parse_trace
from service.triage.text import render_text
from tests.support.ports import free_port

DATA = Path(__file__).resolve().parent / "data" / "triage"
T0 = 1785813000.0  # 2026-08-04T03:10:00Z
END = T0 + 1800  # 03:40:00Z
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"  # the trace in tempo_v2_modellens_trace.json
DOC_TRACE_ID = "5b8efff798038103d269b633813fc700"  # the trace in the Tempo documentation's examples


def data(name: str) -> Any:
    return json.loads((DATA / name).read_text())


# --- a stub backend: real HTTP on loopback, answers from a handler ---------------------------------------------
@dataclass(frozen=True)
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


Handler = Callable[[Seen], tuple[int, Any]]


class StubBackend:
    """`with StubBackend(handler) as stub:` serves GETs on `stub.url`; `handler(seen)` returns (status, JSON body)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                )
                stub.seen.append(seen)
                status, body = stub.handler(seen)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StubBackend:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def routes(table: dict[str, Any]) -> Handler:
    """Answer 200 with `table[path]` (a callable gets the request), 404 for anything else."""

    def handler(seen: Seen) -> tuple[int, Any]:
        if seen.path not in table:
            return 404, {"error": "not found"}
        answer = table[seen.path]
        return (200, answer(seen)) if callable(answer) else (200, answer)

    return handler


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(autouse=True)
def no_backend_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MODELLENS_*_URL variables of the machine running the tests never leak into them."""
    for variable in ENV.values():
        monkeypatch.delenv(variable, raising=False)


def matrix(metric: dict[str, str], values: list[tuple[float, float]]) -> dict[str, Any]:
    """A Prometheus range-vector series in the documented shape (sample values are strings)."""
    return {"metric": metric, "values": [[t, "NaN" if v != v else repr(v)] for t, v in values]}


def spike_series(route: str = "/predict", job: str = "modellens", peak: float = 0.45) -> dict[str, Any]:
    """p99 at 12 ms every 15 s for 30 minutes, rising to `peak` at 03:33:45Z (elevated 03:33:15–03:34:00Z)."""
    levels = {1995: 0.3, 2010: 0.4, 2025: peak, 2040: 0.42, 2055: 0.2}  # seconds after 03:00:00Z
    values = [(T0 + i * 15, levels.get(600 + i * 15, 0.012)) for i in range(121)]
    return matrix({"job": job, "http_route": route, "http_request_method": "POST"}, values)


# --- options ---------------------------------------------------------------------------------------------------
class TestOptions:
    """Backend URLs come from the flag, else MODELLENS_<BACKEND>_URL, else the compose stack's in-network name."""

    def parse(self, *argv: str, env: dict[str, str] | None = None) -> Any:
        from service.cli import _parser
        from service.triage.options import Options

        return Options.from_args(_parser().parse_args(["triage", *argv]), env or {}, now=END)

    def test_compose_defaults(self) -> None:
        options = self.parse()
        assert (options.prometheus, options.tempo, options.loki) == (
            "http://prometheus:9090",
            "http://tempo:3200",
            "http://loki:3100",
        )
        assert options.grafana == "http://localhost:3000"
        assert (options.start, options.end, options.step, options.rate_interval) == (END - 1800, END, 15, 60)

    def test_environment_then_flags(self) -> None:
        env = {ENV["prometheus"]: "http://prom.example:9090/", ENV["tempo"]: "http://tempo.example:3200"}
        options = self.parse("--tempo", "http://flag:3200", env=env)
        assert options.prometheus == "http://prom.example:9090"
        assert options.tempo == "http://flag:3200"

    def test_empty_switches_tempo_and_loki_off(self) -> None:
        options = self.parse("--tempo", "", env={ENV["loki"]: ""})
        assert options.tempo is None and options.loki is None

    def test_range_step_and_rate_interval(self) -> None:
        options = self.parse("--since", "2h", "--until", "2026-08-04T03:40:00Z")
        assert (options.start, options.end, options.step, options.rate_interval) == (END - 7200, END, 60, 60)
        options = self.parse("--since", "90s", "--step", "1s", "--rate-interval", "5s", "--until", str(END))
        assert (options.end - options.start, options.step, options.rate_interval) == (90, 1, 5)

    def test_prometheus_cannot_be_switched_off(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["triage", "--prometheus", ""]) == 2
        assert "error: --prometheus (or MODELLENS_PROMETHEUS_URL) cannot be empty" in capsys.readouterr().err

    @pytest.mark.parametrize(
        "argv", [["--since", "soon"], ["--since", "-5m"], ["--until", "yesterday"], ["--quantile", "99"]]
    )
    def test_bad_values_are_usage_errors(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["triage", *argv])
        assert exited.value.code == 2
        assert "error:" in capsys.readouterr().err


# --- Prometheus -------------------------------------------------------------------------------------------------
class TestLatencyQuery:
    """The quantile keeps job, route and method, skips mirror series and, by default, probe routes."""

    def test_default_routes(self) -> None:
        expr = latency_query(0.99, 60, None)
        assert expr.startswith("histogram_quantile(0.99, sum by (job, http_route, http_request_method, le) (rate(")
        assert 'mirror=""' in expr and 'http_route!~"/healthz|/readyz|/metrics"' in expr and "[60s]" in expr

    def test_route_regex_is_quoted(self) -> None:
        assert 'http_route=~"/pre\\"dict"' in latency_query(0.5, 2.5, '/pre"dict')
        assert "[2500ms]" in latency_query(0.5, 2.5, None)


class TestWorstWindows:
    """The window is the run of points around the peak above half-way between the median and the peak."""

    def test_spike_window(self) -> None:
        (window,) = worst_windows([spike_series()], rate_interval=60)
        assert (window.route, window.method, window.job) == ("/predict", "POST", "modellens")
        assert window.peak == 0.45 and window.peak_at == T0 + 1425
        assert window.baseline == 0.012 and window.threshold == 0.231
        assert window.start == T0 + 1395 - 60  # first elevated point (0.3 >= 0.231) minus the rate interval
        assert window.end == T0 + 1440  # last elevated point (0.42; the next, 0.2, is below)

    def test_one_window_per_route_highest_peak_first(self) -> None:
        slow_scrape = spike_series(job="modellens-scrape", peak=0.9)
        steady = matrix(
            {"job": "modellens", "http_route": "/model", "http_request_method": "GET"},
            [(T0, 0.004), (T0 + 15, float("nan")), (T0 + 30, 0.005)],
        )
        windows = worst_windows([steady, spike_series(), slow_scrape], rate_interval=60)
        assert [(w.route, w.job, w.peak) for w in windows] == [
            ("/predict", "modellens-scrape", 0.9),
            ("/model", "modellens", 0.005),
        ]

    def test_no_samples(self) -> None:
        assert worst_windows([matrix({"http_route": "/predict"}, [(T0, float("nan"))])], 60) == []


class TestExemplars:
    """Exemplars from the documented `query_exemplars` answer, one per trace, slowest first."""

    def test_documented_answer(self) -> None:
        refs = parse_exemplars(data("prometheus_query_exemplars.json")["data"])
        assert [(r.trace_id, r.value, r.timestamp) for r in refs] == [
            ("hCtjygkIHwAN9vs4", 20.0, 1600096965.489),
            ("Olp9XHlq763ccsfa", 19.0, 1600096955.479),
            ("EpTxMJ40fUus7aGY", 6.0, 1600096945.479),
        ]
        assert refs[0].series["service"] == "foo"

    def test_hex_ids_are_padded_and_deduplicated(self) -> None:
        series = {"seriesLabels": {"http_route": "/predict", "http_response_status_code": "200"}}
        exemplars = [
            {"labels": {"trace_id": "ABC", "span_id": "1"}, "value": "0.2", "timestamp": T0},
            {"labels": {"traceID": "abc"}, "value": "0.3", "timestamp": T0 + 1},
            {"labels": {"other": "x"}, "value": "9", "timestamp": T0},
        ]
        (ref,) = parse_exemplars([{**series, "exemplars": exemplars}])
        assert ref.trace_id == "0" * 29 + "abc" and ref.value == 0.3


class TestPrometheusClient:
    """The client reads the documented envelopes and turns Prometheus' own errors into messages."""

    def test_documented_range_query(self, session: requests.Session) -> None:
        with StubBackend(routes({"/api/v1/query_range": data("prometheus_query_range.json")})) as stub:
            client = PrometheusClient(Backend("Prometheus", stub.url, session, 5))
            result = client.query_range("up", 1435781430.781, 1435781460.781, 15)
        assert [series["metric"]["job"] for series in result] == ["prometheus", "node"]
        assert stub.seen[0].params == {"query": "up", "start": "1435781430.781", "end": "1435781460.781", "step": "15"}

    def test_query_error_carries_prometheus_message(self, session: requests.Session) -> None:
        error = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
        with StubBackend(lambda seen: (400, error)) as stub:
            client = PrometheusClient(Backend("Prometheus", stub.url, session, 5))
            with pytest.raises(BackendError, match=r"HTTP 400.*bad_data: parse error"):
                client.query("up{", END)

    def test_alerts_and_model_versions(self, session: requests.Session) -> None:
        info = {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"model_name": "diabetes", "model_version": "3f2a9c1e5b7d"}, "value": [END, "1"]},
        ]}}  # fmt: skip
        table = {"/api/v1/alerts": data("prometheus_alerts.json"), "/api/v1/query": info}
        with StubBackend(routes(table)) as stub:
            client = PrometheusClient(Backend("Prometheus", stub.url, session, 5))
            assert client.alerts()[0]["labels"] == {"alertname": "my-alert"}
            assert client.model_versions(END - 90, END) == [("diabetes", "3f2a9c1e5b7d")]
        assert stub.seen[-1].params["query"].endswith("(last_over_time(model_info[90s]))")


class TestAlerts:
    """Firing history and current alerts merge per alert; drift and data-quality alerts are told apart."""

    def test_documented_active_alert(self) -> None:
        (alert,) = merge_alerts([], data("prometheus_alerts.json")["data"]["alerts"])
        assert (alert.name, alert.state, alert.category, alert.labels) == ("my-alert", "firing", "other", {})
        assert alert.active_since == datetime.fromisoformat("2018-07-04T18:27:12.606021+00:00").timestamp()

    def test_history_joins_active(self) -> None:
        labels = {"alertname": "ModelFeatureDrift", "feature": "bmi", "severity": "ticket"}
        history = [matrix({"__name__": "ALERTS", "alertstate": "firing", **labels}, [(T0 + 60, 1), (T0 + 120, 1)])]
        active = [{"labels": labels, "state": "firing", "activeAt": "2026-08-04T03:00:00Z",
                   "annotations": {"summary": "bmi drifted"}}]  # fmt: skip
        (alert,) = merge_alerts(history, active)
        assert (alert.first_firing, alert.last_firing, alert.summary) == (T0 + 60, T0 + 120, "bmi drifted")
        assert alert.labels == {"feature": "bmi", "severity": "ticket"} and alert.severity == "ticket"
        assert alert.overlaps(END - 10, END)  # still firing

    def test_resolved_alert_overlap(self) -> None:
        alert = Alert("ModelDataQualitySpike", {}, "data_quality", "resolved", first_firing=T0, last_firing=T0 + 60)
        assert alert.overlaps(T0 + 30, T0 + 90) and not alert.overlaps(T0 + 61, T0 + 90)

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("ModelFeatureDrift", "drift"),
            ("ModelFeatureDriftWarning", "drift"),
            ("ModelPredictionDrift", "drift"),
            ("ModelDataQualitySpike", "data_quality"),
            ("ModelLatencySLOBurnFast", "other"),
        ],
    )
    def test_categories(self, name: str, expected: str) -> None:
        assert category(name) == expected


# --- Tempo ------------------------------------------------------------------------------------------------------
class TestTempoTraceFormat:
    """Both documented trace-by-id answers (v2 `trace.resourceSpans`, v1 `batches`) parse to the same trace."""

    @pytest.mark.parametrize("name", ["tempo_v2_trace.json", "tempo_v1_trace.json"])
    def test_documented_answers(self, name: str) -> None:
        trace = parse_trace(data(name))
        (span,) = trace.spans
        assert trace.trace_id == DOC_TRACE_ID  # "W47/95gDgQPSabYzgT/HAA==" in the answer: base64, not hex
        assert (span.span_id, span.parent_span_id, span.name, span.kind) == (
            "eee19b7ec3c1b100",
            None,
            "I am a span!",
            "server",
        )
        assert (span.status, span.duration, span.attributes) == ("unset", 698.0, {"my.span.attr": "some value"})
        assert span.resource == {"service.name": "my.service"}
        assert trace.root is span and trace.slowest_stage is None

    def test_ids(self) -> None:
        assert decode_id("7uGbfsPBsQA=") == "eee19b7ec3c1b100"
        assert decode_id("EEE19B7EC3C1B100") == "eee19b7ec3c1b100"  # OTLP/JSON hex passes through
        assert decode_id("") is None and decode_id("AAAAAAAAAAA=") is None  # empty / all-zero parent

    def test_modellens_trace_names_the_slowest_stage(self) -> None:
        trace = parse_trace(data("tempo_v2_modellens_trace.json"))
        assert trace.root is not None and trace.root.name == "POST /predict" and trace.root.kind == "server"
        assert trace.root.attributes["http.response.status_code"] == 200
        stage = trace.slowest_stage
        assert stage is not None and stage.name == "feature_lookup"
        assert stage.attributes == {"fault.injected": True, "fault.type": "latency", "fault.delay_s": 0.3}
        assert round(stage.duration, 4) == 0.3003
        assert [s.name for s in trace.spans] == [
            "POST /predict",
            "validate",
            "feature_lookup",
            "inference",
            "shadow inference",
        ]

    def test_search_answers(self) -> None:
        assert parse_search(data("tempo_search_traceql.json")) == [DOC_TRACE_ID]
        assert parse_search(data("tempo_search_tags.json")) == [
            "0" * 16 + "d6e9329d67b6146a",
            "0" * 16 + "1b1ba462b409200d",
        ]

    def test_not_a_trace(self) -> None:
        with pytest.raises(ValueError, match="not a Tempo trace"):
            parse_trace(["batches"])


class TestTempoClient:
    """v2 first; v1 when v2 is absent (Tempo < 2.6); None when neither has the trace."""

    def test_v2(self, session: requests.Session) -> None:
        with StubBackend(routes({f"/api/v2/traces/{DOC_TRACE_ID}": data("tempo_v2_trace.json")})) as stub:
            trace = TempoClient(Backend("Tempo", stub.url, session, 5)).trace(DOC_TRACE_ID, 100.5, 200.5)
        assert trace is not None and trace.spans[0].name == "I am a span!"
        assert [s.path for s in stub.seen] == [f"/api/v2/traces/{DOC_TRACE_ID}"]
        assert stub.seen[0].params == {"start": "100", "end": "201"}

    def test_falls_back_to_v1(self, session: requests.Session) -> None:
        with StubBackend(routes({f"/api/traces/{DOC_TRACE_ID}": data("tempo_v1_trace.json")})) as stub:
            trace = TempoClient(Backend("Tempo", stub.url, session, 5)).trace(DOC_TRACE_ID, 0, 1)
        assert trace is not None and trace.trace_id == DOC_TRACE_ID
        assert [s.path for s in stub.seen] == [f"/api/v2/traces/{DOC_TRACE_ID}", f"/api/traces/{DOC_TRACE_ID}"]

    def test_missing_trace(self, session: requests.Session) -> None:
        empty: dict[str, Any] = {"trace": {"resourceSpans": []}}
        with StubBackend(routes({})) as missing, StubBackend(routes({f"/api/v2/traces/{TRACE_ID}": empty})) as v2:
            assert TempoClient(Backend("Tempo", missing.url, session, 5)).trace(TRACE_ID, 0, 1) is None
            assert TempoClient(Backend("Tempo", v2.url, session, 5)).trace(TRACE_ID, 0, 1) is None
        assert len(v2.seen) == 1  # an empty v2 answer is an answer: no v1 call

    def test_search(self, session: requests.Session) -> None:
        with StubBackend(routes({"/api/search": data("tempo_search_traceql.json")})) as stub:
            found = TempoClient(Backend("Tempo", stub.url, session, 5)).search('{ .service.name = "x" }', 0, 1, 3)
        assert found == [DOC_TRACE_ID]
        assert stub.seen[0].params == {"q": '{ .service.name = "x" }', "start": "0", "end": "2", "limit": "3"}

    def test_unexpected_format(self, session: requests.Session) -> None:
        broken = {"batches": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}
        with (
            StubBackend(routes({f"/api/v2/traces/{TRACE_ID}": broken})) as stub,
            pytest.raises(BackendError, match="unexpected format"),
        ):
            TempoClient(Backend("Tempo", stub.url, session, 5)).trace(TRACE_ID, 0, 1)


# --- Loki -------------------------------------------------------------------------------------------------------
class TestLokiFormat:
    """Documented streams answers, with and without the categorize-labels encoding."""

    def test_documented_streams(self) -> None:
        lines = parse_streams(data("loki_query_range_streams.json"))
        assert [(line.time_ns, line.line) for line in lines] == [
            (1569266492548155000, "bar"),
            (1569266497240578000, "foo"),
        ]
        assert lines[0].labels == {"filename": "/var/log/myproject.log", "job": "varlogs", "level": "info"}
        assert lines[0].metadata == {} and lines[0].parsed == {}

    def test_documented_categorized_streams(self) -> None:
        first, second, third = parse_streams(data("loki_query_range_categorized.json"))
        assert (first.line, first.metadata, first.parsed) == ("super line", {}, {})
        assert second.metadata == {"foo": "a", "bar": "b"} and second.labels == {"test": "test"}
        assert third.parsed == {"msg": "text"}
        assert third.fields == {"test": "test", "foo": "a", "bar": "b", "msg": "text"}

    def test_not_streams(self) -> None:
        with pytest.raises(ValueError, match="streams"):
            parse_streams({"status": "success", "data": {"resultType": "matrix", "result": []}})

    def test_logql(self) -> None:
        assert logql_for_trace("modellens", TRACE_ID) == f'{{service_name="modellens"}} | trace_id="{TRACE_ID}"'
        assert logql_for_trace(None, "x") == '{service_name=~".+"} | trace_id="x"'
        assert logql_for_trace('a"b', "x") == '{service_name="a\\"b"} | trace_id="x"'


class TestLokiClient:
    """The client asks for categorized labels, oldest first, with nanosecond bounds."""

    def test_request_and_answer(self, session: requests.Session) -> None:
        answer = data("loki_modellens_trace_logs.json")
        with StubBackend(routes({"/loki/api/v1/query_range": answer})) as stub:
            lines = LokiClient(Backend("Loki", stub.url, session, 5)).logs("{a}", 1.5, 2.25, limit=7)
        assert [line.line for line in lines] == ["fault injected", "request"]
        assert lines[1].metadata["trace_id"] == TRACE_ID and lines[1].metadata["duration_ms"] == "313.2"
        assert lines[1].labels == {"service_name": "modellens", "deployment_environment": "compose"}
        (seen,) = stub.seen
        assert seen.params == {
            "query": "{a}",
            "start": "1500000000",
            "end": "2250000000",
            "limit": "7",
            "direction": "forward",
        }
        ((header, value),) = CATEGORIZE_LABELS.items()
        assert seen.headers[header.lower()] == value == "categorize-labels"

    def test_unexpected_format(self, session: requests.Session) -> None:
        broken = {"data": {"result": [{"values": [["x"]]}]}}
        with (
            StubBackend(routes({"/loki/api/v1/query_range": broken})) as stub,
            pytest.raises(BackendError, match="unexpected format"),
        ):
            LokiClient(Backend("Loki", stub.url, session, 5)).logs("{a}", 0, 1)


# --- links ------------------------------------------------------------------------------------------------------
class TestExploreLinks:
    """One function builds every Explore URL: one pane, the provisioned uid, the range in milliseconds."""

    def test_trace_link(self) -> None:
        url = explore_url("http://grafana:3000/", "tempo", {"queryType": "traceql", "query": TRACE_ID}, 1.5, 2)
        parts = urlsplit(url)
        assert (parts.netloc, parts.path) == ("grafana:3000", "/explore")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert query["schemaVersion"] == "1" and query["orgId"] == "1"
        assert json.loads(query["panes"]) == {
            "triage": {
                "datasource": "tempo",
                "queries": [
                    {
                        "refId": "A",
                        "datasource": {"type": "tempo", "uid": "tempo"},
                        "queryType": "traceql",
                        "query": TRACE_ID,
                    }
                ],
                "range": {"from": "1500", "to": "2000"},
            }
        }

    def test_logs_link_survives_quoting(self) -> None:
        logql = logql_for_trace("modellens", TRACE_ID)
        url = explore_url("http://localhost:3000", "loki", {"expr": logql, "queryType": "range"}, 0, 1)
        panes = json.loads(parse_qs(urlsplit(url).query)["panes"][0])
        assert panes["triage"]["queries"][0]["expr"] == logql
        assert panes["triage"]["queries"][0]["datasource"] == {"type": "loki", "uid": "loki"}


# --- the report -------------------------------------------------------------------------------------------------
def sample_report() -> Report:
    window = LatencyWindow("/predict", "POST", "modellens", 0.812, T0 + 160, 0.012, 0.412, T0 + 100, T0 + 250)
    finding = Finding(TRACE_ID, "exemplar", 0.3132, T0 + 159, "b7ad6b7169203331", "200")
    finding.trace = parse_trace(data("tempo_v2_modellens_trace.json"))
    finding.logs = parse_streams(data("loki_modellens_trace_logs.json"))
    finding.links = {"trace": "http://grafana/explore?trace", "logs": "http://grafana/explore?logs"}
    other = LatencyWindow("/model", "GET", "modellens", 0.0042, T0, 0.004, 0.0041, T0 - 60, T0)
    drift = Alert("ModelFeatureDrift", {"feature": "bmi", "severity": "ticket"}, "drift", "firing",
                  first_firing=T0 + 120, last_firing=END, active_since=T0 + 120, summary="bmi has drifted")  # fmt: skip
    slo = Alert("ModelLatencySLOBurnFast", {"severity": "page"}, "other", "resolved", T0 + 200, T0 + 260)
    return Report(
        generated_at=END,
        start=T0,
        end=END,
        step=15,
        rate_interval=60,
        quantile=0.99,
        backends={"prometheus": "http://p", "tempo": "http://t", "loki": "http://l"},
        routes=[window, other],
        model_versions=[("diabetes", "3f2a9c1e5b7d")],
        findings=[finding],
        alerts=[drift, slo],
        links={"latency": "http://grafana/explore?latency"},
        warnings=["Loki was slow"],
        notes=["a note"],
    )


class TestReport:
    """The text report says what, when, which route and model, the slowest stage, its logs, alerts and links."""

    def test_text(self) -> None:
        text = render_text(sample_report())
        assert "p99 of POST /predict peaked at 812 ms at 03:12:40Z (window 03:11:40–03:14:10Z; baseline 12 ms)" in text
        assert "model: diabetes 3f2a9c1e5b7d" in text
        assert "other routes, peak p99: GET /model 4.2 ms" in text
        assert f"1. 313 ms  trace {TRACE_ID}  status 200  at 03:12:39Z" in text
        assert "slowest stage: feature_lookup 300 ms  fault.delay_s=0.3 fault.injected=true fault.type=latency" in text
        assert "request: POST /predict 313 ms, service modellens 0.1.0" in text
        assert "03:32:40.301Z WARNING fault injected  delay_s=0.3 fault_type=latency" in text
        assert "03:32:40.313Z INFO request  duration_ms=313.2 method=POST model_version=3f2a9c1e5b7d" in text
        assert (
            "FIRING ModelFeatureDrift {feature=bmi severity=ticket} firing since 03:12:00Z  [during the spike]: "
            "bmi has drifted" in text
        )
        assert "RESOLVED ModelLatencySLOBurnFast {severity=page} fired 03:13:20Z–03:14:20Z  [during the spike]" in text
        assert "latency: http://grafana/explore?latency" in text and "open trace: http://grafana/explore?trace" in text
        assert "warning: Loki was slow" in text and "note: a note" in text
        assert "trace_id=" not in text  # Loki's own fields stay out of the log lines

    def test_json_has_the_same_content(self) -> None:
        report = json.loads(json.dumps(to_dict(sample_report())))
        assert report["headline"] == sample_report().headline
        assert report["worst"]["route"] == "/predict" and report["worst"]["peak_s"] == 0.812
        assert report["worst"]["window"] == {"start": "2026-08-04T03:11:40.000Z", "end": "2026-08-04T03:14:10.000Z"}
        (trace,) = report["traces"]
        assert trace["trace_id"] == TRACE_ID and trace["duration_s"] == 0.3132 and trace["status_code"] == "200"
        stage = trace["trace"]["slowest_stage"]
        assert stage["name"] == "feature_lookup" and stage["attributes"]["fault.injected"] is True
        assert trace["trace"]["service"] == "modellens" and len(trace["trace"]["spans"]) == 5
        assert [line["line"] for line in trace["logs"]] == ["fault injected", "request"]
        assert report["model_versions"] == [{"model_name": "diabetes", "model_version": "3f2a9c1e5b7d"}]
        assert report["trace_model_versions"] == ["3f2a9c1e5b7d"]
        assert [a["name"] for a in report["alerts"]["drift"]] == ["ModelFeatureDrift"]
        assert report["alerts"]["data_quality"] == []
        assert report["alerts"]["other"][0]["during_window"] is True
        assert report["links"]["latency"] and trace["links"]["trace"]
        assert report["warnings"] == ["Loki was slow"] and report["notes"] == ["a note"]

    def test_no_latency_data(self) -> None:
        report = Report(END, T0, END, 15, 60, 0.99, {})
        assert report.headline == "no latency data: no p99 of any route between 03:10:00Z and 03:40:00Z"
        assert "drift and data quality: none" in render_text(report)


# --- the command, against stub backends -------------------------------------------------------------------------
def prometheus_table(
    *, exemplars: bool = True, slow: bool = True, latency: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Prometheus with one /predict spike, the model version, a drift alert and (optionally) exemplars."""
    series = [spike_series()] if latency is None else latency
    drift = {"alertname": "ModelFeatureDrift", "feature": "bmi", "severity": "ticket", "model_name": "diabetes"}
    history = [matrix({"__name__": "ALERTS", "alertstate": "firing", **drift}, [(T0 + 1400, 1), (END, 1)])]

    def query_range(seen: Seen) -> dict[str, Any]:
        result = history if seen.params["query"].startswith("ALERTS") else series
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    exemplar_data = [
        {
            "seriesLabels": {"http_route": "/predict", "http_response_status_code": "200", "le": "0.5"},
            "exemplars": [
                {
                    "labels": {"trace_id": TRACE_ID, "span_id": "b7ad6b7169203331"},
                    "value": "0.3132",
                    "timestamp": T0 + 1360.3,
                },
                {"labels": {"trace_id": "1" * 32}, "value": "0.0051", "timestamp": T0 + 1370},
            ][0 if slow else 1 :],
        }
    ]
    info = [{"metric": {"model_name": "diabetes", "model_version": "3f2a9c1e5b7d"}, "value": [END, "1"]}]
    active = {"status": "success", "data": {"alerts": [{"labels": drift, "state": "firing",
              "activeAt": "2026-08-04T03:33:20Z", "annotations": {"summary": "bmi has drifted"}}]}}  # fmt: skip
    return {
        "/api/v1/query_range": query_range,
        "/api/v1/query": {"status": "success", "data": {"resultType": "vector", "result": info}},
        "/api/v1/query_exemplars": {"status": "success", "data": exemplar_data if exemplars else []},
        "/api/v1/alerts": active,
    }


class TestTriageCommand:
    """`modellens triage` end to end against stub backends: the report, and every failure as a message."""

    def triage(self, *argv: str) -> int:
        return main(["triage", "--until", str(END), "--grafana", "http://grafana:3000", *argv])

    def test_full_report(self, capsys: pytest.CaptureFixture[str]) -> None:
        tempo_answers = {f"/api/v2/traces/{TRACE_ID}": data("tempo_v2_modellens_trace.json")}
        with (
            StubBackend(routes(prometheus_table())) as prometheus,
            StubBackend(routes(tempo_answers)) as tempo,
            StubBackend(routes({"/loki/api/v1/query_range": data("loki_modellens_trace_logs.json")})) as loki,
        ):
            code = self.triage("--prometheus", prometheus.url, "--tempo", tempo.url, "--loki", loki.url)
        out = capsys.readouterr().out
        assert code == 0
        assert "p99 of POST /predict peaked at 450 ms at 03:33:45Z (window 03:32:15–03:34:00Z; baseline 12 ms)" in out
        assert "model: diabetes 3f2a9c1e5b7d" in out
        assert f"1. 313 ms  trace {TRACE_ID}  status 200  at 03:32:40Z" in out
        assert "slowest stage: feature_lookup 300 ms  fault.delay_s=0.3 fault.injected=true fault.type=latency" in out
        assert "INFO request  duration_ms=313.2" in out
        assert (
            "FIRING ModelFeatureDrift {feature=bmi model_name=diabetes severity=ticket} firing since 03:33:20Z" in out
        )
        assert "warning:" not in out
        exemplar_query = next(s for s in prometheus.seen if s.path == "/api/v1/query_exemplars")
        assert exemplar_query.params["query"] == (
            'http_server_request_duration_seconds_bucket{http_route="/predict",http_request_method="POST"}'
        )
        assert (float(exemplar_query.params["start"]), float(exemplar_query.params["end"])) == (T0 + 1335, T0 + 1440)
        loki_query = loki.seen[0].params["query"]
        assert loki_query == f'{{service_name="modellens"}} | trace_id="{TRACE_ID}"'  # service.name from the trace
        # The 5 ms exemplar is not slower than the usual p99 (12 ms): only the slow request is followed.
        assert [s.path for s in tempo.seen] == [f"/api/v2/traces/{TRACE_ID}"]
        assert "note:" not in out

    def test_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        with StubBackend(routes(prometheus_table())) as prometheus:
            code = self.triage("--prometheus", prometheus.url, "--tempo", "", "--loki", "", "--json", "--traces", "1")
        report = json.loads(capsys.readouterr().out)
        assert code == 0
        assert report["worst"]["route"] == "/predict"
        assert [t["trace_id"] for t in report["traces"]] == [TRACE_ID]
        assert report["traces"][0]["trace"] is None and report["traces"][0]["logs"] == []
        assert any("stops at the exemplar trace ids" in note for note in report["notes"])
        assert report["alerts"]["drift"][0]["during_window"] is True
        panes = json.loads(parse_qs(urlsplit(report["traces"][0]["links"]["trace"]).query)["panes"][0])
        assert panes["triage"]["queries"][0]["query"] == TRACE_ID

    def test_prometheus_unreachable(self, capsys: pytest.CaptureFixture[str]) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        assert self.triage("--prometheus", url) == 2
        captured = capsys.readouterr()
        assert f"error: cannot reach Prometheus at {url}: [Errno 111] Connection refused" in captured.err
        assert "Traceback" not in captured.err and captured.out == ""
        assert self.triage("--prometheus", url, "--json") == 2
        assert "cannot reach Prometheus" in json.loads(capsys.readouterr().out)["error"]

    def test_prometheus_is_not_prometheus(self, capsys: pytest.CaptureFixture[str]) -> None:
        with StubBackend(lambda seen: (200, b"<html>Grafana</html>")) as stub:
            assert self.triage("--prometheus", stub.url) == 2
        assert (
            "error: Prometheus answered /api/v1/query_range with something that is not JSON" in capsys.readouterr().err
        )

    def test_prometheus_errors_are_messages(self, capsys: pytest.CaptureFixture[str]) -> None:
        rejected = {"status": "error", "errorType": "bad_data", "error": "invalid regular expression"}
        with StubBackend(lambda seen: (400, rejected)) as stub:
            assert self.triage("--prometheus", stub.url, "--route", "(") == 2
        err = capsys.readouterr().err
        assert (
            "error: Prometheus answered HTTP 400 for /api/v1/query_range: bad_data: invalid regular expression" in err
        )
        assert "compose network" not in err  # the reachability hint is only for unreachable
        with StubBackend(lambda seen: (200, {"status": "success", "data": {}})) as stub:
            assert self.triage("--prometheus", stub.url) == 2
        assert "Prometheus answered query_range in an unexpected format" in capsys.readouterr().err

    def test_no_latency_data(self, capsys: pytest.CaptureFixture[str]) -> None:
        with StubBackend(routes(prometheus_table(latency=[]))) as prometheus:
            assert self.triage("--prometheus", prometheus.url, "--tempo", "", "--loki", "") == 0
        out = capsys.readouterr().out
        assert "no latency data" in out and "is the service receiving traffic" in out
        queries = [s.params["query"] for s in prometheus.seen if "histogram_quantile" in s.params.get("query", "")]
        assert ['mirror=""' in query for query in queries] == [True, False]  # the scrape mirror is the last resort

    def test_only_the_scrape_mirror_has_latency(self, capsys: pytest.CaptureFixture[str]) -> None:
        table = prometheus_table()
        complete = table["/api/v1/query_range"]

        def query_range(seen: Seen) -> Any:
            empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}
            return empty if 'mirror=""' in seen.params["query"] else complete(seen)

        with StubBackend(routes({**table, "/api/v1/query_range": query_range})) as prometheus:
            assert self.triage("--prometheus", prometheus.url, "--tempo", "", "--loki", "") == 0
        out = capsys.readouterr().out
        assert "p99 of POST /predict peaked at 450 ms" in out
        assert "warning: latency comes from series labelled `mirror`" in out

    def test_no_exemplars_in_window(self, capsys: pytest.CaptureFixture[str]) -> None:
        with StubBackend(routes(prometheus_table(exemplars=False))) as prometheus:
            assert self.triage("--prometheus", prometheus.url, "--tempo", "", "--loki", "") == 0
        assert "note: no exemplars in the window for POST /predict" in capsys.readouterr().out

    def test_exemplars_below_the_elevated_level(self, capsys: pytest.CaptureFixture[str]) -> None:
        with StubBackend(routes(prometheus_table(slow=False))) as prometheus:
            assert self.triage("--prometheus", prometheus.url, "--tempo", "", "--loki", "") == 0
        out = capsys.readouterr().out
        assert f"1. 5.1 ms  trace {'1' * 32}" in out
        assert "note: no exemplar in the window is slower than the usual p99 (12 ms)" in out

    def test_no_exemplars_asks_tempo(self, capsys: pytest.CaptureFixture[str]) -> None:
        tempo_answers = {
            "/api/search": {"traces": [{"traceID": TRACE_ID.lstrip("0")}]},
            f"/api/v2/traces/{TRACE_ID}": data("tempo_v2_modellens_trace.json"),
        }
        with (
            StubBackend(routes(prometheus_table(exemplars=False))) as prometheus,
            StubBackend(routes(tempo_answers)) as tempo,
        ):
            assert self.triage("--prometheus", prometheus.url, "--tempo", tempo.url, "--loki", "") == 0
        out = capsys.readouterr().out
        assert f"1. 313 ms  trace {TRACE_ID}" in out and "(found by a Tempo search)" in out
        assert tempo.seen[0].params["q"] == '{ span.http.route = "/predict" && kind = server && duration > 12ms }'

    def test_tempo_and_loki_unreachable_are_warnings(self, capsys: pytest.CaptureFixture[str]) -> None:
        down = f"http://127.0.0.1:{free_port()}"
        with StubBackend(routes(prometheus_table())) as prometheus:
            assert self.triage("--prometheus", prometheus.url, "--tempo", down, "--loki", down) == 0
        out = capsys.readouterr().out
        assert (
            f"warning: cannot reach Tempo at {down}: [Errno 111] Connection refused; continuing without traces" in out
        )
        assert f"warning: cannot reach Loki at {down}" in out
        assert out.count("warning: cannot reach Tempo") == 1  # switched off after the first failure
        assert f"trace {TRACE_ID}" in out  # the report still has the exemplars
