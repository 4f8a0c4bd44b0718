"""The Flask app factory: build the components, then the state once; optional features register only when on."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from flask import Flask, Response
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Status, StatusCode, Tracer

from otel.flask import FlaskTelemetry
from otel.telemetry import Telemetry, installed
from service.artifact.model import Model, ModelLoadError, load_model
from service.artifact.profile import PROFILE_FILE, ReferenceProfile
from service.groundtruth.health import register_log_instruments
from service.groundtruth.ids import split_prediction_id
from service.groundtruth.metrics import FeedbackInstruments
from service.groundtruth.store import PredictionLog, PredictionLogError, open_database
from service.monitoring.instruments import ModelInstruments
from service.monitoring.labels import LabelDrift
from service.monitoring.monitor import ModelMonitor
from service.monitoring.shadow import ShadowScorer
from service.rehearsal.faults import FAULT_HEADER, FaultInjector, FaultPlan, InjectedFault
from service.settings import Settings
from service.web import auth, feedback_routes, monitoring_routes, openapi, routes
from service.web import console as console_routes
from service.web.problems import Problem, register_error_handlers

__all__ = ["create_app"]

_log = structlog.get_logger("service.web.app")


def create_app(
    settings: Settings | None = None,
    *,
    telemetry: Telemetry | None = None,
    model: Model | None = None,
    challenger: Model | None = None,
) -> Flask:
    """Build the service: load the model once, wire telemetry, register routes and error handlers.

    `settings` default to `Settings.from_env()`. `telemetry` defaults to what the process installed at start-up
    (gunicorn's `post_fork`), else disabled; tests pass their own providers here and never touch globals.
    `model` and `challenger` default to the models in `settings.model_dir` and `settings.shadow_model_dir`; a given
    `challenger` turns shadow mode on.
    """
    settings = settings or Settings.from_env()
    telemetry = telemetry or installed() or Telemetry.disabled()
    model = model or load_model(settings.model_dir)
    card = model.card
    meter = telemetry.meter_provider.get_meter("modellens")
    tracer = telemetry.tracer_provider.get_tracer("modellens")

    app = Flask("modellens")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    console = settings.console and telemetry.span_store is not None and telemetry.request_series is not None
    FlaskTelemetry(
        telemetry.tracer_provider,
        telemetry.meter_provider,
        untraced_prefixes=("/console",),  # the console's own pages never push a real trace out of its store
        series=telemetry.request_series if console else None,
    ).init_app(app)
    register_error_handlers(app)
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(openapi.blueprint)
    if settings.auth_tokens_file is not None:
        auth.require_tokens(app, auth.load_tokens(settings.auth_tokens_file))

    # The components of the features that are on, each built once; then their hooks, in the order they run.
    monitor = _monitor(settings, model, meter)
    log = _prediction_log(settings)
    shadow = _shadow(settings, model, challenger, meter, tracer, log)
    faults = _faults(settings, meter, tracer)
    feedback = _feedback(settings, card, meter, monitor) if log is not None else None
    labels = _label_drift(settings, card, meter, monitor) if feedback is not None else None

    before_inference: list[Callable[..., None]] = []
    on_rejected: list[Callable[..., None]] = []
    on_served: list[Callable[[routes.Served], Mapping[str, str] | None]] = []
    on_close: list[Callable[[], None]] = []
    if faults is not None:
        before_inference.append(lambda headers, attributes: faults.run_stage(headers.get(FAULT_HEADER), attributes))
        app.register_error_handler(InjectedFault, _on_injected)
    if monitor is not None:
        on_rejected.append(monitor.record_rejection)
        on_served.append(lambda served: monitor.observe(served.rows, served.raw, served.probabilities))
        sections: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if shadow is not None:
            sections.append(("shadow", shadow.summary))
        if feedback is not None:
            sections.append(("realized_performance", feedback.summary))
            sections.append(("label_drift", labels.summary if labels is not None else _no_target(settings)))
        app.extensions[monitoring_routes.EXTENSION] = monitoring_routes.MonitoringState(monitor, tuple(sections))
        app.register_blueprint(monitoring_routes.blueprint)
    else:
        _off(app, ["/monitoring", "/model/reference"], "GET", "Monitoring is off",
             "Set MODELLENS_MONITORING=on to enable it.")  # fmt: skip
    if log is not None and feedback is not None:
        wait = settings.prediction_log_commit_wait if settings.prediction_log_durability == "commit" else None
        on_served.append(feedback_routes.PredictionRecorder(log, card, settings.slice_features, wait))
        app.extensions[feedback_routes.EXTENSION] = feedback_routes.FeedbackState(
            card=card,
            tracer=tracer,
            max_batch=settings.max_batch,
            log=log,
            instruments=feedback,
            on_actuals=(labels.observe,) if labels is not None else (),
        )
        app.register_blueprint(feedback_routes.blueprint)
    else:
        _off(app, ["/feedback"], "POST", "Feedback is off", "The prediction log is off (MODELLENS_PREDICTION_LOG).")
    if shadow is not None:

        def score_in_shadow(served: routes.Served) -> None:
            shadow.submit(served.rows, served.raw, served.prediction_ids)  # skipped ones are counted by the scorer

        on_served.append(score_in_shadow)
        on_close.append(shadow.close)  # first: the challenger's last results go to the log
    if log is not None:
        register_log_instruments(meter, log)
        on_close.append(log.close)
    if console:
        assert telemetry.span_store is not None and telemetry.request_series is not None
        monitoring_document = monitoring_routes.document if monitor is not None else None
        app.extensions[console_routes.EXTENSION] = console_routes.ConsoleState(
            telemetry.span_store,
            telemetry.request_series,
            monitoring_document,
            monitor.window_bins if monitor is not None else None,
        )
        app.register_blueprint(console_routes.blueprint)
    else:
        why = "MODELLENS_CONSOLE=off" if not settings.console else "telemetry is off (OTEL_SDK_DISABLED=true)"
        _off(app, list(console_routes.PATHS), "GET", "The console is off", f"It keeps nothing while {why}.")

    app.extensions["modellens"] = routes.ServiceState(
        settings=settings,
        model=model,
        tracer=tracer,
        instruments=ModelInstruments(meter, card),
        metrics=telemetry.metrics_reader or routes.telemetry_off,
        before_inference=tuple(before_inference),
        on_rejected=tuple(on_rejected),
        on_served=tuple(on_served),
        on_close=tuple(on_close),
    )
    _log.info(
        "model loaded",
        model_name=card.name,
        model_version=card.version,
        task=card.task,
        features=len(card.features),
    )
    return app


def _off(app: Flask, rules: list[str], method: str, title: str, detail: str) -> None:
    """A feature that is off still answers its routes, with a 404 problem that says how to turn it on."""

    def off() -> Response:
        raise Problem(status=404, title=title, detail=detail)

    for rule in rules:
        app.add_url_rule(
            rule, endpoint=routes.OFF_ENDPOINT + rule.strip("/").replace("/", "."), view_func=off, methods=[method]
        )


def _on_injected(error: InjectedFault) -> Response:
    trace.get_current_span().set_status(Status(StatusCode.ERROR, "InjectedFault"))
    return Problem(status=500, title="Injected fault", detail=str(error), slug="injected-fault").response()


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


def _prediction_log(settings: Settings) -> PredictionLog | None:
    location = settings.prediction_log_location
    if location is None:
        return None
    try:
        log = PredictionLog(
            open_database(location, password_file=settings.prediction_log_password_file),
            retention_seconds=settings.prediction_log_retention_seconds,
            max_rows=settings.prediction_log_max_rows,
            queue_size=settings.prediction_log_queue,
        )
        return log.open()
    except PredictionLogError as error:
        raise PredictionLogError(
            f"{error}. Set MODELLENS_PREDICTION_LOG to a writable file or a reachable postgresql:// database,"
            " or to `off` to serve without /feedback"
        ) from error


def _feedback(settings: Settings, card: Any, meter: Meter, monitor: ModelMonitor | None) -> FeedbackInstruments:
    known = {name: spec.values for name, spec in monitor.profile.slices.items()} if monitor is not None else {}
    return FeedbackInstruments(meter, card, settings.slice_features, known)


def _label_drift(settings: Settings, card: Any, meter: Meter, monitor: ModelMonitor | None) -> LabelDrift | None:
    target = monitor.profile.target if monitor is not None else None
    return None if target is None else LabelDrift(meter, card, target, window=settings.label_window)


def _no_target(settings: Settings) -> Callable[[], dict[str, Any]]:
    """`label_drift` in `GET /monitoring` when the profile has no target distribution: why, and the fix."""
    entry = {
        "status": "insufficient_data",
        "reason": "the reference profile has no target distribution: run `modellens profile --model "
        f"{settings.model_dir} --data TRAINING.csv` with the target column in the CSV",
    }
    return lambda: entry


def _shadow(
    settings: Settings, model: Model, challenger: Model | None, meter: Meter, tracer: Tracer, log: PredictionLog | None
) -> ShadowScorer | None:
    if challenger is None:
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
        on_result=_shadow_logger(log) if log is not None else None,
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
        # One request's predictions share its request id (see service.groundtruth.ids.new_prediction_ids).
        split = split_prediction_id(prediction_ids[0]) if prediction_ids else None
        if split is not None:
            log.record_shadow(split[0], challenger.tolist())

    return record
