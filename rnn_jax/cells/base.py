"""The cell contract: what a recurrent cell provides, and what generic code may assume of it.

A cell is any object (a module, a class instance) with three functions over pytrees of arrays:

    init(key, input_size, hidden_size, **options) -> params
    initial_state(hidden_size, batch_shape=(), dtype=jnp.float32) -> carry
    step(params, carry, x) -> (carry, h)            x (*batch, E) -> h (*batch, H)

That is enough for every runner (`scan`, `unrolled`, `hoisted_scan`, `fused_scan`), `Stacked`, `Bidirectional`,
the Flax Linen and NNX modules and the language model. Optional hooks make it faster:

- hoisting, `project_inputs(params, xs) -> projected` and `step_projected(params, carry, projected_t)`: the
  input products of every time step in one matrix product before the loop (`hoisted_scan`);
- a fused spec, `fused: FusedSpec`: the step split into the input product, one recurrent product (the
  `Recurrence` hook: dense, diagonal or the cell's own) and elementwise math with a hand-written derivative
  (`fused_scan`); `FusedSpec.native` names a native loop kernel computing the same;
- a state-linear spec, `linear: StateLinear`, for cells whose state update is linear in the state,
  s_t = a_t ⊙ s_{t-1} + b_t with a_t, b_t computed from x_t alone: every s_t then comes from one parallel prefix
  scan over time (`associative_scan`), O(log T) deep instead of T sequential steps.

A cell may also define `output_size(hidden_size)` (the size of h when it differs from H, e.g. LSTMP) and
`recurrent_weights`, the names of its parameter fields that are recurrent weight matrices (("W",) for the LSTM;
weight drop, `rnn_jax.regularisers.weight_drop`, masks those). Generic code reads nothing else: parameter and
carry fields are the cell's own business, and sizes and dtypes are read from shapes (`param_dtype`).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import base, lstm
    >>> base.is_cell(lstm), base.can_hoist(lstm)
    (True, True)
    >>> base.param_dtype(lstm.init(jax.random.key(0), 3, 4))
    dtype('float32')
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from rnn_jax import parallel, precision


@runtime_checkable
class Cell(Protocol):
    """The required part of the contract (see the module docstring)."""

    def init(self, key: jax.Array, input_size: int, hidden_size: int, **options) -> Any: ...

    def initial_state(self, hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Any: ...

    def step(self, params: Any, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]: ...


@runtime_checkable
class HoistableCell(Cell, Protocol):
    """A cell with the hoisting hooks: `step(p, c, x) == step_projected(p, c, project_inputs(p, x))`."""

    def project_inputs(self, params: Any, x: jax.Array) -> jax.Array: ...

    def step_projected(self, params: Any, carry: Any, projected: jax.Array) -> tuple[Any, jax.Array]: ...


REQUIRED = ("init", "initial_state", "step")


def is_cell(obj: Any) -> bool:
    """Whether `obj` has the contract's required functions."""
    return all(callable(getattr(obj, name, None)) for name in REQUIRED)


def check_cell(obj: Any, where: str = "cell") -> Any:
    """Returns `obj` if it is a cell, else raises a TypeError naming what is missing."""
    missing = [name for name in REQUIRED if not callable(getattr(obj, name, None))]
    if missing:
        raise TypeError(f"{where} must be a cell with init, initial_state and step (see rnn_jax.cells.base); "
                        f"{obj!r} lacks {', '.join(missing)}. Pass a cell object such as rnn_jax.lstm, or a "
                        "registered name.")
    return obj


def can_hoist(cell: Any) -> bool:
    """Whether the cell has the hoisting hooks (`project_inputs`, `step_projected`)."""
    return callable(getattr(cell, "project_inputs", None)) and callable(getattr(cell, "step_projected", None))


def fused_spec(cell: Any, params: Any) -> "FusedSpec | None":
    """The cell's fused spec if it has one that supports these parameters, else None."""
    spec = getattr(cell, "fused", None)
    return spec if spec is not None and spec.supports(params) else None


def param_dtype(params: Any) -> jnp.dtype:
    """The dtype a cell computes in: that of the first floating leaf of its parameters."""
    for leaf in jax.tree.leaves(params):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return jnp.result_type(leaf)
    raise TypeError(f"the parameters hold no floating-point array (got {type(params).__name__}); create them with "
                    "the cell's init")


def state_dtype(params: Any) -> jnp.dtype:
    """The dtype of a cell's carry for these parameters: float32 for 16-bit parameters (their products take
    16-bit operands, the state stays float32; `rnn_jax.precision`), else the parameters' own."""
    return precision.state_dtype(param_dtype(params))


def state_linear(cell: Any) -> "StateLinear | None":
    """The cell's state-linear spec, or None for a cell whose update is not linear in its state."""
    spec = getattr(cell, "linear", None)
    return spec if isinstance(spec, StateLinear) and can_hoist(cell) else None


def output_size(cell: Any, hidden_size: int) -> int:
    """Size of a cell's output h (its `output_size(H)` if it has one, e.g. LSTMP's projection; else H)."""
    size = getattr(cell, "output_size", None)
    return size(hidden_size) if callable(size) else hidden_size


# ---------------------------------------------------------------------------------------------- recurrence


