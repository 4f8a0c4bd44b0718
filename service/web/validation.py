"""Turn a request body into a feature matrix, or into a problem document naming every bad field."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from service.artifact.card import ModelCard
from service.monitoring.quality import QualityIssue
from service.web.duplicates import duplicates_possible, parse_checking_duplicates
from service.web.problems import FieldError, Problem, escape_pointer, json_type

__all__ = ["MAX_MAGNITUDE", "InvalidInstances", "checked_rows", "numeric_matrix", "parse_body", "parse_instances"]

# Finite numbers past this make a scaled feature overflow to infinity inside the model (a 500), and sums of them
# (errors, histogram sums) useless: no real feature or label comes near it.
MAX_MAGNITUDE = 1e100
_OUT_OF_RANGE = ("too_large", f"number out of range (|x| ≤ {MAX_MAGNITUDE:g})")
_NUMERIC_TYPES = frozenset({float, int, type(None)})


@dataclass
class InvalidInstances(Problem):
    """A 422 for rows that do not fit the card; `quality` names each known feature's problem for monitoring."""

    quality: list[QualityIssue] = field(default_factory=list)


def parse_body(body: bytes) -> Any:
    """Decode a JSON body; malformed, non-UTF-8 or absurdly nested input is a 400 problem.

    A member name repeated in one object is a 422 naming each repeat (JSON parsers disagree on which value wins).
    """
    try:
        payload = json.loads(body)
        if duplicates_possible(body, payload):
            payload = parse_checking_duplicates(body)
        return payload
    except json.JSONDecodeError as error:
        detail = f"The body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
    except UnicodeDecodeError:
        detail = "The body is not valid UTF-8."
    except RecursionError:
        detail = "The body is nested too deeply."
    raise Problem(status=400, title="Malformed JSON", detail=detail, slug="malformed-json")


def parse_instances(payload: Any, card: ModelCard, max_batch: int, key: str = "instances") -> np.ndarray:
    """Validate `{"instances": [{feature: value}, ...]}` against the card and return rows in card order.

    Numeric features take JSON numbers (not booleans), categorical ones strings; `null` is a missing value that the
    model imputes. Missing keys, unknown keys, wrong types and non-finite numbers are 422 problems, every one named
    by a JSON Pointer. More rows than `max_batch` is a 413.
    """
    if not isinstance(payload, dict):
        raise _invalid([FieldError("", f"expected a JSON object with an {key!r} array, got {json_type(payload)}")])
    instances = payload.get(key)
    unknown_top = [name for name in payload if name != key]
    errors = [FieldError(_pointer(name), "unknown member") for name in unknown_top]
    if not isinstance(instances, list):
        got = "nothing" if key not in payload else json_type(instances)
        errors.insert(0, FieldError(f"/{key}", f"expected an array of objects, got {got}"))
        raise _invalid(errors)
    if not instances:
        raise _invalid([FieldError(f"/{key}", "expected at least one instance"), *errors])
    if len(instances) > max_batch:
        raise Problem(
            status=413,
            title="Batch too large",
            detail=f"{len(instances)} instances exceed the limit of {max_batch} per request.",
            slug="batch-too-large",
            errors=[FieldError(f"/{key}", f"at most {max_batch} instances, got {len(instances)}")],
        )
    # One row is checked faster value by value than with numpy's fixed cost per call; from two rows on, column-wise.
    if len(instances) > 1 and not errors and all(spec.type == "numeric" for spec in card.features):
        fast = numeric_matrix(instances, card.feature_names)
        if fast is not None:
            return fast
    return checked_rows(instances, card, key, errors)


