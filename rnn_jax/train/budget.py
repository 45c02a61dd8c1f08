"""Training budgets: a run stops after `max_tokens` training tokens or `max_seconds` of wall time, whichever comes
first (and at `epochs` at the latest), then evaluates and checkpoints as at an epoch's end.

Seconds count from the start of the process, so start-up and compilation are part of the budget (a resumed run
adds the seconds its earlier processes had spent). The learning-rate schedule runs over the steps the budget
allows: `max_tokens` fixes them up front; under `max_seconds` the run measures its own step time over the first
windows after compilation and fits the schedule's length to the seconds left (`fitted_steps`), once, keeping a
small reserve for the final evaluation; the fitted length is saved, so a resumed run keeps the same schedule.

Examples:
    >>> budget = Budget(max_seconds=None, max_tokens=10_000, tokens_per_window=640)
    >>> budget.planned_steps(1000), budget.spent(15, 0.0), budget.spent(16, 0.0)
    (16, None, 'the token budget (10,000) is spent')
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional

_IMPORTED_AT = time.monotonic()
FIT_AFTER_WINDOWS = 10  # windows timed (after the first, which compiles) before the schedule is fitted
EVAL_RESERVE = 0.03  # fraction of the remaining seconds kept for the final evaluation and checkpoint


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since rnn_jax.train was imported)."""
    try:
        with open("/proc/self/stat", encoding="utf-8") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="utf-8") as uptime:
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


@dataclasses.dataclass(frozen=True)
class Budget:
    """A run's budget: `max_seconds` of wall time and/or `max_tokens` training tokens (None: no limit)."""

    max_seconds: Optional[float]
    max_tokens: Optional[int]
    tokens_per_window: int

    @property
    def timed(self) -> bool:
        return self.max_seconds is not None

    def planned_steps(self, epoch_steps: int) -> int:
        """The schedule's length before any timing: the epochs' steps, or fewer where max_tokens ends sooner."""
        if self.max_tokens is None:
            return epoch_steps
        return max(1, min(epoch_steps, math.ceil(self.max_tokens / self.tokens_per_window)))

    def spent(self, windows: int, seconds: float) -> Optional[str]:
        """Why the run stops now (after `windows` steps and `seconds` of its budget), or None."""
        if self.max_tokens is not None and windows * self.tokens_per_window >= self.max_tokens:
            return f"the token budget ({self.max_tokens:,}) is spent"
        if self.max_seconds is not None and seconds >= self.max_seconds:
            return f"the time budget ({self.max_seconds:g} s) is spent"
        return None

    def fitted_steps(self, windows: int, seconds: float, seconds_per_window: float, cap: int) -> int:
        """The schedule's length for a run at `windows` steps and `seconds` spent, stepping at the given pace."""
        left = max(self.max_seconds - seconds, 0.0) * (1.0 - EVAL_RESERVE)
        return max(windows + 1, min(cap, windows + int(left / max(seconds_per_window, 1e-9))))


class BudgetClock:
    """A run's budget in use: the seconds spent (earlier processes' plus this one's) and the pace that fits a time
    budget's schedule."""

    def __init__(self, limits: Budget, seconds_before: float = 0.0):
        self.limits, self.seconds_before, self._mark = limits, seconds_before, None

    def seconds(self) -> float:
        return self.seconds_before + process_seconds()

    def spent(self, windows: int) -> Optional[str]:
        return self.limits.spent(windows, self.seconds())

    def fit(self, windows: int, cap: int) -> Optional[int]:
        """Called at each read of the step metrics: under a time budget the first call marks the start of the
        pace (compilation is behind), and the first call FIT_AFTER_WINDOWS windows later returns the schedule's
        fitted length; None otherwise."""
        if not self.limits.timed:
            return None
        now = self.seconds()
        if self._mark is None:
            self._mark = (now, windows)
            return None
        started, first = self._mark
        if windows - first < FIT_AFTER_WINDOWS:
            return None
        return self.limits.fitted_steps(windows, now, (now - started) / (windows - first), cap)

