"""Several recurrent layers run as one deep network, with a carry per layer.

Two equal ways to run a stack (tested equal):

- `Stacked(cell, num_layers)` is itself a cell (Haiku's `DeepRNN`): its step runs every layer for one time
  step, so any runner (`scan`, `unrolled`, `hoisted_scan`) and any generic code accepts it.
- `run_layers(cell, params, carries, xs)` runs layer 1 over the whole sequence, then layer 2 over its
  outputs, and so on: each layer's input products are hoisted out of its loop, and a function can act
  between layers (the language model's dropout).

Layer l >= 2 takes the previous layer's h (size H) as its input x.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm, scan, Stacked
    >>> deep = Stacked(lstm, num_layers=2)
    >>> params = deep.init(jax.random.key(0), 10, 20)
    >>> carry, hs = scan(deep.step, params, deep.initial_state(20, (3,)), jnp.ones((3, 5, 10)))
    >>> hs.shape, len(carry)
    ((3, 5, 20), 2)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from rnn_jax import runners
from rnn_jax.cells.base import can_hoist, output_size


def _is_layer_sequence(tree) -> bool:
    # A NamedTuple (one layer's params or carry) is a tuple too, but never a sequence of layers.
    return isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields")


def _check_layers(what: str, tree, num_layers: int) -> None:
    if not _is_layer_sequence(tree) or len(tree) != num_layers:
        got = f"{type(tree).__name__} of length {len(tree)}" if _is_layer_sequence(tree) else type(tree).__name__
        raise ValueError(f"a stack of {num_layers} layers needs {what} as a tuple of {num_layers} (one per layer); "
                         f"got {got}. Create it with the stack's init/initial_state.")


@dataclasses.dataclass(frozen=True)
class Stacked:
    """`num_layers` layers of `cell` as one deep recurrent cell.

    Attributes:
        cell: a cell object (module or instance) with `init`, `initial_state`, `step`.
        num_layers: L >= 1.
    """

    cell: Any
    num_layers: int

    def __post_init__(self):
        if not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ValueError(f"num_layers must be a positive int; got {self.num_layers!r}")

    def layer_sizes(self, hidden_size: int | Sequence[int]) -> tuple[int, ...]:
        """Each layer's H: one int for all layers, or one per layer (e.g. AWD-LSTM's (1150, 1150, 400))."""
        if isinstance(hidden_size, int):
            return (hidden_size,) * self.num_layers
        sizes = tuple(hidden_size)
        if len(sizes) != self.num_layers:
            raise ValueError(f"a stack of {self.num_layers} layers needs one hidden size or {self.num_layers} of them; "
                             f"got {len(sizes)}: {sizes}")
        return sizes

    def init(self, key: jax.Array, input_size: int, hidden_size: int | Sequence[int], **cell_kwargs) -> tuple:
        """Per-layer parameters: layer 1 takes E inputs, the others the previous layer's output (H, or LSTMP's P).

        `hidden_size` is one H for every layer or a sequence of L sizes. Keyword options go to `cell.init`.
        """
        keys = jax.random.split(key, self.num_layers)
        hidden = self.layer_sizes(hidden_size)
        inputs = [input_size] + [output_size(self.cell, h) for h in hidden[:-1]]
        return tuple(self.cell.init(k, e, h, **cell_kwargs) for k, e, h in zip(keys, inputs, hidden))

    def initial_state(self, hidden_size: int | Sequence[int], batch_shape: tuple[int, ...] = (),
                      dtype=jnp.float32) -> tuple:
        """A tuple of L zero carries (`hidden_size`: one H or one per layer)."""
        return tuple(self.cell.initial_state(h, batch_shape, dtype) for h in self.layer_sizes(hidden_size))

    def output_size(self, hidden_size: int | Sequence[int]) -> int:
        return output_size(self.cell, self.layer_sizes(hidden_size)[-1])

    def step(self, params: tuple, carry: tuple, x: jax.Array):
        """One time step through all layers: x (*batch, E) -> (carries, h of the top layer (*batch, H))."""
        _check_layers("params", params, self.num_layers)
        _check_layers("carry", carry, self.num_layers)
        new_carry = []
        for layer_params, layer_carry in zip(params, carry):
            layer_carry, x = self.cell.step(layer_params, layer_carry, x)
            new_carry.append(layer_carry)
        return tuple(new_carry), x

    @property
    def project_inputs(self):
        """The first layer's input products (the only ones that do not depend on the recurrence); present only
        when the layers' cell has the hoisting hooks."""
        if not can_hoist(self.cell):
            raise AttributeError(f"{self.cell!r} has no hoisting hooks, so neither has its stack")
        return self._project_inputs

    @property
    def step_projected(self):
        """Like `step`, with the first layer's input products precomputed (when the cell can hoist)."""
        if not can_hoist(self.cell):
            raise AttributeError(f"{self.cell!r} has no hoisting hooks, so neither has its stack")
        return self._step_projected

    def _project_inputs(self, params: tuple, x: jax.Array) -> jax.Array:
        """The first layer's input products (the only ones that do not depend on the recurrence)."""
        _check_layers("params", params, self.num_layers)
        return self.cell.project_inputs(params[0], x)

    def _step_projected(self, params: tuple, carry: tuple, projected: jax.Array):
        """Like `step`, with the first layer's input products precomputed."""
        _check_layers("params", params, self.num_layers)
        _check_layers("carry", carry, self.num_layers)
        first, x = self.cell.step_projected(params[0], carry[0], projected)
        new_carry = [first]
        for layer_params, layer_carry in zip(params[1:], carry[1:]):
            layer_carry, x = self.cell.step(layer_params, layer_carry, x)
            new_carry.append(layer_carry)
        return tuple(new_carry), x


def run_layers(cell, params: tuple, carries: tuple, xs: jax.Array, *, runner: str = "fused",
               between_layers: Callable[[int, jax.Array], jax.Array] | None = None, **scan_kwargs):
    """Runs a stack layer by layer over the whole sequence.

    Args:
        cell: the per-layer cell.
        params: tuple of L per-layer parameters.
        carries: tuple of L per-layer carries.
        xs: (*batch, T, E), or (T, *batch, E) with time_major=True.
        runner: "fused" (default), "hoisted", "scan", "unrolled" or "associative" (see `rnn_jax.runners.get_runner`).
        between_layers: optional `f(layer_index, hs) -> hs` applied to layer l's outputs before layer l+1
            (for example dropout); not applied after the top layer.
        **scan_kwargs: unroll, reverse, time_major, seq_lengths, mask, resets, remat (as in `rnn_jax.scan`);
            `reset_carry`, if given, is a tuple with one carry per layer.

    Returns:
        (tuple of L final carries, hs of the top layer with H in place of E).
    """
    if not _is_layer_sequence(params):
        raise ValueError(f"run_layers needs params as a tuple with one entry per layer; got {type(params).__name__}")
    num_layers = len(params)
    _check_layers("carries", carries, num_layers)
    run = runners.get_runner(runner)
    reset_carries = scan_kwargs.pop("reset_carry", None)
    if reset_carries is not None:
        _check_layers("reset_carry", reset_carries, num_layers)
    finals = []
    hs = xs
    for layer, (layer_params, layer_carry) in enumerate(zip(params, carries)):
        if layer > 0 and between_layers is not None:
            hs = between_layers(layer - 1, hs)
        reset_to = None if reset_carries is None else reset_carries[layer]
        layer_carry, hs = run(cell, layer_params, layer_carry, hs, reset_carry=reset_to, **scan_kwargs)
        finals.append(layer_carry)
    return tuple(finals), hs
