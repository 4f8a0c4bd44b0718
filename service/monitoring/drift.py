"""Drift between a reference distribution and a window's counts: the scores and the decision.

The scores are PSI and the Jensen–Shannon distance. The decision (docs/metrics.md, "The drift decision") comes from
a two-sample χ² test of the window's bin counts against the reference's, Bonferroni-corrected for the number of
segments tested together (the features of a model, the values of a slice), and from the size of the change:

- `insufficient_data`: the window is smaller than the test needs (`min_rows`), or there is no reference;
- `drift`: the change is significant and its bias-corrected PSI is at least `DRIFT_EFFECT`;
- `warn`: significant, but smaller;
- `stable`: not significant.

With no drift, a window has some segment of a family at `warn` or `drift` with probability at most `ALPHA`.
Every threshold is a constant of the reference (`min_rows`, `critical_value`), so the recording rules carry the same
decision (prometheus/rules/drift.rules.yml).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import chdtrc
from scipy.stats import chi2

__all__ = [
    "ALPHA",
    "DRIFT_EFFECT",
    "PSI_EPSILON",
    "STATUSES",
    "Decision",
    "chi2_statistic",
    "critical_value",
    "decide",
    "js_distance",
    "min_rows",
    "psi",
]

PSI_EPSILON = 1e-4  # shares are floored here so an empty bin does not make PSI infinite (PromQL does the same)
ALPHA = 0.01  # family-wise false-alarm probability per window
DRIFT_EFFECT = 0.05  # bias-corrected PSI from which a significant change is `drift`, not `warn`
MIN_EXPECTED = 5.0  # expected window rows per bin the χ² approximation needs (Cochran's rule)
STATUSES = ("stable", "warn", "drift", "insufficient_data")


@dataclass(frozen=True)
class Decision:
    """A segment's verdict over one window, with the numbers behind it (NaN where the test did not run)."""

    status: str
    rows: int  # window rows in the segment
    min_rows: float  # rows the test needs (inf without a reference)
    statistic: float  # χ² statistic
    p_value: float  # before the correction; compare with `ALPHA / family`
    critical_value: float  # χ² value the statistic must exceed (the corrected level's quantile)
    effect: float  # PSI minus its expected value under no drift, floored at 0
    reason: str | None = None  # why `insufficient_data`


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index: Σ (q − p) · ln(q / p), both shares floored at `PSI_EPSILON`.

    `reference` holds shares, `current` counts or shares (normalised here). NaN when `current` is empty.
    """
    total = current.sum()
    if total <= 0 or reference.sum() <= 0:
        return float("nan")
    p = np.maximum(reference, PSI_EPSILON)
    q = np.maximum(current / total, PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen–Shannon distance with natural logarithms, as `scipy.spatial.distance.jensenshannon(p, q)`."""
    total, reference_total = current.sum(), reference.sum()
    if total <= 0 or reference_total <= 0:
        return float("nan")
    p = reference / reference_total
    q = current / total
    m = (p + q) / 2
    return float(np.sqrt(max((_relative_entropy(p, m) + _relative_entropy(q, m)) / 2, 0.0)))


def min_rows(shares: np.ndarray) -> float:
    """Window rows the χ² test needs against these reference shares: under no drift, at least one expected row in
    every reference bin and `MIN_EXPECTED` in all but a fifth of them. Inf when the reference is empty."""
    present = np.sort(shares[shares > 0])
    if not len(present):
        return math.inf
    allowed_small = int(0.2 * len(present))
    need = max(1.0 / present[0], MIN_EXPECTED / present[allowed_small])
    return float(math.ceil(need - 1e-9))


def critical_value(shares: np.ndarray, family: int) -> float:
    """The χ² statistic above which the change is significant: the `1 − ALPHA / family` quantile, with one degree
    of freedom fewer than the reference's non-empty bins (at least one)."""
    return _quantile(_degrees(shares), max(family, 1))


def chi2_statistic(reference: np.ndarray, current: np.ndarray, reference_rows: int | None) -> float:
    """Pearson's χ² of the window's counts against the reference's.

    With reference counts r (R in all) and window counts w (W): Σ (W·r − R·w)² / (R·W·(r + w)) over the bins either
    has, the two-sample homogeneity test. `reference` holds counts, or shares when `reference_rows` is None (a
    profile without counts): then the one-sample Σ (w − W·p)² / (W·p), the limit as R grows, and inf when the
    window has rows in a bin the reference never had.
    """
    window = current.astype(np.float64)
    total = window.sum()
    if reference_rows is None:
        shares = reference.astype(np.float64)
        if np.any(window[shares <= 0] > 0):
            return math.inf
        present = shares > 0
        expected = total * shares[present]
        return float(np.sum((window[present] - expected) ** 2 / expected))
    counts = reference.astype(np.float64)
    either = (counts + window) > 0
    r, w = counts[either], window[either]
    return float(np.sum((total * r - reference_rows * w) ** 2 / (r + w)) / (reference_rows * total))


def decide(
    shares: np.ndarray, counts: np.ndarray | None, current: np.ndarray, family: int, *, limit: float | None = None
) -> Decision:
    """The verdict on one segment's window `current` against its reference (`shares`, and `counts` when the
    profile has them), tested together with `family − 1` others. `limit` is `min_rows(shares)`, if known."""
    rows = int(current.sum())
    needed = min_rows(shares) if limit is None else limit
    critical = critical_value(shares, family)
    nan = float("nan")
    if not math.isfinite(needed):
        return Decision("insufficient_data", rows, needed, nan, nan, critical, nan, "no reference rows")
    if rows < needed:
        reason = f"{rows} rows in the window; the test needs {int(needed)} ({MIN_EXPECTED:g} expected per bin)"
        return Decision("insufficient_data", rows, needed, nan, nan, critical, nan, reason)
    reference_rows = None if counts is None else int(counts.sum())
    statistic = chi2_statistic(shares if counts is None else counts, current, reference_rows)
    p_value = float(chdtrc(_degrees(shares), statistic))  # chi2.sf without its argument checks (collection cost)
    bins = int(np.count_nonzero((shares > 0) | (current > 0)))
    bias = (bins - 1) * (1 / rows + (0 if not reference_rows else 1 / reference_rows))
    effect = max(psi(shares, current.astype(np.float64)) - bias, 0.0)
    significant = statistic > critical
    status = "stable" if not significant else "drift" if effect >= DRIFT_EFFECT else "warn"
    return Decision(status, rows, needed, statistic, p_value, critical, effect)


def _degrees(shares: np.ndarray) -> int:
    return max(int(np.count_nonzero(shares > 0)) - 1, 1)


@functools.cache
def _quantile(degrees: int, family: int) -> float:
    """Cached: every collection asks again for the same few (a model has one family per kind of segment)."""
    return float(chi2.isf(ALPHA / family, degrees))


def _relative_entropy(p: np.ndarray, m: np.ndarray) -> float:
    """Σ p · ln(p / m) over the bins where p > 0 (0 · ln 0 = 0)."""
    present = p > 0
    return float(np.sum(p[present] * np.log(p[present] / m[present])))
