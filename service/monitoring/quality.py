"""Data-quality reasons: why a value of a known feature failed validation, and which reasons each feature type has."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["QUALITY_REASONS", "REASONS_BY_TYPE", "REASON_INDEX", "QualityIssue"]

QUALITY_REASONS = ("missing", "non_finite", "wrong_type", "below_min", "above_max", "unknown_category")
REASON_INDEX = {reason: index for index, reason in enumerate(QUALITY_REASONS)}  # column in a features × reasons count
# Series exist only for the reasons a feature's type can have, so a numeric feature has no unknown_category series.
REASONS_BY_TYPE = {
    "numeric": frozenset({"missing", "non_finite", "wrong_type", "below_min", "above_max"}),
    "categorical": frozenset({"missing", "wrong_type", "unknown_category"}),
}


class QualityIssue(NamedTuple):
    """One value of a known feature that failed validation, by reason (one of `QUALITY_REASONS`)."""

    feature: str
    reason: str
