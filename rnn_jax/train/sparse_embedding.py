"""The sparse embedding update: with plain SGD, only the batch's rows of the embedding table are updated.

The table's gradient is taken as one row per distinct input id (`sum_rows_by_id`) instead of a (vocab, E) array
whose other rows are zero, and only those rows are changed: the same step, without building, norming and adding
the dense gradient. Exact only for an optimiser whose update of each leaf is a scalar times its gradient (SGD
without momentum, with or without global-norm clipping); `sparse_embedding_pays` says when to use it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from rnn_jax.lm import LMConfig
from rnn_jax.train.config import OptimConfig


def sum_rows_by_id(ids: jax.Array, rows: jax.Array, vocab_size: int) -> tuple[jax.Array, jax.Array]:
    """Sums the rows that share an id: the (vocab, E) gradient of a table lookup, without the table's zeros.

    Args:
        ids: (N,) int ids of the looked-up rows.
        rows: (N, E) a gradient row per id.
        vocab_size: the table's row count; padding slots get this (out-of-range) id.

    Returns:
        (unique_ids (N,), sums (N, E)): the distinct ids in increasing order, then `vocab_size`; the sum of the
        rows of each distinct id, then zero rows. Scattering the sums into zeros at unique_ids (dropping the
        padding) gives the dense gradient.

    Examples:
        >>> ids, sums = sum_rows_by_id(jnp.array([3, 1, 3]), jnp.array([[1.], [2.], [4.]]), 5)
        >>> ids.tolist(), sums.tolist()
        ([1, 3, 5], [[2.0], [5.0], [0.0]])
    """
    order = jnp.argsort(ids, stable=True)
    sorted_ids = ids[order]
    starts = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
    slot = jnp.cumsum(starts) - 1
    n = ids.shape[0]
    sums = jax.ops.segment_sum(rows[order], slot, num_segments=n, indices_are_sorted=True)
    unique_ids = jnp.full((n,), vocab_size, ids.dtype).at[slot].set(sorted_ids)
    return unique_ids, sums


def sparse_embedding_pays(optim: OptimConfig, model: LMConfig, tokens_per_step: int, devices: int = 1) -> bool:
    """Whether `make_train_step(..., sparse_embedding=True)` is exact here and worth it.

    Exact: plain SGD (`make_optimizer` with name="sgd" and no weight decay; clipping or any schedule allowed) and
    untied weights.
    Worth it: one device (on several, summing rows by id would gather every device's rows), and fewer tokens per
    step than rows in the table; at `long` (8192 tokens, 1000 rows) it measured 0-6% slower, with 7 MiB more.
    """
    return (optim.name == "sgd" and not optim.weight_decay and not model.tie_weights and devices == 1
            and tokens_per_step < model.vocab_size)




def check_optimizer_state(opt_state, table: jax.Array) -> None:
    """Refuses an optimiser with state shaped like the table (momentum, Adam): the sparse update would be wrong."""
    if any(getattr(leaf, "shape", None) == table.shape for leaf in jax.tree.leaves(opt_state)):
        raise ValueError(f"sparse_embedding=True needs an optimiser without per-parameter state (plain SGD); this one "
                         f"keeps state shaped like the {table.shape} embedding table. Use sparse_embedding=False.")


def sparse_gradients(loss_of_rows: Callable, embed: Callable, params, carry, inputs, targets, key):
    """(loss, aux, gradients whose embedding leaf is `sum_rows_by_id`'s sums, the rows' ids).

    `loss_of_rows(params, rows, carry, targets, key) -> (loss, aux)` takes the embedded rows (T, B, E);
    `embed(params, inputs)` gives them.
    """
    table = params.embedding
    rows = embed(params, inputs)
    (loss, aux), (grads, d_rows) = jax.value_and_grad(loss_of_rows, argnums=(0, 1), has_aux=True)(
        params._replace(embedding=None), rows, carry, targets, key)
    row_ids, d_table = sum_rows_by_id(inputs.T.reshape(-1), d_rows.reshape(-1, table.shape[1]), table.shape[0])
    return loss, aux, grads._replace(embedding=d_table), row_ids


def updated_values(params, updates):
    """What decides whether `apply_sparse` gives finite parameters: the dense parameters after their updates, and
    the table's row updates (the table itself was finite before the step)."""
    return optax.apply_updates(params._replace(embedding=None), updates._replace(embedding=None)), updates.embedding


def apply_sparse(params, updates, row_ids, finite, keep: Callable):
    """The parameters after `updates`, the table changed only at `row_ids`; nothing changes unless `finite`."""
    table = params.embedding
    others = params._replace(embedding=None)
    new = keep(optax.apply_updates(others, updates._replace(embedding=None)), others)
    # A step that is not applied sends every row to index vocab, which the scatter drops.
    row_ids = jnp.where(finite, row_ids, table.shape[0])
    return new._replace(embedding=table.at[row_ids].add(updates.embedding, mode="drop"))