def numeric_matrix(instances: list[Any], names: Sequence[str]) -> np.ndarray | None:
    """The column-wise check: the rows of an all-numeric model at C speed, when every row is an object with exactly
    the card's features and every value a number within range or null (NaN); None as soon as anything is off, for
    `checked_rows` to name it. Whatever it accepts, `checked_rows` returns the same matrix for (tests hold them to it).

    Checking value by value in Python dominated a 1000-row request (`make bench`, `batch-bare`); this does the
    same checks on whole columns: the values' types as a set, then one conversion and one range check in numpy.
    """
    width = len(names)
    if not all(type(row) is dict and len(row) == width for row in instances):
        return None
    pick = itemgetter(*names)
    try:
        rows = [(row[names[0]],) for row in instances] if width == 1 else list(map(pick, instances))
    except KeyError:  # a feature missing (and, the lengths being equal, an unknown one in its place)
        return None
    values = list(chain.from_iterable(rows))
    if not set(map(type, values)) <= _NUMERIC_TYPES:  # booleans, strings, arrays, objects
        return None
    try:
        matrix = np.array(rows, dtype=np.float64)  # null becomes NaN, as `checked_rows` makes it
    except OverflowError:  # an integer beyond float64
        return None
    # Each null is one NaN here; anything else outside the range (NaN or infinity from the JSON, a huge number)
    # is one more, and `checked_rows` reports it.
    if np.count_nonzero(~(np.abs(matrix) <= MAX_MAGNITUDE)) != values.count(None):
        return None
    return matrix


def checked_rows(
    instances: list[Any], card: ModelCard, key: str = "instances", errors: list[FieldError] | None = None
) -> np.ndarray:
    """The value-by-value check: every value of every row, a FieldError for each problem (added to `errors`, those
    found before it); the matrix if there are none, else `InvalidInstances` naming every one."""
    errors = [] if errors is None else errors
    features = card.features
    names = set(card.feature_names)
    numeric = [spec.type == "numeric" for spec in features]
    rows: list[list[Any]] = []
    quality: list[QualityIssue] = []
    for index, row in enumerate(instances):
        if type(row) is not dict:
            errors.append(FieldError(f"/{key}/{index}", f"expected an object, got {json_type(row)}"))
            continue
        if len(row) != len(features) or not names.issuperset(row):
            errors.extend(_key_errors(row, card, f"/{key}/{index}"))
            quality.extend(QualityIssue(name, "missing") for name in card.feature_names if name not in row)
            if len(errors) > 1000:
                break
            continue
        values: list[Any] = []
        for spec, is_numeric in zip(features, numeric, strict=True):
            value = row[spec.name]
            problem = _check(value, is_numeric)
            if problem is not None:
                code, reason = problem
                errors.append(FieldError(f"/{key}/{index}/{escape_pointer(spec.name)}", reason))
                quality.append(QualityIssue(spec.name, code))
            elif value is None:
                values.append(math.nan if is_numeric else None)
            else:
                values.append(float(value) if is_numeric else value)
        rows.append(values)
    if errors:
        raise _invalid(errors, quality)
    if all(numeric):
        return np.array(rows, dtype=np.float64)
    return np.array(rows, dtype=object)


def _check(value: Any, is_numeric: bool) -> tuple[str, str] | None:
    """None if `value` fits, else (quality reason code, reason in words)."""
    if value is None:
        return None
    kind = type(value)
    if is_numeric:
        if kind is float:
            if abs(value) <= MAX_MAGNITUDE:
                return None
            return ("non_finite", "must be a finite number") if not math.isfinite(value) else _OUT_OF_RANGE
        if kind is int:
            return None if abs(value) <= MAX_MAGNITUDE else _OUT_OF_RANGE
        return "wrong_type", f"expected a number, got {json_type(value)}"
    if kind is str:
        return None
    return "wrong_type", f"expected a string, got {json_type(value)}"


def _key_errors(row: dict[str, Any], card: ModelCard, pointer: str) -> list[FieldError]:
    errors = [
        FieldError(f"{pointer}/{escape_pointer(name)}", "missing feature")
        for name in card.feature_names
        if name not in row
    ]
    known = set(card.feature_names)
    errors += [FieldError(f"{pointer}/{escape_pointer(name)}", "unknown feature") for name in row if name not in known]
    return errors


def _invalid(errors: list[FieldError], quality: list[QualityIssue] | None = None) -> InvalidInstances:
    count = len(errors)
    return InvalidInstances(
        status=422,
        title="Invalid instances",
        detail=f"{count} invalid value{'s' if count != 1 else ''} in the request body; see errors.",
        slug="invalid-instances",
        errors=errors,
        quality=quality or [],
    )


def _pointer(name: str) -> str:
    return "/" + escape_pointer(name)
