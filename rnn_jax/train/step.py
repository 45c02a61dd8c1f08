"""The jitted steps: training (with a guard that never applies a non-finite step) and evaluation.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.lm import LanguageModel, LMConfig
    >>> from rnn_jax.train import OptimConfig, TrainState, make_optimizer, make_train_step
    >>> model = LanguageModel(LMConfig(vocab_size=10))
    >>> optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=0.5), 100, 1000)
    >>> params = model.init(jax.random.key(0))
    >>> state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.key(1))
    >>> step = jax.jit(make_train_step(model, optimizer, "token_mean"))
    >>> tokens = jnp.zeros((4, 6), jnp.int32)
    >>> state, carry, metrics = step(state, model.initial_state(4), tokens, tokens)
    >>> bool(metrics["finite"]), int(state.step)
    (True, 1)
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import data as data_lib
from rnn_jax import parallel
from rnn_jax.lm import LanguageModel, LMParams, reduce_nll
from rnn_jax.train import sparse_embedding as sparse


class TrainState(NamedTuple):
    """What a train step updates: the step count, parameters, optimiser state and the PRNG key."""

    step: jax.Array
    params: LMParams
    opt_state: Any
    key: jax.Array


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(tree)))


def make_train_step(model: LanguageModel, optimizer: optax.GradientTransformation, reduction: str, *,
                    native: bool | None = None, sparse_embedding: bool = False,
                    nominal_steps: int | None = None) -> Callable:
    """The (unjitted) train step `(state, carry, inputs, targets) -> (state, carry, metrics)`.

    The incoming carry is a constant (no gradient across windows). A step whose loss, gradients or updated
    parameters are not finite (tested through their norms, which also flag a norm beyond float32's range) is not
    applied: parameters, optimiser state and carry stay as they were, `metrics["finite"]` is False. metrics: loss (as
    reduced, plus the AR/TAR penalty where the config asks for it), nll (token mean, nats), grad_norm, finite. The
    config's regularisers (`LanguageModel.training_features`) act here only; evaluation runs without them. The model's runner (default "fused") runs the layers;
    the loss is `rnn_jax.output.output_nll` (`native=False` keeps its XLA form; None follows the native policy).

    With `nominal_steps` T, a window of length T' updates with `length_scale=T'/T` (windows of sampled lengths scale
    the learning rate, `rnn_jax.train.optim.scale_by_window_length`; the optimiser must take that extra argument).

    With `sparse_embedding` (`rnn_jax.train.sparse_embedding`), only the batch's rows of the embedding table are
    updated: exact for SGD without momentum (with or without clipping); an optimiser with per-parameter state is
    refused when the step is traced. Not with tied weights (the table is then also the output layer's weight).
    """
    if sparse_embedding and model.config.tie_weights:
        raise ValueError("sparse_embedding=True needs untied weights: with tie_weights the embedding table is also "
                         "the output layer's weight, whose gradient is dense. Use sparse_embedding=False.")

    def loss_of_rows_for(inputs):
        """The loss of the embedded rows of `inputs` (their ids drive embedding dropout), with the AR/TAR penalty."""

        def loss_of_rows(params, rows, carry, targets, key):
            hs, new_carry, penalty = model.training_features(params, carry, rows, inputs.T, key, time_major=True)
            nll = model.output_nll(params, hs, targets.T, native=native).T
            return reduce_nll(nll, reduction) + penalty, (new_carry, nll.mean())

        return loss_of_rows

    embed = lambda params, inputs: model.embed(params, inputs, time_major=True)

    def train_step(state: TrainState, carry, inputs, targets):
        extra = {} if nominal_steps is None else {"length_scale": inputs.shape[1] / nominal_steps}
        key, dropout_key = jax.random.split(state.key)
        carry = jax.lax.stop_gradient(carry)
        if sparse_embedding:
            sparse.check_optimizer_state(state.opt_state, state.params.embedding)
            loss, (new_carry, nll), grads, row_ids = sparse.sparse_gradients(
                loss_of_rows_for(inputs), embed, state.params, carry, inputs, targets, dropout_key)
            updates, opt_state = optimizer.update(grads, state.opt_state, None, **extra)  # SGD reads no parameters
        else:
            (loss, (new_carry, nll)), grads = jax.value_and_grad(
                lambda p: loss_of_rows_for(inputs)(p, embed(p, inputs), carry, targets, dropout_key),
                has_aux=True)(state.params)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
        grad_norm = _global_norm(grads)
        if sparse_embedding:
            candidate_norm = _global_norm(sparse.updated_values(state.params, updates))
        else:
            candidate = optax.apply_updates(state.params, updates)
            candidate_norm = _global_norm(candidate)
        # One scalar per tree instead of a pass over every leaf (that pass cost ~10 ms of a zaremba_medium step):
        # a NaN or inf anywhere makes the norm non-finite, and so does a norm beyond float32's range.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(candidate_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        if sparse_embedding:
            params = sparse.apply_sparse(state.params, updates, row_ids, finite, keep)
        else:
            params = keep(candidate, state.params)
        new_state = TrainState(step=state.step + finite.astype(state.step.dtype), params=params,
                               opt_state=keep(opt_state, state.opt_state), key=key)
        metrics = {"loss": loss, "nll": nll, "grad_norm": grad_norm, "finite": finite}
        return new_state, keep(new_carry, carry), metrics

    return train_step


def make_eval_step(model: LanguageModel, *, native: bool | None = None) -> Callable:
    """`(params, carry, inputs, targets) -> (carry, summed NLL in nats)`, unjitted (`native`: see make_train_step)."""

    def eval_step(params, carry, inputs, targets):
        hs, carry = model.hidden_states(params, carry, inputs, time_major=True)
        return carry, model.output_nll(params, hs, targets.T, native=native).sum()

    return eval_step


def evaluate(model: LanguageModel, params: LMParams, ids: np.ndarray, batch_size: int, num_steps: int,
             eval_step: Callable | None = None, name: str = "valid", mesh=None) -> dict:
    """NLL of a whole split with the state carried through it (rows sharded over `mesh` if given).

    Returns:
        {"nll": nats per predicted token, "perplexity": exp(nll), "tokens": predicted tokens}.
    """
    step = eval_step or jax.jit(make_eval_step(model))
    rows = data_lib.batchify(ids, batch_size, name=name)
    carry = model.initial_state(batch_size, params.embedding.dtype)
    if mesh is not None:
        parallel.check_divisible(batch_size, mesh, "eval_batch_size")
        carry, rows = parallel.place(carry, parallel.rows_sharded(mesh)), parallel.local_rows(rows)
        step = parallel.under_mesh(mesh, step)
    to_device = (lambda a: parallel.global_batch(mesh, a)) if mesh is not None else jnp.asarray
    total, count = 0.0, 0
    for index in range(data_lib.num_windows(rows, num_steps, drop_last=False)):
        inputs, targets = data_lib.window(rows, index, num_steps)
        carry, nll_sum = step(params, carry, to_device(inputs), to_device(targets))
        total += float(nll_sum)
        count += targets.size * jax.process_count()
    nll = total / count
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "tokens": count}

