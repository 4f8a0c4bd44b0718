"""Secure defaults: trusted artifacts only, limits on unless raised, no secrets in the repository, no feature values
in logs or telemetry.

Covered elsewhere, not repeated here: every way an artifact is refused (untrusted types, flipped bytes, swapped
files, edited cards: tests/test_model.py::TestRefusedArtifacts); containers as non-root users with read-only root
filesystems, dropped capabilities and no secrets in `.env` (tests/test_stack_config.py: TestComposeFile and
TestDockerfile).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.artifact.card import MODEL_FILE, ModelCard
from service.artifact.model import ModelLoadError
from service.settings import Settings, SettingsError
from service.web import gunicorn_conf
from service.web.app import create_app
from tests.conftest import InMemoryTelemetry

ROOT = Path(__file__).resolve().parent.parent


class TestArtifacts:
    """The service refuses to start on an artifact that is not the one `modellens train` wrote."""

    def test_tampered_artifact_stops_the_service_with_a_clear_error(
        self, regression_model_dir: Path, tmp_path: Path, telemetry: InMemoryTelemetry
    ) -> None:
        tampered = tmp_path / "model"
        shutil.copytree(regression_model_dir, tampered)
        data = bytearray((tampered / MODEL_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (tampered / MODEL_FILE).write_bytes(bytes(data))
        settings = Settings.from_env({}, model_dir=tampered, prediction_log="off")
        with pytest.raises(ModelLoadError, match=r"model\.skops") as refused:
            create_app(settings, telemetry=telemetry.telemetry)
        assert re.search(r"untrusted|content hash|cannot be loaded|not a valid skops file", str(refused.value))


class TestLimitsByDefault:
    """Request size, batch size and time are bounded without any configuration, and cannot be switched off."""

    def test_defaults(self) -> None:
        settings = Settings.from_env({})
        assert settings.max_batch == 1000
        assert settings.max_body_bytes == 2 * 1024 * 1024

    @pytest.mark.parametrize("variable", ["MODELLENS_MAX_BATCH", "MODELLENS_MAX_BODY_BYTES"])
    def test_cannot_be_disabled(self, variable: str) -> None:
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: "0"})

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("MODELLENS_PREDICTION_LOG_DURABILITY", "sometimes"),
            ("MODELLENS_PREDICTION_LOG_COMMIT_WAIT", "0"),
            ("MODELLENS_PREDICTION_LOG_QUEUE", "0"),
            ("MODELLENS_LOG_FORMAT", "yaml"),
            ("MODELLENS_DRIFT_WINDOW", "10 minutes"),
            ("MODELLENS_LABEL_WINDOW", "0h"),
        ],
    )
    def test_bad_values_are_refused_by_name(self, variable: str, value: str) -> None:
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: value})

    def test_app_enforces_the_body_limit(self, regression_model_dir: Path, telemetry: InMemoryTelemetry) -> None:
        app = create_app(
            Settings.from_env({}, model_dir=regression_model_dir, prediction_log="off"), telemetry=telemetry.telemetry
        )
        assert app.config["MAX_CONTENT_LENGTH"] == 2 * 1024 * 1024

    def test_gunicorn_bounds_time_and_headers(self) -> None:
        assert 0 < gunicorn_conf.timeout <= 120 and 0 < gunicorn_conf.graceful_timeout <= 60
        for name in ("limit_request_line", "limit_request_fields", "limit_request_field_size"):
            assert getattr(gunicorn_conf, name, None) in (None,), f"{name} overridden: keep gunicorn's bounded default"


# --- secrets ----------------------------------------------------------------------------------------------------
_SIGNATURES = re.compile(
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"  # PEM private keys
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"  # GitHub tokens
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bglsa_[A-Za-z0-9_]{20,}"  # Grafana service account tokens
)
_LITERAL = re.compile(
    r"""(?i)(?:password|passwd|secret|api_?key|token)\w*["']?\s*[:=]\s*(?P<q>["'])(?P<value>[^"'\s]{8,})(?P=q)"""
)
_CONFIG = re.compile(
    r"""(?im)^\s*(?P<key>[\w.-]*(?:password|passwd|secret|api_?key|token)[\w.-]*)"""
    r"""\s*[:=][ \t]*["']?(?P<value>[^\s"'#]*)"""
)
# Keys that name a secret, or switch one off, rather than hold one (Kubernetes manifests); `*_FILE` keys hold the
# path of a mounted secret.
_REFERENCES = {"secretname", "automountserviceaccounttoken"}
_CONFIG_FILES = (".yml", ".yaml", ".ini", ".toml", ".cfg", ".conf", ".properties")
_PLACEHOLDERS = ("not-a-", "not-the-", "example", "dummy", "fake", "placeholder", "changeme", "redacted", "<", "${")


