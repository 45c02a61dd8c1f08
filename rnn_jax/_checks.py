"""Boundary checks shared by every public entry point.

The checks run at trace time (shapes and dtypes are static), so under `jax.jit` they cost nothing per step.
They wrap chex assertions and re-raise with a message that names the expected and received values and the
likely fix; `chex.disable_asserts()` turns them off together with chex's own.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np


class ShapeError(ValueError):
    """An array's shape does not match what the equations need."""


class DTypeError(TypeError):
    """An array's dtype cannot be used where it was passed."""


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def check_shape(name: str, array: Any, expected: Sequence[int | None], symbolic: str, fix: str) -> None:
    """Raises `ShapeError` unless `array.shape` equals `expected` (None matches any size)."""
    shape = getattr(array, "shape", None)
    if shape is None:
        raise ShapeError(f"{name} must be an array of shape {symbolic} = {_fmt(expected)}; got {type(array).__name__}. {fix}")
    try:
        chex.assert_shape(array, tuple(expected))
    except AssertionError:
        raise ShapeError(
            f"{name} must have shape {symbolic} = {_fmt(expected)}; got {tuple(shape)}. {fix}"
        ) from None


def check_rank_at_least(name: str, array: Any, rank: int, symbolic: str, fix: str) -> None:
    shape = getattr(array, "shape", None)
    if shape is None or len(shape) < rank:
        got = "a non-array " + type(array).__name__ if shape is None else f"shape {tuple(shape)} (rank {len(shape)})"
        raise ShapeError(f"{name} must have at least rank {rank}, {symbolic}; got {got}. {fix}")


def check_floating(name: str, array: Any, fix: str = "") -> None:
    dtype = jnp.result_type(array)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise DTypeError(
            f"{name} must be a floating-point array (float32, bfloat16, float16 or float64); got {dtype}. "
            + (fix or "Embed integer tokens first (an embedding lookup), or cast with x.astype(jnp.float32).")
        )


def check_integer(name: str, array: Any, fix: str = "") -> None:
    dtype = jnp.result_type(array)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise DTypeError(f"{name} must be an integer array; got {dtype}. {fix}")


def check_same_dtype(name: str, array: Any, expected: Any, fix: str) -> None:
    got = jnp.result_type(array)
    if got != jnp.dtype(expected):
        raise DTypeError(f"{name} must have dtype {jnp.dtype(expected)} (the parameters' dtype); got {got}. {fix}")


def check_params_type(params: Any, expected: type | tuple[type, ...], where: str) -> None:
    if not isinstance(params, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise TypeError(
            f"{where} expects {names}; got {type(params).__name__}. Pass the parameters created by the same "
            f"cell's `init` (a step function only accepts its own cell's parameter tree)."
        )


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a tracer), so value checks such as ranges can run."""
    return not isinstance(x, jax.core.Tracer)


def check_in_range(name: str, array: Any, low: int, high: int, fix: str) -> None:
    """Raises `ValueError` if a concrete integer array has a value outside [low, high]; tracers pass through."""
    if not is_concrete(array):
        return
    values = np.asarray(array)
    if values.size == 0:
        return
    lo, hi = values.min(), values.max()
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name} must lie in [{low}, {high}]; got a value {bad} (min {lo}, max {hi}). {fix}")
