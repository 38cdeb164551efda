"""A training loop's wall-clock budget, shared by ``n2m clap-train --minutes`` and ``n2m train --max-minutes``.

A loop that stops on time as well as on steps runs its learning-rate schedule on the larger of the two fractions it has
used, ``max(step / max_steps, elapsed / budget)``, so a run cut short by its minutes still warms up and decays in full
instead of stopping at a high rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TimeBudget:
    """``minutes`` of wall-clock time from :meth:`start` (``None`` or 0: no budget; the clock is injectable for tests)."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.perf_counter):
        if minutes is not None and minutes < 0:
            raise ValueError(f"a time budget is a number of minutes >= 0, got {minutes:g}")
        self.seconds = 60.0 * minutes if minutes else 0.0
        self.clock = clock
        self.started: float | None = None

    def start(self) -> None:
        """Start (or restart) the clock."""
        self.started = self.clock()

    def fraction(self) -> float:
        """The share of the budget used so far, in [0, 1]; 0 with no budget or before :meth:`start`."""
        if not self.seconds or self.started is None:
            return 0.0
        return min(1.0, (self.clock() - self.started) / self.seconds)

    def spent(self) -> bool:
        """Whether the budget is used up (never, with no budget)."""
        return self.fraction() >= 1.0

    def progress(self, step: int, max_steps: int) -> float:
        """The larger of the step and time fractions used, in [0, 1]."""
        return min(1.0, max(step / max(1, max_steps), self.fraction()))
