"""Probability calibration for classifiers: one temperature, fitted on the training holdout.

Confidence-based performance estimation (CBPE) reads a classifier's probabilities as the chance each prediction
is right, so they must be calibrated: the expected accuracy of a set of rows is the mean of their predicted
class's calibrated probability. Temperature scaling divides the log-probabilities by one number T fitted on the
holdout by maximum likelihood, and renormalises; it never changes which class is most probable, so predictions
stay what the model says. One number fits in the model card as JSON (no pickled calibrator).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

__all__ = ["calibrate", "fit_temperature"]

_FLOOR = 1e-12  # probabilities are floored here before the log: a 0 from the model is "very unlikely", not -inf


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """`probabilities` (n × classes) scaled by `temperature`: softmax(log p / T)."""
    logits = np.log(np.maximum(probabilities, _FLOOR)) / temperature
    return np.asarray(np.exp(log_softmax(logits, axis=1)))


def fit_temperature(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """The temperature that maximises the likelihood of `truth` (class indices) under the calibrated
    probabilities, searched over [0.05, 20]."""
    logs = np.log(np.maximum(probabilities, _FLOOR))
    rows = np.arange(len(truth))

    def negative_log_likelihood(log_temperature: float) -> float:
        scaled = log_softmax(logs / np.exp(log_temperature), axis=1)
        return float(-scaled[rows, truth].mean())

    result = minimize_scalar(negative_log_likelihood, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
