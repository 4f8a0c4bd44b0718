"""Put process-global logging back after a test that configured it (configure_logging changes the root logger
and structlog)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog

__all__ = ["restored_logging"]


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """The root logger's handlers and level, structlog's configuration and context variables, as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
