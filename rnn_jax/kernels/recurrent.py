"""The LSTM's and the reset-after GRU's recurrent loops as native calls, and their adapters for `fused_scan`.

A native loop is one call per sequence instead of XLA's chain of small per-step kernels, split over the hidden
units between threads that meet once per step, with vectorised gate math (`recurrent.cc`). `NativeLoop` adapts a
pair of kernels to the fused runner's interface; a cell names one in its `FusedSpec.native`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.kernels import _build, _ffi


def _attributes(reverse: bool, bf16_products: bool) -> dict:
    return {"reverse": np.int64(reverse), "bf16_products": np.int64(bf16_products)}


def lstm_forward(projected: jax.Array, W: jax.Array, h0: jax.Array, c0: jax.Array, bias: jax.Array | None = None, *,
                 reverse: bool = False, bf16_products: bool = False):
    """The LSTM loop given the input products: `(hs, cs, acts)`.

    Args:
        projected: U x_t for every step, (T, B, 4H), gates i, f, o, g.
        W: recurrent weights, (4H, H).
        h0, c0: initial carry, (B, H).
        bias: b, (4H,), added inside the loop (None: no bias); passing U x_t + b here with no bias is the same.
        reverse: run from t = T-1 down to 0 (outputs stay indexed by t).
        bf16_products: multiply bf16-rounded h by bf16-rounded W with float32 sums (AVX512-BF16; H even: see
            `_build.bf16_dot_products`), as XLA's loop does with bf16 weights; else float32 products.

    Returns:
        hs, cs (T, B, H) and the activated gates acts (T, B, 4H), float32.
    """
    _build.require()
    bias = jnp.zeros(projected.shape[-1:], jnp.float32) if bias is None else bias

    def out_types(projected, W, h0, c0, bias):
        steps, batch, _ = projected.shape
        return (jax.ShapeDtypeStruct((steps, batch, h0.shape[-1]), jnp.float32),) * 2 + (
            jax.ShapeDtypeStruct(projected.shape, jnp.float32),)

    return _ffi.call(_ffi.ffi("rnn_jax_lstm_forward", out_types, _attributes(reverse, bf16_products)),
                 ((1,), (), (0,), (0,), ()), ((1,), (1,), (1,)), (projected, W, h0, c0, bias))


def lstm_backward(W, acts, cs, c0, d_hs, d_h_final, d_c_final, *, reverse: bool = False, bf16_products: bool = False):
    """Backward of `lstm_forward` through the loop: `(d_projected (T, B, 4H), d_h0 (B, H), d_c0 (B, H))`.

    d_projected is also the cotangent of every step's W h_{t-1}; the caller turns it into dW, dU, db and dx.
    bf16_products: multiply d_projected by W with both rounded to bf16, float32 sums (as `lstm_forward`).
    """
    _build.require()

    def out_types(W, acts, cs, c0, d_hs, d_h_final, d_c_final):
        return (jax.ShapeDtypeStruct(acts.shape, jnp.float32),) + (jax.ShapeDtypeStruct(c0.shape, jnp.float32),) * 2

    return _ffi.call(_ffi.ffi("rnn_jax_lstm_backward", out_types, _attributes(reverse, bf16_products)),
                 ((), (1,), (1,), (0,), (1,), (0,), (0,)), ((1,), (0,), (0,)),
                 (W, acts, cs, c0, d_hs, d_h_final, d_c_final))


def gru_forward(projected: jax.Array, W: jax.Array, b_rg: jax.Array, h0: jax.Array, bias: jax.Array | None = None, *,
                reverse: bool = False, bf16_products: bool = False):
    """The reset-after GRU loop given the input products: `(hs, acts)`.

    Args:
        projected: U x_t for every step, (T, B, 3H), gates r, u, g.
        W: recurrent weights, (3H, H).
        b_rg: the candidate's recurrent bias, (H,) (zeros for none).
        h0: initial state, (B, H).
        bias: the input bias b, (3H,), added inside the loop (None: no bias).
        reverse: run from t = T-1 down to 0 (outputs stay indexed by t).
        bf16_products: as in `lstm_forward`.

    Returns:
        hs (T, B, H) and acts (T, B, 4H): r, u, g and ρ = (W_g h_{t-1} + b_rg), float32.
    """
    _build.require()
    bias = jnp.zeros(projected.shape[-1:], jnp.float32) if bias is None else bias

    def out_types(projected, W, b_rg, h0, bias):
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        return (jax.ShapeDtypeStruct((steps, batch, hidden), jnp.float32),
                jax.ShapeDtypeStruct((steps, batch, 4 * hidden), jnp.float32))

    return _ffi.call(_ffi.ffi("rnn_jax_gru_forward", out_types, _attributes(reverse, bf16_products)),
                 ((1,), (), (), (0,), ()), ((1,), (1,)), (projected, W, b_rg, h0, bias))


def gru_backward(W, acts, hs, h0, d_hs, d_h_final, *, reverse: bool = False, bf16_products: bool = False):
    """Backward of `gru_forward` through the loop: `(d_projected, d_rec (T, B, 3H), d_h0 (B, H))`.

    d_rec, the cotangent of every step's W h_{t-1} (+ b_rg in the candidate slot), differs from d_projected only
    there (by the factor r); the caller turns them into dW, dU, db, db_rg and dx. bf16_products: as in
    `lstm_backward`.
    """
    _build.require()

    def out_types(W, acts, hs, h0, d_hs, d_h_final):
        steps, batch, hidden = hs.shape
        return (jax.ShapeDtypeStruct((steps, batch, 3 * hidden), jnp.float32),) * 2 + (
            jax.ShapeDtypeStruct(h0.shape, jnp.float32),)

    return _ffi.call(_ffi.ffi("rnn_jax_gru_backward", out_types, _attributes(reverse, bf16_products)),
                 ((), (1,), (1,), (0,), (1,), (0,)), ((1,), (1,), (0,)), (W, acts, hs, h0, d_hs, d_h_final))



# ------------------------------------------------------------------------------------- adapters for fused_scan


class NativeLoop(NamedTuple):
    """A native forward/backward loop pair in the shape `rnn_jax.runners.fused` calls (see `FusedSpec.native`).

    Attributes:
        forward: `f(W, elementwise, carry, projected, b, reverse) -> (final carry, hs, residuals)`; projected
            (T, *batch, G, H) without the bias b (K,) or None, which the kernel adds. W may be bfloat16 (mixed
            precision): the loops then take bf16 operands where the CPU's dot products pay
            (`_build.bf16_dot_products`), else multiply W's exact values in float32.
        backward: `f(W, elementwise, residuals, d_final, d_hs, reverse) -> (d_carry, d_elementwise, d_projected,
            d_rec, h_prev)`, d_projected and d_rec (T, *batch, K), h_prev (T, *batch, H).
    """

    forward: Callable
    backward: Callable


def _previous_states(hs, first, reverse):
    """h_{t-1} of every step (T, B, H), given the loop's outputs and its initial state (B, H), for dW."""
    return jnp.concatenate([hs[1:], first[None]]) if reverse else jnp.concatenate([first[None], hs[:-1]])


