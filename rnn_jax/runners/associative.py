"""`associative_scan`: every state of a state-linear cell from one parallel prefix scan over time.

For a cell whose update is linear in its state (its `linear` attribute, a `rnn_jax.cells.base.StateLinear`),

    s_t = a_t ⊙ s_{t-1} + b_t,        a_t, b_t from x_t alone,

the pairs compose associatively, (a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂), so `jax.lax.associative_scan` computes
every (A_t, B_t) = (a_1...a_t, the state reached from zero) in O(log T) depth, and s_t = A_t ⊙ s_0 + B_t. The
runner options map onto the coefficients exactly:

| option | where it applies | coefficients |
|---|---|---|
| `mask`, `seq_lengths` | step skipped | a = 1, b = 0 (the state passes through; the output is zeroed) |
| `resets` | carry reset to r before the step | a = 0, b = a_t r + b_t |
| `reverse` | | the scan runs over the flipped sequence; outputs stay aligned with xs |
| `remat=k` or "sqrt" | | a `lax.scan` over segments of k steps, each one associative scan, recomputed in the backward pass |
| `unroll` | with `remat` | the segment loop's unroll (without `remat` there is no sequential loop) |

`log_space=True` runs the form of Feng et al. 2024 ("Were RNNs All We Needed?") for cells that provide
`log_coefficients` (a non-negative state, e.g. minGRU, minLSTM): the pairs are combined as logarithms,
(α₁, β₁) ∘ (α₂, β₂) = (α₁ + α₂, logaddexp(β₁ + α₂, β₂)), so long products of small gates neither underflow nor
lose precision; the result is the same function (tested equal to `scan`).

A cell that is not state-linear is refused with an error naming the runners it can use.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import associative_scan, scan
    >>> from rnn_jax.cells import mingru
    >>> params = mingru.init(jax.random.key(0), 3, 5)
    >>> carry = mingru.initial_state(5, (2,))
    >>> xs = jax.random.normal(jax.random.key(1), (2, 8, 3))
    >>> _, parallel_hs = associative_scan(mingru, params, carry, xs)
    >>> _, sequential_hs = scan(mingru, params, carry, xs)
    >>> bool(jnp.allclose(parallel_hs, sequential_hs, atol=1e-6))
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells import base
from rnn_jax.errors import ConfigError
from rnn_jax.runners._layout import (_check_unroll, _from_time_major, _remat_segment, _step_mask, _time_major_flags,
                                     _to_time_major)

# exp(_LOG_ZERO) is 0 in every float type; a finite stand-in for log 0 keeps logaddexp's derivative finite.
_LOG_ZERO = -1e30


def linear_spec(cell) -> base.StateLinear:
    """The cell's `StateLinear` spec, or a ConfigError saying which runners fit it."""
    spec = base.state_linear(cell)
    if spec is None:
        name = (getattr(cell, "__name__", None) or type(cell).__name__).rsplit(".", 1)[-1]
        raise ConfigError(f"the associative runner needs a cell whose state update is linear in the state "
                          f"(s_t = a_t * s_(t-1) + b_t: minGRU, minLSTM, LRU, RG-LRU); {name} is not. Use runner "
                          "'scan', 'hoisted' or 'fused' for it.")
    return spec


def _expand(flags, like):
    return flags.reshape(flags.shape + (1,) * (like.ndim - flags.ndim))


def _linear_pairs(spec, params, projected, valid, reset, reset_state):
    a, b = spec.coefficients(params, projected)
    if reset is not None:
        at = _expand(reset, a)
        b = jnp.where(at, a * reset_state + b, b)
        a = jnp.where(at, jnp.zeros_like(a), a)
    if valid is not None:
        at = _expand(valid, a)
        skipped_a, skipped_b = jnp.ones_like(a), jnp.zeros_like(b)
        if reset is not None:  # a reset on a skipped step still resets
            skipped_a = jnp.where(_expand(reset, a), jnp.zeros_like(a), skipped_a)
            skipped_b = jnp.where(_expand(reset, b), jnp.broadcast_to(reset_state, b.shape).astype(b.dtype), skipped_b)
        a, b = jnp.where(at, a, skipped_a), jnp.where(at, b, skipped_b)
    return a, b


def _log_pairs(spec, params, projected, valid, reset, reset_state):
    log_a, log_b = spec.log_coefficients(params, projected)
    dtype = jnp.promote_types(log_a.dtype, jnp.float32)
    log_a, log_b = log_a.astype(dtype), log_b.astype(dtype)
    zero = jnp.full((), _LOG_ZERO, dtype)
    log_r = None if reset_state is None else jnp.log(reset_state.astype(dtype))
    if reset is not None:
        at = _expand(reset, log_a)
        if log_r is not None:
            log_b = jnp.where(at, jnp.logaddexp(log_a + log_r, log_b), log_b)
        log_a = jnp.where(at, zero, log_a)
    if valid is not None:
        at = _expand(valid, log_a)
        skipped_a, skipped_b = jnp.zeros_like(log_a), jnp.full_like(log_b, _LOG_ZERO)
        if reset is not None:
            skipped_a = jnp.where(_expand(reset, log_a), zero, skipped_a)
            if log_r is not None:
                skipped_b = jnp.where(_expand(reset, log_b), jnp.broadcast_to(log_r, log_b.shape), skipped_b)
        log_a, log_b = jnp.where(at, log_a, skipped_a), jnp.where(at, log_b, skipped_b)
    return log_a, log_b


