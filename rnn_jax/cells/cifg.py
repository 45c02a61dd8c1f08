"""LSTM with a coupled input-forget gate, CIFG (Greff et al. 2017, "LSTM: A Search Space Odyssey").

The forget gate is tied to the input gate, f_t = 1 − i_t, so there are three gates (i, o, g)::

    i_t = σ(W_i h_{t-1} + U_i x_t + b_i)
    o_t = σ(W_o h_{t-1} + U_o x_t + b_o)
    g_t = tanh(W_g h_{t-1} + U_g x_t + b_g)
    c_t = (1 − i_t) ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

Parameters: W (3, H, H), U (3, H, E), b (3, H) or None in the order `GATES = ("i", "o", "g")`; carry
`LSTMState(h, c)`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import _common
from rnn_jax.cells.lstm import LSTMState, initial_state
from rnn_jax.initializers import InitScheme

GATES = ("i", "o", "g")
NUM_GATES = 3


class CIFGParams(NamedTuple):
    """W (3, H, H), U (3, H, E), b (3, H) or None; gates i, o, g."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None) -> CIFGParams:
    """Creates CIFG parameters (options as `rnn_jax.lstm.init`)."""
    W, U, b, _ = _common.init_weights(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                                      initializer=initializer, init_scale=init_scale)
    return CIFGParams(W=W, U=U, b=b)


def _cell_update(params, carry: LSTMState, projected):
    pre = projected + _common.recurrent(params.W, carry.h)
    i, o = jax.nn.sigmoid(pre[..., 0, :]), jax.nn.sigmoid(pre[..., 1, :])
    g = jnp.tanh(pre[..., 2, :])
    c = (1 - i) * carry.c + i * g
    h = o * jnp.tanh(c)
    return LSTMState(h=h, c=c), h


project_inputs, step_projected, step = _common.cell_functions(
    name="CIFG LSTM", module="cifg", params_types=CIFGParams, carry_type=LSTMState,
    projected_tail=lambda p: (NUM_GATES, p.W.shape[-1]),
    check_params=lambda p: _common.check_weights("CIFG LSTM", p.W, p.U, p.b, NUM_GATES, "i, o, g"),
    carry_sizes=lambda p: {"h": p.W.shape[-1], "c": p.W.shape[-1]}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)

__all__ = ["recurrent_weights", "CIFGParams", "GATES", "init", "initial_state", "project_inputs", "step", "step_projected"]
