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


def _step_mask(seq_lengths, num_steps: int, batch_shape: tuple[int, ...]):
    """(T, *batch) bool array, True at valid steps; None when there is no padding."""
    if seq_lengths is None:
        return None
    seq_lengths = jnp.asarray(seq_lengths) if not isinstance(seq_lengths, jax.Array) else seq_lengths
    _checks.check_integer("seq_lengths", seq_lengths, "Pass the number of valid steps of each sequence as ints.")
    _checks.check_shape("seq_lengths", seq_lengths, batch_shape, f"(*batch={batch_shape})",
                        "Give one length per sequence, shaped like the batch axes of xs.")
    _checks.check_in_range("seq_lengths", seq_lengths, 0, num_steps,
                           f"Lengths count valid steps from the start, from 0 up to T={num_steps}.")
    return jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape)) < seq_lengths


def _masked(step: StepFn) -> StepFn:
    """Wraps a step so that invalid (padded) positions keep the old carry and output zeros."""

    def masked_step(params, carry, inputs):
        x, valid = inputs
        new_carry, h = step(params, carry, x)
        keep = lambda new, old: jnp.where(valid.reshape(valid.shape + (1,) * (new.ndim - valid.ndim)), new, old)
        new_carry = jax.tree.map(keep, new_carry, carry)
        return new_carry, jnp.where(valid[..., None], h, jnp.zeros_like(h))

    return masked_step


def _check_unroll(unroll) -> None:
    if not (unroll is True or (isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1)):
        raise ValueError(f"unroll must be a positive int or True (full unroll); got {unroll!r}")


def _run(loop, step, params, carry, xs_tm, *, unroll, reverse, seq_lengths, batch_shape):
    num_steps = jax.tree.leaves(xs_tm)[0].shape[0]
    mask = _step_mask(seq_lengths, num_steps, batch_shape)
    if mask is None:
        return loop(step, params, carry, xs_tm, unroll=unroll, reverse=reverse)
    return loop(_masked(step), params, carry, (xs_tm, mask), unroll=unroll, reverse=reverse)


def _lax_loop(step, params, carry, xs, *, unroll, reverse):
    return jax.lax.scan(lambda c, x: step(params, c, x), carry, xs, unroll=unroll, reverse=reverse)


def _python_loop(step, params, carry, xs, *, unroll, reverse):
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    order = range(num_steps - 1, -1, -1) if reverse else range(num_steps)
    outputs = [None] * num_steps
    for t in order:
        carry, outputs[t] = step(params, carry, jax.tree.map(lambda a: a[t], xs))
    return carry, jnp.stack(outputs)


def scan(step: StepFn, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
         time_major: bool = False, seq_lengths: jax.Array | None = None):
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

    Returns:
        (final carry, hs of shape (*batch, T, H) or (T, *batch, H)).
    """
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    carry, hs = _run(_lax_loop, step, params, carry, xs_tm, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]))
    return carry, _from_time_major(hs, time_major)


def unrolled(step: StepFn, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
             time_major: bool = False, seq_lengths: jax.Array | None = None):
    """Same as `scan`, as a Python loop over time traced into one graph (for scan-vs-unroll studies).

    The graph grows with T. `unroll` is accepted so the two runners are interchangeable; a Python loop is
    always fully unrolled.
    """
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    carry, hs = _run(_python_loop, step, params, carry, xs_tm, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]))
    return carry, _from_time_major(hs, time_major)


def hoisted_scan(cell, params, carry, xs: jax.Array, *, unroll: int | bool = 1, reverse: bool = False,
                 time_major: bool = False, seq_lengths: jax.Array | None = None):
    """`scan` with the input products of all time steps computed in one matrix product before the loop.

    Args:
        cell: an object with `project_inputs(params, xs)` and `step_projected(params, carry, projected_t)`
            (every cell module in rnn_jax has them).
        params, carry, xs, unroll, reverse, time_major, seq_lengths: as in `scan`.

    Returns:
        (final carry, hs), equal to `scan(cell.step, ...)`.
    """
    _check_unroll(unroll)
    xs_tm = _to_time_major(xs, time_major)
    projected = cell.project_inputs(params, xs_tm)
    carry, hs = _run(_lax_loop, cell.step_projected, params, carry, projected, unroll=unroll, reverse=reverse,
                     seq_lengths=seq_lengths, batch_shape=tuple(xs_tm.shape[1:-1]))
    return carry, _from_time_major(hs, time_major)


CellRunner = Callable[..., tuple[Any, jax.Array]]


def _scan_cell(cell, params, carry, xs, **kwargs):
    return scan(cell.step, params, carry, xs, **kwargs)


def _unrolled_cell(cell, params, carry, xs, **kwargs):
    return unrolled(cell.step, params, carry, xs, **kwargs)


RUNNERS: dict[str, CellRunner] = {"scan": _scan_cell, "unrolled": _unrolled_cell, "hoisted": hoisted_scan}


def get_runner(name: str) -> CellRunner:
    """A runner by name, taking a cell: `runner(cell, params, carry, xs, **scan_kwargs)`.

    Names: "scan" (`scan(cell.step, ...)`), "unrolled" (`unrolled(cell.step, ...)`) and "hoisted"
    (`hoisted_scan(cell, ...)`, the default of the language model).
    """
    try:
        return RUNNERS[name]
    except KeyError:
        raise ValueError(f"unknown runner {name!r}; expected one of {sorted(RUNNERS)}") from None
