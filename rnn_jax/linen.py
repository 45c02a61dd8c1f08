"""Flax Linen modules: a thin skin over the functional core.

Each module holds one parameter, the core's own pytree (`LSTMParams`, a tuple of layers, ...), created by the
core's `init`, and its call is the core's function, so a module and the functional API give identical results
and parameters move freely between them. Carries need no PRNG key: `module.initial_state(batch_shape)`.

| module | parameter (in the "params" collection) | call |
|---|---|---|
| `Cell(cell, hidden_size)` | "cell": the cell's params | `(carry, x) -> (carry, h)` = `cell.step` |
| `RNN(cell, hidden_size)` | "cell" (+ "initial_state" if learnable) | `(xs, carry=None, *, seq_lengths, mask, resets) -> (carry, hs)` |
| `StackedRNN(cell, hidden_size, num_layers)` | "layers": tuple of per-layer params | as RNN, carry is a tuple per layer |
| `Bidirectional(cell, hidden_size, merge)` | "directions": `BidirectionalParams` | as RNN, carry is `BidirectionalParams` |

`cell` is a name from `rnn_jax.CELLS` ("lstm", "gru", ...) or any cell object (e.g. `LSTMPCell(64)`);
`init_options` is a dict of keyword options for the cell's `init` (use_bias, initializer, reset_after, ...).
`compute_dtype` (e.g. `jnp.bfloat16`) runs the products in that dtype on a copy of the parameters, which stay in
their own dtype, with float32 state and outputs (`rnn_jax.precision`).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import linen as rnn_linen
    >>> layer = rnn_linen.RNN(cell="lstm", hidden_size=32)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((4, 10, 8)))
    >>> carry, hs = layer.apply(variables, jnp.ones((4, 10, 8)))
    >>> hs.shape
    (4, 10, 32)
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax.numpy as jnp
from flax import linen as nn

from rnn_jax import carry as carry_lib
from rnn_jax import precision, runners
from rnn_jax.cells.base import param_dtype, state_dtype
from rnn_jax.bidirectional import Bidirectional as CoreBidirectional
from rnn_jax.cells import get_cell
from rnn_jax.stack import Stacked, run_layers


def resolve_cell(cell):
    """A cell object from a name in `rnn_jax.CELLS` or a cell object itself."""
    return get_cell(cell) if isinstance(cell, str) else cell


def _batch_shape(xs, time_major: bool) -> tuple[int, ...]:
    return tuple(xs.shape[1:-1]) if time_major else tuple(xs.shape[:-2])


class Cell(nn.Module):
    """One cell step: `(carry, x) -> (carry, h)`; its parameter "cell" is the core cell's pytree."""

    cell: Any = "lstm"
    hidden_size: int = 20
    init_options: Optional[dict] = None
    compute_dtype: Any = None

    @nn.compact
    def __call__(self, carry, x):
        cell = resolve_cell(self.cell)
        params = self.param("cell", lambda key: cell.init(key, x.shape[-1], self.hidden_size, **(self.init_options or {})))
        return cell.step(precision.cast_to_compute(params, self.compute_dtype), carry, x)

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return resolve_cell(self.cell).initial_state(self.hidden_size, tuple(batch_shape), dtype)


class _SequenceOptions(nn.Module):
    cell: Any = "lstm"
    hidden_size: int = 20
    init_options: Optional[dict] = None
    runner: str = "fused"
    unroll: int = 1
    time_major: bool = False
    remat: Union[int, str, None] = None
    compute_dtype: Any = None

    def _compute(self, params):
        return precision.cast_to_compute(params, self.compute_dtype)

    def _scan_kwargs(self, seq_lengths, mask, resets):
        return dict(unroll=self.unroll, time_major=self.time_major, remat=self.remat, seq_lengths=seq_lengths,
                    mask=mask, resets=resets)


class RNN(_SequenceOptions):
    """One recurrent layer over a sequence; parameter "cell" (and "initial_state" when learnable).

    Attributes:
        cell, hidden_size, init_options: the cell and its `init` options.
        compute_dtype: the products' operand dtype (None: the parameters'; jnp.bfloat16 for mixed precision).
        runner: "fused" (default), "hoisted", "scan" or "unrolled". unroll, time_major, remat: as in `rnn_jax.scan`.
        reverse: run backward in time.
        learnable_initial_state: learn the initial carry (also the carry that `resets` restore).
    """

    reverse: bool = False
    learnable_initial_state: bool = False

    @nn.compact
    def __call__(self, xs, carry=None, *, seq_lengths=None, mask=None, resets=None):
        cell = resolve_cell(self.cell)
        params = self.param("cell", lambda key: cell.init(key, xs.shape[-1], self.hidden_size, **(self.init_options or {})))
        batch_shape = _batch_shape(xs, self.time_major)
        reset_carry = None
        if self.learnable_initial_state:
            learned = self.param("initial_state", lambda key: carry_lib.learnable_state(cell, self.hidden_size,
                                                                                       param_dtype(params)))
            reset_carry = carry_lib.broadcast_state(learned, batch_shape)
        params = self._compute(params)
        if carry is None:
            carry = reset_carry if reset_carry is not None else cell.initial_state(self.hidden_size, batch_shape,
                                                                                   state_dtype(params))
        run = runners.get_runner(self.runner)
        return run(cell, params, carry, xs, reverse=self.reverse, reset_carry=reset_carry,
                   **self._scan_kwargs(seq_lengths, mask, resets))

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return resolve_cell(self.cell).initial_state(self.hidden_size, tuple(batch_shape), dtype)


class StackedRNN(_SequenceOptions):
    """`num_layers` layers run layer by layer (`rnn_jax.run_layers`); parameter "layers" (a tuple)."""

    num_layers: int = 2

    @nn.compact
    def __call__(self, xs, carry=None, *, seq_lengths=None, mask=None, resets=None):
        stack = Stacked(resolve_cell(self.cell), self.num_layers)
        params = self.param("layers", lambda key: stack.init(key, xs.shape[-1], self.hidden_size,
                                                             **(self.init_options or {})))
        params = self._compute(params)
        if carry is None:
            carry = stack.initial_state(self.hidden_size, _batch_shape(xs, self.time_major), state_dtype(params))
        return run_layers(stack.cell, params, carry, xs, runner=self.runner,
                          **self._scan_kwargs(seq_lengths, mask, resets))

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return Stacked(resolve_cell(self.cell), self.num_layers).initial_state(self.hidden_size, tuple(batch_shape), dtype)


class Bidirectional(_SequenceOptions):
    """Forward and backward runs merged per step (`rnn_jax.bidirectional`); parameter "directions"."""

    merge: Union[str, Callable] = "concat"

    @nn.compact
    def __call__(self, xs, carry=None, *, seq_lengths=None, mask=None, resets=None):
        bi = CoreBidirectional(resolve_cell(self.cell), merge=self.merge, runner=self.runner)
        params = self.param("directions", lambda key: bi.init(key, xs.shape[-1], self.hidden_size,
                                                              **(self.init_options or {})))
        params = self._compute(params)
        if carry is None:
            carry = bi.initial_state(self.hidden_size, _batch_shape(xs, self.time_major), state_dtype(params))
        return bi(params, carry, xs, **self._scan_kwargs(seq_lengths, mask, resets))

    def initial_state(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return CoreBidirectional(resolve_cell(self.cell)).initial_state(self.hidden_size, tuple(batch_shape), dtype)
