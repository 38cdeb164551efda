"""The wall-clock training budget against a hand-driven clock."""

from __future__ import annotations

import pytest

from n2m.budget import TimeBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fraction_spent_and_progress_follow_the_clock():
    clock = Clock()
    budget = TimeBudget(2.0, clock)  # 120 s
    assert budget.fraction() == 0.0 and not budget.spent()  # not started
    budget.start()
    clock.now += 30.0
    assert budget.fraction() == pytest.approx(0.25)
    assert budget.progress(10, 100) == pytest.approx(0.25)  # time ahead of steps
    assert budget.progress(50, 100) == pytest.approx(0.5)  # steps ahead of time
    clock.now += 90.0
    assert budget.spent() and budget.fraction() == 1.0 and budget.progress(60, 100) == 1.0
    clock.now += 1000.0
    assert budget.fraction() == 1.0  # clamped


@pytest.mark.parametrize("minutes", [None, 0.0])
def test_no_budget_is_never_spent(minutes):
    clock = Clock()
    budget = TimeBudget(minutes, clock)
    budget.start()
    clock.now += 1e9
    assert budget.fraction() == 0.0 and not budget.spent() and budget.progress(3, 4) == 0.75


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="minutes >= 0"):
        TimeBudget(-1.0)
