"""Pieces shared by the cells: parameter creation, boundary checks and the gate products.

Gated cells store each weight kind stacked along a leading gate axis: U of shape (G, H, E), W of shape
(G, H, H) and b of shape (G, H), so that `U[k]`, `W[k]`, `b[k]` are exactly the notes' per-gate matrices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax import initializers as inits


class HiddenState(NamedTuple):
    """Carry of the single-state cells (GRU, Elman): the hidden state h of shape (*batch, H)."""

    h: jax.Array


def check_sizes(input_size: int, hidden_size: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")


def init_weights(key, num_gates, input_size, hidden_size, *, use_bias, dtype, initializer, init_scale):
    """Creates (W, U, b) with shapes (G, H, H), (G, H, E), (G, H) (G=None drops the gate axis)."""
    check_sizes(input_size, hidden_size)
    scheme = inits.resolve(initializer, hidden_size, init_scale)
    gate = () if num_gates is None else (num_gates,)
    key_w, key_u, key_b = jax.random.split(key, 3)
    W = scheme.recurrent(key_w, gate + (hidden_size, hidden_size), dtype)
    U = scheme.input(key_u, gate + (hidden_size, input_size), dtype)
    b = scheme.bias(key_b, gate + (hidden_size,), dtype) if use_bias else None
    return W, U, b, scheme


def check_weights(cell: str, W, U, b, num_gates: int | None, gate_names: str) -> tuple[int, int]:
    """Checks the notes' shapes U (H, E), W (H, H), b (H,) for every gate; returns (E, H)."""
    gate = () if num_gates is None else (num_gates,)
    gsym = "" if num_gates is None else f"{num_gates}, "
    each = "" if num_gates is None else f" (gates {gate_names}, each"
    _checks.check_rank_at_least(f"{cell} W (recurrent weights)", W, len(gate) + 2, f"({gsym}H, H)",
                                "Create parameters with the cell's `init`.")
    H = W.shape[-1]
    fix = "Create parameters with the cell's `init`, or check the converter that built them."
    _checks.check_shape(f"{cell} W (recurrent weights{each} H x H))", W, gate + (H, H), f"({gsym}H, H)", fix)
    _checks.check_rank_at_least(f"{cell} U (input weights)", U, len(gate) + 2, f"({gsym}H, E)", fix)
    E = U.shape[-1]
    _checks.check_shape(f"{cell} U (input weights{each} H x E))", U, gate + (H, E), f"({gsym}H={H}, E)",
                        "W and U disagree on the hidden size H. " + fix)
    if b is not None:
        _checks.check_shape(f"{cell} b (bias{each} H))", b, gate + (H,), f"({gsym}H={H})", fix)
        _checks.check_same_dtype(f"{cell} b", b, W.dtype, "Cast every parameter to one dtype.")
    _checks.check_floating(f"{cell} W", W, "Parameters must be floating point.")
    _checks.check_same_dtype(f"{cell} U", U, W.dtype, "Cast every parameter to one dtype.")
    return E, H


def check_input(cell: str, x, E: int):
    """Checks that x has shape (*batch, E) and a floating dtype."""
    _checks.check_rank_at_least(f"{cell} input x", x, 1, "(*batch, E)",
                                "Pass one time step of shape (*batch, E); use rnn_jax.scan for sequences.")
    _checks.check_floating(f"{cell} input x", x)
    _checks.check_shape(f"{cell} input x", x, tuple(x.shape[:-1]) + (E,), "(*batch, E)",
                        f"The parameters were created for input_size E={E}; the input's last axis must match.")


def check_state(cell: str, field: str, value, batch_shape: tuple, H: int, dtype: Any) -> None:
    _checks.check_shape(
        f"{cell} carry.{field}", value, batch_shape + (H,), f"(*batch={batch_shape}, H={H})",
        f"The carry must match the input's batch shape {batch_shape} and the hidden size H={H}: "
        f"create it with initial_state({H}, batch_shape={batch_shape}, dtype=...).",
    )
    _checks.check_same_dtype(
        f"{cell} carry.{field}", value, dtype,
        f"Create the carry with initial_state(H, batch_shape, dtype=params.W.dtype).",
    )


def check_projected(cell: str, projected, tail: tuple, symbolic: str) -> None:
    _checks.check_rank_at_least(f"{cell} projected inputs", projected, len(tail), symbolic,
                                "Compute them with the same cell's project_inputs(params, x).")
    _checks.check_shape(f"{cell} projected inputs", projected, tuple(projected.shape[: projected.ndim - len(tail)]) + tail,
                        symbolic, "Compute them with the same cell's project_inputs(params, x).")


def project(U, b, x):
    """U x + b for every gate: (*batch, E) x (G, H, E) -> (*batch, G, H); also works without a gate axis."""
    if U.ndim == 2:
        out = x @ U.T
    else:
        out = jnp.einsum("...e,ghe->...gh", x, U)
    return out if b is None else out + b


def recurrent(W, h):
    """W h for every gate: (*batch, H) x (G, H, H) -> (*batch, G, H)."""
    if W.ndim == 2:
        return h @ W.T
    return jnp.einsum("...k,ghk->...gh", h, W)