def _repository_files() -> list[Path]:
    """Files git tracks, plus new ones it would track (what a commit could carry)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        return [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    skip = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "models"}
    return [path for path in ROOT.rglob("*") if path.is_file() and not skip & set(path.relative_to(ROOT).parts)]


def _findings(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    found = [match.group(0) for match in _SIGNATURES.finditer(text)]
    found += [m.group(0) for m in _LITERAL.finditer(text) if not _placeholder(m.group("value"))]
    if path.suffix in _CONFIG_FILES or path.name.startswith(".env"):
        found += [
            m.group(0)
            for m in _CONFIG.finditer(text)
            if m.group("value") and not _placeholder(m.group("value")) and not _reference(m.group("key"))
        ]
    return found


def _reference(key: str) -> bool:
    return key.lower() in _REFERENCES or key.lower().endswith("_file")


def _placeholder(value: str) -> bool:
    return any(marker in value.lower() for marker in _PLACEHOLDERS)


class TestNoSecretsInTheRepository:
    """No private keys, tokens or passwords in any file a commit could carry."""

    def test_scan(self) -> None:
        files = [path for path in _repository_files() if path != Path(__file__).resolve()]
        assert len(files) > 50
        findings = {str(path.relative_to(ROOT)): hits for path in files if (hits := _findings(path))}
        assert not findings, findings

    @pytest.mark.parametrize(
        "text",
        [
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
            'GRAFANA_ADMIN_PASSWORD = "hunter2hunter2"',
            "aws = AKIAABCDEFGHIJKLMNOP",
        ],
    )
    def test_the_scanner_finds_planted_secrets(self, tmp_path: Path, text: str) -> None:
        planted = tmp_path / "settings.py"
        planted.write_text(text)
        assert _findings(planted)

    def test_env_files_are_configuration_not_secrets(self, tmp_path: Path) -> None:
        planted = tmp_path / ".env"
        planted.write_text("GRAFANA_ADMIN_PASSWORD=s3cr3t\nGRAFANA_ADMIN_USER=admin\nOTHER_TOKEN=\n")
        assert _findings(planted) == ["GRAFANA_ADMIN_PASSWORD=s3cr3t"]

    def test_local_secrets_file_is_ignored(self) -> None:
        if not (ROOT / ".git").exists() or not shutil.which("git"):
            pytest.skip("not a git checkout")
        result = subprocess.run(["git", "check-ignore", "-q", ".env.local"], cwd=ROOT, check=False)
        assert result.returncode == 0, ".env.local (the Grafana password) must be git-ignored"


# --- feature values never in logs or telemetry ------------------------------------------------------------------
NUMBER = 0.0123456789  # distinctive: appears nowhere unless a value is copied
TEXT = "zebra-crossing-4711"


def _everything_emitted(telemetry: InMemoryTelemetry) -> str:
    """Console lines, OTel log records and span attributes and events, as one text."""
    parts = list(telemetry.console_lines())
    for data in telemetry.logs.get_finished_logs():
        record = data.log_record
        parts.append(f"{record.body} {dict(record.attributes or {})}")
    for span in telemetry.spans.get_finished_spans():
        parts.append(
            f"{span.name} {dict(span.attributes or {})} {[(e.name, dict(e.attributes or {})) for e in span.events]}"
        )
    return "\n".join(parts)


class TestNoFeatureValuesInLogs:
    """Whatever a request carries, its values appear in no log line, log record or span: only counts and names."""

    def test_accepted_rejected_and_feedback(
        self, client: FlaskClient, regression_model_dir: Path, telemetry: InMemoryTelemetry
    ) -> None:
        card = ModelCard.load(regression_model_dir)
        row: dict[str, Any] = dict.fromkeys(card.feature_names, NUMBER)
        ok = client.post("/predict", json={"instances": [row, row]})
        assert ok.status_code == 200
        bad_rows = [{**row, "bmi": TEXT}, {**row, "age": f"{NUMBER}"}, {**row, "colour": TEXT}]
        assert client.post("/predict", json={"instances": bad_rows}).status_code == 422
        body = json.dumps({"instances": [{**row, "bmi": 1e300}]})
        assert client.post("/predict", data=body, content_type="application/json").status_code == 422
        pid = ok.get_json()["prediction_ids"][0]
        assert (
            client.post("/feedback", json={"feedback": [{"prediction_id": pid, "actual": NUMBER}]}).status_code == 200
        )
        assert client.post("/feedback", json={"feedback": [{"prediction_id": pid, "actual": TEXT}]}).status_code == 422
        emitted = _everything_emitted(telemetry)
        assert "request" in emitted  # the access lines are there...
        for value in (str(NUMBER), TEXT, "1e+300"):
            assert value not in emitted, f"{value} leaked into logs or spans"  # ...without the values
