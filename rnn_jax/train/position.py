"""Where a training run stands (saved with every checkpoint, restored on resume) and what a run returns."""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable, Optional

from rnn_jax import data as data_lib
from rnn_jax.lm import LMParams
from rnn_jax.train.config import TrainConfig


@dataclasses.dataclass
class LoopPosition:
    """Where the loop stands, saved with every checkpoint: epochs and windows done, time spent, the best
    validation loss so far, skipped steps, the running sums of the current epoch and the (nll, grad norm) pairs
    since the last log line, so that a resumed run logs the same figures as an uninterrupted one; under a time
    budget also the schedule's fitted length and the budget seconds spent (`rnn_jax.train.budget`)."""

    epoch: int = 0
    window: int = 0
    windows: int = 0
    elapsed: float = 0.0
    best_valid_nll: Optional[float] = None
    best_step: Optional[int] = None
    skipped_steps: int = 0
    epoch_nll: float = 0.0
    epoch_windows: int = 0
    epoch_seconds: float = 0.0
    epoch_skipped: int = 0
    bad_in_row: int = 0
    running: list = dataclasses.field(default_factory=list)
    fitted_steps: Optional[int] = None
    budget_seconds: float = 0.0

    @classmethod
    def from_record(cls, record: dict) -> "LoopPosition":
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the run directory, per-epoch history, final figures, the sample."""

    run_dir: pathlib.Path
    config: TrainConfig
    history: list
    valid: dict
    test: dict
    sample: str
    params: LMParams
    train_step: Callable
    vocab: data_lib.Vocabulary


def divergence(valid_nll: float, best: Optional[float], vocab_size: int) -> Optional[str]:
    """Why an epoch's validation loss means the run diverged, or None: not finite, more than one nat above a
    uniform guess over the vocabulary, or more than twice the best epoch's (`best`, None before the first)."""
    uniform = math.log(vocab_size)
    if not math.isfinite(valid_nll):
        return f"the validation loss is {valid_nll}"
    if valid_nll > uniform + 1.0:
        return (f"the validation loss {valid_nll:.4g} nats/token is more than one nat above a uniform guess "
                f"(log V = {uniform:.4g})")
    if best is not None and valid_nll > 2.0 * best:
        return f"the validation loss {valid_nll:.4g} nats/token is more than twice the best so far ({best:.4g})"
    return None
