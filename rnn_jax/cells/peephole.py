"""LSTM with peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and count").

The gates also look at the cell state: i and f at c_{t-1}, o at the new c_t (p_* are vectors, ⊙ elementwise)::

    i_t = σ(W_i h_{t-1} + U_i x_t + p_i ⊙ c_{t-1} + b_i)
    f_t = σ(W_f h_{t-1} + U_f x_t + p_f ⊙ c_{t-1} + b_f)
    g_t = tanh(W_g h_{t-1} + U_g x_t + b_g)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(W_o h_{t-1} + U_o x_t + p_o ⊙ c_t + b_o)
    h_t = o_t ⊙ tanh(c_t)

Parameters: W (4, H, H), U (4, H, E), b (4, H) or None in the LSTM's gate order (i, f, o, g), and
P (3, H) holding p_i, p_f, p_o. The carry is `LSTMState(h, c)`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import peephole
    >>> params = peephole.init(jax.random.key(0), 3, 5)
    >>> carry, h = peephole.step(params, peephole.initial_state(5, (2,)), jnp.ones((2, 3)))
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks, initializers
from rnn_jax.cells import _common, lstm
from rnn_jax.cells.lstm import GATE_INDEX, GATES, NUM_GATES, LSTMState, initial_state
from rnn_jax.initializers import InitScheme

PEEPHOLES = ("i", "f", "o")


class PeepholeLSTMParams(NamedTuple):
    """W (4, H, H), U (4, H, E), b (4, H) or None (gates i, f, o, g), P (3, H) peepholes (i, f, o)."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]
    P: jax.Array


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None,
         forget_bias: float = 0.0) -> PeepholeLSTMParams:
    """`rnn_jax.lstm.init` plus the peepholes P, drawn with the scheme's bias initialiser."""
    key, key_p = jax.random.split(key)
    base = lstm.init(key, input_size, hidden_size, use_bias=use_bias, dtype=dtype, initializer=initializer,
                     init_scale=init_scale, forget_bias=forget_bias)
    scheme = initializers.resolve(initializer, hidden_size, init_scale)
    return PeepholeLSTMParams(W=base.W, U=base.U, b=base.b, P=scheme.bias(key_p, (3, hidden_size), dtype))


def _check_params(params: PeepholeLSTMParams) -> tuple[int, int]:
    E, H = _common.check_weights("Peephole LSTM", params.W, params.U, params.b, NUM_GATES, "i, f, o, g")
    _checks.check_shape("Peephole LSTM P (peepholes p_i, p_f, p_o)", params.P, (3, H), f"(3, H={H})",
                        "Create parameters with peephole.init.")
    return E, H


def _cell_update(params, carry: LSTMState, projected):
    pre = projected + _common.recurrent(params.W, carry.h)
    i = jax.nn.sigmoid(pre[..., GATE_INDEX["i"], :] + params.P[0] * carry.c)
    f = jax.nn.sigmoid(pre[..., GATE_INDEX["f"], :] + params.P[1] * carry.c)
    g = jnp.tanh(pre[..., GATE_INDEX["g"], :])
    c = f * carry.c + i * g
    o = jax.nn.sigmoid(pre[..., GATE_INDEX["o"], :] + params.P[2] * c)
    h = o * jnp.tanh(c)
    return LSTMState(h=h, c=c), h


project_inputs, step_projected, step = _common.cell_functions(
    name="Peephole LSTM", module="peephole", params_types=PeepholeLSTMParams, carry_type=LSTMState,
    projected_tail=lambda p: (NUM_GATES, p.W.shape[-1]), check_params=_check_params,
    carry_sizes=lambda p: {"h": p.W.shape[-1], "c": p.W.shape[-1]}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)

__all__ = ["recurrent_weights", "GATES", "PEEPHOLES", "PeepholeLSTMParams", "init", "initial_state", "project_inputs", "step",
           "step_projected"]
