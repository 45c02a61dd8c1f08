"""LSTM cell, exactly as the lecture notes write it.

Equations (W recurrent, U input; σ the logistic sigmoid, ⊙ the elementwise product)::

    i_t = σ(W_i h_{t-1} + U_i x_t + b_i)        input gate
    f_t = σ(W_f h_{t-1} + U_f x_t + b_f)        forget gate
    o_t = σ(W_o h_{t-1} + U_o x_t + b_o)        output gate
    g_t = tanh(W_g h_{t-1} + U_g x_t + b_g)     candidate values
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

Parameter layout: the four gates are stacked along a leading axis in the order `GATES = ("i", "f", "o", "g")`,
so `params.U[GATE_INDEX["f"]]` is the notes' U_f of shape (H, E), `params.W[...]` a W_* of shape (H, H) and
`params.b[...]` a b_* of shape (H,). With `use_bias=False`, `b` is None (the notes' worked example).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm
    >>> params = lstm.init(jax.random.key(0), input_size=10, hidden_size=20, use_bias=False)
    >>> carry = lstm.initial_state(20, batch_shape=(3,))
    >>> carry, h = lstm.step(params, carry, jnp.ones((3, 10)))
    >>> h.shape
    (3, 20)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import _common, base
from rnn_jax.kernels import cudnn
from rnn_jax.kernels import recurrent as recurrent_kernels
from rnn_jax.initializers import InitScheme

GATES = ("i", "f", "o", "g")
GATE_INDEX = {name: k for k, name in enumerate(GATES)}
NUM_GATES = len(GATES)


class LSTMParams(NamedTuple):
    """LSTM parameters; gates stacked in `GATES` order.

    Attributes:
        W: recurrent weights, (4, H, H).
        U: input weights, (4, H, E).
        b: biases, (4, H), or None.
    """

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


class LSTMState(NamedTuple):
    """LSTM carry: hidden state h and cell state c, each (*batch, H)."""

    h: jax.Array
    c: jax.Array


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    use_bias: bool = True,
    dtype=jnp.float32,
    initializer: str | InitScheme = "pytorch",
    init_scale: float | None = None,
    forget_bias: float = 0.0,
) -> LSTMParams:
    """Creates LSTM parameters.

    Args:
        key: PRNG key.
        input_size: E, the size of x_t.
        hidden_size: H, the size of h_t and c_t.
        use_bias: whether the gates have biases b_*.
        dtype: parameter dtype; products take their operands in it (bfloat16: float32 sums, state and outputs,
            `rnn_jax.precision`).
        initializer: a scheme name from `rnn_jax.initializers` ("pytorch", "uniform", "orthogonal") or an
            `InitScheme`.
        init_scale: s for initializer="uniform".
        forget_bias: added to b_f after initialisation (1.0 is the common choice; Zaremba et al. use 0).

    Returns:
        `LSTMParams` with W (4, H, H), U (4, H, E), b (4, H) or None.
    """
    W, U, b, _ = _common.init_weights(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                                      initializer=initializer, init_scale=init_scale)
    return LSTMParams(W=W, U=U, b=add_forget_bias(b, forget_bias))


def add_forget_bias(b: Optional[jax.Array], forget_bias: float) -> Optional[jax.Array]:
    """b with `forget_bias` added to b_f (shared by every LSTM-family cell's init)."""
    if not forget_bias:
        return b
    if b is None:
        raise ValueError("forget_bias needs use_bias=True: without biases there is no b_f to set")
    return b.at[GATE_INDEX["f"]].add(jnp.asarray(forget_bias, b.dtype))


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LSTMState:
    """Zero carry: h and c of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    shape = tuple(batch_shape) + (hidden_size,)
    return LSTMState(h=jnp.zeros(shape, dtype), c=jnp.zeros(shape, dtype))  # two buffers, so both can be donated


def _check_params(params: LSTMParams) -> tuple[int, int]:
    return _common.check_weights("LSTM", params.W, params.U, params.b, NUM_GATES, "i, f, o, g")


def _forward(_, carry: LSTMState, projected: jax.Array, rec: jax.Array):
    """The equations given U x_t + b (projected) and W h_{t-1} (rec), both (*batch, 4, H); residuals for backward."""
    pre = projected + rec
    i, f, o = (jax.nn.sigmoid(pre[..., GATE_INDEX[n], :]) for n in ("i", "f", "o"))
    g = jnp.tanh(pre[..., GATE_INDEX["g"], :])
    c = f * carry.c + i * g
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    return LSTMState(h=h, c=c), h, (i, f, o, g, tanh_c)


def _backward(_, carry: LSTMState, residuals, d_carry: LSTMState, d_h: jax.Array):
    """Derivative of `_forward`: d_pre = d_projected = d_rec, stacked like the gates."""
    i, f, o, g, tanh_c = residuals
    d_h = d_h + d_carry.h
    d_c = d_carry.c + d_h * o * (1 - tanh_c * tanh_c)
    d_pre = jnp.stack([d_c * g * i * (1 - i), d_c * carry.c * f * (1 - f), d_h * tanh_c * o * (1 - o),
                       d_c * i * (1 - g * g)], axis=-2)
    return None, LSTMState(h=None, c=d_c * f), d_pre, d_pre


def _cell_update(params: LSTMParams, carry: LSTMState, projected: jax.Array) -> tuple[LSTMState, jax.Array]:
    new_carry, h, _ = _forward(None, carry, projected, _common.recurrent(params.W, carry.h))
    return new_carry, h


fused = base.FusedSpec(supports=lambda params: isinstance(params, LSTMParams),
                       operands=base.stacked_operands, num_gates=NUM_GATES, forward=_forward, backward=_backward,
                       native=recurrent_kernels.LSTM_LOOP, library=cudnn.LSTM_CUDNN)


project_inputs, step_projected, step = _common.cell_functions(
    name="LSTM", module="lstm", params_types=LSTMParams, carry_type=LSTMState,
    projected_tail=lambda p: (NUM_GATES, p.W.shape[-1]), check_params=_check_params,
    carry_sizes=lambda p: {"h": p.W.shape[-1], "c": p.W.shape[-1]}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)
