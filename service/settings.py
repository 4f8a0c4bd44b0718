"""Service settings: defaults, then `MODELLENS_*` environment variables, then explicit overrides."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DURABILITY", "Settings", "SettingsError"]

_PREFIX = "MODELLENS_"
DURABILITY = ("commit", "buffered")  # MODELLENS_PREDICTION_LOG_DURABILITY
# A window setting, as service.monitoring.window.parse_window reads it: checked here so a typo names its variable.
_WINDOW = re.compile(r"^\s*([1-9][0-9]*)\s*(s|m|h|rows)\s*$")


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Each field `x` is read from `MODELLENS_X` (see the README's reference)."""

    model_dir: Path = Path("models/diabetes")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 4
    environment: str = "local"  # deployment.environment.name, unless OTEL_RESOURCE_ATTRIBUTES says otherwise
    service_name: str = "modellens"  # service.name, unless OTEL_SERVICE_NAME says otherwise
    log_level: str = "INFO"
    log_format: str = "auto"  # json | console | auto (console on a terminal, JSON otherwise: containers, pipes)
    log_flush_seconds: float = 0.05  # INFO lines reach stdout in batches this often; 0: each line at once
    max_batch: int = 1000  # rows per /predict request
    max_body_bytes: int = 2 * 1024 * 1024
    monitoring: bool = True  # MODELLENS_MONITORING=off turns drift, quality and slice monitoring off
    console: bool = True  # GET /console: recent traces, their logs and the last hour per route, kept in-process
    drift_window: str = "10m"  # in-process drift window: 10m, 600s, 1h or 5000rows
    label_window: str = "1h"  # in-process label drift window (labels arrive sparser than requests): 1h, 500rows
    slices: str = ""  # comma-separated slice features (low-cardinality features, e.g. "sex")
    shadow_model_dir: Path | None = None  # a challenger model scored off the request path
    shadow_workers: int = 1
    shadow_queue: int = 32  # requests waiting for the challenger; beyond this they are skipped and counted
    # A SQLite path, or a postgresql:// URL (shared by replicas; may hold a password: kept out of repr);
    # empty: <model_dir>/predictions.sqlite3; "off": no log, no /feedback.
    prediction_log: str = dataclasses.field(default="", repr=False)
    prediction_log_password_file: Path | None = None  # the PostgreSQL password, alone in a file (a mounted secret)
    prediction_log_retention_seconds: float = 30 * 86400.0  # predictions older than this are purged
    prediction_log_max_rows: int = 5_000_000  # and the oldest beyond this many rows
    # commit: a 200 waits (at most prediction_log_commit_wait s) for its rows' commit, which survives a killed
    # worker; buffered: a 200 as soon as the rows are queued (docs/reliability.md states the loss window).
    prediction_log_durability: str = "commit"
    prediction_log_commit_wait: float = 0.25  # past it (or while the log fails) the 200 says "queued"
    prediction_log_queue: int = 10_000  # rows waiting for the writer; beyond it predictions are served, not logged
    auth_tokens_file: Path | None = None  # bearer tokens for /predict and /feedback, one per line; unset: open
    faults: bool = False  # MODELLENS_FAULTS=1 enables fault injection (rehearsals only)
    fault_stage: str = "feature_lookup"
    fault_latency_probability: float = 0.0
    fault_latency_seconds: float = 0.5
    fault_error_rate: float = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by `MODELLENS_*` variables in `env` (os.environ), overridden by `overrides`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = env.get(_PREFIX + spec.name.upper())
            if raw is not None and raw.strip() != "":
                values[spec.name] = _parse(spec.name, spec.type, raw.strip())
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("port", "workers", "threads", "max_batch", "max_body_bytes", "shadow_workers", "shadow_queue",
                     "prediction_log_max_rows", "prediction_log_queue"):  # fmt: skip
            if getattr(self, name) < 1:
                raise SettingsError(f"{_PREFIX}{name.upper()} must be at least 1, got {getattr(self, name)}")
        for name in ("fault_latency_probability", "fault_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingsError(f"{_PREFIX}{name.upper()} must be between 0 and 1, got {getattr(self, name)}")
        if self.log_format not in ("json", "console", "auto"):
            raise SettingsError(f"{_PREFIX}LOG_FORMAT must be json, console or auto, got {self.log_format!r}")
        if self.prediction_log_durability not in DURABILITY:
            raise SettingsError(
                f"{_PREFIX}PREDICTION_LOG_DURABILITY must be one of {', '.join(DURABILITY)},"
                f" got {self.prediction_log_durability!r}"
            )
        if not 0 < self.prediction_log_commit_wait <= 60:
            raise SettingsError(
                f"{_PREFIX}PREDICTION_LOG_COMMIT_WAIT must be more than 0 and at most 60 seconds,"
                f" got {self.prediction_log_commit_wait}"
            )
        if self.log_flush_seconds < 0:
            raise SettingsError(f"{_PREFIX}LOG_FLUSH_SECONDS must be 0 or more, got {self.log_flush_seconds}")
        for name in ("drift_window", "label_window"):
            if _WINDOW.match(getattr(self, name)) is None:
                raise SettingsError(
                    f"{_PREFIX}{name.upper()} must be a positive count of s, m, h or rows (e.g. 10m, 600s, 1h or "
                    f"5000rows), got {getattr(self, name)!r}"
                )
        if self.port > 65535:
            raise SettingsError(f"{_PREFIX}PORT must be at most 65535, got {self.port}")

    @property
    def prediction_log_location(self) -> Path | str | None:
        """The SQLite file, or the PostgreSQL URL (a str), of the prediction log; None when it is off."""
        value = self.prediction_log.strip()
        if value.lower() == "off":
            return None
        if value.lower().startswith(("postgresql://", "postgres://")):
            return value
        return Path(value) if value else self.model_dir / "predictions.sqlite3"

    @property
    def prediction_log_path(self) -> Path | None:
        """The SQLite file of the prediction log; None when it is off or in PostgreSQL."""
        location = self.prediction_log_location
        return location if isinstance(location, Path) else None

    @functools.cached_property  # read on every request; a frozen dataclass still has an instance __dict__
    def slice_features(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.slices.split(",") if name.strip())

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse(name: str, kind: object, raw: str) -> Any:
    variable = _PREFIX + name.upper()
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{variable} must be an integer, got {raw!r}") from None
    if kind in (float, "float"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{variable} must be a number, got {raw!r}") from None
    if kind in (Path, "Path", "Path | None"):
        return Path(raw)
    if kind in (bool, "bool"):
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{variable} must be true or false, got {raw!r}")
    return raw
