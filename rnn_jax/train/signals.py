"""SIGTERM and SIGINT during training: recorded instead of fatal, so the loop saves a checkpoint before it stops."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Optional


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


@contextlib.contextmanager
def stop_on_signals():
    """Records SIGTERM/SIGINT in `flag["signum"]` instead of dying, so the loop can save first (main thread only)."""
    flag: dict[str, Optional[int]] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        flag["signum"] = signum

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
