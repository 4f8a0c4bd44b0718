"""GET /console: the service's own console, in process and in a real browser (Debian's chromium, headless).

The browser test is the on-call path with nothing but `modellens serve`: a slowed request shows as an exemplar dot
on the overview's latency chart; the dot opens its trace, with the fault stage span and its `fault.injected`
attribute; the trace lists its `fault injected` log line, which links back to the trace. It screenshots each view;
with MODELLENS_UPDATE_SCREENSHOTS=1 they replace docs/console/*.png (the images docs/console.md shows).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from otel.logs import configure_logging
from otel.telemetry import Telemetry
from service.artifact.card import ModelCard
from service.settings import Settings
from service.web.app import create_app
from tests.support.logging_state import restored_logging
from tests.support.ports import free_port
from tests.test_serving import instance, serve

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "docs/console"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def console_app(regression_model_dir: Path, tmp_path: Path) -> Iterator[Flask]:
    """The app with the telemetry `modellens serve` gives a worker: recent traces and logs kept in-process."""
    telemetry = Telemetry.from_env(service_name="modellens", service_version="test", env={}, keep_recent=True)
    assert telemetry.span_store is not None
    settings = Settings.from_env(
        {}, model_dir=regression_model_dir, prediction_log=str(tmp_path / "p.sqlite3"), faults=True
    )
    with restored_logging():
        configure_logging(None, stream=io.StringIO(), taps=[telemetry.span_store.add_log])
        app = create_app(settings, telemetry=telemetry)
        yield app
        app.extensions["modellens"].close()


@pytest.fixture
def console(console_app: Flask) -> FlaskClient:
    return console_app.test_client()


def _slow_request(client: FlaskClient, card: ModelCard) -> str:
    response = client.post(
        "/predict", json={"instances": [instance(card)]}, headers={"X-Modellens-Fault": "latency=0.2"}
    )
    assert response.status_code == 200
    return str(response.headers["X-Trace-Id"])


class TestInProcess:
    def test_a_slow_request_is_a_dot_that_opens_its_trace_and_logs(
        self, console: FlaskClient, regression_model_dir: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        for shift in (0.2, 0.4, 0.6):
            console.post("/predict", json={"instances": [instance(card, shift)]})
        trace_id = _slow_request(console, card)
        overview = console.get("/console").get_data(as_text=True)
        assert f'data-trace-id="{trace_id}"' in overview
        document = console.get(f"/console/api/traces/{trace_id}").get_json()
        names = [span["name"] for span in document["spans"]]
        assert names[0] == "POST /predict" and "feature_lookup" in names
        fault = next(span for span in document["spans"] if span["name"] == "feature_lookup")
        assert fault["attributes"]["fault.injected"] is True
        assert fault["duration_ms"] >= 200
        assert {"fault injected", "request"} <= {log["event"] for log in document["logs"]}
        assert all(log["trace_id"] == trace_id for log in document["logs"])
        assert set(document["spans"][0]) == {
            "name", "span_id", "parent_span_id", "kind", "status", "start_time", "duration_ms", "attributes", "events"
        }  # fmt: skip
        page = console.get(f"/console/traces/{trace_id}").get_data(as_text=True)
        assert "feature_lookup" in page and "fault injected" in page

    def test_an_unknown_trace_is_a_404_problem_naming_the_worker(self, console: FlaskClient) -> None:
        response = console.get("/console/api/traces/" + "0" * 32)
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"
        assert response.get_json()["type"] == "urn:modellens:problem:trace-not-kept"
        assert "Worker" in response.get_json()["detail"]
        assert console.get("/console/traces/" + "0" * 32).status_code == 404

    def test_every_view_renders_and_shows_no_feature_value(
        self, console: FlaskClient, regression_model_dir: Path
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        row = instance(card, 0.123456789)
        console.post("/predict", json={"instances": [row]})
        for path in ("/console", "/console/traces", "/console/logs", "/console/model", "/console/api/overview",
                     "/console/api/traces", "/console/api/logs"):  # fmt: skip
            response = console.get(path)
            assert response.status_code == 200, path
            text = response.get_data(as_text=True)
            for value in row.values():
                assert repr(value) not in text, f"{path} shows a raw feature value"
        model = console.get("/console/model").get_data(as_text=True)
        assert model.count('class="card bins"') == len(card.features) + 1  # each feature, and the prediction
        assert "Multivariate drift" in model and "insufficient_data" in model  # one row: too few for the test
        assert 'class="label-drift"' in model and "0 rows in the window" in model  # no label joined yet

    def test_console_pages_leave_no_trace_of_their_own(self, console: FlaskClient) -> None:
        for _ in range(5):
            console.get("/console")
        assert console.get("/console/api/traces").get_json()["traces"] == []

    def test_it_can_be_turned_off(self, regression_model_dir: Path) -> None:
        settings = Settings.from_env({}, model_dir=regression_model_dir, prediction_log="off", console=False)
        telemetry = Telemetry.from_env(service_name="modellens", service_version="test", env={}, keep_recent=True)
        app = create_app(settings, telemetry=telemetry)
        response = app.test_client().get("/console")
        assert response.status_code == 404
        assert "MODELLENS_CONSOLE=off" in response.get_json()["detail"]

    def test_the_api_is_in_openapi(self, console: FlaskClient) -> None:
        paths = console.get("/openapi.json").get_json()["paths"]
        assert "/console/api/traces/{trace_id}" in paths


# --- a real browser -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="modellens-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 800},
        )  # fmt: skip
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
class TestInABrowser:
    def test_from_a_latency_spike_to_its_trace_and_logs_and_back(
        self, browser: object, regression_model_dir: Path, tmp_path: Path
    ) -> None:
        from playwright.sync_api import BrowserContext, expect

        assert isinstance(browser, BrowserContext)
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with serve(regression_model_dir, port, None, MODELLENS_FAULTS="1", OTEL_SDK_DISABLED=None) as _service:
            with requests.Session() as http:
                for shift in range(30):
                    http.post(f"{url}/predict", json={"instances": [instance(card, 0.1 + shift / 40)]}, timeout=10)
                slow = http.post(f"{url}/predict", json={"instances": [instance(card)]}, timeout=10,
                                 headers={"X-Modellens-Fault": "latency=0.6"})  # fmt: skip
                http.post(f"{url}/predict", json={"instances": [{"age": "not a number"}]}, timeout=10)
            trace_id = slow.headers["X-Trace-Id"]
            page = browser.new_page()
            page.goto(f"{url}/console")
            dot = page.locator(f'circle.exemplar[data-trace-id="{trace_id}"]')
            expect(dot).to_have_count(1)
            _screenshot(page, tmp_path, "overview.png")
            dot.click()
            page.wait_for_url(re.compile(f"/console/traces/{trace_id}$"))
            expect(page.locator("#trace-id")).to_have_text(trace_id)
            fault = page.locator('tr.span[data-span-name="feature_lookup"]')
            expect(fault).to_contain_text("fault.injected=True")
            line = page.locator("table.logs tr.log", has_text="fault injected")
            expect(line).to_have_count(1)
            _screenshot(page, tmp_path, "trace.png")
            line.locator("a.trace-link").click()
            page.wait_for_url(re.compile(f"/console/traces/{trace_id}#span-[0-9a-f]{{16}}$"))
            expect(page.locator("#trace-id")).to_have_text(trace_id)
            page.goto(f"{url}/console/logs?level=warning")
            expect(page.locator("table.logs tr.log", has_text="fault injected")).to_have_count(1)
            _screenshot(page, tmp_path, "logs.png")
            page.locator("table.logs tr.log", has_text="fault injected").locator("a.trace-link").click()
            page.wait_for_url(re.compile(f"/console/traces/{trace_id}$"))
            page.goto(f"{url}/console/model")
            expect(page.locator("tr.feature")).to_have_count(len(card.features))
            _screenshot(page, tmp_path, "model.png")
            page.close()


def _screenshot(page: object, directory: Path, name: str) -> None:
    """A PNG of the page, kept in docs/console/ only when asked (the committed images stay put otherwise)."""
    path = directory / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("MODELLENS_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / name)


@pytest.mark.slow
class TestTriageFromTheConsole:
    def test_the_slowed_request_leads_the_report_with_its_stage_and_logs(self, regression_model_dir: Path) -> None:
        card = ModelCard.load(regression_model_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with serve(regression_model_dir, port, None, MODELLENS_FAULTS="1"), requests.Session() as http:
            for shift in range(20):
                http.post(f"{url}/predict", json={"instances": [instance(card, 0.1 + shift / 30)]}, timeout=10)
            slow = http.post(f"{url}/predict", json={"instances": [instance(card)]}, timeout=10,
                             headers={"X-Modellens-Fault": "latency=0.4"})  # fmt: skip
            result = subprocess.run(
                [sys.executable, "-m", "service.cli", "triage", "--console", url, "--since", "10m", "--json"],
                capture_output=True, text=True, check=False, cwd=ROOT,
                env={**os.environ, "MODELLENS_PROMETHEUS_URL": ""},
            )  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        first = report["traces"][0]
        assert first["trace_id"] == slow.headers["X-Trace-Id"]
        assert first["trace"]["slowest_stage"]["name"] == "feature_lookup"
        assert first["trace"]["slowest_stage"]["attributes"]["fault.injected"] is True
        assert "fault injected" in [line["line"] for line in first["logs"]]
        assert first["links"]["trace"] == f"{url}/console/traces/{first['trace_id']}"

    def test_a_console_that_is_off_is_a_clear_error(self, regression_model_dir: Path) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with serve(regression_model_dir, port, None, MODELLENS_CONSOLE="off"):
            result = subprocess.run(
                [sys.executable, "-m", "service.cli", "triage", "--console", url],
                capture_output=True, text=True, check=False, cwd=ROOT,
            )  # fmt: skip
        assert result.returncode == 2
        assert "MODELLENS_CONSOLE" in result.stderr
