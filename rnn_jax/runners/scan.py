"""`scan`, the Python-`unrolled` loop and the `hoisted_scan` fast path.

All three share one signature and give the same results (tested equal):

    runner(cell_or_step, params, carry, xs, *, unroll=1, reverse=False, time_major=False, seq_lengths=None,
           mask=None, resets=None, reset_carry=None, remat=None) -> (final_carry, hs)

- cell_or_step: a cell (see `rnn_jax.cells.base`) or, for `scan` and `unrolled`, any step function
  `step(params, carry, x) -> (carry, h)`.
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

`hoisted_scan` computes the input products U x_t of every time step in one matrix product before the loop, so
the loop body only does the recurrent product; a cell without the hoisting hooks runs as `scan`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm, scan
    >>> params = lstm.init(jax.random.key(0), 10, 20)
    >>> xs = jnp.ones((4, 7, 10))                      # (B, T, E)
    >>> carry, hs = scan(lstm, params, lstm.initial_state(20, (4,)), xs)
    >>> hs.shape
    (4, 7, 20)
"""

from __future__ import annotations

from typing import Any

import jax

from rnn_jax.cells import base
from rnn_jax.runners import _fallback
from rnn_jax.runners._layout import (StepFn, _check_unroll, _from_time_major, _lax_loop, _python_loop, _run,
                                     _to_time_major)


def step_function(cell_or_step: Any) -> StepFn:
    """A cell's `step`, or the step function itself."""
    if base.is_cell(cell_or_step):
        return cell_or_step.step
    if callable(cell_or_step):
        return cell_or_step
    base.check_cell(cell_or_step, "the runner's first argument")
    raise AssertionError("unreachable: check_cell raised")


def scan(step: Any, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
         time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
         resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None):
    """Runs `step` over the time axis of `xs` with `jax.lax.scan`.

    Args:
        step: a cell (its `step` runs) or any function `step(params, carry, x_t) -> (carry, h_t)`.
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
    carry, hs = _run(_lax_loop, step_function(step), params, carry, xs_tm, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]), time_major=time_major,
                     mask=mask, resets=resets, reset_carry=reset_carry, remat=remat)
    return carry, _from_time_major(hs, time_major)


def unrolled(step: Any, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
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
    carry, hs = _run(_python_loop, step_function(step), params, carry, xs_tm, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]), time_major=time_major,
                     mask=mask, resets=resets, reset_carry=reset_carry)
    return carry, _from_time_major(hs, time_major)



def hoisted_scan(cell, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
                 time_major: bool = False, seq_lengths: jax.Array | None = None, mask: jax.Array | None = None,
                 resets: jax.Array | None = None, reset_carry=None, remat: int | str | None = None):
    """`scan` with the input products of all time steps computed in one matrix product before the loop.

    Args:
        cell: a cell; with `project_inputs(params, xs)` and `step_projected(params, carry, projected_t)` it is
            hoisted, without them it runs as `scan` (see `rnn_jax.runners._fallback`).
        params, carry, xs, unroll, reverse, time_major, seq_lengths, mask, resets, reset_carry, remat: as in
            `scan`.

    Returns:
        (final carry, hs), equal to `scan(cell, ...)`.
    """
    options = dict(unroll=unroll, reverse=reverse, time_major=time_major, seq_lengths=seq_lengths, mask=mask,
                   resets=resets, reset_carry=reset_carry, remat=remat)
    if _fallback.choose(cell, params, "hoisted") == "scan":
        return scan(cell.step, params, carry, xs, **options)
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    project = lambda inputs: cell.project_inputs(params, inputs)
    # With remat the product is hoisted per segment, so its (T, *batch, G, H) result is never stored whole.
    carry, hs = _run(_lax_loop, cell.step_projected, params, carry, xs_tm if remat else project(xs_tm),
                     unroll=unroll, reverse=reverse, seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]),
                     time_major=time_major, mask=mask, resets=resets, reset_carry=reset_carry, remat=remat,
                     prologue=project if remat else None)
    return carry, _from_time_major(hs, time_major)
