"""LSTM with a recurrent projection layer, LSTMP (Sak, Senior & Beaufays 2014; PyTorch's `proj_size`).

The hidden state is projected to P < H units before it is fed back and output (W_p of shape P x H)::

    i, f, o, g as the LSTM, with W_* of shape (H, P) multiplying h_{t-1} (size P)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = W_p (o_t ⊙ tanh(c_t))

Because the carry's h has size P, the cell is an object that knows P: `LSTMPCell(proj_size=P)`, with the same
`init`, `initial_state`, `step` (and hoisting) functions as every cell, and `output_size(H) = P`.
Parameters `LSTMPParams`: W (4, H, P), U (4, H, E), b (4, H) or None (gates i, f, o, g), W_p (P, H).
Carry `LSTMState(h (*batch, P), c (*batch, H))`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells.lstmp import LSTMPCell
    >>> cell = LSTMPCell(proj_size=4)
    >>> params = cell.init(jax.random.key(0), 3, 8)
    >>> carry, h = cell.step(params, cell.initial_state(8, (2,)), jnp.ones((2, 3)))
    >>> h.shape, carry.c.shape
    ((2, 4), (2, 8))
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks, precision
from rnn_jax.cells import _common, lstm
from rnn_jax.cells.lstm import GATE_INDEX, NUM_GATES, LSTMState
from rnn_jax.initializers import InitScheme


class LSTMPParams(NamedTuple):
    """W (4, H, P), U (4, H, E), b (4, H) or None, W_p (P, H)."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]
    W_p: jax.Array


def _check_params(params: LSTMPParams) -> tuple[int, int]:
    fix = "Create parameters with LSTMPCell(proj_size).init."
    _checks.check_rank_at_least("LSTMP W_p (projection)", params.W_p, 2, "(P, H)", fix)
    P, H = params.W_p.shape[-2:]
    _checks.check_shape("LSTMP W_p (projection, P x H)", params.W_p, (P, H), "(P, H)", fix)
    _checks.check_shape("LSTMP W (recurrent weights, 4 gates of H x P)", params.W, (NUM_GATES, H, P),
                        f"(4, H={H}, P={P})", fix)
    _checks.check_rank_at_least("LSTMP U (input weights)", params.U, 3, "(4, H, E)", fix)
    E = params.U.shape[-1]
    _checks.check_shape("LSTMP U (input weights, 4 gates of H x E)", params.U, (NUM_GATES, H, E), f"(4, H={H}, E)", fix)
    if params.b is not None:
        _checks.check_shape("LSTMP b (bias)", params.b, (NUM_GATES, H), f"(4, H={H})", fix)
    _checks.check_floating("LSTMP W", params.W)
    return E, H


def _cell_update(params: LSTMPParams, carry: LSTMState, projected):
    pre = projected + _common.recurrent(params.W, carry.h)
    i, f, o = (jax.nn.sigmoid(pre[..., GATE_INDEX[n], :]) for n in ("i", "f", "o"))
    g = jnp.tanh(pre[..., GATE_INDEX["g"], :])
    c = f * carry.c + i * g
    h = precision.matmul(o * jnp.tanh(c), params.W_p.T)
    return LSTMState(h=h, c=c), h


_functions = _common.cell_functions(
    name="LSTMP", module="lstmp", params_types=LSTMPParams, carry_type=LSTMState,
    projected_tail=lambda p: (NUM_GATES, p.W.shape[1]), check_params=_check_params,
    carry_sizes=lambda p: {"h": p.W_p.shape[0], "c": p.W_p.shape[1]}, update=_cell_update)


@dataclasses.dataclass(frozen=True)
class LSTMPCell:
    """The LSTMP cell for one projection size P (see the module docstring)."""

    proj_size: int
    recurrent_weights = ("W",)  # W multiplies the projected state; W_p is the projection (weight drop leaves it)

    def __post_init__(self):
        if not isinstance(self.proj_size, int) or self.proj_size < 1:
            raise ValueError(f"proj_size must be a positive int; got {self.proj_size!r}")

    def output_size(self, hidden_size: int) -> int:
        return self.proj_size

    def init(self, key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
             initializer: str | InitScheme = "pytorch", init_scale: float | None = None,
             forget_bias: float = 0.0) -> LSTMPParams:
        """Creates parameters W (4, H, P), U (4, H, E), b (4, H), W_p (P, H) (options as `rnn_jax.lstm.init`)."""
        if self.proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size; got P={self.proj_size}, H={hidden_size}")
        key, key_p = jax.random.split(key)
        _, U, b, scheme = _common.init_weights(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias,
                                               dtype=dtype, initializer=initializer, init_scale=init_scale)
        key_w, key_p = jax.random.split(key_p)
        W = scheme.recurrent(key_w, (NUM_GATES, hidden_size, self.proj_size), dtype)
        W_p = scheme.recurrent(key_p, (self.proj_size, hidden_size), dtype)
        return LSTMPParams(W=W, U=U, b=lstm.add_forget_bias(b, forget_bias), W_p=W_p)

    def initial_state(self, hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LSTMState:
        """Zero carry: h (*batch, P), c (*batch, H)."""
        _common.check_sizes(1, hidden_size)
        return LSTMState(h=jnp.zeros(tuple(batch_shape) + (self.proj_size,), dtype),
                         c=jnp.zeros(tuple(batch_shape) + (hidden_size,), dtype))

    project_inputs = staticmethod(_functions.project_inputs)
    step_projected = staticmethod(_functions.step_projected)
    step = staticmethod(_functions.step)
