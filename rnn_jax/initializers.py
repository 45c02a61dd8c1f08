"""Named initialisation schemes for recurrent cells.

A scheme gives one initialiser each for the input weights U, the recurrent weights W and the biases b.
Every initialiser has the signature `(key, shape, dtype) -> array` of `jax.nn.initializers`, and for a
gate-stacked tensor of shape (G, H, K) it treats each gate's (H, K) block as its own matrix.

Schemes (pass the name, or an `InitScheme`, as a cell's `initializer=`):

- ``"pytorch"``: every parameter from uniform(±1/sqrt(H)), PyTorch's `nn.LSTM`/`nn.GRU` default.
- ``"uniform"``: every parameter from uniform(±s), with `init_scale=s` (Zaremba et al. 2014 use s = 0.1, 0.05
  and 0.04 for their small, medium and large networks).
- ``"orthogonal"``: W orthogonal per gate, U Glorot-uniform per gate, b zero (Keras' recurrent default).

Examples:
    >>> import jax
    >>> from rnn_jax import lstm
    >>> params = lstm.init(jax.random.key(0), 10, 20, initializer="uniform", init_scale=0.1)
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple, jnp.dtype], jax.Array]


class InitScheme(NamedTuple):
    """Initialisers for the input weights U, the recurrent weights W and the biases b."""

    input: Initializer
    recurrent: Initializer
    bias: Initializer


def uniform_init(scale: float) -> Initializer:
    """uniform(±scale) for any shape."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, jnp.float32, -scale, scale).astype(dtype)

    return init


def _per_block(matrix_init: Initializer) -> Initializer:
    """Applies a 2-D initialiser to each trailing (rows, cols) block of a tensor of any rank >= 2."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"a matrix initialiser needs a shape of rank >= 2; got {shape}")
        blocks = math.prod(shape[:-2])
        keys = jax.random.split(key, blocks)
        out = jax.vmap(lambda k: matrix_init(k, shape[-2:], jnp.float32))(keys)
        return out.reshape(shape).astype(dtype)

    return init


def uniform(scale: float) -> InitScheme:
    """Every parameter from uniform(±scale) (Zaremba et al. 2014)."""
    if not scale > 0:
        raise ValueError(f"uniform init_scale must be > 0; got {scale}")
    u = uniform_init(scale)
    return InitScheme(input=u, recurrent=u, bias=u)


def pytorch(hidden_size: int) -> InitScheme:
    """PyTorch's default for recurrent layers: every parameter from uniform(±1/sqrt(H))."""
    return uniform(1.0 / math.sqrt(hidden_size))


def orthogonal() -> InitScheme:
    """Orthogonal recurrent weights, Glorot-uniform input weights, zero biases (per gate block)."""
    return InitScheme(
        input=_per_block(jax.nn.initializers.glorot_uniform()),
        recurrent=_per_block(jax.nn.initializers.orthogonal()),
        bias=jax.nn.initializers.zeros,
    )


SCHEMES = ("pytorch", "uniform", "orthogonal")


def resolve(initializer: str | InitScheme, hidden_size: int, init_scale: float | None) -> InitScheme:
    """Turns a scheme name (see module docstring) or an `InitScheme` into an `InitScheme`."""
    if isinstance(initializer, InitScheme):
        return initializer
    if initializer == "uniform":
        if init_scale is None:
            raise ValueError("initializer='uniform' needs init_scale=s (e.g. 0.1 for Zaremba's small network)")
        return uniform(init_scale)
    if init_scale is not None:
        raise ValueError(f"init_scale is only used with initializer='uniform'; got initializer={initializer!r}")
    if initializer == "pytorch":
        return pytorch(hidden_size)
    if initializer == "orthogonal":
        return orthogonal()
    raise ValueError(f"unknown initializer {initializer!r}; expected one of {SCHEMES} or an InitScheme")
