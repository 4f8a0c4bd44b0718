"""The Flask app factory."""

from __future__ import annotations

import structlog
from flask import Flask

from otel.flask import FlaskTelemetry
from otel.telemetry import Telemetry, installed
from service import api
from service.instruments import ModelInstruments
from service.model import Model, load_model
from service.problems import register_error_handlers
from service.settings import Settings

__all__ = ["create_app"]

_log = structlog.get_logger("service.app")


def create_app(
    settings: Settings | None = None, *, telemetry: Telemetry | None = None, model: Model | None = None
) -> Flask:
    """Build the service: load the model once, wire telemetry, register routes and error handlers.

    `settings` default to `Settings.from_env()`. `telemetry` defaults to what the process installed at start-up
    (gunicorn's `post_fork`), else disabled; tests pass their own providers here and never touch globals.
    """
    settings = settings or Settings.from_env()
    telemetry = telemetry or installed() or Telemetry.disabled()
    model = model or load_model(settings.model_dir)

    app = Flask("modellens")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    FlaskTelemetry(telemetry.tracer_provider, telemetry.meter_provider).init_app(app)
    register_error_handlers(app)
    app.register_blueprint(api.blueprint)

    card = model.card
    app.extensions["modellens"] = api.ServiceState(
        settings=settings,
        model=model,
        tracer=telemetry.tracer_provider.get_tracer("service"),
        instruments=ModelInstruments(telemetry.meter_provider.get_meter("service"), card),
        metrics_renderer=telemetry.metrics_reader,
    )
    _log.info("model loaded", model_name=card.name, model_version=card.version, task=card.task, features=len(card.features))
    return app
