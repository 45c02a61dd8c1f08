"""Sampling from a trained language model, and loading a saved run for it.

Examples:
    >>> from rnn_jax.train import generate, load_run_for_sampling
    >>> model, params, vocab, config = load_run_for_sampling("runs/notes")     # doctest: +SKIP
    >>> print(generate(model, params, vocab, "The ", 100, temperature=0.8))   # doctest: +SKIP
    >>> generate_many(model, params, vocab, "The ", 100, num_samples=4, top_p=0.9)  # doctest: +SKIP
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


def filter_logits(logits: jax.Array, top_k: int | None = None, top_p: float | None = None) -> jax.Array:
    """Logits with every token outside the top-k and outside the nucleus (top-p) set to -inf.

    The nucleus is the smallest set of most probable tokens whose probabilities sum to at least `top_p` (Holtzman
    et al. 2020, "The Curious Case of Neural Text Degeneration"); ties at the boundary are kept.

    Args:
        logits: (..., V).
        top_k: keep the k most probable tokens (None: all).
        top_p: in (0, 1]; keep the nucleus of this mass (None or 1: all).

    Returns:
        (..., V), the kept logits unchanged.

    Examples:
        >>> import jax.numpy as jnp
        >>> filter_logits(jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05])), top_p=0.7).tolist()[2:]
        [-inf, -inf]
    """
    if top_k is not None:
        kth = jnp.sort(logits, axis=-1)[..., -min(top_k, logits.shape[-1]), None]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1:
        descending = jnp.sort(logits, axis=-1)[..., ::-1]
        probabilities = jax.nn.softmax(descending, axis=-1)
        mass_before = jnp.cumsum(probabilities, axis=-1) - probabilities
        kept = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)  # >= 1: the most probable is always kept
        smallest_kept = jnp.take_along_axis(descending, kept - 1, axis=-1)
        logits = jnp.where(logits < smallest_kept, -jnp.inf, logits)
    return logits


def _check_sampling(length: int, temperature: float, top_k: int | None, top_p: float | None, num_samples: int):
    for ok, what, value in ((length >= 0, "length must be >= 0", length),
                            (temperature >= 0, "temperature must be >= 0 (0: greedy)", temperature),
                            (top_k is None or top_k >= 1, "top_k must be >= 1 or None", top_k),
                            (top_p is None or 0 < top_p <= 1, "top_p must be in (0, 1] or None", top_p),
                            (num_samples >= 1, "num_samples must be >= 1", num_samples)):
        if not ok:
            raise ValueError(f"{what}; got {value}")


def generate_many(model: LanguageModel, params: LMParams, vocab: data_lib.Vocabulary, prompt: str, length: int,
                  *, num_samples: int = 1, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, key: jax.Array | None = None) -> list[str]:
    """`num_samples` continuations of `prompt`, `length` tokens each, sampled side by side as one batch.

    Each step scales the logits by 1/temperature, keeps the top-k and the top-p nucleus (`filter_logits`) and
    draws from the rest; temperature 0 is greedy (then every sample is the same). The same key gives the same
    texts. Returns prompt + continuation for each sample.
    """
    _check_sampling(length, temperature, top_k, top_p, num_samples)
    prompt_ids = vocab.encode(vocab.tokenize(prompt))
    if vocab.level == "word" and len(prompt_ids) and prompt_ids[-1] == vocab.encode([data_lib.EOS])[0] \
            and not prompt.endswith("\n"):
        prompt_ids = prompt_ids[:-1]  # a prompt is an unfinished line: no <eos> after it
    if len(prompt_ids) == 0:
        eos_or_newline = data_lib.EOS if vocab.level == "word" else "\n"
        prompt_ids = vocab.encode([eos_or_newline])
    key = jax.random.PRNGKey(0) if key is None else key
    carry = model.initial_state(num_samples, params.embedding.dtype)
    prompts = jnp.tile(jnp.asarray(prompt_ids)[None], (num_samples, 1))
    generated = _sample(model, params, carry, prompts, key, length, float(temperature), top_k, top_p)
    joiner = " " if vocab.level == "word" and prompt and not prompt.endswith((" ", "\n")) else ""
    return [prompt + joiner + vocab.detokenize(row) for row in np.asarray(generated)]


def generate(model: LanguageModel, params: LMParams, vocab: data_lib.Vocabulary, prompt: str, length: int,
             *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             key: jax.Array | None = None) -> str:
    """Continues `prompt` with `length` sampled tokens and returns prompt + sample (see `generate_many`)."""
    return generate_many(model, params, vocab, prompt, length, temperature=temperature, top_k=top_k, top_p=top_p,
                         key=key)[0]


def _sample(model, params, carry, prompt_ids, key, length, temperature, top_k, top_p):
    logits, carry = model.apply(params, carry, prompt_ids)

    @jax.jit
    def run(params, carry, last_logits, key):
        def body(state, step_key):
            carry, logits = state
            if temperature == 0:
                token = jnp.argmax(logits, axis=-1)
            else:
                token = jax.random.categorical(step_key, filter_logits(logits / temperature, top_k, top_p), axis=-1)
            logits, carry = model.apply(params, carry, token[:, None].astype(jnp.int32))
            return (carry, logits[:, -1]), token

        _, tokens = jax.lax.scan(body, (carry, last_logits), jax.random.split(key, length))
        return tokens.T  # (N, length)

    return run(params, carry, logits[:, -1], key) if length else np.zeros((prompt_ids.shape[0], 0), np.int32)


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
