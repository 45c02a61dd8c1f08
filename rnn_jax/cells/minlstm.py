"""minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?", arXiv 2410.01201).

The LSTM with gates reading x_t only, no output gate and the forget and input gates normalised to sum to one, so
the state update is linear in h and runs as a parallel scan::

    f_t = σ(U_f x_t + b_f),  i_t = σ(U_i x_t + b_i)
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
    h̃_t = g(U_h x_t + b_h)                       g(v) = v + 1/2 (v ≥ 0), σ(v) (v < 0)
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

In log space (`associative_scan(..., log_space=True)`), with d = softplus(−k_f) − softplus(−k_i):
log f'_t = −softplus(d) and log i'_t = −softplus(−d), as in the paper's code. Parameters: U (3, H, E),
b (3, H) or None, gates `GATES = ("f", "i", "h")`; carry `HiddenState(h)`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import minlstm
    >>> params = minlstm.init(jax.random.key(0), input_size=3, hidden_size=5)
    >>> carry, h = minlstm.step(params, minlstm.initial_state(5, (2,)), jnp.ones((2, 3)))
    >>> h.shape
    (2, 5)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import _linear
from rnn_jax.cells.gru import initial_state
from rnn_jax.initializers import InitScheme

GATES = ("f", "i", "h")
NUM_GATES = 3


class MinLSTMParams(NamedTuple):
    """U (3, H, E), b (3, H) or None; gates f, i, h."""

    U: jax.Array
    b: Optional[jax.Array]


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None) -> MinLSTMParams:
    """Creates minLSTM parameters U (3, H, E) and b (3, H) (or None) with the named scheme."""
    U, b = _linear.init_gates(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                              initializer=initializer, init_scale=init_scale)
    return MinLSTMParams(U=U, b=b)


def _coefficients(params, projected):
    f, i = jax.nn.sigmoid(projected[..., 0, :]), jax.nn.sigmoid(projected[..., 1, :])
    total = f + i
    return f / total, i / total * _linear.positive(projected[..., 2, :])


def _log_coefficients(params, projected):
    d = jax.nn.softplus(-projected[..., 0, :]) - jax.nn.softplus(-projected[..., 1, :])
    return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _linear.log_positive(projected[..., 2, :])


linear, project_inputs, step_projected, step = _linear.hidden_state_cell(
    name="minLSTM", module="minlstm", params_type=MinLSTMParams, gates=GATES, coefficients=_coefficients,
    log_coefficients=_log_coefficients)

__all__ = ["GATES", "MinLSTMParams", "init", "initial_state", "linear", "project_inputs", "step", "step_projected"]
