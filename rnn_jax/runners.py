"""Running a cell over time: `scan`, the Python-`unrolled` loop, and the `hoisted_scan` fast path.

All three share one signature and give the same results (tested equal):

    runner(step_or_cell, params, carry, xs, *, unroll=1, reverse=False, time_major=False, seq_lengths=None)
        -> (final_carry, hs)

- xs: (*batch, T, E) batch-major (default) or (T, *batch, E) with time_major=True; hs has the same layout
  with H in place of E.
- reverse: process t = T-1, ..., 0; hs stays aligned with xs (hs[t] is the output for xs[t]).
- seq_lengths: int array of shape batch (right padding): steps t >= length leave the carry unchanged and give
  a zero output, so the final carry is each sequence's carry at its last valid step (with reverse=True, the
  padded tail is skipped first and the run ends at t = 0).

- mask: (*batch, T) bool (or (T, *batch) with time_major): False steps leave the carry unchanged and give zero
  outputs, anywhere in the sequence; combined with seq_lengths when both are given.
- resets: (*batch, T) bool: where True, the carry is reset to `reset_carry` (default zeros) before that step,
  as Haiku's `ResetCore` does for episodes packed into one sequence.
- remat (`scan`, `hoisted_scan`): recompute instead of storing activations, per segment of k steps (an int)
  or of about sqrt(T) steps ("sqrt"); gradients are unchanged, peak memory of the backward pass falls.

`scan` and `unrolled` take any step function `step(params, carry, x) -> (carry, h)`; `hoisted_scan` takes a
cell object with `project_inputs` and `step_projected` and computes the input products U x_t of every time
step in one matrix product before the loop, so the loop body only does the recurrent product.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm, scan
    >>> params = lstm.init(jax.random.key(0), 10, 20)
    >>> xs = jnp.ones((4, 7, 10))                      # (B, T, E)
    >>> carry, hs = scan(lstm.step, params, lstm.initial_state(20, (4,)), xs)
    >>> hs.shape
    (4, 7, 20)
"""

from __future__ import annotations

import functools

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rnn_jax import _checks

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]


def _to_time_major(xs: jax.Array, time_major: bool) -> jax.Array:
    _checks.check_rank_at_least(
        "xs (the input sequence)", xs, 2, "(T, *batch, E) with time_major=True, else (*batch, T, E)",
        "Pass a sequence with a time axis; for one step use the cell's step function.")
    _checks.check_floating("xs (the input sequence)", xs)
    return xs if time_major else jnp.moveaxis(xs, -2, 0)


def _from_time_major(hs: jax.Array, time_major: bool) -> jax.Array:
    return hs if time_major else jnp.moveaxis(hs, 0, -2)


def _time_major_flags(name: str, flags, num_steps: int, batch_shape: tuple[int, ...], time_major: bool):
    """A (*batch, T) or (T, *batch) bool array as (T, *batch); None passes through."""
    if flags is None:
        return None
    flags = jnp.asarray(flags)
    expected = (num_steps,) + batch_shape if time_major else batch_shape + (num_steps,)
    layout = "(T, *batch)" if time_major else "(*batch, T)"
    _checks.check_shape(name, flags, expected, layout,
                        "Give one flag per sequence and time step, laid out like xs without its feature axis.")
    if flags.dtype != jnp.bool_:
        raise _checks.DTypeError(f"{name} must be a bool array; got {flags.dtype}. Use e.g. `{name} != 0`.")
    return flags if time_major else jnp.moveaxis(flags, -1, 0)


def _step_mask(seq_lengths, mask, num_steps: int, batch_shape: tuple[int, ...]):
    """(T, *batch) bool array, True at valid steps; None when every step is valid."""
    valid = mask
    if seq_lengths is not None:
        seq_lengths = jnp.asarray(seq_lengths) if not isinstance(seq_lengths, jax.Array) else seq_lengths
        _checks.check_integer("seq_lengths", seq_lengths, "Pass the number of valid steps of each sequence as ints.")
        _checks.check_shape("seq_lengths", seq_lengths, batch_shape, f"(*batch={batch_shape})",
                            "Give one length per sequence, shaped like the batch axes of xs.")
        _checks.check_in_range("seq_lengths", seq_lengths, 0, num_steps,
                               f"Lengths count valid steps from the start, from 0 up to T={num_steps}.")
        by_length = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape)) < seq_lengths
        valid = by_length if valid is None else jnp.logical_and(valid, by_length)
    return valid


def _broadcast_flag(flag, like):
    return flag.reshape(flag.shape + (1,) * (like.ndim - flag.ndim))


