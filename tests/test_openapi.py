"""GET /openapi.json: a valid OpenAPI 3.1 document that describes what the service actually does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from service.artifact.card import ModelCard
from service.settings import Settings
from service.web.app import create_app
from service.web.openapi import build_document
from tests.conftest import InMemoryTelemetry


def schema_validator(document: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for `#/components/schemas/<name>` whose `$ref`s resolve inside `document`."""
    return OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


def _row(card: ModelCard) -> dict[str, Any]:
    return {
        spec.name: (spec.min + spec.max) / 2 if spec.type == "numeric" else spec.categories[0]  # type: ignore[operator]
        for spec in card.features
    }


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


class TestDocument:
    """The document is valid OpenAPI 3.1 and generated from the served model card and the limits in force."""

    def test_validates_as_openapi_31(self, document: dict[str, Any]) -> None:
        assert document["openapi"] == "3.1.0"
        validate(document)

    def test_every_route_is_described(self, app: Flask, document: dict[str, Any]) -> None:
        def path(rule: str) -> str:  # Flask's /x/<name> is OpenAPI's /x/{name}
            return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)

        routes = {path(rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
        assert routes == set(document["paths"])
        for rule in app.url_map.iter_rules():
            if rule.endpoint != "static":
                methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
                assert methods == set(document["paths"][path(rule.rule)]), rule.rule

    def test_instances_follow_the_model_card(
        self, document: dict[str, Any], settings: Settings, regression_model_dir: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        instance = document["components"]["schemas"]["Instance"]
        assert list(instance["properties"]) == list(card.feature_names)
        assert instance["required"] == list(card.feature_names)
        assert instance["additionalProperties"] is False
        assert all(p["type"] == ["number", "null"] for p in instance["properties"].values())
        instances = document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]
        assert (instances["minItems"], instances["maxItems"]) == (1, settings.max_batch)
        assert str(settings.max_body_bytes) in document["info"]["description"]
        assert card.version in document["info"]["summary"]

    def test_errors_are_problem_documents(self, document: dict[str, Any]) -> None:
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                page = "text/html" in operation["responses"]["200"]["content"]  # the console's pages
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")) or status == "default":
                        allowed = {"application/problem+json", "text/html"} if page else {"application/problem+json"}
                        assert "application/problem+json" in response["content"], (path, method, status)
                        assert set(response["content"]) <= allowed, (path, method, status)

    def test_classifier_predictions_are_its_classes(self, classification_model_dir: Path) -> None:
        card = ModelCard.load(classification_model_dir)
        document = build_document(card, Settings.from_env({}, model_dir=classification_model_dir))
        validate(document)
        predictions = document["components"]["schemas"]["PredictResponse"]["properties"]["predictions"]
        assert predictions["items"] == {"type": "string", "enum": list(card.classes)}

    def test_no_feedback_path_without_a_prediction_log(self, settings: Settings, telemetry: InMemoryTelemetry) -> None:
        app = create_app(settings.replace(prediction_log="off"), telemetry=telemetry.telemetry)
        document = app.test_client().get("/openapi.json").get_json()
        assert "/feedback" not in document["paths"]
        validate(document)


class TestBehaviourMatches:
    """Requests the schema accepts get a 200 whose body fits the response schema; others get a problem."""

    def test_valid_request_and_response(
        self, client: FlaskClient, document: dict[str, Any], regression_model_dir: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        body = {"instances": [_row(card), {**_row(card), "bmi": None}]}
        schema_validator(document, "PredictRequest").validate(body)
        response = client.post("/predict", json=body)
        assert response.status_code == 200
        schema_validator(document, "PredictResponse").validate(response.get_json())
        feedback = {"feedback": [{"prediction_id": response.get_json()["prediction_ids"][0], "actual": 150.0}]}
        schema_validator(document, "FeedbackRequest").validate(feedback)
        joined = client.post("/feedback", json=feedback)
        assert joined.status_code == 200
        schema_validator(document, "FeedbackResponse").validate(joined.get_json())

    def test_monitoring_fits_its_schema_before_and_after_the_test_can_run(
        self, client: FlaskClient, document: dict[str, Any], regression_model_dir: Path, settings: Settings
    ) -> None:
        validator = schema_validator(document, "Monitoring")
        quiet = client.get("/monitoring").get_json()
        validator.validate(quiet)
        assert {entry["status"] for entry in quiet["features"].values()} == {"insufficient_data"}
        assert all(entry["reason"] for entry in quiet["features"].values())
        row = _row(ModelCard.load(regression_model_dir))
        for _ in range(0, 200, settings.max_batch):
            assert client.post("/predict", json={"instances": [row] * settings.max_batch}).status_code == 200
        busy = client.get("/monitoring").get_json()
        validator.validate(busy)
        assert busy["label_drift"]["status"] == "insufficient_data" and busy["label_drift"]["labels"] == 0
        # 200 copies of one row: every numeric feature sits in one bin, far from training.
        assert busy["features"]["bmi"]["status"] == "drift"
        assert busy["features"]["bmi"]["test"]["p_value"] < 1e-6

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda row: {**row, "colour": 1},  # additionalProperties: false
            lambda row: dict(list(row.items())[1:]),  # required
            lambda row: {**row, "bmi": "heavy"},  # type
            lambda row: {**row, "bmi": True},  # booleans are not numbers
        ],
        ids=["unknown-member", "missing-member", "wrong-type", "boolean"],
    )
    def test_invalid_request_is_a_problem_the_schema_also_refuses(
        self, client: FlaskClient, document: dict[str, Any], regression_model_dir: Path, mutate: Any
    ) -> None:
        body = {"instances": [mutate(_row(ModelCard.load(regression_model_dir)))]}
        assert not schema_validator(document, "PredictRequest").is_valid(body)
        response = client.post("/predict", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 422 and response.content_type == "application/problem+json"
        schema_validator(document, "Problem").validate(response.get_json())

    def test_batch_limit_is_the_schemas_max_items(
        self, client: FlaskClient, document: dict[str, Any], regression_model_dir: Path, settings: Settings
    ) -> None:
        body = {"instances": [_row(ModelCard.load(regression_model_dir))] * (settings.max_batch + 1)}
        assert not schema_validator(document, "PredictRequest").is_valid(body)
        response = client.post("/predict", json=body)
        assert response.status_code == 413
        schema_validator(document, "Problem").validate(response.get_json())
