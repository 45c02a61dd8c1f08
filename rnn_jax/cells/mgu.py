"""Minimal gated unit, MGU (Zhou, Wu, Zhang & Zhou 2016, "Minimal Gated Unit for Recurrent Neural Networks").

One gate, f, serves as both the GRU's reset and update gates::

    f_t = σ(W_f h_{t-1} + U_f x_t + b_f)
    g_t = tanh(W_g (f_t ⊙ h_{t-1}) + U_g x_t + b_g)
    h_t = (1 − f_t) ⊙ h_{t-1} + f_t ⊙ g_t

Parameters: W (2, H, H), U (2, H, E), b (2, H) or None in the order `GATES = ("f", "g")`; carry `HiddenState(h)`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import _common
from rnn_jax.cells._common import HiddenState
from rnn_jax.cells.gru import initial_state
from rnn_jax.initializers import InitScheme

GATES = ("f", "g")
NUM_GATES = 2


class MGUParams(NamedTuple):
    """W (2, H, H), U (2, H, E), b (2, H) or None; gates f, g."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None) -> MGUParams:
    """Creates MGU parameters (options as `rnn_jax.lstm.init`)."""
    W, U, b, _ = _common.init_weights(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                                      initializer=initializer, init_scale=init_scale)
    return MGUParams(W=W, U=U, b=b)


def _cell_update(params, carry: HiddenState, projected):
    f = jax.nn.sigmoid(projected[..., 0, :] + _common.recurrent(params.W[0], carry.h))
    g = jnp.tanh(projected[..., 1, :] + _common.recurrent(params.W[1], f * carry.h))
    h = (1 - f) * carry.h + f * g
    return HiddenState(h=h), h


project_inputs, step_projected, step = _common.cell_functions(
    name="MGU", module="mgu", params_types=MGUParams, carry_type=HiddenState,
    projected_tail=lambda p: (NUM_GATES, p.W.shape[-1]),
    check_params=lambda p: _common.check_weights("MGU", p.W, p.U, p.b, NUM_GATES, "f, g"),
    carry_sizes=lambda p: {"h": p.W.shape[-1]}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)

__all__ = ["recurrent_weights", "GATES", "MGUParams", "init", "initial_state", "project_inputs", "step", "step_projected"]