def _compose_linear(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _compose_log(earlier, later):
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def _states(spec, params, state, projected, valid, reset, reset_state, log_space):
    """All states (T, *batch, S) of one stretch of steps, in processing order, from the state before it."""
    if log_space:
        log_a, log_b = jax.lax.associative_scan(
            _compose_log, _log_pairs(spec, params, projected, valid, reset, reset_state))
        states = jnp.exp(log_a) * state + jnp.exp(log_b)
    else:
        a, b = jax.lax.associative_scan(
            _compose_linear, _linear_pairs(spec, params, projected, valid, reset, reset_state))
        states = a * state + b
    return states.astype(jnp.result_type(state, states))


def _stretch(spec, cell, params, log_space, reset_state):
    """`f(state, (xs, valid, reset)) -> (last state, (hs, states))` over one stretch of time-major steps."""

    def run(state, inputs):
        xs, valid, reset = inputs
        projected = cell.project_inputs(params, xs)
        states = _states(spec, params, state, projected, valid, reset, reset_state, log_space)
        hs = spec.output(params, states, projected)
        if valid is not None:
            hs = jnp.where(_expand(valid, hs), hs, jnp.zeros_like(hs))
        return states[-1], hs

    return run


def _segmented(run, state, inputs, segment: int, unroll):
    """`run` over segments of `segment` steps in a `lax.scan`, each rematerialised in the backward pass."""
    xs, valid, reset = inputs
    num_steps = xs.shape[0]
    padded = -(-num_steps // segment) * segment
    valid = jnp.ones(xs.shape[:-1], bool) if valid is None else valid

    def pad(a):  # padded steps are skipped: the state passes through them
        return jnp.concatenate([a, jnp.zeros((padded - num_steps,) + a.shape[1:], a.dtype)])

    split = lambda a: None if a is None else pad(a).reshape((padded // segment, segment) + a.shape[1:])
    state, hs = jax.lax.scan(jax.checkpoint(run), state, (split(xs), split(valid), split(reset)), unroll=unroll)
    return state, hs.reshape((padded,) + hs.shape[2:])[:num_steps]


def associative_scan(cell, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
                     time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
                     resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None,
                     log_space: bool = False):
    """Runs a state-linear cell over time with a parallel prefix scan (see the module docstring).

    Args:
        cell: a cell with a `linear` spec (`rnn_jax.cells.base.StateLinear`) and hoisting hooks.
        params, carry, xs, reverse, time_major, seq_lengths, mask, resets, reset_carry: as in `rnn_jax.scan`;
            xs (*batch, T, E) or (T, *batch, E).
        unroll: the unroll of the loop over `remat` segments (accepted and unused without `remat`).
        remat: None (one scan over all T), k or "sqrt": segments of k (or about sqrt(T)) steps run in sequence,
            each a parallel scan recomputed in the backward pass, so peak memory follows k instead of T.
        log_space: combine the coefficients as logarithms (cells with `log_coefficients`; a non-negative state,
            and in log space `reset_carry` must be non-negative too).

    Returns:
        (final carry, hs (*batch, T, H) or (T, *batch, H)), equal to `scan(cell, ...)`.
    """
    spec = linear_spec(cell)
    if log_space and spec.log_coefficients is None:
        raise ConfigError(f"log_space=True needs a cell with log_coefficients (minGRU, minLSTM); "
                          f"{getattr(cell, '__name__', cell)!r} has none. Leave log_space False.")
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    # The cell's own checks of params, carry and inputs, at trace time, on one step's shapes.
    _, step_output = jax.eval_shape(cell.step, params, carry, jax.ShapeDtypeStruct(xs_tm.shape[1:], xs_tm.dtype))
    num_steps, batch_shape = xs_tm.shape[0], tuple(xs_tm.shape[1:-1])
    valid = _step_mask(seq_lengths, _time_major_flags("mask", mask, num_steps, batch_shape, time_major),
                       num_steps, batch_shape)
    reset = _time_major_flags("resets", resets, num_steps, batch_shape, time_major)
    reset_state = None if reset_carry is None else spec.state(reset_carry)
    if reset is not None and reset_state is None and not log_space:
        reset_state = jnp.zeros_like(spec.state(carry))
    flip = (lambda a: None if a is None else jnp.flip(a, 0)) if reverse else (lambda a: a)
    inputs = (flip(xs_tm.astype(base.param_dtype(params))), flip(valid), flip(reset))
    run = _stretch(spec, cell, params, log_space, reset_state)
    segment = _remat_segment(remat, num_steps)
    state = spec.state(carry)
    if segment is None or segment >= num_steps:
        final, hs = run(state, inputs) if num_steps else (state, None)
    else:
        final, hs = _segmented(run, state, inputs, segment, unroll)
    if hs is None:  # no steps: the carry passes through
        return carry, _from_time_major(jnp.zeros((0,) + step_output.shape, step_output.dtype), time_major)
    dtype = jax.tree.leaves(carry)[0].dtype
    return spec.carry(final, dtype), _from_time_major(flip(hs), time_major)
