"""The HTTP API through Flask's test client, with in-memory telemetry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from flask.testing import FlaskClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from otel.metrics import SECONDS_BUCKETS
from service.artifact.card import ModelCard
from service.settings import Settings
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry

OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def _row(card: ModelCard, **overrides: Any) -> dict[str, Any]:
    """A valid instance: every feature at the middle of its training range."""
    row: dict[str, Any] = {}
    for spec in card.features:
        if spec.type == "numeric":
            assert spec.min is not None and spec.max is not None
            row[spec.name] = (spec.min + spec.max) / 2
        else:
            row[spec.name] = spec.categories[0]
    row.update(overrides)
    return row


@pytest.fixture
def card(regression_model_dir: Path) -> ModelCard:
    return ModelCard.load(regression_model_dir)


class TestPredict:
    """POST /predict scores rows and says which model did it and which trace holds the request."""

    def test_predicts_a_batch(self, client: FlaskClient, card: ModelCard) -> None:
        response = client.post("/predict", json={"instances": [_row(card), _row(card, bmi=card.feature("bmi").max)]})
        assert response.status_code == 200
        body = response.get_json()
        assert len(body["predictions"]) == 2
        assert all(isinstance(value, float) for value in body["predictions"])
        assert body["predictions"][0] != body["predictions"][1]
        assert len(set(body["prediction_ids"])) == 2
        assert all(len(pid) == 32 for pid in body["prediction_ids"])
        assert body["model"] == {"name": card.name, "version": card.version}

    def test_response_carries_the_trace_id(
        self, client: FlaskClient, card: ModelCard, telemetry: InMemoryTelemetry
    ) -> None:
        response = client.post("/predict", json={"instances": [_row(card)]})
        trace_id = response.headers["X-Trace-Id"]
        version, header_trace, span_id, flags = response.headers["traceparent"].split("-")
        assert (version, header_trace) == ("00", trace_id)
        assert int(flags, 16) & 0x01  # sampled (the SDK may also set W3C level 2's random-trace-id flag, 0x02)
        server = [span for span in telemetry.spans.get_finished_spans() if span.name == "POST /predict"]
        assert len(server) == 1
        assert format(server[0].context.trace_id, "032x") == trace_id
        assert format(server[0].context.span_id, "016x") == span_id

    def test_incoming_traceparent_is_continued(self, client: FlaskClient, card: ModelCard) -> None:
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = client.post("/predict", json={"instances": [_row(card)]}, headers={"traceparent": parent})
        assert response.headers["X-Trace-Id"] == "0af7651916cd43dd8448eb211c80319c"

    def test_an_unsampled_request_exports_no_span_and_still_answers(
        self, client: FlaskClient, card: ModelCard, telemetry: InMemoryTelemetry
    ) -> None:
        """A caller that did not sample its trace gets no spans from us (nor stage spans), the same answer, and
        the trace id to correlate logs with."""
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        response = client.post("/predict", json={"instances": [_row(card)] * 2}, headers={"traceparent": parent})
        assert response.status_code == 200 and len(response.get_json()["predictions"]) == 2
        assert response.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert response.headers["traceparent"].endswith("-00")
        assert telemetry.spans.get_finished_spans() == ()
        (access,) = [entry for entry in map(json.loads, telemetry.console_lines()) if entry["event"] == "request"]
        assert access["trace_id"] == "0af7651916cd43dd8448eb211c80319c"

    def test_stage_spans_with_model_attributes(
        self, client: FlaskClient, card: ModelCard, telemetry: InMemoryTelemetry
    ) -> None:
        client.post("/predict", json={"instances": [_row(card)] * 3})
        spans = {span.name: span for span in telemetry.spans.get_finished_spans()}
        assert set(spans) == {"POST /predict", "validate", "inference"}
        server = spans["POST /predict"]
        assert server.attributes is not None
        assert server.attributes["http.route"] == "/predict"
        assert server.attributes["http.response.status_code"] == 200
        for stage in ("validate", "inference"):
            span = spans[stage]
            assert span.parent is not None and span.parent.span_id == server.context.span_id
            assert span.attributes is not None
            assert span.attributes["model.name"] == card.name
            assert span.attributes["model.version"] == card.version
            assert span.attributes["model.batch.size"] == 3

    def test_classification_model_returns_class_labels(
        self, classification_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        settings = Settings.from_env({}, model_dir=classification_model_dir)
        client = create_app(settings, telemetry=telemetry.telemetry).test_client()
        card = ModelCard.load(classification_model_dir)
        response = client.post("/predict", json={"instances": [_row(card)] * 2})
        assert response.status_code == 200
        assert all(label in card.classes for label in response.get_json()["predictions"])

    def test_null_is_an_imputed_missing_value(self, client: FlaskClient, card: ModelCard) -> None:
        response = client.post("/predict", json={"instances": [_row(card, bmi=None)]})
        assert response.status_code == 200


BAD_INPUTS = [
    # (id, request kwargs, status, pointers expected in errors, words expected in the detail or a reason)
    ("malformed", {"data": b'{"instances": [', "content_type": "application/json"}, 400, [], "not valid JSON"),
    ("not-utf8", {"data": b"\xff\xfe{}", "content_type": "application/json"}, 400, [], "JSON"),
    ("deep", {"data": b"[" * 20_000 + b"]" * 20_000, "content_type": "application/json"}, 400, [], "nested"),
    ("form", {"data": b"bmi=1", "content_type": "application/x-www-form-urlencoded"}, 415, [], "application/json"),
    ("no-type", {"data": b"{}"}, 415, [], "application/json"),
    ("not-object", {"json": [1, 2]}, 422, [""], "expected a JSON object"),
    ("no-instances", {"json": {"rows": []}}, 422, ["/instances", "/rows"], "expected an array"),
    ("empty", {"json": {"instances": []}}, 422, ["/instances"], "at least one"),
    ("row-not-object", {"json": {"instances": [[1, 2, 3]]}}, 422, ["/instances/0"], "expected an object"),
]


class TestBadInput:
    """Bad input gets an RFC 9457 problem document naming each offending field; never a 500."""

    @pytest.mark.parametrize(
        ("kwargs", "status", "pointers", "words"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
    )
    def test_rejected_with_problem(
        self, client: FlaskClient, kwargs: dict[str, Any], status: int, pointers: list[str], words: str
    ) -> None:
        response = client.post("/predict", **kwargs)
        self._assert_problem(
            response.status_code, response.content_type, response.get_data(as_text=True), status, pointers, words
        )

    def test_feature_errors_are_each_named(self, client: FlaskClient, card: ModelCard) -> None:
        good = _row(card)
        missing = {key: value for key, value in good.items() if key != "age"}
        rows = [
            good,
            missing,
            {**good, "colour": 1},
            {**good, "bmi": "heavy"},
            {**good, "bp": True},
            {**good, "s1": float("nan")},
            {**good, "s2": float("inf")},
            {**good, "s3": 10**400},
        ]
        body = json.dumps({"instances": rows}, allow_nan=True)
        response = client.post("/predict", data=body, content_type="application/json")
        problem = self._assert_problem(
            response.status_code,
            response.content_type,
            response.get_data(as_text=True),
            422,
            [
                "/instances/1/age",
                "/instances/2/colour",
                "/instances/3/bmi",
                "/instances/4/bp",
                "/instances/5/s1",
                "/instances/6/s2",
                "/instances/7/s3",
            ],
            "invalid",
        )
        reasons = {error["pointer"]: error["reason"] for error in problem["errors"]}
        assert reasons["/instances/1/age"] == "missing feature"
        assert reasons["/instances/2/colour"] == "unknown feature"
        assert reasons["/instances/3/bmi"] == "expected a number, got string"
        assert reasons["/instances/4/bp"] == "expected a number, got boolean"
        assert reasons["/instances/5/s1"] == "must be a finite number"
        assert reasons["/instances/6/s2"] == "must be a finite number"
        assert not any(pointer.startswith("/instances/0") for pointer in reasons)

    def test_batch_over_limit(self, client: FlaskClient, card: ModelCard, settings: Settings) -> None:
        response = client.post("/predict", json={"instances": [_row(card)] * (settings.max_batch + 1)})
        self._assert_problem(
            response.status_code, response.content_type, response.get_data(as_text=True), 413, ["/instances"], "exceed"
        )

    def test_body_over_limit(self, client: FlaskClient, settings: Settings) -> None:
        response = client.post("/predict", data=b"x" * (settings.max_body_bytes + 1), content_type="application/json")
        self._assert_problem(
            response.status_code, response.content_type, response.get_data(as_text=True), 413, [], "larger than"
        )

    def test_long_unknown_key_is_not_echoed_whole(self, client: FlaskClient, card: ModelCard) -> None:
        response = client.post("/predict", json={"instances": [{**_row(card), "k" * 10_000: 1}]})
        assert response.status_code == 422
        assert len(response.get_data()) < 2_000

    def test_unknown_route_and_method(self, client: FlaskClient) -> None:
        response = client.get("/nope")
        self._assert_problem(response.status_code, response.content_type, response.get_data(as_text=True), 404, [], "")
        response = client.get("/predict")
        self._assert_problem(response.status_code, response.content_type, response.get_data(as_text=True), 405, [], "")
        assert "POST" in response.headers["Allow"]

    def test_model_failure_is_a_500_problem_without_traceback(
        self,
        client: FlaskClient,
        card: ModelCard,
        app: Any,
        telemetry: InMemoryTelemetry,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def explode(rows: Any) -> Any:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(app.extensions["modellens"].model, "predict_array", explode)
        response = client.post("/predict", json={"instances": [_row(card)]})
        text = response.get_data(as_text=True)
        self._assert_problem(response.status_code, response.content_type, text, 500, [], "trace")
        assert "secret internals" not in text and "Traceback" not in text
        server = next(span for span in telemetry.spans.get_finished_spans() if span.name == "POST /predict")
        assert not server.status.is_ok
        inference = next(span for span in telemetry.spans.get_finished_spans() if span.name == "inference")
        assert any(event.name == "exception" for event in inference.events)

    @staticmethod
    def _assert_problem(
        status: int, content_type: str | None, text: str, want_status: int, pointers: list[str], words: str
    ) -> dict[str, Any]:
        assert status == want_status, text
        assert content_type == "application/problem+json"
        problem = json.loads(text)
        assert problem["status"] == want_status
        assert problem["title"] and problem["type"]
        assert "Traceback" not in text
        found = [error["pointer"] for error in problem.get("errors", [])]
        for pointer in pointers:
            assert pointer in found, (pointer, found)
        everything = problem["detail"] + " ".join(error["reason"] for error in problem.get("errors", []))
        assert words in everything
        return problem


class TestOperationalEndpoints:
    """Health, readiness, the model card and the metrics endpoint."""

    def test_health_and_readiness(self, client: FlaskClient, card: ModelCard) -> None:
        assert client.get("/healthz").get_json() == {"status": "ok"}
        ready = client.get("/readyz").get_json()
        assert ready["model"]["version"] == card.version

    def test_the_index_lists_what_answers(self, client: FlaskClient, card: ModelCard) -> None:
        index = client.get("/").get_json()
        assert index["model"] == {"name": card.name, "version": card.version}
        listed = {(entry["path"], entry["method"]) for entry in index["endpoints"]}
        assert {("/predict", "POST"), ("/feedback", "POST"), ("/monitoring", "GET"), ("/openapi.json", "GET")} <= listed
        for path, method in listed:
            if method == "GET":
                assert client.get(path).status_code == 200, path

    def test_the_index_leaves_out_features_that_are_off(self, settings: Settings, telemetry: InMemoryTelemetry) -> None:
        app = create_app(settings.replace(prediction_log="off", monitoring=False), telemetry=telemetry.telemetry)
        paths = {entry["path"] for entry in app.test_client().get("/").get_json()["endpoints"]}
        assert "/predict" in paths
        assert not paths & {"/feedback", "/monitoring", "/model/reference"}

    def test_model_card(self, client: FlaskClient, card: ModelCard) -> None:
        body = client.get("/model").get_json()
        assert body["version"] == card.version
        assert [feature["name"] for feature in body["features"]] == list(card.feature_names)

    def test_operational_endpoints_are_not_traced(self, client: FlaskClient, telemetry: InMemoryTelemetry) -> None:
        for path in ("/healthz", "/readyz", "/metrics", "/model"):
            client.get(path)
        assert [span.name for span in telemetry.spans.get_finished_spans()] == ["GET /model"]

    def test_metrics_have_exemplars_pointing_at_the_request(self, client: FlaskClient, card: ModelCard) -> None:
        trace_id = client.post("/predict", json={"instances": [_row(card)]}).headers["X-Trace-Id"]
        response = client.get("/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
        assert response.content_type.startswith("application/openmetrics-text")
        families = {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}
        duration = families["http_server_request_duration_seconds"]
        exemplars = [s.exemplar for s in duration.samples if s.name.endswith("_bucket") and s.exemplar is not None]
        assert exemplars and exemplars[0].labels["trace_id"] == trace_id
        predict_samples = [
            s for s in duration.samples if s.labels.get("http_route") == "/predict" and s.name.endswith("_count")
        ]
        assert predict_samples[0].value == 1
        inference = families["model_inference_duration_seconds"]
        assert any(s.exemplar and s.exemplar.labels["trace_id"] == trace_id for s in inference.samples)
        for family in (duration, inference):  # second-based buckets, not the SDK's millisecond defaults
            bounds = sorted({float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")})
            assert bounds == [*SECONDS_BUCKETS, float("inf")]
        predictions = families["model_predictions"]
        assert [
            (s.labels["model_version"], s.labels["outcome"], s.value)
            for s in predictions.samples
            if s.name.endswith("_total")
        ] == [(card.version, "success", 1.0), (card.version, "error", 0.0)]
        info = families["model_info"].samples[0]
        assert info.labels["model_version"] == card.version and info.value == 1

    def test_plain_text_metrics_for_curl(self, client: FlaskClient) -> None:
        client.get("/model")
        response = client.get("/metrics")
        assert response.content_type.startswith("text/plain; version=0.0.4")
        text = response.get_data(as_text=True)
        assert 'http_server_request_duration_seconds_count{http_request_method="GET"' in text
        assert "# {" not in text  # the 0.0.4 format has no exemplars


class TestLogs:
    """Every log line inside a request carries its trace id, on stdout and in OTel logs; one access line each."""

    def test_request_logs_carry_trace_id(
        self, client: FlaskClient, card: ModelCard, telemetry: InMemoryTelemetry
    ) -> None:
        trace_id = client.post("/predict", json={"instances": [_row(card)] * 2}).headers["X-Trace-Id"]
        lines = [json.loads(line) for line in telemetry.console_lines()]
        access = [line for line in lines if line["event"] == "request"]
        assert len(access) == 1
        entry = access[0]
        assert entry["trace_id"] == trace_id and len(entry["span_id"]) == 16
        assert entry["route"] == "/predict" and entry["status"] == 200 and entry["rows"] == 2
        assert entry["model_version"] == card.version and entry["duration_ms"] > 0
        records = [data.log_record for data in telemetry.logs.get_finished_logs()]
        request_records = [r for r in records if r.trace_id and format(r.trace_id, "032x") == trace_id]
        assert [r.body for r in request_records] == ["request"]
        attributes = dict(request_records[0].attributes or {})
        assert attributes["route"] == "/predict" and attributes["rows"] == 2
        assert not any(key.startswith("_") for key in attributes)

    def test_a_line_logged_after_a_request_carries_none_of_its_context(
        self, client: FlaskClient, card: ModelCard, telemetry: InMemoryTelemetry
    ) -> None:
        client.post("/predict", json={"instances": [_row(card)] * 2})
        structlog.get_logger("gunicorn.error").warning("worker warning")  # same thread, as gunicorn's would be
        (line,) = [json.loads(line) for line in telemetry.console_lines() if "worker warning" in line]
        assert not {"model_version", "rows", "trace_id"} & set(line), line

    def test_rejections_are_logged_with_trace_id(self, client: FlaskClient, telemetry: InMemoryTelemetry) -> None:
        trace_id = client.post("/predict", json={"instances": []}).headers["X-Trace-Id"]
        lines = [json.loads(line) for line in telemetry.console_lines()]
        assert {line["event"] for line in lines if line.get("trace_id") == trace_id} == {"request rejected", "request"}
