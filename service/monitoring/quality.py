"""Data-quality reasons: why a value of a known feature failed validation, and which reasons each feature type has."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["QUALITY_REASONS", "RANGE_TOLERANCE", "REASONS_BY_TYPE", "REASON_INDEX", "QualityIssue", "range_bounds"]

# What each reason means (docs/metrics.md, "Data quality"). Rejected requests: `missing` (the key is absent),
# `wrong_type`, `non_finite` (NaN or an infinity), `too_large` (finite, beyond the service's ±1e100 bound).
# Accepted rows, still counted: `imputed` (a JSON null the pipeline imputed), `below_min`/`above_max` (beyond the
# training range widened by RANGE_TOLERANCE), `unknown_category`.
QUALITY_REASONS = (
    "missing", "imputed", "non_finite", "too_large", "wrong_type", "below_min", "above_max", "unknown_category",
)  # fmt: skip
REASON_INDEX = {reason: index for index, reason in enumerate(QUALITY_REASONS)}  # column in a features × reasons count
# Series exist only for the reasons a feature's type can have, so a numeric feature has no unknown_category series.
REASONS_BY_TYPE = {
    "numeric": frozenset({"missing", "imputed", "non_finite", "too_large", "wrong_type", "below_min", "above_max"}),
    "categorical": frozenset({"missing", "imputed", "wrong_type", "unknown_category"}),
}
# How far past the training min and max a value may lie before it counts as below_min/above_max, as a fraction of
# the training range on each side. A fresh row from the training distribution exceeds the max of n training rows
# with probability 1/(n+1), so the bare range flags clean traffic (~0.6% of rows for 350 training rows); the
# simulation in docs/metrics.md chose this tolerance.
RANGE_TOLERANCE = 0.25


class QualityIssue(NamedTuple):
    """One value of a known feature that failed validation, by reason (one of `QUALITY_REASONS`)."""

    feature: str
    reason: str


def range_bounds(low: float, high: float) -> tuple[float, float]:
    """The values below and above which a numeric feature's value counts as below_min / above_max."""
    margin = RANGE_TOLERANCE * (high - low)
    return low - margin, high + margin
