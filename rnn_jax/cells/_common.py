"""Pieces shared by the cells: parameter creation, boundary checks and the gate products.

Gated cells store each weight kind stacked along a leading gate axis: U of shape (G, H, E), W of shape
(G, H, H) and b of shape (G, H), so that `U[k]`, `W[k]`, `b[k]` are exactly the notes' per-gate matrices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax import _checks, precision
from rnn_jax import initializers as inits
from rnn_jax.cells.base import output_size, param_dtype  # noqa: F401  (output_size: re-exported)


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
        "Create the carry with initial_state(H, batch_shape, dtype) in the parameters' dtype (float32 for "
        "bfloat16 parameters: the state stays float32, see rnn_jax.precision).",
    )


def check_projected(cell: str, projected, tail: tuple, symbolic: str) -> None:
    _checks.check_rank_at_least(f"{cell} projected inputs", projected, len(tail), symbolic,
                                "Compute them with the same cell's project_inputs(params, x).")
    _checks.check_shape(f"{cell} projected inputs", projected, tuple(projected.shape[: projected.ndim - len(tail)]) + tail,
                        symbolic, "Compute them with the same cell's project_inputs(params, x).")


def project(U, b, x):
    """U x + b for every gate: (*batch, E) x (G, H, E) -> (*batch, G, H); also works without a gate axis."""
    out = precision.einsum("...e,he->...h" if U.ndim == 2 else "...e,ghe->...gh", x, U)
    return out if b is None else out + b


def recurrent(W, h):
    """W h for every gate: (*batch, H) x (G, H, H) -> (*batch, G, H)."""
    return precision.einsum("...k,hk->...h" if W.ndim == 2 else "...k,ghk->...gh", h, W)


def check_carry(cell: str, carry, carry_type: type, sizes: dict[str, int], batch_shape: tuple, dtype) -> None:
    """Checks a carry's type and each field's shape (*batch, size) and dtype (the parameters' state dtype:
    float32 for 16-bit parameters, `rnn_jax.precision.state_dtype`)."""
    dtype = precision.state_dtype(dtype)
    if not isinstance(carry, carry_type):
        fields = ", ".join(carry_type._fields)
        raise TypeError(f"{cell} carry must be a {carry_type.__name__}({fields}); got {type(carry).__name__}. "
                        f"Create it with the cell's initial_state(H, batch_shape).")
    for field, size in sizes.items():
        check_state(cell, field, getattr(carry, field), batch_shape, size, dtype)


class CellFunctions(NamedTuple):
    project_inputs: Any
    step_projected: Any
    step: Any


def cell_functions(*, name: str, module: str, params_types, carry_type: type, projected_tail,
                   check_params, carry_sizes, update, input_projection=None) -> CellFunctions:
    """Builds a cell's public `project_inputs`, `step_projected` and `step` around its `update` math.

    Every entry point checks its arguments (trace time only) and then calls the same `update`, so the fused
    and plain paths share one source of math.

    Args:
        name: the cell's display name in messages ("LSTM").
        module: its module name for "lstm.step"-style messages.
        params_types: the parameter NamedTuple type(s) it accepts.
        carry_type: its carry NamedTuple type.
        projected_tail: `f(params) -> tuple`, the trailing shape of projected inputs, e.g. (4, H).
        check_params: `f(params) -> (E, H)`, checking the parameter shapes.
        carry_sizes: `f(params) -> {field: size}` for the carry's fields.
        update: `f(params, carry, projected) -> (carry, h)`, the cell's equations.
        input_projection: `f(params, x) -> projected` (default U x + b for every gate).
    """
    input_projection = input_projection or (lambda params, x: project(params.U, params.b, x))

    def checked(params, where):
        _checks.check_params_type(params, params_types, f"{module}.{where}")
        return check_params(params)

    def project_inputs(params, x):
        E, _ = checked(params, "project_inputs")
        check_input(name, x, E)
        return input_projection(params, x.astype(param_dtype(params)))

    def step_projected(params, carry, projected):
        checked(params, "step_projected")
        tail = projected_tail(params)
        symbolic = "(*batch, " + ", ".join(map(str, tail)) + ")"
        check_projected(name, projected, tail, symbolic)
        check_carry(name, carry, carry_type, carry_sizes(params), tuple(projected.shape[: projected.ndim - len(tail)]),
                    param_dtype(params))
        return update(params, carry, projected)

    def step(params, carry, x):
        E, _ = checked(params, "step")
        check_input(name, x, E)
        check_carry(name, carry, carry_type, carry_sizes(params), tuple(x.shape[:-1]), param_dtype(params))
        return update(params, carry, input_projection(params, x.astype(param_dtype(params))))

    project_inputs.__doc__ = (f"Input products U x + b of the {name} for all gates at once: (*lead, E) -> "
                              f"(*lead, *gate_shape); `lead` may hold a time axis (the hoisted fast path).")
    step_projected.__doc__ = (f"One {name} step from `project_inputs(params, x_t)`: returns (new carry, h_t). "
                              "Equal to `step(params, carry, x_t)`.")
    step.__doc__ = (f"One {name} time step (the equations in the module docstring).\n\n"
                    f"    Args:\n        params: the cell's parameters from `init`.\n"
                    f"        carry: `{carry_type.__name__}` with batch shape `batch`, in the parameters' state dtype "
                    f"(float32 for bfloat16 parameters).\n"
                    f"        x: x_t of shape (*batch, E), floating (cast to the parameters' dtype).\n\n"
                    f"    Returns:\n        (new carry, h_t of shape (*batch, H)).\n")
    for fn, fn_name in ((project_inputs, "project_inputs"), (step_projected, "step_projected"), (step, "step")):
        fn.__name__ = fn.__qualname__ = fn_name
        fn.__module__ = f"rnn_jax.cells.{module}"
    return CellFunctions(project_inputs, step_projected, step)


def layer_norm(z, scale, bias=None, eps: float = 1e-5):
    """Layer normalisation over the last axis with gain `scale` (and optional `bias`)."""
    z32 = z.astype(jnp.promote_types(z.dtype, jnp.float32))  # bf16/f16 are normalised in f32, f64 stays f64
    mean = z32.mean(axis=-1, keepdims=True)
    var = jnp.square(z32 - mean).mean(axis=-1, keepdims=True)
    out = ((z32 - mean) * jax.lax.rsqrt(var + eps)).astype(z.dtype) * scale
    return out if bias is None else out + bias


class Cell:
    """A cell object assembled from functions, for cells that share a module (hashable by identity)."""

    def __init__(self, name: str, **members):
        self.__name__ = name
        for key, value in members.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"<cell {self.__name__}>"
