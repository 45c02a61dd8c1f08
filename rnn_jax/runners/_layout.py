"""Sequence layout shared by the runners: time-major conversion, lengths/masks/resets as per-step flags, remat
segments, and the two loops (`lax.scan` and a Python loop) that every runner drives."""

from __future__ import annotations

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
