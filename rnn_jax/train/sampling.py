"""Sampling from a trained language model, and loading a saved run for it.

Example:
    >>> from rnn_jax.train import generate, load_run_for_sampling
    >>> model, params, vocab, config = load_run_for_sampling("runs/notes")     # doctest: +SKIP
    >>> print(generate(model, params, vocab, "The ", 100, temperature=0.8))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import data as data_lib
from rnn_jax.checkpoints import Checkpointer, CheckpointError
from rnn_jax.lm import LanguageModel, LMParams
from rnn_jax.train.config import TrainConfig, config_from_dict
from rnn_jax.train.optim import make_optimizer
from rnn_jax.train.step import TrainState


def generate(model: LanguageModel, params: LMParams, vocab: data_lib.Vocabulary, prompt: str, length: int,
             *, temperature: float = 1.0, key: jax.Array | None = None) -> str:
    """Continues `prompt` with `length` sampled tokens (temperature 0: greedy) and returns prompt + sample."""
    if length < 0:
        raise ValueError(f"length must be >= 0; got {length}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    prompt_ids = vocab.encode(vocab.tokenize(prompt))
    if vocab.level == "word" and len(prompt_ids) and prompt_ids[-1] == vocab.encode([data_lib.EOS])[0] \
            and not prompt.endswith("\n"):
        prompt_ids = prompt_ids[:-1]  # a prompt is an unfinished line: no <eos> after it
    if len(prompt_ids) == 0:
        eos_or_newline = data_lib.EOS if vocab.level == "word" else "\n"
        prompt_ids = vocab.encode([eos_or_newline])
    key = jax.random.PRNGKey(0) if key is None else key
    carry = model.initial_state(1, params.embedding.dtype)
    generated = _sample(model, params, carry, jnp.asarray(prompt_ids[None]), key, length, float(temperature))
    return prompt + (" " if vocab.level == "word" and prompt and not prompt.endswith((" ", "\n")) else "") + \
        vocab.detokenize(np.asarray(generated))


def _sample(model, params, carry, prompt_ids, key, length, temperature):
    logits, carry = model.apply(params, carry, prompt_ids)

    @jax.jit
    def run(params, carry, last_logits, key):
        def body(state, step_key):
            carry, logits = state
            if temperature == 0:
                token = jnp.argmax(logits, axis=-1)
            else:
                token = jax.random.categorical(step_key, logits / temperature, axis=-1)
            logits, carry = model.apply(params, carry, token[:, None].astype(jnp.int32))
            return (carry, logits[:, -1]), token[0]

        _, tokens = jax.lax.scan(body, (carry, last_logits), jax.random.split(key, length))
        return tokens

    return run(params, carry, logits[:, -1], key) if length else np.zeros((0,), np.int32)


def saved_config(run_dir: pathlib.Path) -> TrainConfig:
    """The config saved in a run directory."""
    path = run_dir / "config.json"
    if not path.exists():
        what = "does not exist" if not run_dir.exists() else "is not a run directory (it has no config.json)"
        raise FileNotFoundError(f"{run_dir} {what}; give the run directory of a training run (runs/<config> by "
                                "default)")
    return config_from_dict(TrainConfig, json.loads(path.read_text(encoding="utf-8")))


def load_run_for_sampling(run_dir: str | os.PathLike, which: str = "best",
                          optimizer: optax.GradientTransformation | None = None,
                          report: Callable[[str], None] = lambda message: print(message, file=sys.stderr)):
    """(model, params, vocabulary, config) of a saved run, from its best or newest intact checkpoint.

    As a resumed run does, it skips damaged checkpoints (each one reported) and takes the newest intact one;
    "best" takes the best on validation where that one is intact, else the newest intact.

    `optimizer`: the one the run was trained with, if it was not built from its config (`train(optimizer=...)`).
    """
    run_dir = pathlib.Path(run_dir)
    config = saved_config(run_dir)
    vocab = data_lib.Vocabulary.load(run_dir / "vocab.json")
    if vocab.size != config.model.vocab_size:
        raise data_lib.DataError(f"{run_dir / 'vocab.json'} has {vocab.size} entries but the run's model has "
                                 f"vocab_size {config.model.vocab_size}: the vocabulary does not belong to this run")
    model = LanguageModel(config.model)
    params = model.init(jax.random.PRNGKey(0))
    optimizer = optimizer or make_optimizer(config.optim, 1, 1)
    template = (TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                           key=jax.random.PRNGKey(0)), model.initial_state(config.batch_size))
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
    try:
        (state, _), record, step = checkpointer.restore_latest(template, report=report)
        best = record.get("best_step")
        if which == "best" and best not in (None, step) and best in checkpointer.steps():
            try:
                (state, _), _ = checkpointer.restore(best, template)
            except CheckpointError as damaged:
                report(f"{damaged}; sampling from the newest intact checkpoint ({step}) instead")
    finally:
        checkpointer.close()
    return model, state.params, vocab, config
