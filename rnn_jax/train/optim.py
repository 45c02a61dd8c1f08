"""Optimisers and learning-rate schedules as tables: adding one is one entry.

`make_optimizer(optim, steps_per_epoch, total_steps)` builds global-norm clipping (optional) followed by
`OPTIMIZERS[optim.name]` on `learning_rate_schedule(...)`, which is `SCHEDULES[optim.schedule]` after an optional
linear warm-up. `rnn_jax.train.train` also takes any `optax.GradientTransformation` in their place.

Examples:
    >>> from rnn_jax.train.config import OptimConfig
    >>> from rnn_jax.train.optim import learning_rate_schedule
    >>> schedule = learning_rate_schedule(OptimConfig(schedule="zaremba", decay_after=1, decay=0.5), 10, 30)
    >>> [float(schedule(step)) for step in (0, 10, 20)]
    [1.0, 0.5, 0.25]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import jax.numpy as jnp
import optax

if TYPE_CHECKING:
    from rnn_jax.train.config import OptimConfig


def _zaremba(optim: "OptimConfig", steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Full rate for `decay_after` epochs, then times `decay` each epoch (Zaremba et al. 2014)."""
    return lambda step: optim.learning_rate * optim.decay ** jnp.maximum(
        0, step // steps_per_epoch + 1 - optim.decay_after)


def _cosine(optim: "OptimConfig", steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Cosine decay to `final_fraction` of the rate over the steps after warm-up."""
    return optax.cosine_decay_schedule(optim.learning_rate, max(1, total_steps - optim.warmup_steps),
                                       alpha=optim.final_fraction)


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": lambda optim, steps_per_epoch, total_steps: optax.constant_schedule(optim.learning_rate),
    "zaremba": _zaremba,
    "cosine": _cosine,
}
"""name -> `f(optim, steps_per_epoch, total_steps) -> schedule` (before warm-up)."""

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda optim, schedule: optax.sgd(schedule),
    "adam": lambda optim, schedule: optax.adam(schedule, b1=optim.b1, b2=optim.b2),
    "adamw": lambda optim, schedule: optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
}
"""name -> `f(optim, schedule) -> optax.GradientTransformation`."""


def learning_rate_schedule(optim: "OptimConfig", steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the optimiser step count."""
    base = SCHEDULES[optim.schedule](optim, steps_per_epoch, total_steps)
    if optim.warmup_steps == 0:
        return base
    warmup = optax.linear_schedule(0.0, optim.learning_rate, optim.warmup_steps)
    return optax.join_schedules([warmup, base], [optim.warmup_steps])


def make_optimizer(optim: "OptimConfig", steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (optional) followed by `OPTIMIZERS[optim.name]` on the schedule."""
    core = OPTIMIZERS[optim.name](optim, learning_rate_schedule(optim, steps_per_epoch, total_steps))
    return optax.chain(*([optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []), core)
