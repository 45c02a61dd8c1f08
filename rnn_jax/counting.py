"""Counting trainable parameters from the arrays a model actually holds (never from a formula).

Example (the notes' worked example: an LSTM of 20 units on 10-dimensional embeddings, no bias):
    >>> import jax
    >>> from rnn_jax import lstm, count_params
    >>> count_params(lstm.init(jax.random.key(0), 10, 20, use_bias=False))
    2400
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def count_params(tree: Any) -> int:
    """Total number of scalars in the array leaves of a pytree (None leaves, e.g. absent biases, count 0)."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


def param_breakdown(tree: Any, depth: int | None = None) -> dict[str, int]:
    """Parameter counts per path, e.g. {"rnn.0.W": 1600, "rnn.0.U": 800, ...}.

    Args:
        tree: any pytree of arrays.
        depth: if given, paths are cut after this many keys and counts summed (depth=1 gives one line per
            top-level part, e.g. "embedding", "rnn", "output").

    Returns:
        An insertion-ordered dict from dotted path (field names, dict keys, tuple indices) to count.
    """
    counts: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        kept = tuple(path[:depth]) if depth is not None else tuple(path)
        key = jax.tree_util.keystr(kept, simple=True, separator=".")
        counts[key] = counts.get(key, 0) + int(np.size(leaf))
    return counts
