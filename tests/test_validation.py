"""service/web/validation.py: the column-wise path for all-numeric models decides exactly as the value-by-value one."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.artifact.card import FeatureSpec, ModelCard
from service.web.problems import Problem
from service.web.validation import MAX_MAGNITUDE, checked_rows, numeric_matrix, parse_instances
from tests.support.examples import examples

NAMES = ("age", "bmi", "s1")
CARD = ModelCard(
    name="numbers",
    version="0123456789ab",
    trained_at="2026-11-26T12:00:00Z",
    dataset="csv:numbers.csv",
    task="regression",
    target="y",
    features=tuple(FeatureSpec(name, "numeric", min=-1.0, max=1.0, missing_rate=0.0) for name in NAMES),
    classes=(),
    metrics={"r2": 0.5},
    training_duration_seconds=0.01,
    estimator="Ridge",
    n_train=10,
    n_holdout=2,
    library_versions={},
)
VALID = {"age": 0.5, "bmi": -3, "s1": None}


def _outcome(call: Any) -> Any:
    """The matrix (as a list, NaN as None) or the problem's errors: what a client would see."""
    try:
        matrix = call()
    except Problem as problem:
        return ("problem", problem.status, [dataclasses.astuple(error) for error in problem.errors])
    return ("rows", [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()], matrix.dtype.str)


def _both(instances: list[Any]) -> tuple[Any, Any]:
    payload = {"instances": instances}
    return (
        _outcome(lambda: parse_instances(payload, CARD, max_batch=1000)),
        _outcome(lambda: checked_rows(instances, CARD)),
    )


class TestColumnWisePath:
    """Valid rows come back as the same float64 matrix; anything else falls through to the exact checks."""

    def test_valid_rows(self) -> None:
        instances = [VALID, {"s1": 1e100, "age": -1e100, "bmi": 0}, {"age": 2**53, "bmi": 1.5, "s1": -0.0}]
        matrix = numeric_matrix(instances, NAMES)
        assert matrix is not None and matrix.dtype == np.float64
        fast, exact = _both(instances)
        assert fast == exact
        assert fast[1][0] == [0.5, -3.0, None]

    @pytest.mark.parametrize(
        "bad",
        [
            {**VALID, "age": True},  # a boolean is not a number here
            {**VALID, "age": "1.5"},
            {**VALID, "age": [1.0]},
            {**VALID, "age": {"value": 1.0}},
            {**VALID, "age": math.nan},  # NaN and infinities are accepted by the JSON parser
            {**VALID, "age": math.inf},
            {**VALID, "age": -math.inf},
            {**VALID, "age": 1.0000001e100},
            {**VALID, "age": 10**101},
            {**VALID, "age": 10**400},  # beyond float64: the conversion overflows
            {"age": 0.5, "bmi": 1.0},  # missing feature
            {**VALID, "extra": 1.0},  # unknown feature
            {"age": 0.5, "bmi": 1.0, "other": 2.0},  # unknown in place of a missing one: same length
            ["age", "bmi", "s1"],
            None,
        ],
    )
    def test_anything_else_is_left_to_the_exact_checks(self, bad: Any) -> None:
        instances = [VALID, bad, VALID]
        assert numeric_matrix(instances, NAMES) is None
        fast, exact = _both(instances)
        assert fast == exact
        assert fast[0] == "problem"

    def test_single_feature_model(self) -> None:
        assert numeric_matrix([{"x": 1}, {"x": None}], ("x",)) is not None
        assert numeric_matrix([{"x": 1}, {"y": 1}], ("x",)) is None

    def test_unknown_top_level_member_still_reported(self) -> None:
        with pytest.raises(Problem) as raised:
            parse_instances({"instances": [VALID], "extra": 1}, CARD, max_batch=10)
        assert [error.pointer for error in raised.value.errors] == ["/extra"]


_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-MAX_MAGNITUDE, max_value=MAX_MAGNITUDE),
    st.integers(min_value=-(10**120), max_value=10**120),
    st.sampled_from([None, True, False, "1", 10**400, [], {}]),
)
_ROWS = st.one_of(
    st.fixed_dictionaries(dict.fromkeys(NAMES, _VALUES)),
    st.dictionaries(st.sampled_from([*NAMES, "other"]), _VALUES, max_size=5),
    st.sampled_from([None, [], "row"]),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_ROWS, min_size=1, max_size=6))
def test_same_outcome_as_the_exact_checks(instances: list[Any]) -> None:
    """Whatever the rows hold, the response is the one the value-by-value checks give."""
    fast, exact = _both(instances)
    assert fast == exact
