"""minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?", arXiv 2410.01201).

The GRU with its gates reading x_t only, so the state update is linear in h and runs as a parallel scan::

    z_t = σ(U_z x_t + b_z)                       update gate
    h̃_t = g(U_h x_t + b_h)                       candidate, g(v) = v + 1/2 (v ≥ 0), σ(v) (v < 0)
    h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

g is the paper's positive activation for its log-space form: with h_0 ≥ 0 every h_t stays positive, and
`associative_scan(..., log_space=True)` combines log(1 − z_t) = −softplus(k_z) and log z_t + log h̃_t in log
space (k_z = U_z x_t + b_z). Parameters: U (2, H, E), b (2, H) or None, gates `GATES = ("z", "h")`; carry
`HiddenState(h)`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import mingru
    >>> params = mingru.init(jax.random.key(0), input_size=3, hidden_size=5)
    >>> carry, h = mingru.step(params, mingru.initial_state(5, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((h > 0).all())
    ((2, 5), True)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import _linear
from rnn_jax.cells.gru import initial_state
from rnn_jax.initializers import InitScheme

GATES = ("z", "h")
NUM_GATES = 2


class MinGRUParams(NamedTuple):
    """U (2, H, E), b (2, H) or None; gates z, h."""

    U: jax.Array
    b: Optional[jax.Array]


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None) -> MinGRUParams:
    """Creates minGRU parameters U (2, H, E) and b (2, H) (or None) with the named scheme (`rnn_jax.initializers`)."""
    U, b = _linear.init_gates(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                              initializer=initializer, init_scale=init_scale)
    return MinGRUParams(U=U, b=b)


def _coefficients(params, projected):
    k_z = projected[..., 0, :]
    # 1 − σ(k) as σ(−k): no cancellation where z is close to 1.
    return jax.nn.sigmoid(-k_z), jax.nn.sigmoid(k_z) * _linear.positive(projected[..., 1, :])


def _log_coefficients(params, projected):
    k_z = projected[..., 0, :]
    return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + _linear.log_positive(projected[..., 1, :])


linear, project_inputs, step_projected, step = _linear.hidden_state_cell(
    name="minGRU", module="mingru", params_type=MinGRUParams, gates=GATES, coefficients=_coefficients,
    log_coefficients=_log_coefficients)

__all__ = ["GATES", "MinGRUParams", "init", "initial_state", "linear", "project_inputs", "step", "step_projected"]
