"""Pieces shared by the state-linear cells (minGRU, minLSTM, RG-LRU, LRU): input-only gate weights, their checks,
the step built from a `StateLinear` spec, and the positive activation g of Feng et al. 2024.

These cells have no recurrent weight matrix: every gate reads x_t only, so the input weights are U (G, H, E) and
the biases b (G, H) in the project's notation, and a step is s_t = a_t ⊙ s_{t-1} + b_t.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax import initializers as inits
from rnn_jax.cells import _common, base
from rnn_jax.cells._common import HiddenState, check_sizes


def init_gates(key, num_gates: int, input_size: int, hidden_size: int, *, use_bias: bool, dtype, initializer,
               init_scale):
    """(U (G, H, E), b (G, H) or None) from the named scheme's input and bias initialisers."""
    check_sizes(input_size, hidden_size)
    scheme = inits.resolve(initializer, hidden_size, init_scale)
    key_u, key_b = jax.random.split(key)
    U = scheme.input(key_u, (num_gates, hidden_size, input_size), dtype)
    b = scheme.bias(key_b, (num_gates, hidden_size), dtype) if use_bias else None
    return U, b


def check_gates(cell: str, U, b, num_gates: int, gate_names: str) -> tuple[int, int]:
    """Checks U (G, H, E) and b (G, H) or None; returns (E, H)."""
    fix = f"Create parameters with the {cell} cell's `init`."
    _checks.check_rank_at_least(f"{cell} U (input weights)", U, 3, f"({num_gates}, H, E)", fix)
    H, E = U.shape[-2:]
    _checks.check_shape(f"{cell} U (input weights, gates {gate_names}, each H x E)", U, (num_gates, H, E),
                        f"({num_gates}, H, E)", fix)
    _checks.check_floating(f"{cell} U", U, "Parameters must be floating point.")
    if b is not None:
        _checks.check_shape(f"{cell} b (biases, gates {gate_names})", b, (num_gates, H), f"({num_gates}, H={H})", fix)
        _checks.check_same_dtype(f"{cell} b", b, U.dtype, "Cast every parameter to one dtype.")
    return E, H


def hidden_state_of(carry: HiddenState) -> jax.Array:
    return carry.h


def hidden_carry(state: jax.Array, dtype) -> HiddenState:
    return HiddenState(h=state.astype(dtype))


def state_output(params, state, projected):
    """h_t = s_t: the output of cells whose state is their output."""
    return state


def update(spec: base.StateLinear):
    """The cell's step from its spec: s_t = a_t ⊙ s_{t-1} + b_t, h_t = output(s_t) (one source of math)."""

    def cell_update(params, carry, projected):
        a, b = spec.coefficients(params, projected)
        state = a * spec.state(carry) + b
        return spec.carry(state, jax.tree.leaves(carry)[0].dtype), spec.output(params, state, projected)

    return cell_update


def hidden_state_cell(*, name: str, module: str, params_type: type, gates: tuple[str, ...], coefficients,
                      log_coefficients=None, check_params=None):
    """(`linear` spec, project_inputs, step_projected, step) of a cell whose state is its output h (carry
    `HiddenState`) and whose gates read U (G, H, E) and b (G, H): what minGRU, minLSTM and RG-LRU share.

    `check_params` defaults to `check_gates` over U and b.
    """
    spec = base.StateLinear(coefficients=coefficients, output=state_output, state=hidden_state_of,
                            carry=hidden_carry, log_coefficients=log_coefficients)
    check = check_params or (lambda p: check_gates(name, p.U, p.b, len(gates), ", ".join(gates)))
    functions = _common.cell_functions(
        name=name, module=module, params_types=params_type, carry_type=HiddenState,
        projected_tail=lambda p: (len(gates), p.U.shape[-2]), check_params=check,
        carry_sizes=lambda p: {"h": p.U.shape[-2]}, update=update(spec))
    return (spec, *functions)


def positive(v: jax.Array) -> jax.Array:
    """g(v) = v + 1/2 for v ≥ 0, σ(v) below: positive and continuous, so a state built from it stays positive."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def log_positive(v: jax.Array) -> jax.Array:
    """log g(v), computed without forming g(v) for very negative v."""
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))
