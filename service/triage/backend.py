"""One HTTP JSON backend (Prometheus, Tempo or Loki): GET with a timeout, every failure as a `BackendError`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests

__all__ = ["Backend", "BackendError", "NotFound", "Unreachable"]

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


class BackendError(Exception):
    """The backend could not answer: unreachable, timed out, an HTTP error, or not the documented JSON."""


class NotFound(BackendError):
    """The backend answered 404."""


class Unreachable(BackendError):
    """No answer at all: connection refused, unknown host, timeout."""


class Backend:
    """`get_json(path, params)` against `base_url`, sharing one `requests.Session`."""

    def __init__(self, name: str, base_url: str, session: requests.Session, timeout: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout

    def get_json(
        self, path: str, params: Mapping[str, str | int | float] | None = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """The decoded JSON body of a 2xx answer; anything else raises `BackendError` (`NotFound` for 404)."""
        url = f"{self.base_url}{path}"
        try:
            response = self._session.get(url, params=params, headers=headers, timeout=self._timeout)
        except requests.Timeout:
            raise Unreachable(f"{self.name} at {self.base_url} did not answer within {self._timeout:g}s") from None
        except requests.RequestException as error:
            raise Unreachable(f"cannot reach {self.name} at {self.base_url}: {_reason(error)}") from None
        with response:
            text = response.text
            try:
                body = response.json()
            except ValueError:
                body = None
        status = response.status_code
        if status == 404:
            raise NotFound(f"{self.name} answered 404 for {path}: {_message(body, text)}")
        if status >= 400:
            raise BackendError(f"{self.name} answered HTTP {status} for {path}: {_message(body, text)}")
        if body is None:
            raise BackendError(f"{self.name} answered {path} with something that is not JSON: {text[:200]!r}")
        return body


def _reason(error: requests.RequestException) -> str:
    """The useful part of a connection error ("[Errno 111] Connection refused"), not urllib3's retry story."""
    match = _ERRNO.search(str(error))
    return match.group(0).strip() if match else f"{type(error).__name__}: {str(error)[:200]}"


def _message(body: Any, text: str) -> str:
    if isinstance(body, dict) and body.get("error"):
        kind = body.get("errorType")
        return f"{kind}: {body['error']}" if kind else str(body["error"])
    return text.strip()[:300] or "(empty body)"
