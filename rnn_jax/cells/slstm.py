"""sLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", arXiv 2405.04517): the LSTM with an
exponential input gate, a normaliser state n, a stabiliser state m, and block-diagonal recurrent weights (heads).

Equations (ĩ, f̃, õ, g̃ the gate pre-activations U x_t + R h_{t-1} + b, R block-diagonal over heads)::

    log f_t = log σ(f̃_t)                          sigmoid forget gate (the reference implementation's)
    m_t = max(log f_t + m_{t-1}, ĩ_t)              stabiliser
    i'_t = exp(ĩ_t − m_t),  f'_t = exp(log f_t + m_{t-1} − m_t)
    c_t = f'_t ⊙ c_{t-1} + i'_t ⊙ tanh(g̃_t)       cell state
    n_t = f'_t ⊙ n_{t-1} + i'_t                    normaliser state
    h_t = σ(õ_t) ⊙ c_t / n_t

The stabiliser rescales c and n together, so h is the unstabilised exp-gated LSTM's h without its overflow.
Each of the NH heads mixes only its own DH = H / NH units: W (4, NH, DH, DH); U (4, H, E); b (4, H) or None; gates
`GATES = ("i", "f", "o", "g")`; carry `SLSTMState(h, c, n, m)`, all zero at the start. The state is not linear in h,
so the cell runs on `scan`, `hoisted_scan` and `fused_scan` (its block-diagonal `Recurrence` hook), not on
`associative_scan`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import slstm
    >>> params = slstm.init(jax.random.key(0), input_size=3, hidden_size=8, num_heads=2)
    >>> params.W.shape
    (4, 2, 4, 4)
    >>> carry, h = slstm.step(params, slstm.initial_state(8, (2,)), jnp.ones((2, 3)))
    >>> h.shape
    (2, 8)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks, precision
from rnn_jax import initializers as inits
from rnn_jax.cells import _common, base
from rnn_jax.cells.lstm import add_forget_bias
from rnn_jax.initializers import InitScheme

GATES = ("i", "f", "o", "g")
NUM_GATES = 4


class SLSTMParams(NamedTuple):
    """W (4, NH, DH, DH) block-diagonal recurrent weights, U (4, H, E), b (4, H) or None; gates i, f, o, g."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


class SLSTMState(NamedTuple):
    """h, c, n (normaliser) and m (stabiliser), each (*batch, H)."""

    h: jax.Array
    c: jax.Array
    n: jax.Array
    m: jax.Array


def init(key, input_size: int, hidden_size: int, *, num_heads: int | None = None, use_bias: bool = True,
         dtype=jnp.float32, initializer: str | InitScheme = "pytorch", init_scale: float | None = None,
         forget_bias: float = 0.0) -> SLSTMParams:
    """Creates sLSTM parameters.

    Args:
        key, input_size (E), hidden_size (H), use_bias, dtype, initializer, init_scale, forget_bias: as
            `rnn_jax.lstm.init` (the scheme's recurrent initialiser draws each head's (DH, DH) block).
        num_heads: NH, dividing H; default 4 where H is a multiple of 4 (the paper's sLSTM blocks), else 1.
    """
    _common.check_sizes(input_size, hidden_size)
    num_heads = num_heads or (4 if hidden_size % 4 == 0 else 1)
    if not isinstance(num_heads, int) or num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"sLSTM num_heads must be a positive int dividing hidden_size={hidden_size}; "
                         f"got {num_heads!r}")
    scheme = inits.resolve(initializer, hidden_size, init_scale)
    key_w, key_u, key_b = jax.random.split(key, 3)
    head = hidden_size // num_heads
    W = scheme.recurrent(key_w, (NUM_GATES, num_heads, head, head), dtype)
    U = scheme.input(key_u, (NUM_GATES, hidden_size, input_size), dtype)
    b = scheme.bias(key_b, (NUM_GATES, hidden_size), dtype) if use_bias else None
    return SLSTMParams(W=W, U=U, b=add_forget_bias(b, forget_bias))


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> SLSTMState:
    """Zero carry: h, c, n and m of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    shape = tuple(batch_shape) + (hidden_size,)
    return SLSTMState(*(jnp.zeros(shape, dtype) for _ in SLSTMState._fields))


def _check_params(params: SLSTMParams) -> tuple[int, int]:
    fix = "Create parameters with slstm.init."
    _checks.check_rank_at_least("sLSTM W (block-diagonal recurrent weights)", params.W, 4, "(4, NH, DH, DH)", fix)
    _, heads, size, _ = params.W.shape
    H = heads * size
    _checks.check_shape("sLSTM W (block-diagonal recurrent weights)", params.W, (NUM_GATES, heads, size, size),
                        "(4, NH, DH, DH)", fix)
    _checks.check_rank_at_least("sLSTM U (input weights)", params.U, 3, "(4, H, E)", fix)
    E = params.U.shape[-1]
    _checks.check_shape("sLSTM U (input weights)", params.U, (NUM_GATES, H, E), f"(4, H={H}, E)",
                        "W's heads times head size must equal U's H. " + fix)
    if params.b is not None:
        _checks.check_shape("sLSTM b (biases)", params.b, (NUM_GATES, H), f"(4, H={H})", fix)
        _checks.check_same_dtype("sLSTM b", params.b, params.W.dtype, "Cast every parameter to one dtype.")
    _checks.check_floating("sLSTM W", params.W, "Parameters must be floating point.")
    _checks.check_same_dtype("sLSTM U", params.U, params.W.dtype, "Cast every parameter to one dtype.")
    return E, H


def _heads(a, W):
    return a.reshape(a.shape[:-1] + W.shape[1:3])


def _apply(W, h):
    """Each head's gates from its own units: h (*batch, H) -> (*batch, 4·H), gate-major like U's rows."""
    rec = precision.einsum("...nj,gnij->...gni", _heads(h, W), W)
    return rec.reshape(h.shape[:-1] + (-1,))


def _transpose(W, d_rec):
    d = d_rec.reshape(d_rec.shape[:-1] + W.shape[:3])
    d_h = precision.einsum("...gni,gnij->...nj", d, W)
    return d_h.reshape(d_h.shape[:-2] + (-1,))


def _weight_grad(W, h_prev, d_rec):
    """dW[g, n] = Σ over time and batch of d_rec[g, n] h_prev[n]^T, each head's block only."""
    h = h_prev.reshape((-1,) + W.shape[1:3])
    d = d_rec.reshape((-1,) + W.shape[:3])
    return precision.einsum("tgni,tnj->gnij", *precision.like(W, d, h))


