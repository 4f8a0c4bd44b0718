"""The Flask app factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog
from flask import Flask
from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from otel.flask import FlaskTelemetry
from otel.telemetry import Telemetry, installed
from service.artifact.model import Model, ModelLoadError, load_model
from service.artifact.profile import PROFILE_FILE, ReferenceProfile
from service.groundtruth import FeedbackInstruments
from service.groundtruth.ids import split_prediction_id
from service.groundtruth.store import PredictionLog
from service.monitoring.instruments import ModelInstruments
from service.monitoring.monitor import ModelMonitor
from service.monitoring.shadow import ShadowScorer
from service.rehearsal.faults import FaultInjector, FaultPlan
from service.settings import Settings
from service.web import openapi, routes
from service.web.problems import register_error_handlers

__all__ = ["create_app"]

_log = structlog.get_logger("service.web.app")


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
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(openapi.blueprint)

    card = model.card
    meter = telemetry.meter_provider.get_meter("modellens")
    tracer = telemetry.tracer_provider.get_tracer("modellens")
    app.extensions["modellens"] = routes.ServiceState(
        settings=settings,
        model=model,
        tracer=tracer,
        instruments=ModelInstruments(meter, card),
        metrics_renderer=telemetry.metrics_reader,
        monitor=_monitor(settings, model, meter),
        shadow=_shadow(settings, model, meter, tracer),
        faults=_faults(settings, meter, tracer),
    )
    state = app.extensions["modellens"]
    path = settings.prediction_log_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state.predictions = PredictionLog(
            path,
            retention_seconds=settings.prediction_log_retention_seconds,
            max_rows=settings.prediction_log_max_rows,
        ).open()
        known = {name: spec.values for name, spec in state.monitor.profile.slices.items()} if state.monitor else {}
        state.feedback = FeedbackInstruments(meter, card, settings.slice_features, known)
        if state.shadow is not None:
            state.shadow.on_result = _shadow_logger(state.predictions)
    _log.info(
        "model loaded",
        model_name=card.name,
        model_version=card.version,
        task=card.task,
        features=len(card.features),
    )
    return app


def _monitor(settings: Settings, model: Model, meter: Meter) -> ModelMonitor | None:
    if not settings.monitoring:
        return None
    if not (settings.model_dir / PROFILE_FILE).exists():
        raise ModelLoadError(
            f"{settings.model_dir / PROFILE_FILE} is missing: run `modellens profile --model "
            f"{settings.model_dir} --data TRAINING.csv`, or set MODELLENS_MONITORING=off"
        )
    profile = ReferenceProfile.load(settings.model_dir)
    if profile.model_version != model.card.version:
        raise ModelLoadError(
            f"{settings.model_dir / PROFILE_FILE} belongs to model version {profile.model_version}, "
            f"not {model.card.version}; run `modellens profile` to rebuild it"
        )
    return ModelMonitor(meter, model.card, profile, slices=settings.slice_features, window=settings.drift_window)


def _shadow(settings: Settings, model: Model, meter: Meter, tracer: Tracer) -> ShadowScorer | None:
    if settings.shadow_model_dir is None:
        return None
    challenger = load_model(settings.shadow_model_dir)
    edges = ReferenceProfile.load(settings.model_dir).prediction.edges if settings.monitoring else ()
    scale = (edges[-1] - edges[0]) if len(edges) > 1 else 1.0
    _log.info("shadow model loaded", shadow_model_version=challenger.card.version)
    return ShadowScorer(
        challenger,
        model,
        meter,
        tracer,
        workers=settings.shadow_workers,
        queue_limit=settings.shadow_queue,
        prediction_scale=scale,
    )


def _faults(settings: Settings, meter: Meter, tracer: Tracer) -> FaultInjector | None:
    if not settings.faults:
        return None
    plan = FaultPlan(
        stage=settings.fault_stage,
        latency_probability=settings.fault_latency_probability,
        latency_seconds=settings.fault_latency_seconds,
        error_rate=settings.fault_error_rate,
    )
    _log.warning("fault injection is ON: for rehearsals only", plan=str(plan))
    return FaultInjector(plan, tracer, meter)


def _shadow_logger(log: PredictionLog) -> Callable[[Sequence[str], Any], None]:
    def record(prediction_ids: Sequence[str], challenger: Any) -> None:
        # One request's predictions share its request id (see service.groundtruth.store.new_prediction_ids).
        split = split_prediction_id(prediction_ids[0]) if prediction_ids else None
        if split is not None:
            log.record_shadow(split[0], challenger.tolist())

    return record
