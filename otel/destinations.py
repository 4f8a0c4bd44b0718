"""Where each signal is pushed: the OTLP/HTTP endpoint, headers and compression, read from a given mapping.

The SDK's exporters read these from `os.environ` when built without arguments; `Telemetry.from_env(env=…)` passes
them explicitly so that the mapping it is given decides, as the specification's precedence says: the per-signal
variable (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as is) over the general one (`OTEL_EXPORTER_OTLP_ENDPOINT`,
with `/v1/<signal>` appended).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry.exporter.otlp.proto.http import Compression

from otel.resilience import export_timeout

__all__ = ["compression", "endpoint", "exporter_options", "headers"]

_TLS_FILES = {
    "certificate_file": "CERTIFICATE",
    "client_key_file": "CLIENT_KEY",
    "client_certificate_file": "CLIENT_CERTIFICATE",
}
_PATHS = {"TRACES": "v1/traces", "METRICS": "v1/metrics", "LOGS": "v1/logs"}


def endpoint(env: Mapping[str, str], signal: str) -> str | None:
    """The URL `signal` (TRACES, METRICS or LOGS) is posted to, or None when neither variable is set."""
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        return None
    return f"{base.rstrip('/')}/{_PATHS[signal]}"


def headers(env: Mapping[str, str], signal: str) -> dict[str, str]:
    """`key=value,key2=value2` (values percent-decoded, as the specification says); the per-signal list wins."""
    raw = env.get(f"OTEL_EXPORTER_OTLP_{signal}_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    parsed: dict[str, str] = {}
    for part in raw.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip():
            parsed[unquote(name.strip()).lower()] = unquote(value.strip())
    return parsed


def compression(env: Mapping[str, str], signal: str) -> Compression:
    """`gzip`, `deflate` or `none` (the default); anything else is a configuration error, said at start-up."""
    raw = env.get(f"OTEL_EXPORTER_OTLP_{signal}_COMPRESSION") or env.get("OTEL_EXPORTER_OTLP_COMPRESSION") or "none"
    try:
        return Compression(raw.strip().lower())
    except ValueError:
        choices = ", ".join(member.value for member in Compression)
        raise ValueError(f"OTEL_EXPORTER_OTLP_COMPRESSION={raw!r} is not one of {choices}") from None


def exporter_options(env: Mapping[str, str], signal: str) -> dict[str, Any]:
    """Keyword arguments for the SDK's OTLP/HTTP exporter of `signal`, every value taken from `env`.

    TLS files are passed only when `env` names them (the SDK looks in `os.environ` for any left out).
    """
    options: dict[str, Any] = {
        "endpoint": endpoint(env, signal),
        "headers": headers(env, signal),
        "compression": compression(env, signal),
        "timeout": export_timeout(env, signal),
    }
    for argument, suffix in _TLS_FILES.items():
        path = env.get(f"OTEL_EXPORTER_OTLP_{signal}_{suffix}") or env.get(f"OTEL_EXPORTER_OTLP_{suffix}")
        if path:
            options[argument] = path
    return options
