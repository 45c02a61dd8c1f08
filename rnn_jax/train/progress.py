"""Progress of long work: tqdm's bar on a terminal, a plain line at most every 30 s elsewhere (logs, CI)."""

from __future__ import annotations

import math
import sys
import time
from typing import Callable


def perplexity_text(nll: float | None) -> str:
    """exp(nll) for people: two decimals, exponent form past a million, "inf" past float range, "-" for None.

    >>> perplexity_text(1.5), perplexity_text(40.0), perplexity_text(2e6), perplexity_text(None)
    ('4.48', '2.354e+17', 'inf', '-')
    """
    if nll is None:
        return "-"
    if not math.isfinite(nll) or nll > 700:
        return "nan" if math.isnan(nll) else "inf"
    value = math.exp(nll)
    return f"{value:.2f}" if value < 1e6 else f"{value:.3e}"


class LineProgress:
    """A progress report for a stream that is not a terminal: `desc: n/total win  key=value ...` on its own line,
    at most every `interval` seconds (and when closed), in place of a bar's carriage-return redraws."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", *, stream=None, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.n, self.desc = total, initial, desc
        self.stream, self.interval, self.clock = stream, interval, clock
        self.postfix: dict = {}
        self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        self._print()

    def _print(self) -> None:
        self.last = self.clock()
        extra = "".join(f"  {key}={value}" for key, value in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} win{extra}", file=self.stream or sys.stderr, flush=True)


def progress_bar(total: int, initial: int, desc: str, *, enabled: bool = True):
    """tqdm's bar on a terminal; `LineProgress` when stderr is redirected; a silent tqdm when not `enabled`."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, unit="win", disable=not enabled, mininterval=0.5,
                leave=False)

