"""`fused_scan`: the fast runner, with a hand-written backward pass and the weight gradient as one product.

For a cell whose step splits into one recurrent product and elementwise math (its `fused` attribute, a
`rnn_jax.cells._common.FusedSpec`: LSTM, the reset-after GRU, Elman), the whole sequence is one
`jax.custom_vjp` function:

    forward:   P = U xs + b (one product for all T)      loop: rec_t = W h_{t-1};  (carry_t, h_t) = forward(...)
    backward:  loop in the other direction: (dP_t, dRec_t) = backward(...);  dh_{t-1} += dRec_t W
               dW = sum_t dRec_t^T h_{t-1}   (one (K, T·B) x (T·B, H) product after the loop)
               dU, db, dxs from dP by the projection's own autodiff (large products too)

so the loops do only the small recurrent products and the gate arithmetic, which XLA's autodiff of a scan does
not manage: it accumulates dW inside the backward loop, one thin (K, B) x (B, H) product per step. Each loop
also fetches step t+1's inputs into the carry while step t computes ("prefetch"), because XLA:CPU emits slow
scalar code when a loop's per-step slice is fused into the gate arithmetic (measured: 52 -> 14 us per step of
an LSTM's gates at B=16, H=256).

For a float32 LSTM or reset-after GRU on the CPU the two loops themselves run natively (`rnn_jax.kernels`, through `jax.ffi`): one
call per loop instead of XLA's chain of small per-step kernels, same results (tested); `native=False` keeps
XLA's loop.

The result equals `hoisted_scan(cell, ...)` (tested, values and gradients, for every fusable cell). Cells without
a `fused` spec, parameters it does not support (the notes' GRU form), and runs with seq_lengths, mask, resets or
remat (or no steps) fall back to `hoisted_scan`, so `fused_scan` accepts everything the other runners do.

Example:
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

from rnn_jax import kernels, parallel, runners


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


def _previous_states(hs, first, reverse):
    """h_{t-1} of every step (T, B, H), given the loop's outputs and its initial state (B, H), for dW."""
    return jnp.concatenate([hs[1:], first[None]]) if reverse else jnp.concatenate([first[None], hs[:-1]])


def _native_loop(name, reverse):
    """The `(loop, loop_backward)` pair for `_fused_sequence` with `rnn_jax.kernels`' CPU kernel for cell `name`.

    `loop(W, elementwise, carry, projected, b) -> (final carry, hs, residuals)` (projected without the bias b,
    which the kernel adds; b may be None) and
    `loop_backward(W, elementwise, residuals, d_final, d_hs) -> (d_carry, d_elementwise, d_projected, d_rec, h_prev)`
    with d_projected, d_rec (T, *batch, K) and h_prev (T, *batch, H); batch dimensions are flattened to one for
    the kernel and restored after.
    """

    def lstm_loop(W, _, carry, projected, b):
        steps, batch_shape, hidden = projected.shape[0], carry.h.shape[:-1], W.shape[-1]
        flat = lambda a: a.reshape((-1, hidden))
        hs, cs, acts = kernels.lstm_forward(projected.reshape(steps, -1, 4 * hidden), W, flat(carry.h), flat(carry.c),
                                            b, reverse=reverse)
        last = 0 if reverse else steps - 1
        final = carry._replace(h=hs[last].reshape(carry.h.shape), c=cs[last].reshape(carry.c.shape))
        residuals = (acts, cs, flat(carry.c), _previous_states(hs, flat(carry.h), reverse))
        return final, hs.reshape((steps,) + batch_shape + (hidden,)), residuals

    def lstm_loop_backward(W, _, residuals, d_final, d_hs):
        acts, cs, c0, h_prev = residuals
        hidden = W.shape[-1]
        flat = lambda a: a.reshape((-1, hidden))
        d_pre, d_h0, d_c0 = kernels.lstm_backward(W, acts, cs, c0, d_hs.reshape(cs.shape), flat(d_final.h),
                                                  flat(d_final.c), reverse=reverse)
        d_carry = d_final._replace(h=d_h0.reshape(d_final.h.shape), c=d_c0.reshape(d_final.c.shape))
        d_pre = d_pre.reshape(d_hs.shape[:-1] + W.shape[:1])
        return d_carry, None, d_pre, d_pre, h_prev.reshape(d_hs.shape)

    def gru_loop(W, b_rg, carry, projected, b):
        steps, batch_shape, hidden = projected.shape[0], carry.h.shape[:-1], W.shape[-1]
        h0 = carry.h.reshape((-1, hidden))
        b_rg = jnp.zeros((hidden,), W.dtype) if b_rg is None else b_rg
        hs, acts = kernels.gru_forward(projected.reshape(steps, -1, 3 * hidden), W, b_rg, h0, b, reverse=reverse)
        final = carry._replace(h=hs[0 if reverse else steps - 1].reshape(carry.h.shape))
        return final, hs.reshape((steps,) + batch_shape + (hidden,)), (acts, hs, h0)

    def gru_loop_backward(W, b_rg, residuals, d_final, d_hs):
        acts, hs, h0 = residuals
        hidden = W.shape[-1]
        d_projected, d_rec, d_h0 = kernels.gru_backward(W, acts, hs, h0, d_hs.reshape(hs.shape),
                                                        d_final.h.reshape((-1, hidden)), reverse=reverse)
        lead = d_hs.shape[:-1]
        d_rec = d_rec.reshape(lead + W.shape[:1])
        d_b_rg = None if b_rg is None else d_rec[..., 2 * hidden:].sum(tuple(range(len(lead))))
        return (d_final._replace(h=d_h0.reshape(d_final.h.shape)), d_b_rg, d_projected.reshape(lead + W.shape[:1]),
                d_rec, _previous_states(hs, h0, reverse).reshape(d_hs.shape))

    return {"lstm": (lstm_loop, lstm_loop_backward), "gru": (gru_loop, gru_loop_backward)}[name]


