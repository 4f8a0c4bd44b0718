"""Put process-global logging back after a test that configured it (configure_logging changes the root logger
and structlog)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog

from otel import logs

__all__ = ["restored_logging"]


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """The root logger's handlers and level, structlog's configuration and context variables, and where log lines
    go (otel.logs' sink), as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sink = logs._SINK
    stream, bridge, interval = sink.stream, sink.bridge, sink.interval
    try:
        yield
    finally:
        sink.reconfigure(stream, bridge, interval)  # writes what a test left queued to the test's stream
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
