"""Bidirectional runs: one cell forward in time, another backward, outputs merged per step.

    h_t = merge(forward_t, backward_t)       forward_t sees x_1..x_t, backward_t sees x_t..x_T

With `seq_lengths` (right padding) the backward direction starts at each sequence's last valid step (the
padded tail is skipped), and padded outputs are zero in both directions. `merge` is "concat" (2H features),
"sum", or any function `f(forward_hs, backward_hs) -> hs`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import gru
    >>> from rnn_jax.bidirectional import Bidirectional
    >>> bi = Bidirectional(gru, merge="concat")
    >>> params = bi.init(jax.random.key(0), 3, 8)
    >>> carry, hs = bi(params, bi.initial_state(8, (2,)), jnp.ones((2, 5, 3)))
    >>> hs.shape
    (2, 5, 16)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from rnn_jax import runners


class BidirectionalParams(NamedTuple):
    """Parameters (or carries) of the two directions."""

    forward: Any
    backward: Any


MERGES = {"concat": lambda f, b: jnp.concatenate([f, b], axis=-1), "sum": lambda f, b: f + b}


@dataclasses.dataclass(frozen=True)
class Bidirectional:
    """A cell run in both directions.

    Attributes:
        cell: any cell object (with `project_inputs`/`step_projected` for the hoisted runner).
        merge: "concat", "sum" or a function of (forward hs, backward hs).
        runner: "fused" (default), "hoisted", "scan" or "unrolled".
    """

    cell: Any
    merge: Union[str, Callable] = "concat"
    runner: str = "fused"

    def __post_init__(self):
        if isinstance(self.merge, str) and self.merge not in MERGES:
            raise ValueError(f"merge must be one of {sorted(MERGES)} or a function; got {self.merge!r}")
        runners.get_runner(self.runner)

    def init(self, key: jax.Array, input_size: int, hidden_size: int, **cell_kwargs) -> BidirectionalParams:
        key_f, key_b = jax.random.split(key)
        return BidirectionalParams(self.cell.init(key_f, input_size, hidden_size, **cell_kwargs),
                                   self.cell.init(key_b, input_size, hidden_size, **cell_kwargs))

    def initial_state(self, hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return BidirectionalParams(self.cell.initial_state(hidden_size, batch_shape, dtype),
                                   self.cell.initial_state(hidden_size, batch_shape, dtype))

    def __call__(self, params: BidirectionalParams, carry: BidirectionalParams, xs: jax.Array, **scan_kwargs):
        """Runs both directions over xs (*batch, T, E) (or time-major); returns (final carries, merged hs).

        `scan_kwargs` (seq_lengths, mask, time_major, unroll, remat, ...) go to both runs; `reverse` is not
        accepted (the backward direction is the reversed one).
        """
        if "reverse" in scan_kwargs:
            raise ValueError("Bidirectional runs both directions; do not pass reverse")
        if not isinstance(params, BidirectionalParams) or not isinstance(carry, BidirectionalParams):
            raise TypeError("Bidirectional needs BidirectionalParams for params and carry (from init/initial_state); "
                            f"got {type(params).__name__} and {type(carry).__name__}")
        run = runners.get_runner(self.runner)
        final_f, hs_f = run(self.cell, params.forward, carry.forward, xs, **scan_kwargs)
        final_b, hs_b = run(self.cell, params.backward, carry.backward, xs, reverse=True, **scan_kwargs)
        merge = MERGES[self.merge] if isinstance(self.merge, str) else self.merge
        return BidirectionalParams(final_f, final_b), merge(hs_f, hs_b)
