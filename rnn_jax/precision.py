"""The one precision policy: 16-bit operands for the matrix products, float32 for everything else.

A `Policy` names two dtypes: `param_dtype`, in which parameters are stored, updated by the optimiser and
checkpointed (the float32 "master" copy), and `compute_dtype`, in which the matrix products take their operands.
The model casts its parameters with `cast_to_compute` once per call; from there the dtype of the weights decides
each product, and the rest follows one rule:

- a product with a 16-bit operand (bfloat16) multiplies in that dtype and accumulates and returns float32
  (`matmul`, `einsum`, `transposed_product`, `rows_product`);
- the carried state (h, and the LSTM's cell state c), the gate nonlinearities, the softmax and the loss stay in
  float32: a cell whose parameters are 16-bit keeps a float32 carry (`state_dtype`), and adding a 16-bit bias or
  scaling by a 16-bit gain to a float32 value gives float32.

Gradients reach the float32 parameters through the cast, so the optimiser and checkpoints never see 16-bit
values. bfloat16 has float32's exponent range and needs no loss scaling; float16 would, and is refused.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import precision
    >>> policy = precision.get("bfloat16")
    >>> W = policy.cast_to_compute(jnp.ones((3, 2)))
    >>> W.dtype, precision.matmul(jnp.ones((1, 3)), W).dtype, precision.state_dtype(W.dtype)
    (dtype(bfloat16), dtype('float32'), dtype('float32'))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.layout import Layout, with_layout_constraint

from rnn_jax.errors import ConfigError

COMPUTE_DTYPES = ("float32", "bfloat16")


def is_reduced(dtype) -> bool:
    """Whether `dtype` is a 16-bit floating type (bfloat16, float16): one that only product operands take."""
    dtype = jnp.dtype(dtype)
    return jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4


def state_dtype(dtype) -> jnp.dtype:
    """The dtype of the carried state, gates and losses for parameters in `dtype`: float32 for 16-bit
    parameters, else the parameters' own (float32, float64)."""
    return jnp.dtype(jnp.float32) if is_reduced(dtype) else jnp.dtype(dtype)


def operands(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, Any]:
    """(a, b, preferred_element_type) of a product under the rule: when either is 16-bit, both in that dtype and
    float32 sums; else unchanged and None (the product's own type)."""
    reduced = [d for d in (jnp.dtype(a.dtype), jnp.dtype(b.dtype)) if is_reduced(d)]
    if not reduced:
        return a, b, None
    return a.astype(reduced[0]), b.astype(reduced[0]), jnp.float32


def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """`jnp.einsum(spec, a, b)`; when either operand is 16-bit, both are cast to it and the product accumulates
    and returns float32."""
    a, b, accumulate = operands(a, b)
    return jnp.einsum(spec, a, b, preferred_element_type=accumulate)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a @ b`, with `einsum`'s rule for 16-bit operands (float32 accumulation and result)."""
    a, b, accumulate = operands(a, b)
    return jnp.matmul(a, b, preferred_element_type=accumulate)


def transposed_product(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a^T b` for a (N, I) and b (N, J): (I, J) summed over the N rows, as a weight gradient is, with
    `einsum`'s rule for 16-bit operands.

    XLA:CPU multiplies 16-bit operands with float32 sums only when the summed axis is the first operand's last
    and the second's first, in row-major layouts; it runs `a^T b` of 16-bit operands in float32, at a third to a
    half of the speed. On the CPU a 16-bit product therefore copies `a` into place transposed first, and pins
    the layouts of that copy and of the product so that XLA can fold neither back (`python -m
    experiments.bench_machine` times both forms).
    """
    a, b, accumulate = operands(a, b)
    if accumulate is None or jax.default_backend() != "cpu":
        return jnp.matmul(a.T, b, preferred_element_type=accumulate)
    return _row_major(jnp.matmul(_row_major(a.T), b, preferred_element_type=accumulate))


def _row_major(matrix: jax.Array) -> jax.Array:
    return with_layout_constraint(matrix, Layout(major_to_minor=(0, 1)))


def like(weight: jax.Array, *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """`arrays` cast to the dtype of `weight` when it is 16-bit (unchanged otherwise): the operands of a weight's
    gradient product, so that it runs in the same dtype as the weight's forward products."""
    if not is_reduced(weight.dtype):
        return arrays
    return tuple(a.astype(weight.dtype) for a in arrays)


def cast_floating(tree: Any, dtype) -> Any:
    """`tree` with every floating-point leaf cast to `dtype` (integer leaves, None and keys untouched)."""

    def cast(leaf):
        if isinstance(leaf, jax.Array) or hasattr(leaf, "dtype"):
            if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != dtype:
                return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)


def cast_to_compute(params: Any, compute_dtype=None) -> Any:
    """The parameters as products take them: floating leaves cast to `compute_dtype` (None: unchanged). The
    Flax modules' `compute_dtype` attribute calls this; differentiable, gradients return in the stored dtype."""
    return params if compute_dtype is None else cast_floating(params, jnp.dtype(compute_dtype))


class Policy(NamedTuple):
    """Where parameters live and in which dtype the matrix products take them (see the module docstring).

    Attributes:
        param_dtype: parameters, optimiser state and checkpoints (float32).
        compute_dtype: the products' operands: float32, or bfloat16 (float32 accumulation).
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32

    @property
    def mixed(self) -> bool:
        """Whether the products run in a narrower dtype than the parameters are stored in."""
        return jnp.dtype(self.compute_dtype) != jnp.dtype(self.param_dtype)

    def cast_to_compute(self, params: Any) -> Any:
        """The parameters as the products take them (a differentiable cast; gradients return in param_dtype)."""
        return cast_to_compute(params, self.compute_dtype if self.mixed else None)


def get(compute_dtype: str = "float32", param_dtype: str = "float32") -> Policy:
    """The policy for dtype names, checked: compute in float32 or bfloat16, parameters in float32 (or float64
    with a float64 compute dtype, for gradient checks)."""
    if compute_dtype == "float16":
        raise ConfigError("compute dtype float16 needs loss scaling, which rnn_jax does not do; use bfloat16 "
                          "(float32's exponent range, no loss scaling) or float32")
    if compute_dtype not in COMPUTE_DTYPES + ("float64",):
        raise ConfigError(f"compute dtype must be one of {', '.join(COMPUTE_DTYPES)}; got {compute_dtype!r}")
    if is_reduced(param_dtype) or jnp.dtype(param_dtype).itemsize < jnp.dtype(compute_dtype).itemsize:
        raise ConfigError(f"parameter dtype {param_dtype} is narrower than the compute dtype {compute_dtype}; "
                          "keep parameters in float32 and set the compute dtype to bfloat16 for mixed precision")
    return Policy(param_dtype=jnp.dtype(param_dtype), compute_dtype=jnp.dtype(compute_dtype))