class Recurrence(NamedTuple):
    """How the fused runner applies a cell's recurrent weights R to h_{t-1}, and differentiates that.

    Attributes:
        prepare: `f(R) -> R'`, once before the loop (e.g. the transposed dense matrix).
        apply: `f(R', h) -> rec`, inside the loop: h (*batch, H_in) -> rec (*batch, K).
        transpose: `f(R, d_rec) -> d_h`, inside the backward loop: (*batch, K) -> (*batch, H_in).
        weight_grad: `f(R, h_prev, d_rec) -> dR` after the backward loop, summed over time and batch:
            h_prev (T, *batch, H_in), d_rec (T, *batch, K); R gives the gradient's structure (e.g. heads).
        dense: whether R is a (K, H_in) matrix with rec = h R^T (the runner then takes the input and recurrent
            weight gradients in one product when their cotangents are equal).
    """

    prepare: Callable
    apply: Callable
    transpose: Callable
    weight_grad: Callable
    dense: bool = False


# h (B, H_in) x (H_in, K) runs faster in the loop than h x W^T (measured 1.1-1.9x per step); the barrier keeps XLA
# from folding the transpose back into the product.
DENSE = Recurrence(prepare=lambda W: jax.lax.optimization_barrier(W.T), apply=lambda W_t, h: precision.matmul(h, W_t),
                   transpose=lambda W, d_rec: precision.matmul(d_rec, W),
                   weight_grad=lambda R, h_prev, d_rec: parallel.rows_product(*precision.like(R, d_rec, h_prev)),
                   dense=True)

DIAGONAL = Recurrence(prepare=lambda w: w, apply=lambda w, h: h * w, transpose=lambda w, d_rec: d_rec * w,
                      weight_grad=lambda R, h_prev, d_rec: (h_prev * d_rec).reshape(-1, d_rec.shape[-1]).sum(0))
"""rec = w ⊙ h for a vector w (K = H_in), as in IndRNN."""


class FusedOperands(NamedTuple):
    """The arrays of one fused layer: U (K, E), b (K,) or None, the recurrent weights R, elementwise params."""

    U: jax.Array
    b: Any
    R: Any
    elementwise: Any


class FusedSpec(NamedTuple):
    """How a cell splits into products and elementwise math, for `rnn_jax.fused_scan`.

    A step is `projected = U x + b` (hoisted: one product for all T), `rec = recurrence.apply(R, h_prev)` (in the
    loop), then `forward`, elementwise given both. `backward` is the hand-derived derivative of `forward`; the
    runner adds the products' parts, and takes the weight gradients after the loop (`recurrence.weight_grad`).
    `forward` is the function the cell's own `step` uses, so both paths share one source of math.

    Attributes:
        supports: `f(params) -> bool`, whether these parameters have this structure.
        operands: `f(params) -> FusedOperands`, differentiable (the parameters' gradients flow back through it).
        num_gates: G, the projected inputs' shape per step is (*batch, G, K // G); None keeps (*batch, K).
        forward: `f(elementwise, carry_prev, projected, rec) -> (carry, h, residuals)`.
        backward: `f(elementwise, carry_prev, residuals, d_carry, d_h) -> (d_elementwise, d_carry_prev,
            d_projected, d_rec)`; d_carry_prev's h may be None (h_prev reaches the step only through rec).
            Returning the same array for d_projected and d_rec tells the runner they are equal (stored once).
        recurrence: the `Recurrence` hook (`DENSE` by default, `DIAGONAL`, or the cell's own).
        native: a native loop (`rnn_jax.kernels.recurrent.NativeLoop`) computing the same forward and backward,
            or None. Tests hold the two equal.
        library: an accelerator library's loop (`rnn_jax.kernels.cudnn.LibraryLoop`: cuDNN for the LSTM on a
            GPU) computing the same, or None; the native policy governs it as it does `native`.
    """

    supports: Callable
    operands: Callable
    num_gates: Any
    forward: Callable
    backward: Callable
    recurrence: Recurrence = DENSE
    native: Any = None
    library: Any = None

    def gate_shape(self, units: int) -> tuple[int, ...]:
        """The projected inputs' trailing shape for K = `units` stacked gate units: (G, K // G), or (K,)."""
        return (units,) if self.num_gates is None else (self.num_gates, units // self.num_gates)


def stacked_operands(params: Any, elementwise: Any = None) -> FusedOperands:
    """`FusedOperands` of parameters with gate-stacked U (G, H, E), W (G, H, H_in), b (G, H) or None."""
    U = params.U.reshape(-1, params.U.shape[-1])  # (G, H, E) -> (G·H, E), a free reshape
    b = None if params.b is None else params.b.reshape(-1)
    return FusedOperands(U=U, b=b, R=params.W.reshape(-1, params.W.shape[-1]), elementwise=elementwise)


# ------------------------------------------------------------------------------------------- state-linear


class StateLinear(NamedTuple):
    """How a cell's state s evolves linearly, s_t = a_t ⊙ s_{t-1} + b_t, for `rnn_jax.associative_scan`.

    Every function works on the cell's projected inputs (its `project_inputs(params, x)`), any leading axes, so
    one call covers all T steps. The cell's own `step_projected` computes the same s_t from the same functions.

    Attributes:
        coefficients: `f(params, projected) -> (a, b)`, each (*lead, S), real or complex.
        output: `f(params, s, projected) -> h`: s (*lead, S) -> h (*lead, H_out).
        state: `f(carry) -> s`, the carry's state as one (*batch, S) array (complex where the cell's is).
        carry: `f(s, dtype) -> carry`, the inverse of `state`, fields in `dtype`.
        log_coefficients: `f(params, projected) -> (log a, log b)` for cells whose state stays non-negative,
            or None: the log-space form (Feng et al. 2024) that `associative_scan(..., log_space=True)` runs.
    """

    coefficients: Callable
    output: Callable
    state: Callable
    carry: Callable
    log_coefficients: Any = None
