"""Learnable initial states: a carry with no batch axes, trained like any parameter, broadcast per batch.

Examples:
    >>> import jax.numpy as jnp
    >>> from rnn_jax import lstm, carry
    >>> learned = carry.learnable_state(lstm, hidden_size=8)          # LSTMState(h (8,), c (8,)), zeros
    >>> batch_carry = carry.broadcast_state(learned, (4,))            # LSTMState(h (4, 8), c (4, 8))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def learnable_state(cell, hidden_size: int, dtype=jnp.float32) -> Any:
    """The cell's zero carry without batch axes, to be trained as parameters."""
    return cell.initial_state(hidden_size, (), dtype)


def broadcast_state(state: Any, batch_shape: tuple[int, ...]) -> Any:
    """A batch-free carry repeated over `batch_shape` (gradients flow back to the shared state)."""
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, tuple(batch_shape) + leaf.shape), state)
