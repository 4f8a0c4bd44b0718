"""Optional bearer tokens for the routes that write: `/predict` (it fills the prediction log) and `/feedback`.

Off unless `MODELLENS_AUTH_TOKENS_FILE` names a file of tokens, one per line (`#` comments, blank lines skipped),
so several clients can hold their own token and one can be revoked by deleting its line and restarting. Reads
(`/healthz`, `/readyz`, `/metrics`, `/model`, `/monitoring`, `/openapi.json`) stay open: probes and Prometheus need
them. Tokens are compared as SHA-256 digests in constant time, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from flask import Flask, request

from service.web.problems import Problem

__all__ = ["MIN_TOKEN_LENGTH", "PROTECTED_ENDPOINTS", "AuthError", "load_tokens", "read_tokens", "require_tokens"]

MIN_TOKEN_LENGTH = 16  # characters; a shorter token is refused at start-up (`openssl rand -hex 32` makes 64)
PROTECTED_ENDPOINTS = frozenset({"api.predict", "feedback.feedback"})


class AuthError(ValueError):
    """The tokens file cannot be used; the message names the file and what is wrong (never a token)."""


def load_tokens(path: Path) -> frozenset[bytes]:
    """The SHA-256 digests of the tokens in `path`: what the service compares against."""
    return frozenset(hashlib.sha256(token.encode()).digest() for token in read_tokens(path))


def read_tokens(path: Path) -> list[str]:
    """The tokens in `path`, in order (a client such as `modellens loadgen` sends the first)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AuthError(f"cannot read the tokens file {path}: {error}") from error
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise AuthError(f"the tokens file {path} holds no token (one per line)")
    short = [number for number, token in enumerate(tokens, 1) if len(token) < MIN_TOKEN_LENGTH]
    if short:
        raise AuthError(f"the tokens file {path}: token(s) {short} shorter than {MIN_TOKEN_LENGTH} characters")
    return tokens


def require_tokens(app: Flask, digests: frozenset[bytes]) -> None:
    """Answer a request to a protected endpoint without a valid `Authorization: Bearer` token with a 401."""

    def check() -> None:
        if request.endpoint not in PROTECTED_ENDPOINTS:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).digest()
        # Every digest is compared, so the time taken does not say which token came close.
        valid = scheme.lower() == "bearer" and sum(hmac.compare_digest(digest, known) for known in digests) > 0
        if not valid:
            raise Problem(
                status=401,
                title="Unauthorized",
                detail="Send Authorization: Bearer <token>, a token from the service's MODELLENS_AUTH_TOKENS_FILE.",
                slug="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="modellens"'},
            )

    app.before_request(check)
