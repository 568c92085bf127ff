"""Property-based fuzzing of the PromQL result parser (``agent.runtime.promql``).

``parse_sample_value`` must return a float or None for any JSON value, and
``parse_vector`` must return a ``FamilyResult`` for any JSON document, with
every series of a usable result counted exactly once. Fuzzing found two
crashes, a non-object ``metric`` and an integer beyond the float range. Both
are fixed; the strategies draw those inputs, and the regression tests at the
end pin the exact cases. ``scripts/fuzz.py`` runs the same ``PROPERTIES`` for
longer.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.runtime.promql import FamilyResult, parse_sample_value, parse_vector

SUITE_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# st.integers() alone almost never draws beyond 1.8e308, where float() raises
# OverflowError, so the strategies add integers of up to 400 digits.
ANY_INTEGERS = st.integers() | st.integers(-(10**400), 10**400)
SAMPLE_TEXTS = ["NaN", "+Inf", "-Inf", "inf", " 1.5 ", "1e400", "0x1p3", "1_0", "", "x", "9" * 5000]


def json_values(integers: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | integers | st.floats() | st.text(max_size=8) | st.sampled_from(SAMPLE_TEXTS),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
        max_leaves=6,
    )


def series_entries(integers: st.SearchStrategy[int], metric: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Return series as Prometheus writes them, with any part replaced by another JSON value now and then.

    ``metric`` draws the other values of the ``metric`` field, besides label objects.
    """
    labels = st.dictionaries(
        st.sampled_from(["namespace", "deployment", "pod", "le", "__name__"]),
        st.sampled_from(["serving", "chat-llm", "code-llm", ""]) | json_values(integers),
        max_size=4,
    )
    sample = st.one_of(
        st.tuples(st.floats(0, 2e9) | integers | st.sampled_from(SAMPLE_TEXTS),
                  st.sampled_from(SAMPLE_TEXTS) | st.floats().map(repr) | integers).map(list),
        json_values(integers),
    )
    return st.one_of(
        st.fixed_dictionaries({"metric": labels | metric, "value": sample}),
        st.fixed_dictionaries({"metric": labels}),
        json_values(integers),
    )


def vector_results(integers: st.SearchStrategy[int], metric: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(series_entries(integers, metric), max_size=8) | json_values(integers)


def check_sample_value(raw: Any) -> None:
    value = parse_sample_value(raw)
    assert value is None or isinstance(value, float)


def check_vector(result: Any) -> None:
    parsed = parse_vector(result)
    assert isinstance(parsed, FamilyResult)
    if not isinstance(result, list):
        assert parsed.error
        return
    if parsed.error:
        return
    counted = len(parsed.values) + parsed.duplicates + parsed.unlabelled + parsed.invalid
    assert counted == len(result)
    assert math.isfinite(parsed.evaluated_at)
    for key, value in parsed.values.items():
        assert all(isinstance(part, str) and part for part in key)
        assert isinstance(value, float)


# Each property: the strategy of its input and the check that must pass on every input.
PROPERTIES: dict[str, tuple[st.SearchStrategy, Callable[[Any], None]]] = {
    "promql_sample": (json_values(ANY_INTEGERS), check_sample_value),
    "promql": (vector_results(ANY_INTEGERS, json_values(ANY_INTEGERS)), check_vector),
}


@SUITE_SETTINGS
@given(PROPERTIES["promql_sample"][0])
def test_sample_value_fuzz(raw: Any) -> None:
    check_sample_value(raw)


@SUITE_SETTINGS
@given(PROPERTIES["promql"][0])
def test_vector_fuzz(result: Any) -> None:
    check_vector(result)


@pytest.mark.parametrize("raw", [10**400, -(10**400)], ids=["1e400", "-1e400"])
def test_sample_value_huge_integer(raw: int) -> None:
    assert parse_sample_value(raw) is None


@pytest.mark.parametrize("value", [[10**400, "1"], [1.0, 10**400]], ids=["time", "value"])
def test_vector_huge_integer_sample(value: list[Any]) -> None:
    parsed = parse_vector([{"metric": {"namespace": "serving", "deployment": "chat-llm"}, "value": value}])

    assert parsed.invalid == 1
    assert parsed.ok


@pytest.mark.parametrize("metric", [["namespace"], "serving", 7, True])
def test_vector_metric_not_object(metric: Any) -> None:
    parsed = parse_vector([{"metric": metric, "value": [1.0, "1"]}])

    assert parsed.unlabelled == 1
