"""`fused_scan`: the fast runner, with a hand-written backward pass and the weight gradients as single products.

For a cell whose step splits into one recurrent product and elementwise math (its `fused` attribute, a
`rnn_jax.cells.base.FusedSpec`), the whole sequence is one `jax.custom_vjp` function:

    forward:   P = U xs + b (one product for all T)      loop: rec_t = R h_{t-1};  (carry_t, h_t) = forward(...)
    backward:  loop in the other direction: (dP_t, dRec_t) = backward(...);  dh_{t-1} += R^T dRec_t
               dR = sum_t dRec_t^T h_{t-1} (one product after the loop)
               dU, db, dxs from dP by the projection's own autodiff (large products too)

so the loops do only the recurrent products and the gate arithmetic, which XLA's autodiff of a scan does not
manage: it accumulates dR inside the backward loop, one thin product per step. How R multiplies h is the spec's
`Recurrence` hook (a dense matrix, a diagonal, or the cell's own). Each loop also fetches step t+1's inputs into
the carry while step t computes (`prefetch_scan`), because XLA:CPU emits slow scalar code when a loop's per-step
slice is fused into the gate arithmetic.

Where the spec names a native loop and the native policy allows it (`rnn_jax.kernels.policy`: float32, the CPU
backend, the kernels built), the two loops run natively: one call per loop instead of XLA's chain of small
per-step kernels, same results (tested). On a GPU, a spec's library loop (cuDNN for the LSTM,
`rnn_jax.kernels.cudnn`) runs the layer where it applies, under the same policy.

The result equals `hoisted_scan(cell, ...)` (tested, values and gradients, for every fusable cell). Where the
fused path does not apply, `rnn_jax.runners._fallback` picks the runner that does, so `fused_scan` accepts every
cell and every option the other runners do.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm, fused_scan
    >>> params = lstm.init(jax.random.key(0), 10, 20)
    >>> carry, hs = fused_scan(lstm, params, lstm.initial_state(20, (4,)), jnp.ones((4, 7, 10)))
    >>> hs.shape
    (4, 7, 20)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax import kernels, parallel, precision
from rnn_jax.cells import base
from rnn_jax.runners import _fallback
from rnn_jax.runners._layout import _check_unroll, _from_time_major, _to_time_major
from rnn_jax.runners.scan import hoisted_scan, scan


def prefetch_scan(f, init, xs, *, reverse: bool = False, unroll: int | bool = 1):
    """`jax.lax.scan(f, init, xs, reverse=reverse, unroll=unroll)`, with x_{t±1} loaded into the carry during step t.

    Same results as `lax.scan`; only where the per-step slice happens differs (see the module docstring).
    """
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    at = lambda t: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), xs)

    def body(state, t):
        carry, x = state
        carry, y = f(carry, x)
        following = jnp.clip(t - 1 if reverse else t + 1, 0, num_steps - 1)
        return (carry, at(following)), y

    first = num_steps - 1 if reverse else 0
    (carry, _), ys = jax.lax.scan(body, (init, at(first)), jnp.arange(num_steps), reverse=reverse, unroll=unroll)
    return carry, ys


def _add(a, b):
    return b if a is None else a + b


def _xla_loop(spec, unroll, reverse, R, elementwise, carry, projected):
    """The forward loop in XLA: (final carry, hs, (carries, residuals)) for the backward loop."""
    R_loop = spec.recurrence.prepare(R)

    def body(carry_prev, p):
        rec = spec.recurrence.apply(R_loop, carry_prev.h).reshape(p.shape)
        carry, h, residuals = spec.forward(elementwise, carry_prev, p, rec)
        return carry, (h, carry_prev, residuals)

    final, (hs, carries, residuals) = prefetch_scan(body, carry, projected, reverse=reverse, unroll=unroll)
    return final, hs, (carries, residuals)


def _xla_loop_backward(spec, unroll, reverse, R, elementwise, saved, d_final, d_hs):
    """The backward loop in XLA: (d_carry, d_elementwise, d_projected, d_rec, h_prev)."""
    carries, residuals = saved
    # summed in float32 for 16-bit elementwise parameters (cast back once, in the VJP)
    zero_elementwise = jax.tree.map(lambda a: jnp.zeros(a.shape, precision.state_dtype(a.dtype)), elementwise)

    def body(state, inputs):
        d_carry, d_elementwise = state
        carry_prev, step_residuals, d_h = inputs
        d_e, d_carry_prev, d_p, d_rec = spec.backward(elementwise, carry_prev, step_residuals, d_carry, d_h)
        d_rec_flat = d_rec.reshape(d_h.shape[:-1] + (-1,))
        d_carry_prev = d_carry_prev._replace(h=_add(d_carry_prev.h, spec.recurrence.transpose(R, d_rec_flat)))
        d_elementwise = jax.tree.map(jnp.add, d_elementwise, d_e) if elementwise is not None else None
        outputs = (d_p,) if d_p is d_rec else (d_p, d_rec_flat)
        return (d_carry_prev, d_elementwise), outputs

    (d_carry, d_elementwise), outputs = prefetch_scan(
        body, (d_final, zero_elementwise), (carries, residuals, d_hs), reverse=not reverse, unroll=unroll)
    lead = d_hs.shape[:-1]
    d_projected = outputs[0].reshape(lead + (-1,))
    d_rec = d_projected if len(outputs) == 1 else outputs[1].reshape(lead + (-1,))
    return d_carry, d_elementwise, d_projected, d_rec, carries.h


def _weight_grads(recurrence, U, R, xs, h_prev, d_projected, d_rec):
    """(dU, dR): the input and recurrent weight gradients, each one product over time and batch (in U's dtype
    when it is 16-bit: bf16 operands, float32 sums)."""
    if recurrence.dense and d_rec is d_projected:
        # Equal cotangents: one product over [xs, h_prev] gives both (4-5% faster train steps at `long`).
        d_UW = parallel.rows_product(d_projected, jnp.concatenate(precision.like(U, xs, h_prev), axis=-1))
        return d_UW[:, :xs.shape[-1]], d_UW[:, xs.shape[-1]:]
    return parallel.rows_product(*precision.like(U, d_projected, xs)), recurrence.weight_grad(R, h_prev, d_rec)


@functools.lru_cache(maxsize=None)
def _fused_sequence(spec, unroll, reverse, has_bias, native=False):
    """The custom-VJP sequence function for one cell spec, unroll and direction:

    `(U (K, E), b (K,) or None, R, elementwise, carry, xs (T, *batch, E)) -> (final carry, hs)`.
    """

    def run(U, b, R, elementwise, carry, xs):
        # The native kernel adds b itself, saving XLA a pass over the (T, B, K) products.
        projected = precision.matmul(xs, U.T)
        projected = projected if b is None or native else projected + b
        projected = projected.reshape(xs.shape[:-1] + spec.gate_shape(U.shape[0]))
        if native:  # the native loop takes 16-bit weights as they are (`rnn_jax.kernels.recurrent`) and a float32 b
            final, hs, saved = spec.native.forward(R, elementwise, carry, projected,
                                                   precision.cast_floating(b, projected.dtype), reverse)
        else:
            final, hs, saved = _xla_loop(spec, unroll, reverse, R, elementwise, carry, projected)
        return (final, hs), (U, b, R, elementwise, carry, saved, xs)

    def backward(saved, cotangents):
        U, b, R, elementwise, carry, loop_saved, xs = saved
        d_final, d_hs = cotangents
        if native:
            d_carry, d_elementwise, d_projected, d_rec, h_prev = spec.native.backward(
                R, elementwise, loop_saved, d_final, d_hs, reverse)
        else:
            d_carry, d_elementwise, d_projected, d_rec, h_prev = _xla_loop_backward(
                spec, unroll, reverse, R, elementwise, loop_saved, d_final, d_hs)
        d_U, d_R = _weight_grads(spec.recurrence, U, R, xs, h_prev, d_projected, d_rec)
        d_b = d_projected.sum(tuple(range(xs.ndim - 1))) if has_bias else None
        d_xs = precision.matmul(d_projected, U)
        # Cotangents in their primals' dtypes (16-bit weights: float32 sums, rounded once here).
        return jax.tree.map(lambda d, primal: d.astype(primal.dtype), (d_U, d_b, d_R, d_elementwise, d_carry, d_xs),
                            (U, b, R, elementwise, carry, xs))

    sequence = jax.custom_vjp(lambda U, b, R, elementwise, carry, xs: run(U, b, R, elementwise, carry, xs)[0])
    sequence.defvjp(run, backward)
    return sequence


def fused_scan(cell, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
               time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
               resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None,
               native: bool | None = None):
    """Runs a cell over time with the fused forward/backward (see the module docstring).

    Args:
        cell: any cell; fused when it has a `fused` spec that supports `params`, else the runner
            `rnn_jax.runners._fallback` chooses (`hoisted_scan`, or `scan` for a cell without hoisting hooks).
        params, carry, xs, unroll, reverse, time_major: as in `rnn_jax.scan`; xs (*batch, T, E) or (T, *batch, E).
        seq_lengths, mask, resets, reset_carry, remat: as in `rnn_jax.scan`; any of them selects `hoisted_scan`.
        native: False keeps XLA's loop; None or True lets the native policy decide (`rnn_jax.kernels.policy`).
            Both give the same results.

    Returns:
        (final carry, hs (*batch, T, H) or (T, *batch, H)), equal to `hoisted_scan(cell, ...)`.
    """
    options = dict(unroll=unroll, reverse=reverse, time_major=time_major, seq_lengths=seq_lengths, mask=mask,
                   resets=resets, reset_carry=reset_carry, remat=remat)
    given = any(option is not None for option in (seq_lengths, mask, resets, remat))
    ran = _fallback.choose(cell, params, "fused", options_given=given)
    num_steps = xs.shape[0 if time_major else -2] if getattr(xs, "ndim", 0) >= 2 else None
    if ran == "scan":
        return scan(cell.step, params, carry, xs, **options)
    if ran == "hoisted" or num_steps == 0:
        return hoisted_scan(cell, params, carry, xs, **options)
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    # The cell's own checks of params, carry and inputs, at trace time, on the first step's shapes.
    jax.eval_shape(cell.step, params, carry, xs_tm[0])
    spec = cell.fused
    library = spec.library if kernels.policy.requested(native) != "off" else None
    if library is not None and library.applies(params, carry, xs):
        return library.run(params, carry, xs, reverse=reverse, time_major=time_major)
    dtype = base.param_dtype(params)
    state = precision.state_dtype(dtype)
    use_native = (spec.native is not None and all(leaf.dtype == state for leaf in jax.tree.leaves(carry))
                  and kernels.available(state, native))
    operands = spec.operands(params)
    sequence = _fused_sequence(spec, unroll, reverse, operands.b is not None, use_native)
    carry, hs = sequence(operands.U, operands.b, operands.R, operands.elementwise, carry, xs_tm.astype(dtype))
    return carry, _from_time_major(hs, time_major)