def _weight(W):
    """(W in float32, whether the loop multiplies bf16 operands): bf16 weights are passed widened (exactly)."""
    return W.astype(jnp.float32), W.dtype == jnp.bfloat16 and _build.bf16_dot_products(W.shape[-1])


def _lstm_loop(W, _, carry, projected, b, reverse):
    steps, batch_shape, hidden = projected.shape[0], carry.h.shape[:-1], W.shape[-1]
    flat = lambda a: a.reshape((-1, hidden))
    W, bf16 = _weight(W)
    hs, cs, acts = lstm_forward(projected.reshape(steps, -1, 4 * hidden), W, flat(carry.h), flat(carry.c), b,
                                reverse=reverse, bf16_products=bf16)
    last = 0 if reverse else steps - 1
    final = carry._replace(h=hs[last].reshape(carry.h.shape), c=cs[last].reshape(carry.c.shape))
    residuals = (acts, cs, flat(carry.c), _previous_states(hs, flat(carry.h), reverse))
    return final, hs.reshape((steps,) + batch_shape + (hidden,)), residuals


def _lstm_loop_backward(W, _, residuals, d_final, d_hs, reverse):
    acts, cs, c0, h_prev = residuals
    hidden, (W, bf16) = W.shape[-1], _weight(W)
    flat = lambda a: a.reshape((-1, hidden))
    d_pre, d_h0, d_c0 = lstm_backward(W, acts, cs, c0, d_hs.reshape(cs.shape), flat(d_final.h), flat(d_final.c),
                                      reverse=reverse, bf16_products=bf16)
    d_carry = d_final._replace(h=d_h0.reshape(d_final.h.shape), c=d_c0.reshape(d_final.c.shape))
    d_pre = d_pre.reshape(d_hs.shape[:-1] + W.shape[:1])
    return d_carry, None, d_pre, d_pre, h_prev.reshape(d_hs.shape)


def _gru_loop(W, b_rg, carry, projected, b, reverse):
    steps, batch_shape, hidden = projected.shape[0], carry.h.shape[:-1], W.shape[-1]
    h0, (W, bf16) = carry.h.reshape((-1, hidden)), _weight(W)
    b_rg = jnp.zeros((hidden,), jnp.float32) if b_rg is None else b_rg.astype(jnp.float32)
    hs, acts = gru_forward(projected.reshape(steps, -1, 3 * hidden), W, b_rg, h0, b, reverse=reverse,
                           bf16_products=bf16)
    final = carry._replace(h=hs[0 if reverse else steps - 1].reshape(carry.h.shape))
    return final, hs.reshape((steps,) + batch_shape + (hidden,)), (acts, hs, h0)


def _gru_loop_backward(W, b_rg, residuals, d_final, d_hs, reverse):
    acts, hs, h0 = residuals
    hidden, (W, bf16) = W.shape[-1], _weight(W)
    d_projected, d_rec, d_h0 = gru_backward(W, acts, hs, h0, d_hs.reshape(hs.shape), d_final.h.reshape((-1, hidden)),
                                            reverse=reverse, bf16_products=bf16)
    lead = d_hs.shape[:-1]
    d_rec = d_rec.reshape(lead + W.shape[:1])
    d_b_rg = None if b_rg is None else d_rec[..., 2 * hidden:].sum(tuple(range(len(lead))))
    return (d_final._replace(h=d_h0.reshape(d_final.h.shape)), d_b_rg, d_projected.reshape(lead + W.shape[:1]),
            d_rec, _previous_states(hs, h0, reverse).reshape(d_hs.shape))


LSTM_LOOP = NativeLoop(forward=_lstm_loop, backward=_lstm_loop_backward)
"""The LSTM (`rnn_jax.cells.lstm`): carry (h, c), W (4H, H) with gates i, f, o, g."""

GRU_LOOP = NativeLoop(forward=_gru_loop, backward=_gru_loop_backward)
"""The reset-after GRU (`rnn_jax.cells.gru`): carry (h,), W (3H, H) with gates r, u, g, elementwise b_rg."""