@functools.lru_cache(maxsize=None)
def _fused_sequence(spec, unroll, reverse, has_bias, native=False):
    """The custom-VJP sequence function for one cell spec, unroll and direction:

    `(U (K, E), b (K,) or None, W (K, H_in), elementwise, carry, xs (T, *batch, E)) -> (final carry, hs)`.
    Products keep the time and batch axes apart where rows may be sharded over devices (`parallel.rows_product`),
    so each device works on its own batch rows; otherwise they are the plain 2-D products XLA:CPU runs fastest.
    """

    if native:
        native_loop, native_loop_backward = _native_loop(spec.native, reverse)

    def run(U, b, W, elementwise, carry, xs):
        # The native kernel adds b itself, saving XLA a pass over the (T, B, K) products.
        projected = xs @ U.T if b is None or native else xs @ U.T + b
        gate_shape = (W.shape[0],) if spec.num_gates is None else (spec.num_gates, W.shape[0] // spec.num_gates)
        projected = projected.reshape(xs.shape[:-1] + gate_shape)

        if native:
            final, hs, residuals = native_loop(W, elementwise, carry, projected, b)
            return (final, hs), (U, W, elementwise, None, residuals, xs)

        # h (B, H_in) x (H_in, K) runs faster in the loop than h x W^T (measured 1.1-1.9x per step); the barrier
        # keeps XLA from folding the transpose back into the product.
        W_t = jax.lax.optimization_barrier(W.T)

        def body(carry_prev, p):
            rec = (carry_prev.h @ W_t).reshape(p.shape)
            carry, h, residuals = spec.forward(elementwise, carry_prev, p, rec)
            return carry, (h, carry_prev, residuals)

        final, (hs, carries, residuals) = prefetch_scan(body, carry, projected, reverse=reverse, unroll=unroll)
        return (final, hs), (U, W, elementwise, carries, residuals, xs)

    def backward(saved, cotangents):
        U, W, elementwise, carries, residuals, xs = saved
        d_final, d_hs = cotangents
        if native:
            d_carry, d_elementwise, d_projected, d_rec, h_prev = native_loop_backward(
                W, elementwise, residuals, d_final, d_hs)
        else:
            d_carry, d_elementwise, d_projected, d_rec, h_prev = xla_loop_backward(
                W, elementwise, carries, residuals, d_final, d_hs)
        # Contracted over time and batch: (H_in, T·B) x (T·B, K) and (E, T·B) x (T·B, K), transposed after: faster
        # here than (K, T·B) x (T·B, H_in). When the two cotangents are one array (LSTM, Elman), one product over
        # [xs, h_prev] gives both: 4-5% faster train steps at `long` (H=256, T·B=8192), equal at the Zaremba sizes.
        if d_rec is d_projected:
            d_UW = parallel.rows_product(jnp.concatenate([xs, h_prev], axis=-1), d_projected).T
            d_U, d_W = d_UW[:, :xs.shape[-1]], d_UW[:, xs.shape[-1]:]
        else:
            d_W = parallel.rows_product(h_prev, d_rec).T
            d_U = parallel.rows_product(xs, d_projected).T
        d_b = d_projected.sum(tuple(range(xs.ndim - 1)))
        d_xs = d_projected @ U
        return d_U, d_b, d_W, d_elementwise, d_carry, d_xs

    def xla_loop_backward(W, elementwise, carries, residuals, d_final, d_hs):
        zero_elementwise = jax.tree.map(jnp.zeros_like, elementwise)

        def body(state, inputs):
            d_carry, d_elementwise = state
            carry_prev, step_residuals, d_h = inputs
            d_e, d_carry_prev, d_p, d_rec = spec.backward(elementwise, carry_prev, step_residuals, d_carry, d_h)
            d_rec_flat = d_rec.reshape(d_h.shape[:-1] + (-1,))
            d_carry_prev = d_carry_prev._replace(h=_add(d_carry_prev.h, d_rec_flat @ W))
            d_elementwise = jax.tree.map(jnp.add, d_elementwise, d_e) if elementwise is not None else None
            outputs = (d_p,) if d_p is d_rec else (d_p, d_rec_flat)
            return (d_carry_prev, d_elementwise), outputs

        (d_carry, d_elementwise), outputs = prefetch_scan(
            body, (d_final, zero_elementwise), (carries, residuals, d_hs), reverse=not reverse, unroll=unroll)
        lead = d_hs.shape[:-1]
        d_projected = outputs[0].reshape(lead + W.shape[:1])
        d_rec = d_projected if len(outputs) == 1 else outputs[1].reshape(lead + W.shape[:1])
        return d_carry, d_elementwise, d_projected, d_rec, carries.h

    def backward_for_bias(saved, cotangents):
        d_U, d_b, *rest = backward(saved, cotangents)
        return (d_U, d_b if has_bias else None, *rest)

    sequence = jax.custom_vjp(lambda U, b, W, elementwise, carry, xs: run(U, b, W, elementwise, carry, xs)[0])
    sequence.defvjp(run, backward_for_bias)
    return sequence


def fused_scan(cell, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
               time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
               resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None,
               native: bool = True):
    """Runs a cell over time with the fused forward/backward (see the module docstring).

    Args:
        cell: a cell object; fused when it has a `fused` spec that supports `params`, else `hoisted_scan` runs
            (`scan` for a cell without `project_inputs`).
        params, carry, xs, unroll, reverse, time_major: as in `rnn_jax.scan`; xs (*batch, T, E) or (T, *batch, E).
        seq_lengths, mask, resets, reset_carry, remat: as in `rnn_jax.scan`; any of them selects `hoisted_scan`.
        native: run the loop with the cell's native CPU kernel where there is one (`spec.native`, `rnn_jax.kernels`:
            the LSTM and the reset-after GRU, float32, CPU backend); False always runs the XLA loop. Both give the
            same results.

    Returns:
        (final carry, hs (*batch, T, H) or (T, *batch, H)), equal to `hoisted_scan(cell, ...)`.
    """
    spec = getattr(cell, "fused", None)
    options = dict(unroll=unroll, reverse=reverse, time_major=time_major, seq_lengths=seq_lengths, mask=mask,
                   resets=resets, reset_carry=reset_carry, remat=remat)
    if not hasattr(cell, "project_inputs"):
        return runners.scan(cell.step, params, carry, xs, **options)
    flags = (seq_lengths, mask, resets, remat)
    num_steps = xs.shape[0 if time_major else -2] if getattr(xs, "ndim", 0) >= 2 else None
    if spec is None or any(flag is not None for flag in flags) or not spec.supports(params) or num_steps == 0:
        return runners.hoisted_scan(cell, params, carry, xs, **options)
    runners._check_unroll(unroll)
    xs_tm = runners._to_time_major(xs, time_major)
    # The cell's own checks of params, carry and inputs, at trace time, on the first step's shapes.
    jax.eval_shape(cell.step, params, carry, xs_tm[0])
    use_native = (native and spec.native is not None and kernels.available(params.W.dtype)
                  and all(leaf.dtype == params.W.dtype for leaf in jax.tree.leaves(carry)))
    sequence = _fused_sequence(spec, unroll, reverse, params.b is not None, use_native)
    U = params.U.reshape(-1, params.U.shape[-1])  # gates stacked: (G, H, E) -> (G·H, E), a free reshape
    b = None if params.b is None else params.b.reshape(-1)
    W = params.W.reshape(-1, params.W.shape[-1])
    carry, hs = sequence(U, b, W, spec.elementwise_params(params), carry, xs_tm.astype(U.dtype))
    return carry, runners._from_time_major(hs, time_major)
