"""Optional bearer tokens on the writes: off by default, required on /predict and /feedback when a file names them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.artifact.card import ModelCard
from service.settings import Settings
from service.web.app import create_app
from service.web.auth import AuthError, load_tokens
from tests.conftest import InMemoryTelemetry

FIRST, SECOND = "a" * 20 + "first-client", "b" * 20 + "second-client"


def _row(card: ModelCard) -> dict[str, float]:
    return {spec.name: (spec.min + spec.max) / 2 for spec in card.features}  # type: ignore[operator]


@pytest.fixture
def card(regression_model_dir: Path) -> ModelCard:
    return ModelCard.load(regression_model_dir)


@pytest.fixture
def secured(settings: Settings, telemetry: InMemoryTelemetry, tmp_path: Path) -> Iterator[Flask]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# one token per client\n{FIRST}\n\n{SECOND}\n")
    app = create_app(settings.replace(auth_tokens_file=tokens), telemetry=telemetry.telemetry)
    yield app
    app.extensions["modellens"].close()


class TestRequired:
    def test_the_writes_need_a_listed_token(self, secured: Flask, card: ModelCard) -> None:
        client = secured.test_client()
        body = {"instances": [_row(card)]}
        for headers in ({}, {"Authorization": "Bearer not-a-listed-token-at-all"}, {"Authorization": FIRST}):
            refused = client.post("/predict", json=body, headers=headers)
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == 'Bearer realm="modellens"'
            assert refused.get_json()["type"] == "urn:modellens:problem:unauthorized"
        for token in (FIRST, SECOND):
            answered = client.post("/predict", json=body, headers={"Authorization": f"Bearer {token}"})
            assert answered.status_code == 200
        ids = answered.get_json()["prediction_ids"]
        feedback = {"feedback": [{"prediction_id": ids[0], "actual": 1.0}]}
        assert client.post("/feedback", json=feedback).status_code == 401
        joined = client.post("/feedback", json=feedback, headers={"Authorization": f"bearer {SECOND}"})
        assert joined.get_json()["accepted"] == 1

    def test_probes_metrics_and_reads_stay_open(self, secured: Flask) -> None:
        client = secured.test_client()
        for path in ("/healthz", "/readyz", "/metrics", "/model", "/monitoring", "/openapi.json", "/"):
            assert client.get(path).status_code == 200, path

    def test_openapi_says_which_operations_need_it(self, secured: Flask) -> None:
        document = secured.test_client().get("/openapi.json").get_json()
        assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in ("/predict", "/feedback"):
            assert document["paths"][path]["post"]["security"] == [{"bearer": []}]
            assert "401" in document["paths"][path]["post"]["responses"]
        assert "security" not in document["paths"]["/monitoring"]["get"]

    def test_no_token_reaches_the_logs(self, secured: Flask, card: ModelCard, telemetry: InMemoryTelemetry) -> None:
        client = secured.test_client()
        client.post("/predict", json={"instances": [_row(card)]}, headers={"Authorization": f"Bearer {FIRST}x"})
        client.post("/predict", json={"instances": [_row(card)]}, headers={"Authorization": f"Bearer {FIRST}"})
        lines = "\n".join(telemetry.console_lines())
        assert "request rejected" in lines
        assert FIRST not in lines


class TestOffByDefault:
    def test_without_a_file_anyone_may_post(self, client: FlaskClient, card: ModelCard) -> None:
        assert client.post("/predict", json={"instances": [_row(card)]}).status_code == 200
        assert "securitySchemes" not in client.get("/openapi.json").get_json()["components"]


class TestTheFile:
    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("# nothing but comments\n\n", "holds no token"),
            (f"{FIRST}\nshort-token\n", r"token\(s\) \[2\] shorter than 16 characters"),
        ],
    )
    def test_an_unusable_file_is_refused_without_quoting_it(self, tmp_path: Path, content: str, message: str) -> None:
        path = tmp_path / "tokens"
        path.write_text(content)
        with pytest.raises(AuthError, match=message) as raised:
            load_tokens(path)
        assert (
            str(path) in str(raised.value) and FIRST not in str(raised.value) and "short-token" not in str(raised.value)
        )

    def test_a_missing_file_stops_start_up(
        self, settings: Settings, telemetry: InMemoryTelemetry, tmp_path: Path
    ) -> None:
        with pytest.raises(AuthError, match="cannot read the tokens file"):
            create_app(settings.replace(auth_tokens_file=tmp_path / "absent"), telemetry=telemetry.telemetry)
