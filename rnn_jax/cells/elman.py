"""Elman RNN cell, the simplest baseline.

Equation::

    h_t = tanh(W h_{t-1} + U x_t + b)

Parameters: W (H, H), U (H, E), b (H,) or None (no gate axis: there is one "gate").

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import elman
    >>> params = elman.init(jax.random.key(0), 4, 8)
    >>> carry, h = elman.step(params, elman.initial_state(8), jnp.ones(4))
    >>> h.shape
    (8,)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import _common, base
from rnn_jax.cells._common import HiddenState
from rnn_jax.initializers import InitScheme


class ElmanParams(NamedTuple):
    """Elman parameters: W (H, H) recurrent, U (H, E) input, b (H,) or None."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    use_bias: bool = True,
    dtype=jnp.float32,
    initializer: str | InitScheme = "pytorch",
    init_scale: float | None = None,
) -> ElmanParams:
    """Creates Elman parameters W (H, H), U (H, E), b (H,) or None (see `rnn_jax.lstm.init` for the options)."""
    W, U, b, _ = _common.init_weights(key, None, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                                      initializer=initializer, init_scale=init_scale)
    return ElmanParams(W=W, U=U, b=b)


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> HiddenState:
    """Zero carry: h of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    return HiddenState(h=jnp.zeros(tuple(batch_shape) + (hidden_size,), dtype))


def _forward(_, carry: HiddenState, projected: jax.Array, rec: jax.Array):
    h = jnp.tanh(projected + rec)
    return HiddenState(h=h), h, h


def _backward(_, carry: HiddenState, h, d_carry: HiddenState, d_h: jax.Array):
    d_pre = (d_h + d_carry.h) * (1 - h * h)
    return None, HiddenState(h=None), d_pre, d_pre


def _cell_update(params: ElmanParams, carry: HiddenState, projected: jax.Array) -> tuple[HiddenState, jax.Array]:
    new_carry, h, _ = _forward(None, carry, projected, _common.recurrent(params.W, carry.h))
    return new_carry, h


fused = base.FusedSpec(supports=lambda params: isinstance(params, ElmanParams), operands=base.stacked_operands,
                       num_gates=None, forward=_forward, backward=_backward)


project_inputs, step_projected, step = _common.cell_functions(
    name="Elman", module="elman", params_types=ElmanParams, carry_type=HiddenState,
    projected_tail=lambda p: (p.W.shape[-1],),
    check_params=lambda p: _common.check_weights("Elman", p.W, p.U, p.b, None, ""),
    carry_sizes=lambda p: {"h": p.W.shape[-1]}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)
