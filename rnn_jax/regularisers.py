"""Regularisers of recurrent language models (Merity et al. 2017, "Regularizing and Optimizing LSTM Language
Models", arXiv 1708.02182), each a pure function of a PRNG key and the arrays it changes.

| regulariser | `LMConfig` field | what it does |
|---|---|---|
| embedding dropout | `embed_dropout` | drops whole words: every occurrence of a token id in the batch is zeroed together (one mask over the vocabulary), the rest scaled by 1/(1 − p) (Gal & Ghahramani 2016) |
| weight drop | `weight_drop` | DropConnect on the recurrent weights that the cell names (`recurrent_weights`), one mask per batch, scaled by 1/(1 − p); the loop itself runs unchanged, fast paths included |
| AR | `ar_alpha` | α · mean(h²) of the last layer's dropped outputs |
| TAR | `tar_beta` | β · mean((h_t − h_{t−1})²) of the last layer's outputs before dropout |

All are off at 0 and act only in training; evaluation is deterministic. Dropout on the non-recurrent connections
is `LMConfig.dropout` (`rnn_jax.lm.dropout`); the regularisers inside the recurrence (locked recurrent dropout
and zoneout) are cell transforms in `rnn_jax.state_dropout`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.regularisers import embedding_dropout_scale
    >>> scale = embedding_dropout_scale(jax.random.key(0), jnp.array([[3, 1, 3]]), vocab_size=5, rate=0.5)
    >>> bool(scale[0, 0] == scale[0, 2]), sorted(set(scale.ravel().tolist())) <= [0.0, 2.0]
    (True, True)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_jax.errors import ConfigError


def recurrent_weight_fields(cell: Any) -> tuple[str, ...]:
    """The parameter fields a cell names as its recurrent weight matrices (`cell.recurrent_weights`), or ()."""
    return tuple(getattr(cell, "recurrent_weights", ()))


def check_weight_drop(cell: Any, rate: float) -> None:
    """A ConfigError when weight drop is asked of a cell that names no recurrent weight matrix."""
    if rate > 0 and not recurrent_weight_fields(cell):
        name = getattr(cell, "__name__", type(cell).__name__).rsplit(".", 1)[-1]
        raise ConfigError(f"weight_drop={rate} needs recurrent weight matrices, and the {name} cell has none (its "
                          "recurrence is diagonal or linear in the state); use dropout or embed_dropout instead")


def _inverted_dropout(key: jax.Array, x: jax.Array, rate: float, shape) -> jax.Array:
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def embedding_dropout_scale(key: jax.Array, tokens: jax.Array, vocab_size: int, rate: float) -> jax.Array:
    """Per-token factors, same shape as `tokens`: 0 for dropped words, 1/(1 − rate) for kept ones.

    One Bernoulli draw per vocabulary entry, gathered by id, so all occurrences of a word share it. Multiplying
    the embedded rows by it equals embedding with a table whose dropped rows are zero (and the gradient reaching
    the table is the same either way).
    """
    keep = jax.random.bernoulli(key, 1.0 - rate, (vocab_size,))
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0)[tokens]


def weight_drop(key: jax.Array, layers: tuple, cell: Any, rate: float) -> tuple:
    """Each layer's parameters with its recurrent weight matrices dropped element-wise (one mask per call).

    Args:
        key: PRNG key.
        layers: per-layer parameter NamedTuples (a `Stacked` cell's parameters).
        cell: the layers' cell; its `recurrent_weights` names the fields to drop.
        rate: the fraction of weights zeroed (the rest scaled by 1/(1 − rate)); 0 returns `layers` unchanged.
    """
    if rate == 0.0:
        return layers
    check_weight_drop(cell, rate)
    fields = recurrent_weight_fields(cell)
    dropped = []
    for layer, layer_key in zip(layers, jax.random.split(key, len(layers))):
        keys = jax.random.split(layer_key, len(fields))
        dropped.append(layer._replace(**{field: _inverted_dropout(k, getattr(layer, field), rate,
                                                                   getattr(layer, field).shape)
                                         for field, k in zip(fields, keys)}))
    return tuple(dropped)


def activation_penalty(dropped: jax.Array, raw: jax.Array, ar_alpha: float, tar_beta: float,
                       time_axis: int = 1) -> jax.Array:
    """AR + TAR: α · mean(dropped²) + β · mean((raw_t − raw_{t−1})²) over the last layer's outputs.

    Args:
        dropped: the last layer's outputs after dropout, (B, T, H) (or (T, B, H) with time_axis=0).
        raw: the same outputs before dropout.
        ar_alpha, tar_beta: the weights α and β (0 leaves a term out).
        time_axis: 1 for batch-major, 0 for time-major.
    """
    penalty = jnp.zeros((), jnp.float32)
    if ar_alpha:
        penalty += ar_alpha * jnp.mean(jnp.square(dropped.astype(jnp.float32)))
    if tar_beta and raw.shape[time_axis] > 1:
        steps = jnp.diff(raw.astype(jnp.float32), axis=time_axis)
        penalty += tar_beta * jnp.mean(jnp.square(steps))
    return penalty
