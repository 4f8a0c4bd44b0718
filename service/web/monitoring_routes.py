"""`GET /monitoring` and `GET /model/reference`: registered only when monitoring is on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service.monitoring.monitor import ModelMonitor

__all__ = ["EXTENSION", "MonitoringState", "blueprint", "document"]

EXTENSION = "modellens.monitoring"
blueprint = Blueprint("monitoring", __name__)


@dataclass(frozen=True)
class MonitoringState:
    """The monitor, and the other features' sections of `GET /monitoring` (`shadow`, `realized_performance`)."""

    monitor: ModelMonitor
    sections: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = ()


def _state() -> MonitoringState:
    state: MonitoringState = current_app.extensions[EXTENSION]
    return state


@blueprint.get("/model/reference")
def model_reference() -> Response:
    return jsonify(_state().monitor.profile.to_dict())


@blueprint.get("/monitoring")
def monitoring() -> Response:
    return jsonify(document())


def document() -> dict[str, Any]:
    """`GET /monitoring`'s document (also what the console's model page draws)."""
    state = _state()
    summary = state.monitor.snapshot()
    for name, section in state.sections:
        summary[name] = section()
    return summary