BLOCK_DIAGONAL = base.Recurrence(prepare=lambda W: W, apply=_apply, transpose=_transpose, weight_grad=_weight_grad)
"""R h for block-diagonal R: no (4H, H) matrix is formed; the weight gradient keeps only the heads' blocks."""


def _cell(carry: SLSTMState, pre: jax.Array):
    """The equations from the pre-activations pre (*batch, 4, H)."""
    log_f = -jax.nn.softplus(-pre[..., 1, :])
    i_tilde = pre[..., 0, :]
    m = jnp.maximum(log_f + carry.m, i_tilde)
    i, f = jnp.exp(i_tilde - m), jnp.exp(log_f + carry.m - m)
    c = f * carry.c + i * jnp.tanh(pre[..., 3, :])
    n = f * carry.n + i
    h = jax.nn.sigmoid(pre[..., 2, :]) * c / n
    return SLSTMState(h=h, c=c, n=n, m=m), h


def _forward(_, carry: SLSTMState, projected: jax.Array, rec: jax.Array):
    pre = projected + rec
    new_carry, h = _cell(carry, pre)
    return new_carry, h, pre


def _backward(_, carry: SLSTMState, pre, d_carry: SLSTMState, d_h: jax.Array):
    """The derivative of `_cell`, by reverse-mode differentiation of the same function at the stored pre."""
    _, pullback = jax.vjp(_cell, carry, pre)
    d_carry_prev, d_pre = pullback((d_carry, d_h))
    return None, d_carry_prev, d_pre, d_pre


def _cell_update(params: SLSTMParams, carry: SLSTMState, projected: jax.Array):
    new_carry, h, _ = _forward(None, carry, projected, _apply(params.W, carry.h).reshape(projected.shape))
    return new_carry, h


fused = base.FusedSpec(
    supports=lambda params: isinstance(params, SLSTMParams),
    operands=lambda params: base.FusedOperands(U=params.U.reshape(-1, params.U.shape[-1]),
                                               b=None if params.b is None else params.b.reshape(-1), R=params.W,
                                               elementwise=None),
    num_gates=NUM_GATES, forward=_forward, backward=_backward, recurrence=BLOCK_DIAGONAL)

project_inputs, step_projected, step = _common.cell_functions(
    name="sLSTM", module="slstm", params_types=SLSTMParams, carry_type=SLSTMState,
    projected_tail=lambda p: (NUM_GATES, p.U.shape[-2]), check_params=_check_params,
    carry_sizes=lambda p: {field: p.U.shape[-2] for field in SLSTMState._fields}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)

__all__ = ["recurrent_weights", "BLOCK_DIAGONAL", "GATES", "SLSTMParams", "SLSTMState", "init", "initial_state", "project_inputs", "step",
           "step_projected"]