def _with_flags(step: StepFn, reset_carry) -> StepFn:
    """Wraps a step for inputs (x, valid, reset): resets the carry first, then freezes it where not valid."""

    def flagged_step(params, carry, inputs):
        x, valid, reset = inputs
        if reset is not None:
            carry = jax.tree.map(lambda init, c: jnp.where(_broadcast_flag(reset, c), init, c), reset_carry, carry)
        new_carry, h = step(params, carry, x)
        if valid is None:
            return new_carry, h
        new_carry = jax.tree.map(lambda new, old: jnp.where(_broadcast_flag(valid, new), new, old), new_carry, carry)
        return new_carry, jnp.where(valid[..., None], h, jnp.zeros_like(h))

    return flagged_step


def _check_unroll(unroll) -> None:
    if not (unroll is True or (isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1)):
        raise ValueError(f"unroll must be a positive int or True (full unroll); got {unroll!r}")


def _remat_segment(remat, num_steps: int) -> int | None:
    if remat is None:
        return None
    if remat == "sqrt":
        return max(1, math.ceil(math.sqrt(num_steps)))
    if isinstance(remat, int) and not isinstance(remat, bool) and remat >= 1:
        return remat
    raise ValueError(f"remat must be None, a positive int (steps per segment) or 'sqrt'; got {remat!r}")


def _run(loop, step, params, carry, xs_tm, *, unroll, reverse, seq_lengths, batch_shape, time_major,
         mask=None, resets=None, reset_carry=None, remat=None, prologue=None):
    num_steps = jax.tree.leaves(xs_tm)[0].shape[0]
    valid = _step_mask(seq_lengths, _time_major_flags("mask", mask, num_steps, batch_shape, time_major),
                       num_steps, batch_shape)
    reset = _time_major_flags("resets", resets, num_steps, batch_shape, time_major)
    segment = _remat_segment(remat, num_steps)
    if segment is not None and segment < num_steps and num_steps % segment:
        # Pad to whole segments with masked steps: they leave the carry alone and are cut off afterwards.
        padded = -(-num_steps // segment) * segment
        pad = lambda a: jnp.concatenate([a, jnp.zeros((padded - num_steps,) + a.shape[1:], a.dtype)])
        valid = jnp.ones((num_steps,) + batch_shape, bool) if valid is None else valid
        xs_tm, valid = jax.tree.map(pad, xs_tm), pad(valid)
        reset = None if reset is None else pad(reset)
    if valid is None and reset is None:
        carry, hs = loop(step, params, carry, xs_tm, unroll=unroll, reverse=reverse, segment=segment,
                         prologue=prologue)
    else:
        if reset is not None and reset_carry is None:
            reset_carry = jax.tree.map(jnp.zeros_like, carry)
        flagged_prologue = None if prologue is None else (lambda inputs: (prologue(inputs[0]),) + inputs[1:])
        carry, hs = loop(_with_flags(step, reset_carry), params, carry, (xs_tm, valid, reset), unroll=unroll,
                         reverse=reverse, segment=segment, prologue=flagged_prologue)
    return carry, hs[:num_steps]


def _lax_loop(step, params, carry, xs, *, unroll, reverse, segment=None, prologue=None):
    """lax.scan of `step`; with `segment`, an outer scan over checkpointed segments of that many steps, each
    first mapping its inputs through `prologue` (the hoisted input product, recomputed in the backward pass)."""
    body = lambda c, x: step(params, c, x)
    prologue = prologue or (lambda inputs: inputs)
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    if segment is None or segment >= num_steps:
        return jax.lax.scan(body, carry, prologue(xs), unroll=unroll, reverse=reverse)
    segments = jax.tree.map(lambda a: a.reshape((num_steps // segment, segment) + a.shape[1:]), xs)

    @jax.checkpoint
    def run_segment(c, segment_xs):
        return jax.lax.scan(body, c, prologue(segment_xs), unroll=unroll, reverse=reverse)

    carry, hs = jax.lax.scan(run_segment, carry, segments, reverse=reverse)
    return carry, hs.reshape((num_steps,) + hs.shape[2:])


def _python_loop(step, params, carry, xs, *, unroll, reverse, segment=None, prologue=None):
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    order = range(num_steps - 1, -1, -1) if reverse else range(num_steps)
    outputs = [None] * num_steps
    for t in order:
        carry, outputs[t] = step(params, carry, jax.tree.map(lambda a: a[t], xs))
    return carry, jnp.stack(outputs)


def scan(step: StepFn, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
         time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
         resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None):
    """Runs `step` over the time axis of `xs` with `jax.lax.scan`.

    Args:
        step: any function `step(params, carry, x_t) -> (carry, h_t)`, e.g. `rnn_jax.lstm.step`.
        params: the step's parameters.
        carry: initial carry with batch shape `batch`.
        xs: (*batch, T, E), or (T, *batch, E) with time_major=True.
        unroll: steps per loop iteration passed to `lax.scan` (an int >= 1, or True for all).
        reverse: run from the last step to the first; outputs stay aligned with inputs.
        time_major: whether time is the first axis of xs and hs.
        seq_lengths: optional (*batch,) ints in [0, T] for right-padded sequences.
        mask: optional (*batch, T) bool; False steps freeze the carry and output zeros.
        resets: optional (*batch, T) bool; True resets the carry to `reset_carry` before that step.
        reset_carry: the carry to reset to (default zeros), shaped like `carry`.
        remat: None, k (rematerialise segments of k steps) or "sqrt".

    Returns:
        (final carry, hs of shape (*batch, T, H) or (T, *batch, H)).
    """
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    carry, hs = _run(_lax_loop, step, params, carry, xs_tm, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]), time_major=time_major,
                     mask=mask, resets=resets, reset_carry=reset_carry, remat=remat)
    return carry, _from_time_major(hs, time_major)


def unrolled(step: StepFn, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
             time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
             resets: jax.Array | None = None, reset_carry=None, remat: None = None):
    """Same as `scan`, as a Python loop over time traced into one graph (for scan-vs-unroll studies).

    The graph grows with T. `unroll` is accepted so the two runners are interchangeable; a Python loop is
    always fully unrolled. `remat` is not available here (a Python loop has no segments to rematerialise).
    """
    _check_unroll(unroll)
    if remat is not None:
        raise ValueError("remat is available in scan and hoisted_scan, not in the unrolled runner")
    xs_tm = _to_time_major(xs, time_major)
    carry, hs = _run(_python_loop, step, params, carry, xs_tm, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]), time_major=time_major,
                     mask=mask, resets=resets, reset_carry=reset_carry)
    return carry, _from_time_major(hs, time_major)


