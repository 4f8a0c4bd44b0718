"""service.monitoring.quality: the training range's tolerance keeps clean traffic unflagged, far values flagged."""

from __future__ import annotations

import numpy as np
import pytest

from service.monitoring.quality import RANGE_TOLERANCE, range_bounds


def _flagged_share(training: np.ndarray, fresh: np.ndarray, tolerance: float) -> float:
    low, high = training.min(), training.max()
    margin = tolerance * (high - low)
    return float(((fresh < low - margin) | (fresh > high + margin)).mean())


class TestRangeTolerance:
    """docs/metrics.md, "Data quality": the bare training range flags clean rows, the widened one rarely does."""

    @pytest.mark.parametrize("distribution", ["normal", "lognormal", "exponential"])
    def test_clean_rows_are_rarely_flagged_with_a_few_hundred_training_rows(self, distribution: str) -> None:
        rng = np.random.default_rng(15)
        draw = {
            "normal": lambda n: rng.normal(size=n),
            "lognormal": lambda n: rng.lognormal(0.0, 0.5, size=n),
            "exponential": lambda n: rng.exponential(size=n),
        }[distribution]
        bare, widened = [], []
        for _ in range(100):
            training, fresh = draw(350), draw(2000)
            bare.append(_flagged_share(training, fresh, 0.0))
            widened.append(_flagged_share(training, fresh, RANGE_TOLERANCE))
        # 1/(n+1) per side is the bare range's expected share: about 0.57 % of clean rows at n = 350.
        assert np.mean(bare) == pytest.approx(2 / 351, rel=0.25)
        assert np.mean(widened) < 0.001

    def test_a_value_well_outside_training_is_still_flagged(self) -> None:
        low, high = range_bounds(10.0, 20.0)
        assert (low, high) == (7.5, 22.5)
        assert 20.0 + 0.2 * 10 < high < 20.0 + 0.3 * 10
