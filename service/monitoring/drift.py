"""Drift scores between a reference distribution and current counts: PSI and Jensen–Shannon distance."""

from __future__ import annotations

import numpy as np

__all__ = ["JS_ALERT", "PSI_ALERT", "PSI_EPSILON", "PSI_WARN", "js_distance", "psi", "status"]

PSI_EPSILON = 1e-4  # shares are floored here so an empty bin does not make PSI infinite (PromQL does the same)
PSI_WARN = 0.1
PSI_ALERT = 0.25
JS_ALERT = 0.1


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


def _relative_entropy(p: np.ndarray, m: np.ndarray) -> float:
    """Σ p · ln(p / m) over the bins where p > 0 (0 · ln 0 = 0)."""
    present = p > 0
    return float(np.sum(p[present] * np.log(p[present] / m[present])))


def status(psi_value: float, js_value: float) -> str:
    """`stable`, `warn` (PSI ≥ 0.1) or `drift` (PSI ≥ 0.25 or JS ≥ 0.1); `no data` when nothing was scored."""
    if np.isnan(psi_value):
        return "no data"
    if psi_value >= PSI_ALERT or js_value >= JS_ALERT:
        return "drift"
    if psi_value >= PSI_WARN:
        return "warn"
    return "stable"
