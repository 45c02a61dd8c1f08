"""Flax NNX modules: a thin skin over the functional core (the NNX twin of `rnn_jax.linen`).

Each module stores the core's own pytree (`LSTMParams`, a tuple of layers, ...) with every array wrapped in an
`nnx.Param`, NNX's way of marking trainable leaves, and calls the core's function on the unwrapped pytree, so
it gives the functional API's results exactly; `module.initial_state(batch_shape)` needs no key.
`params_of(module.cell)` returns the plain core pytree. `compute_dtype=jnp.bfloat16` runs the products on a bf16
copy of the parameters, with float32 state and outputs (`rnn_jax.precision`).

| module | parameter attribute | call |
|---|---|---|
| `Cell(cell, input_size, hidden_size, rngs=...)` | `.cell` | `(carry, x) -> (carry, h)` |
| `RNN(cell, input_size, hidden_size, rngs=...)` | `.cell` (+ `.initial` if learnable) | `(xs, carry=None, *, seq_lengths, mask, resets) -> (carry, hs)` |
| `StackedRNN(cell, input_size, hidden_size, num_layers, rngs=...)` | `.layers` (tuple) | as RNN |
| `Bidirectional(cell, input_size, hidden_size, rngs=...)` | `.directions` | as RNN |

Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from rnn_jax import nnx as rnn_nnx
    >>> layer = rnn_nnx.RNN("gru", 8, 32, rngs=nnx.Rngs(0))
    >>> carry, hs = layer(jnp.ones((4, 10, 8)))
    >>> hs.shape
    (4, 10, 32)
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax import carry as carry_lib
from rnn_jax import precision, runners
from rnn_jax.cells.base import param_dtype, state_dtype
from rnn_jax.bidirectional import Bidirectional as CoreBidirectional
from rnn_jax.linen import resolve_cell
from rnn_jax.stack import Stacked, run_layers


def _param_tree(tree):
    """The core pytree with every array wrapped in an `nnx.Param` (kept as module data)."""
    return nnx.data(jax.tree.map(nnx.Param, tree))


def params_of(tree):
    """The plain core pytree of a module attribute made by `_param_tree`."""
    unwrap = lambda v: v.get_value() if hasattr(v, "get_value") else v.value
    return jax.tree.map(unwrap, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


class Cell(nnx.Module):
    """One cell step; `.cell` holds the core cell's parameter pytree."""

    def __init__(self, cell, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, init_options: Optional[dict] = None,
                 compute_dtype=None):
        self.core = resolve_cell(cell)
        self.hidden_size, self.compute_dtype = hidden_size, compute_dtype
        self.cell = _param_tree(self.core.init(rngs.params(), input_size, hidden_size, **(init_options or {})))

    def __call__(self, carry, x):
        return self.core.step(precision.cast_to_compute(params_of(self.cell), self.compute_dtype), carry, x)

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return self.core.initial_state(self.hidden_size, tuple(batch_shape), dtype)


class _Sequence(nnx.Module):
    def _setup(self, runner: str, unroll: int, time_major: bool, remat, compute_dtype):
        runners.get_runner(runner)
        self.runner, self.unroll, self.time_major, self.remat = runner, unroll, time_major, remat
        self.compute_dtype = compute_dtype

    def _compute(self, tree):
        return precision.cast_to_compute(params_of(tree), self.compute_dtype)

    def _batch_shape(self, xs):
        return tuple(xs.shape[1:-1]) if self.time_major else tuple(xs.shape[:-2])

    def _scan_kwargs(self, seq_lengths, mask, resets):
        return dict(unroll=self.unroll, time_major=self.time_major, remat=self.remat, seq_lengths=seq_lengths,
                    mask=mask, resets=resets)


class RNN(_Sequence):
    """One recurrent layer over a sequence (options as `rnn_jax.linen.RNN`)."""

    def __init__(self, cell, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, init_options: Optional[dict] = None,
                 runner: str = "fused", unroll: int = 1, time_major: bool = False, reverse: bool = False,
                 remat: Union[int, str, None] = None, learnable_initial_state: bool = False,
                 compute_dtype=None):
        self._setup(runner, unroll, time_major, remat, compute_dtype)
        self.core = resolve_cell(cell)
        self.hidden_size, self.reverse = hidden_size, reverse
        self.cell = _param_tree(self.core.init(rngs.params(), input_size, hidden_size, **(init_options or {})))
        self.initial = (_param_tree(carry_lib.learnable_state(self.core, hidden_size, param_dtype(params_of(self.cell))))
                        if learnable_initial_state else None)

    def __call__(self, xs, carry=None, *, seq_lengths=None, mask=None, resets=None):
        params = self._compute(self.cell)
        batch_shape = self._batch_shape(xs)
        reset_carry = None if self.initial is None else carry_lib.broadcast_state(params_of(self.initial), batch_shape)
        if carry is None:
            carry = reset_carry if reset_carry is not None else self.initial_state(batch_shape, state_dtype(params))
        run = runners.get_runner(self.runner)
        return run(self.core, params, carry, xs, reverse=self.reverse, reset_carry=reset_carry,
                   **self._scan_kwargs(seq_lengths, mask, resets))

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return self.core.initial_state(self.hidden_size, tuple(batch_shape), dtype)


class StackedRNN(_Sequence):
    """`num_layers` layers run layer by layer; `.layers` holds the tuple of per-layer parameters."""

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 2, *, rngs: nnx.Rngs,
                 init_options: Optional[dict] = None, runner: str = "fused", unroll: int = 1,
                 time_major: bool = False, remat: Union[int, str, None] = None, compute_dtype=None):
        self._setup(runner, unroll, time_major, remat, compute_dtype)
        self.stack = Stacked(resolve_cell(cell), num_layers)
        self.hidden_size = hidden_size
        self.layers = _param_tree(self.stack.init(rngs.params(), input_size, hidden_size, **(init_options or {})))

    def __call__(self, xs, carry=None, *, seq_lengths=None, mask=None, resets=None):
        params = self._compute(self.layers)
        if carry is None:
            carry = self.initial_state(self._batch_shape(xs), state_dtype(params))
        return run_layers(self.stack.cell, params, carry, xs, runner=self.runner,
                          **self._scan_kwargs(seq_lengths, mask, resets))

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return self.stack.initial_state(self.hidden_size, tuple(batch_shape), dtype)


class Bidirectional(_Sequence):
    """Forward and backward runs merged per step; `.directions` holds `BidirectionalParams`."""

    def __init__(self, cell, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, merge: Union[str, Callable] = "concat",
                 init_options: Optional[dict] = None, runner: str = "fused", unroll: int = 1,
                 time_major: bool = False, remat: Union[int, str, None] = None, compute_dtype=None):
        self._setup(runner, unroll, time_major, remat, compute_dtype)
        self.bi = CoreBidirectional(resolve_cell(cell), merge=merge, runner=runner)
        self.hidden_size = hidden_size
        self.directions = _param_tree(self.bi.init(rngs.params(), input_size, hidden_size, **(init_options or {})))

    def __call__(self, xs, carry=None, *, seq_lengths=None, mask=None, resets=None):
        params = self._compute(self.directions)
        if carry is None:
            carry = self.initial_state(self._batch_shape(xs), state_dtype(params))
        return self.bi(params, carry, xs, **self._scan_kwargs(seq_lengths, mask, resets))

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return self.bi.initial_state(self.hidden_size, tuple(batch_shape), dtype)
