"""The 95% t interval of a mean, from a small table of t."""

from __future__ import annotations

import math

import pytest

from services.scheduler.domain.intervals import estimate, t_975


def test_t_is_the_tabled_value_for_small_samples() -> None:
    assert t_975(1) == 12.706
    assert t_975(9) == 2.262
    assert t_975(30) == 2.042


def test_t_between_table_entries_is_read_linearly_in_one_over_df() -> None:
    between = t_975(35)
    assert 2.021 < between < 2.042
    assert between == pytest.approx(2.042 + (1 / 30 - 1 / 35) / (1 / 30 - 1 / 40) * -0.021)
    assert t_975(60) == pytest.approx(2.000)
    assert t_975(10_000) == pytest.approx(1.96, abs=0.001)


def test_t_needs_a_degree_of_freedom() -> None:
    with pytest.raises(ValueError, match="degree of freedom"):
        t_975(0)


def test_the_interval_of_one_to_five() -> None:
    found = estimate([1, 2, 3, 4, 5])
    assert found is not None
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)  # t(4) x sd / sqrt(n)
    assert found.n == 5
    assert found.mean == 3
    assert found.interval == pytest.approx((3 - half, 3 + half))


def test_one_value_has_a_mean_and_no_interval_and_none_has_neither() -> None:
    one = estimate([7])
    assert one is not None
    assert (one.mean, one.interval) == (7, None)
    assert estimate([]) is None
