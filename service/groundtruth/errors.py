"""The prediction log's errors, shared by the log and its database backends."""

from __future__ import annotations

__all__ = ["RETRY_AFTER", "PredictionLogError", "PredictionLogUnavailable"]

RETRY_AFTER = 5  # seconds a client is asked to wait before sending a join again


class PredictionLogUnavailable(Exception):
    """The log cannot answer a join now (it is failing, or behind); the client should retry in `RETRY_AFTER` s."""


class PredictionLogError(Exception):
    """The prediction log cannot be opened where it was asked to be; the message names the location and why."""
