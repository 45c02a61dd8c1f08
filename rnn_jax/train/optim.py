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

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import jax
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

class AveragingState(NamedTuple):
    """State of `averaged`: the inner optimiser's, whether averaging has started, steps averaged, the average."""

    inner: Any
    averaging: jax.Array
    count: jax.Array
    average: Any


def averaged(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """`inner`, keeping the average of the parameters over the steps since `start_averaging` (ASGD's average,
    Polyak & Juditsky 1992). Until then the average follows the current parameters, so it starts from them."""
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return AveragingState(inner.init(params), jnp.zeros((), bool), jnp.zeros((), jnp.int32),
                              jax.tree.map(jnp.copy, params))  # its own buffers: the step donates both

    def update(updates, state, params=None, **extra_args):
        updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
        count = state.count + state.averaging.astype(jnp.int32)
        weight = jnp.where(state.averaging, 1.0 / jnp.maximum(count, 1), 1.0)
        average = jax.tree.map(lambda a, p, u: a + (p + u - a) * weight.astype(a.dtype), state.average, params, updates)
        return updates, AveragingState(inner_state, state.averaging, count, average)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_window_length() -> optax.GradientTransformationExtraArgs:
    """Multiplies the updates by the update's extra argument `length_scale` (1 when not given): a sampled
    window's length / T, which scales the learning rate as AWD-LSTM does (`rnn_jax.data.epoch_windows`)."""

    def update(updates, state, params=None, *, length_scale=1.0, **extra_args):
        return jax.tree.map(lambda u: u * jnp.asarray(length_scale, u.dtype), updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def _averaging_states(opt_state) -> list:
    if isinstance(opt_state, AveragingState):
        return [opt_state]
    if isinstance(opt_state, (tuple, list)) and not hasattr(opt_state, "_fields"):
        return [found for part in opt_state for found in _averaging_states(part)]
    return []


def evaluation_params(params, opt_state):
    """The parameters to evaluate and save as the model: the average once an `averaged` optimiser averages."""
    for state in _averaging_states(opt_state):
        return jax.tree.map(lambda avg, p: jnp.where(state.averaging, avg, p), state.average, params)
    return params


def after_validation(optim: "OptimConfig", opt_state, previous: Sequence[float], valid_nll: float):
    """The optimiser state after a validation: NT-ASGD's non-monotone trigger (Merity et al. 2017) starts the
    averaging when the loss is worse than the best before the last `optim.nonmono` validations. A no-op for
    optimisers without averaging, and once averaging runs."""
    def switch(state):
        if not isinstance(state, AveragingState):
            return state
        earlier = previous[:len(previous) - optim.nonmono]
        trigger = len(previous) > optim.nonmono and valid_nll > min(earlier)
        return state._replace(averaging=state.averaging | trigger)

    return jax.tree.map(switch, opt_state, is_leaf=lambda node: isinstance(node, AveragingState))


def _sgd(optim: "OptimConfig", schedule) -> optax.GradientTransformation:
    """SGD; weight_decay adds wd · θ to the gradient, as PyTorch's SGD does."""
    sgd = optax.sgd(schedule)
    return optax.chain(optax.add_decayed_weights(optim.weight_decay), sgd) if optim.weight_decay else sgd


def _scaled(transform: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    return optax.chain(transform, scale_by_window_length())


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda optim, schedule: _scaled(_sgd(optim, schedule)),
    "nt_asgd": lambda optim, schedule: averaged(_scaled(_sgd(optim, schedule))),
    "adam": lambda optim, schedule: _scaled(optax.adam(schedule, b1=optim.b1, b2=optim.b2)),
    "adamw": lambda optim, schedule: _scaled(optax.adamw(schedule, b1=optim.b1, b2=optim.b2,
                                                         weight_decay=optim.weight_decay)),
}
"""name -> `f(optim, schedule) -> optax.GradientTransformation`; each takes the update's extra argument
`length_scale` (`scale_by_window_length`)."""


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
