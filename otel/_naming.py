"""OpenTelemetry → Prometheus names, units, labels and number formatting (otlptranslator rules)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from opentelemetry.util.types import AttributeValue

__all__ = [
    "KINDS",
    "escape_help",
    "escape_label_value",
    "format_float",
    "format_le",
    "label_name",
    "labels_from_attributes",
    "prometheus_name",
    "prometheus_unit",
]

# OTel instrument kinds as the name translation sees them (a non-monotonic sum is not a gauge for `_ratio`).
KINDS = frozenset({"counter", "updowncounter", "gauge", "histogram"})

# UCUM → Prometheus base unit words: the table of Prometheus's otlptranslator (Prometheus 3's OTLP receiver).
_UNITS = {
    # time
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    # bytes
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    # SI and the rest; `1` (dimensionless) adds nothing, except `_ratio` on gauges
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
    "1": "",
}
# The denominator of `X/Y` is singular, and `m` there means minute (as in Prometheus).
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

_METRIC_TOKEN = re.compile(r"[a-zA-Z0-9:]+")
_INVALID_LABEL_RUN = re.compile(r"[^a-zA-Z0-9]+")
_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def _unit_words(unit: str) -> tuple[str, str]:
    """(main, per) unit words; a part containing a `{annotation}` is dropped whole, as Prometheus does."""
    main, _, per = (part.strip() for part in unit.partition("/"))
    main_word = "" if not main or "{" in main or "}" in main else _UNITS.get(main, main)
    per_word = "" if not per or "{" in per or "}" in per else _PER_UNITS.get(per, per)
    main_word = "_".join(_METRIC_TOKEN.findall(main_word))
    per_word = "_".join(_METRIC_TOKEN.findall(per_word))
    return main_word, f"per_{per_word}" if per_word else ""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """Prometheus metric name of an OTel instrument (`UnderscoreEscapingWithSuffixes`).

    `kind` is `counter` (monotonic sum, gets `_total`), `updowncounter`, `gauge` (unit `1` gets `_ratio`)
    or `histogram`. A unit word already present as a name token is not appended again.
    """
    _check_kind(kind)
    tokens = _METRIC_TOKEN.findall(name)
    main, per = _unit_words(unit)
    if main and main not in tokens:
        tokens.append(main)
    if per and per not in tokens:
        tokens.append(per)
    if kind == "counter":
        tokens = [*(t for t in tokens if t != "total"), "total"]
    if unit == "1" and kind == "gauge":
        tokens = [*(t for t in tokens if t != "ratio"), "ratio"]
    result = "_".join(tokens)
    return f"_{result}" if result[:1].isdigit() else result


def prometheus_unit(unit: str, kind: str) -> str:
    """The unit word of `# UNIT` (`seconds`, `bytes_per_second`, `ratio`), or `""` for none."""
    _check_kind(kind)
    if unit == "1" and kind == "gauge":
        return "ratio"
    return "_".join(word for word in _unit_words(unit) if word)


def label_name(key: str) -> str | None:
    """Prometheus label name of an attribute key, or None when nothing valid is left of it.

    Invalid runs become one `_`; a leading digit gets `key_`, a leading `_` gets `key`; a key starting with
    exactly `__` is reserved and keeps its underscores.
    """
    if key.startswith("__") and key[2:3] not in ("", "_"):
        return "__" + _INVALID_LABEL_CHAR.sub("_", key[2:])
    name = _INVALID_LABEL_RUN.sub("_", key)
    if not name.strip("_"):
        return None
    if name[0].isdigit():
        return f"key_{name}"
    return f"key{name}" if name[0] == "_" else name


def _label_value(value: AttributeValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))
    return format_float(value) if isinstance(value, float) else str(value)


def labels_from_attributes(attributes: Mapping[str, AttributeValue] | None) -> dict[str, str]:
    """Sanitised labels, sorted by name; values of keys that collide are joined with `;` in key order."""
    grouped: dict[str, list[str]] = {}
    attributes = attributes or {}
    for key in sorted(attributes):
        name = label_name(key)
        if name is not None:
            grouped.setdefault(name, []).append(_label_value(attributes[key]))
    return {name: ";".join(grouped[name]) for name in sorted(grouped)}


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str, *, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def format_float(value: float | int) -> str:
    """Sample value: integers as they are, floats round-tripping (`repr`), and `+Inf`/`-Inf`/`NaN`."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def format_le(bound: float) -> str:
    """Bucket bound in canonical form, exactly as prometheus_client writes it (`0.005`, `1.0`, `+Inf`)."""
    bound = float(bound)
    text = format_float(bound)
    dot = text.find(".")
    if bound > 0 and dot > 6 and math.isfinite(bound):  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