def hoisted_scan(cell, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
                 time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
                 resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None):
    """`scan` with the input products of all time steps computed in one matrix product before the loop.

    Args:
        cell: an object with `project_inputs(params, xs)` and `step_projected(params, carry, projected_t)`
            (every cell module in rnn_jax has them).
        params, carry, xs, unroll, reverse, time_major, seq_lengths, mask, resets, reset_carry, remat: as in
            `scan`.

    Returns:
        (final carry, hs), equal to `scan(cell.step, ...)`.
    """
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    project = lambda inputs: cell.project_inputs(params, inputs)
    # With remat the product is hoisted per segment, so its (T, *batch, G, H) result is never stored whole.
    carry, hs = _run(_lax_loop, cell.step_projected, params, carry, xs_tm if remat else project(xs_tm),
                     unroll=unroll, reverse=reverse, seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]),
                     time_major=time_major, mask=mask, resets=resets, reset_carry=reset_carry, remat=remat,
                     prologue=project if remat else None)
    return carry, _from_time_major(hs, time_major)


CellRunner = Callable[..., tuple[Any, jax.Array]]


def _scan_cell(cell, params, carry, xs, **kwargs):
    return scan(cell.step, params, carry, xs, **kwargs)


def _unrolled_cell(cell, params, carry, xs, **kwargs):
    return unrolled(cell.step, params, carry, xs, **kwargs)


RUNNERS: dict[str, CellRunner] = {"scan": _scan_cell, "unrolled": _unrolled_cell, "hoisted": hoisted_scan}


def get_runner(name: str) -> CellRunner:
    """A runner by name, taking a cell: `runner(cell, params, carry, xs, **scan_kwargs)`.

    Names: "scan" (`scan(cell.step, ...)`), "unrolled" (`unrolled(cell.step, ...)`), "hoisted"
    (`hoisted_scan(cell, ...)`), "fused" (`rnn_jax.fused.fused_scan(cell, ...)`, the default of the language
    model, with the native CPU loop kernel where there is one) and "fused_xla" (the same with XLA's loop always).
    """
    if name in ("fused", "fused_xla"):
        from rnn_jax.fused import fused_scan  # that module builds on this one

        return fused_scan if name == "fused" else functools.partial(fused_scan, native=False)
    try:
        return RUNNERS[name]
    except KeyError:
        raise ValueError(f"unknown runner {name!r}; expected one of {sorted(RUNNERS) + ['fused', 'fused_xla']}") from None
