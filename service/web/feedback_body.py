"""`POST /feedback` bodies: ground-truth labels validated against the model card, and the response summary."""

from __future__ import annotations

import math
import re
from typing import Any

from service.artifact import ModelCard
from service.groundtruth.records import FeedbackItem, FeedbackResult
from service.web.problems import FieldError, Problem, escape_pointer, json_type
from service.web.validation import MAX_MAGNITUDE

__all__ = ["MAX_IDS_IN_RESPONSE", "parse_feedback", "summarize"]

MAX_IDS_IN_RESPONSE = 100

_KEY = "feedback"
_MEMBERS = ("prediction_id", "actual")
_PREDICTION_ID = re.compile(r"[0-9a-fA-F]{32}")
_MAX_ERRORS = 1000
_CLASSES_IN_REASON = 10


def parse_feedback(payload: Any, card: ModelCard, max_items: int) -> list[FeedbackItem]:
    """Validate `{"feedback": [{"prediction_id": ..., "actual": ...}, ...]}` against the card.

    `prediction_id` is the 32 hex characters `/predict` returned (normalised to lower case); `actual` is a
    finite number for a regression model, one of the card's class labels for a classifier (a JSON integer too,
    when the model was trained on integer labels: `1` is the label `"1"`). Every bad value
    is a 422 problem naming it by JSON Pointer; more items than `max_items` is a 413.
    """
    if not isinstance(payload, dict):
        raise _invalid([FieldError("", f"expected a JSON object with a {_KEY!r} array, got {json_type(payload)}")])
    items = payload.get(_KEY)
    errors = [FieldError("/" + escape_pointer(name), "unknown member") for name in payload if name != _KEY]
    if not isinstance(items, list):
        got = "nothing" if _KEY not in payload else json_type(items)
        raise _invalid([FieldError(f"/{_KEY}", f"expected an array of objects, got {got}"), *errors])
    if not items:
        raise _invalid([FieldError(f"/{_KEY}", "expected at least one label"), *errors])
    if len(items) > max_items:
        raise Problem(
            status=413,
            title="Batch too large",
            detail=f"{len(items)} labels exceed the limit of {max_items} per request.",
            slug="batch-too-large",
            errors=[FieldError(f"/{_KEY}", f"at most {max_items} labels, got {len(items)}")],
        )
    check_actual = _check_class if card.task == "classification" else _check_number
    classes = frozenset(card.classes)
    parsed: list[FeedbackItem] = []
    for index, item in enumerate(items):
        pointer = f"/{_KEY}/{index}"
        if type(item) is not dict:
            errors.append(FieldError(pointer, f"expected an object, got {json_type(item)}"))
        elif len(item) != len(_MEMBERS) or not all(name in item for name in _MEMBERS):
            errors += [FieldError(f"{pointer}/{name}", "missing member") for name in _MEMBERS if name not in item]
            errors += [
                FieldError(f"{pointer}/{escape_pointer(name)}", "unknown member")
                for name in item
                if name not in _MEMBERS
            ]
        else:
            prediction_id, actual = item["prediction_id"], item["actual"]
            id_reason = _check_id(prediction_id)
            actual_reason = check_actual(actual, card, classes)
            if id_reason is not None:
                errors.append(FieldError(f"{pointer}/prediction_id", id_reason))
            if actual_reason is not None:
                errors.append(FieldError(f"{pointer}/actual", actual_reason))
            if id_reason is None and actual_reason is None:
                if card.task == "classification":
                    value: str | float = str(actual)  # the card's labels are strings; 1 is the label "1"
                else:
                    value = float(actual)
                parsed.append(FeedbackItem(prediction_id.lower(), value))
        if len(errors) > _MAX_ERRORS:
            break
    if errors:
        raise _invalid(errors)
    return parsed


def summarize(result: FeedbackResult) -> dict[str, Any]:
    """The response body: labels accepted, and the ids rejected (at most 100 each, with a count of the rest)."""
    body: dict[str, Any] = {"accepted": len(result.joined)}
    for key, ids in (("unknown_ids", result.unknown_ids), ("duplicate_ids", result.duplicate_ids)):
        body[key] = ids[:MAX_IDS_IN_RESPONSE]
        if len(ids) > MAX_IDS_IN_RESPONSE:
            body[f"{key}_truncated"] = len(ids) - MAX_IDS_IN_RESPONSE
    return body


def _check_id(value: Any) -> str | None:
    if type(value) is not str:
        return f"expected a string, got {json_type(value)}"
    if not _PREDICTION_ID.fullmatch(value):
        return "expected the 32 hexadecimal characters /predict returned"
    return None


def _check_number(value: Any, card: ModelCard, classes: frozenset[str]) -> str | None:
    kind = type(value)
    if kind is float:
        if abs(value) <= MAX_MAGNITUDE:
            return None
        return (
            "must be a finite number" if not math.isfinite(value) else f"number out of range (|x| ≤ {MAX_MAGNITUDE:g})"
        )
    if kind is int:
        return None if abs(value) <= MAX_MAGNITUDE else f"number out of range (|x| ≤ {MAX_MAGNITUDE:g})"
    return f"expected a number ({card.target}), got {json_type(value)}"


def _check_class(value: Any, card: ModelCard, classes: frozenset[str]) -> str | None:
    # An integer is accepted for a model trained on integer labels (0/1): its card stores them as strings.
    if type(value) is not str and not (type(value) is int and card.integer_classes):
        return f"expected a class label (a string, or an integer the model was trained on), got {json_type(value)}"
    if str(value) in classes:
        return None
    shown = ", ".join(repr(label[:32]) for label in card.classes[:_CLASSES_IN_REASON])
    more = f" and {len(card.classes) - _CLASSES_IN_REASON} more" if len(card.classes) > _CLASSES_IN_REASON else ""
    return f"expected one of the model's classes: {shown}{more}"


def _invalid(errors: list[FieldError]) -> Problem:
    count = len(errors)
    return Problem(
        status=422,
        title="Invalid feedback",
        detail=f"{count} invalid value{'s' if count != 1 else ''} in the request body; see errors.",
        slug="invalid-feedback",
        errors=errors,
    )
