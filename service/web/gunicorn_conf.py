"""gunicorn configuration: `gunicorn -c python:service.web.gunicorn_conf` (what `modellens serve` runs).

Telemetry is built in each worker after the fork (exporter threads and sockets do not survive a fork) and flushed
when the worker exits, so a SIGTERM loses no span or log record the exporter could still send.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from otel.logs import configure_logging, flush_logs
from otel.telemetry import Telemetry, install, installed
from service import __version__
from service.settings import Settings

_settings = Settings.from_env()

wsgi_app = "service.web.app:create_app()"
bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
graceful_timeout = 30
timeout = 60
control_socket_disable = True  # gunicorn 27 would otherwise create a control socket under $HOME
accesslog = None  # the app writes its own structured access log, with trace ids


def on_starting(server: Any) -> None:
    """The master's own lines (listening, booting workers, signals) as JSON on stdout, like everything else."""
    configure_logging(None, level=_settings.log_level, log_format=_settings.log_format)
    _route_gunicorn_logs()


def _route_gunicorn_logs() -> None:
    error_log = logging.getLogger("gunicorn.error")
    for handler in error_log.handlers[:]:
        error_log.removeHandler(handler)
    error_log.propagate = True


def post_fork(server: Any, worker: Any) -> None:
    telemetry = Telemetry.from_env(
        service_name=_settings.service_name,
        service_version=__version__,
        environment=_settings.environment,
        keep_recent=_settings.console,  # what GET /console reads: recent traces and logs, requests per route
    )
    install(
        telemetry,
        log_level=_settings.log_level,
        log_flush_interval=_settings.log_flush_seconds,
        log_format=_settings.log_format,
    )
    _route_gunicorn_logs()


def post_worker_init(worker: Any) -> None:
    """The app is built (model, reference profile, instruments): move everything alive now out of the collector's
    way. Python's full collection walks every tracked object; in a worker that is ~170k objects of modules, the
    model and Flask, which live as long as the process, and a walk took ~100 ms (a pause for every thread) about
    once per 5,000 requests, as the requests' queued telemetry promoted objects to the oldest generation.
    Frozen, they are never walked again, and a full collection only sees what the requests created."""
    gc.collect()
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    # In-flight requests have finished; finish background work that still emits telemetry, then flush it.
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("modellens") if app is not None else None
    if state is not None:
        state.close()
    telemetry = installed()
    if telemetry is not None:
        telemetry.shutdown()
    flush_logs()  # the last access lines, and what shutting down logged
