"""Training language models: optimisers, the jitted train step, evaluation, checkpoints, logs and sampling.

The loop follows Zaremba et al. 2014: the training stream is reshaped to (B, N) rows and cut into windows of
T steps; the recurrent state is carried from window to window (no gradient across windows) and reset to zero
at each epoch; evaluation carries the state through the whole split and reports
perplexity = exp(total NLL / predicted tokens).

A run directory holds: `config.json`, `vocab.json`, `metrics.jsonl` (every logged event), `metrics.csv` (one
row per epoch), `perplexity.png` (train/valid perplexity against steps and wall time) and `checkpoints/`
(orbax: the last `keep_checkpoints` and the best on validation). `train(..., resume=True)` continues from the
newest checkpoint exactly where the run stopped: parameters, optimiser state, PRNG key, carried state and
data position are all restored.

Example:
    >>> from rnn_jax.configs import PRESETS
    >>> from rnn_jax.training import train
    >>> result = train(PRESETS["notes"].config, "runs/notes")          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import signal
import sys
import threading
import time
import typing
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import data as data_lib
from rnn_jax import parallel
from rnn_jax.lm import LanguageModel, LMConfig, LMParams, REDUCTIONS, output_nll, reduce_nll

# ------------------------------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: "sgd", "adam" or "adamw".
        learning_rate: peak learning rate.
        clip_norm: global gradient-norm clip (None: no clipping).
        schedule: "constant"; "zaremba" (full rate for `decay_after` epochs, then times `decay` each epoch);
            or "cosine" (cosine decay to `final_fraction` x the rate over the run, after `warmup_steps`).
        decay_after: epochs at the full rate ("zaremba").
        decay: per-epoch factor after that ("zaremba").
        warmup_steps: linear warm-up from 0 (adam/adamw, any schedule).
        final_fraction: end rate of the cosine schedule, as a fraction of the peak.
        weight_decay: AdamW's decoupled weight decay.
        b1, b2: Adam's moment decays.
    """

    name: str = "sgd"
    learning_rate: float = 1.0
    clip_norm: Optional[float] = 5.0
    schedule: str = "constant"
    decay_after: int = 0
    decay: float = 1.0
    warmup_steps: int = 0
    final_fraction: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999

    def __post_init__(self):
        if self.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"OptimConfig.name must be 'sgd', 'adam' or 'adamw'; got {self.name!r}")
        if self.schedule not in ("constant", "zaremba", "cosine"):
            raise ValueError(f"OptimConfig.schedule must be 'constant', 'zaremba' or 'cosine'; got {self.schedule!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"OptimConfig.learning_rate must be > 0; got {self.learning_rate}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"OptimConfig.clip_norm must be > 0 or None; got {self.clip_norm}")
        if self.warmup_steps < 0 or self.decay_after < 0 or not self.decay > 0:
            raise ValueError("OptimConfig: warmup_steps and decay_after must be >= 0 and decay > 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as `config.json` in the run directory.

    Attributes:
        model: the language model's architecture.
        data: the corpus and its tokenisation.
        optim: optimiser and schedule.
        batch_size: B, rows of the token stream.
        num_steps: T, the BPTT window.
        epochs: passes over the training split.
        loss_reduction: "token_mean" or "sum_time_mean_batch" (the papers'), see `rnn_jax.lm.sequence_loss`.
        eval_batch_size: batch size for valid/test (default: batch_size).
        seed: PRNG seed (initialisation and dropout).
        max_windows_per_epoch: cap on training windows per epoch (None: the whole split); for smoke runs.
        log_every: windows between train-loss log lines in metrics.jsonl.
        checkpoint_every: windows between mid-epoch checkpoints (0: only at the end of each epoch).
        keep_checkpoints: how many recent checkpoints to keep (the best on validation is kept as well).
        max_bad_steps: consecutive non-finite steps (skipped, never applied) before the run stops.
        sample_length: tokens generated at the end of the run (0: none).
        sample_prompt: the prompt of that sample.
        sample_temperature: its temperature.
        num_devices: devices to shard each batch over (data parallel; None: every visible device). batch_size
            and eval_batch_size must divide by it.
    """

    model: LMConfig = LMConfig()
    data: data_lib.DataConfig = data_lib.DataConfig()
    optim: OptimConfig = OptimConfig()
    batch_size: int = 32
    num_steps: int = 20
    epochs: int = 1
    loss_reduction: str = "token_mean"
    eval_batch_size: Optional[int] = None
    seed: int = 0
    max_windows_per_epoch: Optional[int] = None
    log_every: int = 50
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    max_bad_steps: int = 10
    sample_length: int = 300
    sample_prompt: str = "The "
    sample_temperature: float = 0.8
    num_devices: Optional[int] = None

    def __post_init__(self):
        for name in ("batch_size", "num_steps", "epochs", "log_every", "keep_checkpoints", "max_bad_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int; got {value!r}")
        for name in ("eval_batch_size", "max_windows_per_epoch", "num_devices"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"TrainConfig.{name} must be a positive int or None; got {value!r}")
        if self.checkpoint_every < 0 or self.sample_length < 0:
            raise ValueError("TrainConfig.checkpoint_every and sample_length must be >= 0")
        if self.loss_reduction not in REDUCTIONS[:2]:
            raise ValueError(f"TrainConfig.loss_reduction must be one of {REDUCTIONS[:2]}; got {self.loss_reduction!r}")
        if not self.sample_temperature >= 0:
            raise ValueError(f"TrainConfig.sample_temperature must be >= 0; got {self.sample_temperature}")


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict) -> Any:
    """Rebuilds a (nested) config dataclass from `config_to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = config_from_dict(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------- optimiser


def learning_rate_schedule(optim: OptimConfig, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the optimiser step count."""
    peak = optim.learning_rate
    if optim.schedule == "zaremba":
        base = lambda step: peak * optim.decay ** jnp.maximum(0, step // steps_per_epoch + 1 - optim.decay_after)
    elif optim.schedule == "cosine":
        base = optax.cosine_decay_schedule(peak, max(1, total_steps - optim.warmup_steps), alpha=optim.final_fraction)
    else:
        base = optax.constant_schedule(peak)
    if optim.warmup_steps == 0:
        return base
    warmup = optax.linear_schedule(0.0, peak, optim.warmup_steps)
    return optax.join_schedules([warmup, base], [optim.warmup_steps])


def make_optimizer(optim: OptimConfig, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (optional) followed by SGD, Adam or AdamW on the schedule."""
    schedule = learning_rate_schedule(optim, steps_per_epoch, total_steps)
    if optim.name == "sgd":
        core = optax.sgd(schedule)
    elif optim.name == "adam":
        core = optax.adam(schedule, b1=optim.b1, b2=optim.b2)
    else:
        core = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
    parts = ([optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []) + [core]
    return optax.chain(*parts)


# ------------------------------------------------------------------------------------------------- steps


class TrainState(NamedTuple):
    """What a train step updates: the step count, parameters, optimiser state and the PRNG key (raw uint32)."""

    step: jax.Array
    params: LMParams
    opt_state: Any
    key: jax.Array


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(tree)))


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

    Example:
        >>> sum_rows_by_id(jnp.array([3, 1, 3]), jnp.array([[1.], [2.], [4.]]), 5)  # ([1, 3, 5], [[2.], [5.], [0.]])
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

    Exact: plain SGD (`make_optimizer` with name="sgd"; clipping or any schedule allowed) and untied weights.
    Worth it: one device (on several, summing rows by id would gather every device's rows), and fewer tokens per
    step than rows in the table; at `long` (8192 tokens, 1000 rows) it measured 0-6% slower, with 7 MiB more.
    """
    return optim.name == "sgd" and not model.tie_weights and devices == 1 and tokens_per_step < model.vocab_size


def make_train_step(model: LanguageModel, optimizer: optax.GradientTransformation, reduction: str, *,
                    native: bool = True, sparse_embedding: bool = False) -> Callable:
    """The (unjitted) train step `(state, carry, inputs, targets) -> (state, carry, metrics)`.

    The incoming carry is a constant (no gradient across windows). A step whose loss or gradients are not
    finite (tested through the gradient norm, which also flags a norm beyond float32's range) is not applied:
    parameters, optimiser state and carry stay as they were, `metrics["finite"]` is False. metrics: loss (as
    reduced), nll (token mean, nats), grad_norm, finite. The model's runner (default "fused") runs the layers;
    the loss is `rnn_jax.lm.output_nll`, whose native kernel `native=False` turns off.

    With `sparse_embedding`, the embedding table's gradient is taken as one row per distinct input id
    (`sum_rows_by_id`), and only those rows of the table are updated: the same step, without building, norming
    and adding the (vocab, E) gradient whose other rows are zero (3-5% of a zaremba_small SGD step;
    `sparse_embedding_pays` says when to use it). It is exact only for an optimiser whose update of each leaf is
    a scalar times its gradient: SGD without momentum, with or without global-norm clipping (`make_optimizer`
    with name="sgd"). An optimiser with per-parameter state (momentum, Adam) is refused when the step is traced,
    and one that reads the parameters (weight decay) fails then, since it gets none. Not with tied weights (the
    table is then also the output layer's weight).

    Example:
        >>> optim = OptimConfig(name="sgd", learning_rate=1.0)
        >>> step = jax.jit(make_train_step(model, make_optimizer(optim, 100, 1000), "token_mean",
        ...                                sparse_embedding=sparse_embedding_pays(optim, model.config, 20 * 35)))
        >>> state, carry, metrics = step(state, carry, inputs, targets)  # inputs, targets: (B, T) token ids
    """
    if sparse_embedding and model.config.tie_weights:
        raise ValueError("sparse_embedding=True needs untied weights: with tie_weights the embedding table is also "
                         "the output layer's weight, whose gradient is dense. Use sparse_embedding=False.")

    def loss_of_rows(params, rows, carry, targets, key):
        hs, new_carry = model.hidden_states_from_embeddings(params, carry, rows, key=key, train=True,
                                                            time_major=True)
        nll = output_nll(params, hs, targets.T, native=native).T
        return reduce_nll(nll, reduction), (new_carry, nll.mean())

    def loss_fn(params, carry, inputs, targets, key):
        return loss_of_rows(params, model.embed(params, inputs, time_major=True), carry, targets, key)

    def sparse_gradients(params, carry, inputs, targets, key):
        """Loss, aux and gradients whose embedding leaf is `sum_rows_by_id`'s sums; also the rows' ids."""
        table = params.embedding
        rows = model.embed(params, inputs, time_major=True)
        (loss, aux), (grads, d_rows) = jax.value_and_grad(loss_of_rows, argnums=(0, 1), has_aux=True)(
            params._replace(embedding=None), rows, carry, targets, key)
        row_ids, d_table = sum_rows_by_id(inputs.T.reshape(-1), d_rows.reshape(-1, table.shape[1]), table.shape[0])
        return loss, aux, grads._replace(embedding=d_table), row_ids

    def train_step(state: TrainState, carry, inputs, targets):
        key, dropout_key = jax.random.split(state.key)
        carry = jax.lax.stop_gradient(carry)
        if sparse_embedding:
            table = state.params.embedding
            if any(getattr(leaf, "shape", None) == table.shape for leaf in jax.tree.leaves(state.opt_state)):
                raise ValueError(f"sparse_embedding=True needs an optimiser without per-parameter state (plain SGD); "
                                 f"this one keeps state shaped like the {table.shape} embedding table. Use "
                                 "sparse_embedding=False.")
            loss, (new_carry, nll), grads, row_ids = sparse_gradients(state.params, carry, inputs, targets,
                                                                      dropout_key)
            updates, opt_state = optimizer.update(grads, state.opt_state, None)  # SGD reads no parameters
        else:
            (loss, (new_carry, nll)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, carry, inputs, targets, dropout_key)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        grad_norm = _global_norm(grads)
        # A NaN or inf in any gradient makes the norm non-finite, so one scalar test replaces a pass over every
        # leaf (that pass cost ~10 ms of a zaremba_medium step); a norm beyond float32's range counts as non-finite.
        finite = jnp.logical_and(jnp.isfinite(loss), jnp.isfinite(grad_norm))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        if sparse_embedding:
            others = state.params._replace(embedding=None)
            params = keep(optax.apply_updates(others, updates._replace(embedding=None)), others)
            # A step that is not applied sends every row to index vocab, which the scatter drops.
            row_ids = jnp.where(finite, row_ids, table.shape[0])
            params = params._replace(embedding=table.at[row_ids].add(updates.embedding, mode="drop"))
        else:
            params = keep(optax.apply_updates(state.params, updates), state.params)
        new_state = TrainState(step=state.step + finite.astype(state.step.dtype), params=params,
                               opt_state=keep(opt_state, state.opt_state), key=key)
        metrics = {"loss": loss, "nll": nll, "grad_norm": grad_norm, "finite": finite}
        return new_state, keep(new_carry, carry), metrics

    return train_step


def make_eval_step(model: LanguageModel, *, native: bool = True) -> Callable:
    """`(params, carry, inputs, targets) -> (carry, summed NLL in nats)`, unjitted (`native`: see make_train_step)."""

    def eval_step(params, carry, inputs, targets):
        hs, carry = model.hidden_states(params, carry, inputs, time_major=True)
        return carry, output_nll(params, hs, targets.T, native=native).sum()

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


# ------------------------------------------------------------------------------------------------ sampling


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


# ---------------------------------------------------------------------------------------------------- runs


class NonFiniteError(FloatingPointError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


@contextlib.contextmanager
def _stop_on_signals():
    """Records SIGTERM/SIGINT in `flag["signum"]` instead of dying, so the loop can save first (main thread only)."""
    flag: dict[str, Optional[int]] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        flag["signum"] = signum

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the run directory, per-epoch history, final figures, the sample."""

    run_dir: pathlib.Path
    config: TrainConfig
    history: list
    valid: dict
    test: dict
    sample: str
    params: LMParams
    train_step: Callable
    vocab: data_lib.Vocabulary


def _resolve_config(config: TrainConfig | None, run_dir: pathlib.Path, resume: bool) -> TrainConfig:
    saved_path = run_dir / "config.json"
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if resume:
        if not saved_path.exists():
            raise FileNotFoundError(f"--resume: {saved_path} does not exist; is {run_dir} a run directory?")
        saved = config_from_dict(TrainConfig, json.loads(saved_path.read_text(encoding="utf-8")))
        if config is None:
            return saved
        # vocab_size is derived from the corpus; the device count may change between runs (checkpoints restore
        # on any number of devices), so neither is compared.
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=saved.model.vocab_size))
        if config_to_dict(dataclasses.replace(config, num_devices=saved.num_devices)) != config_to_dict(saved):
            raise ValueError(f"--resume: the config differs from the one saved in {saved_path}; resume without "
                             "overrides (other than --num-devices), or start a new run directory")
        return config
    if config is None:
        raise ValueError("train() needs a config unless resume=True")
    if has_checkpoints:
        raise FileExistsError(f"{run_dir} already holds a run with checkpoints; pass resume=True (--resume) to "
                              "continue it, or choose another run directory (nothing was overwritten)")
    return config


def train(config: TrainConfig | None, run_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Trains a language model, writing everything to `run_dir`; see the module docstring.

    Faults: SIGTERM/SIGINT save a checkpoint at the current step and raise `TrainingInterrupted`; a resumed run
    skips damaged checkpoints (reporting each, renaming it aside, never deleting it) and continues from the
    newest intact one; a step with a non-finite loss or gradient is not applied, and `max_bad_steps` of them
    in a row raise `NonFiniteError` without touching the saved checkpoints.

    Args:
        config: the run's config (None with resume=True: the saved one).
        run_dir: the run directory (created).
        resume: continue from the newest intact checkpoint in `run_dir`.
        progress: show progress within each epoch: a bar on a terminal; elsewhere (a log file, CI) a plain line
            at most every 30 s, since a bar's carriage returns would pile up there.
        log: where the per-epoch lines go.

    Returns:
        `TrainResult`.
    """
    from rnn_jax.checkpoints import Checkpointer
    from rnn_jax.runlog import RunLog

    run_dir = pathlib.Path(run_dir)
    config = _resolve_config(config, run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0  # in a multi-host run only the first process writes logs and files
    if not primary:
        log = lambda _: None

    vocab_path = run_dir / "vocab.json"
    saved_vocab = data_lib.Vocabulary.load(vocab_path) if resume else None
    corpus = data_lib.load_corpus(config.data, vocab=saved_vocab)
    if saved_vocab is not None and saved_vocab.size != config.model.vocab_size:
        raise data_lib.DataError(f"{vocab_path} has {saved_vocab.size} entries but the checkpointed model has "
                                 f"vocab_size {config.model.vocab_size}: the vocabulary file does not belong to this run")
    if config.model.vocab_size != corpus.vocab.size:
        log(f"vocab_size {config.model.vocab_size} -> {corpus.vocab.size} (the vocabulary built from the training split)")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=corpus.vocab.size))
    if not resume and primary:
        _write_atomically(run_dir / "config.json", json.dumps(config_to_dict(config), indent=2))
        _write_atomically(vocab_path, json.dumps(corpus.vocab.to_json(), ensure_ascii=False))

    rows = data_lib.batchify(corpus.train, config.batch_size, name="train")
    data_lib.check_trainable(rows, config.num_steps)
    windows_per_epoch = data_lib.num_windows(rows, config.num_steps)
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_divisible(config.batch_size, mesh)
    parallel.check_divisible(config.eval_batch_size or config.batch_size, mesh, "eval_batch_size")
    rows = parallel.local_rows(rows)  # this process's rows; all of them on a single host
    rows_sharding, replicated = parallel.rows_sharded(mesh), parallel.replicated(mesh)
    if config.max_windows_per_epoch:
        windows_per_epoch = min(windows_per_epoch, config.max_windows_per_epoch)
    eval_batch = config.eval_batch_size or config.batch_size

    model = LanguageModel(config.model)
    optimizer = make_optimizer(config.optim, windows_per_epoch, windows_per_epoch * config.epochs)
    schedule = learning_rate_schedule(config.optim, windows_per_epoch, windows_per_epoch * config.epochs)
    # SGD's update of a row the batch did not use is zero, so only the used rows are updated (same result).
    sparse_embedding = sparse_embedding_pays(config.optim, config.model, config.batch_size * config.num_steps,
                                             mesh.size)
    # Fixed shardings in and out: the step compiles once, whatever the device count.
    train_step = parallel.under_mesh(mesh, jax.jit(
        make_train_step(model, optimizer, config.loss_reduction, sparse_embedding=sparse_embedding),
        donate_argnums=(0, 1),
        in_shardings=(replicated, rows_sharding, rows_sharding, rows_sharding),
        out_shardings=(replicated, rows_sharding, replicated)))
    eval_step = jax.jit(make_eval_step(model), in_shardings=(replicated, rows_sharding, rows_sharding, rows_sharding),
                        out_shardings=(rows_sharding, replicated))  # `evaluate` runs it under the mesh

    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = model.init(init_key)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=train_key)
    state = parallel.place(state, replicated)
    carry = parallel.place(model.initial_state(config.batch_size), rows_sharding)
    record = {"epoch": 0, "window": 0, "windows": 0, "elapsed": 0.0, "best_valid_nll": None, "best_step": None,
              "skipped_steps": 0, "epoch_nll": 0.0, "epoch_windows": 0, "epoch_seconds": 0.0}

    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
    runlog = RunLog(run_dir, enabled=primary)
    if resume and not checkpointer.steps():
        runlog.truncate_after(0)
        log(f"{run_dir} has no checkpoint yet: starting the run from the beginning")
    elif resume:
        (state, carry), restored, restored_step = checkpointer.restore_latest((state, carry), report=log)
        for damaged in [step for step in checkpointer.steps() if step > restored_step]:
            log(f"checkpoint {damaged} is damaged: moved aside to {checkpointer.quarantine(damaged).name}")
        restored.pop("config", None)
        record.update(restored)
        runlog.truncate_after(record["windows"])
        log(f"resumed {run_dir} at checkpoint {restored_step}: epoch {record['epoch'] + 1}, window {record['window']}")
    log(f"{corpus.description}: {len(corpus.train):,} train / {len(corpus.valid):,} valid / {len(corpus.test):,} test "
        f"tokens, vocabulary {corpus.vocab.size} ({corpus.vocab.level} level); {windows_per_epoch} windows of "
        f"{config.batch_size}x{config.num_steps} per epoch")

    def save(valid_nll=None):
        checkpointer.save(record["windows"], (state, carry), dict(record, config=config_to_dict(config)),
                          valid_nll=valid_nll)

    def interrupt(signum: int):
        record["elapsed"] = time.perf_counter() - start_time
        record["epoch_seconds"] = time.perf_counter() - epoch_start
        save()
        checkpointer.close()
        name = signal.Signals(signum).name
        raise TrainingInterrupted(f"{name} received: saved checkpoint {record['windows']} (epoch {record['epoch'] + 1}, "
                                  f"window {record['window']}) in {checkpointer.directory}; continue with --resume",
                                  signum)

    start_time = time.perf_counter() - record["elapsed"]
    history = [e for e in runlog.events() if e.get("kind") == "epoch"]
    bad_in_row = 0
    with _stop_on_signals() as stop:
        for epoch in range(record["epoch"], config.epochs):
            if record["window"] == 0:
                carry = parallel.place(model.initial_state(config.batch_size), rows_sharding)
                record.update(epoch_nll=0.0, epoch_windows=0, epoch_seconds=0.0)
            running = []
            epoch_start = time.perf_counter() - record["epoch_seconds"]
            bar = progress_bar(windows_per_epoch, record["window"], f"epoch {epoch + 1}/{config.epochs}",
                               enabled=progress and primary)
            for index in range(record["window"], windows_per_epoch):
                if stop["signum"] is not None:
                    bar.close()
                    interrupt(stop["signum"])
                inputs, targets = data_lib.window(rows, index, config.num_steps)
                state, carry, metrics = train_step(state, carry, parallel.global_batch(mesh, inputs),
                                                   parallel.global_batch(mesh, targets))
                metrics = jax.device_get(metrics)
                record["window"], record["windows"] = index + 1, record["windows"] + 1
                if not metrics["finite"]:
                    bad_in_row += 1
                    record["skipped_steps"] += 1
                    runlog.write({"kind": "skipped", "windows": record["windows"], "epoch": epoch + 1,
                                  "loss": float(metrics["loss"])})
                    if bad_in_row >= config.max_bad_steps:
                        checkpointer.close()
                        raise NonFiniteError(
                            f"{bad_in_row} consecutive non-finite training steps (the last at window {index} of epoch "
                            f"{epoch + 1}, run step {record['windows']}); none was applied. The last good checkpoint in "
                            f"{checkpointer.directory} is intact; lower the learning rate or check the data")
                    continue
                bad_in_row = 0
                record["epoch_nll"] += float(metrics["nll"])
                record["epoch_windows"] += 1
                running.append(float(metrics["nll"]))
                bar.update(1)
                if record["windows"] % config.log_every == 0:
                    mean_nll = float(np.mean(running))
                    running = []
                    elapsed = time.perf_counter() - epoch_start
                    tokens_per_s = record["epoch_windows"] * config.batch_size * config.num_steps / max(elapsed, 1e-9)
                    bar.set_postfix(loss=f"{mean_nll:.3f}", ppl=f"{math.exp(min(mean_nll, 50)):.1f}",
                                    tok_s=f"{tokens_per_s:,.0f}")
                    runlog.write({"kind": "train", "windows": record["windows"], "epoch": epoch + 1,
                                  "wall_s": time.perf_counter() - start_time, "train_nll": mean_nll,
                                  "grad_norm": float(metrics["grad_norm"]), "tokens_per_s": tokens_per_s})
                if config.checkpoint_every and record["window"] % config.checkpoint_every == 0 \
                        and record["window"] < windows_per_epoch:
                    record["elapsed"] = time.perf_counter() - start_time
                    record["epoch_seconds"] = time.perf_counter() - epoch_start
                    save()
            bar.close()
            epoch_time = time.perf_counter() - epoch_start
            valid = evaluate(model, state.params, corpus.valid, eval_batch, config.num_steps, eval_step, mesh=mesh)
            train_nll = record["epoch_nll"] / max(record["epoch_windows"], 1)
            record.update(epoch=epoch + 1, window=0, elapsed=time.perf_counter() - start_time)
            if record["best_valid_nll"] is None or valid["nll"] < record["best_valid_nll"]:
                record["best_valid_nll"], record["best_step"] = valid["nll"], record["windows"]
            event = {"kind": "epoch", "epoch": epoch + 1, "windows": record["windows"], "step": int(state.step),
                     "wall_s": record["elapsed"], "learning_rate": float(schedule(max(int(state.step) - 1, 0))),
                     "train_nll": train_nll, "train_perplexity": math.exp(min(train_nll, 700)),
                     "valid_nll": valid["nll"], "valid_perplexity": valid["perplexity"],
                     "tokens_per_s": record["epoch_windows"] * config.batch_size * config.num_steps / max(epoch_time, 1e-9),
                     "skipped_steps": record["skipped_steps"]}
            runlog.write(event)
            history.append(event)
            save(valid_nll=valid["nll"])
            runlog.write_csv()
            runlog.plot(title=f"{config.model.cell.upper()} {config.model.num_layers}x{config.model.hidden_size}, "
                              f"{corpus.description}")
            log(f"epoch {epoch + 1}/{config.epochs}  train ppl {event['train_perplexity']:.2f}  valid ppl "
                f"{valid['perplexity']:.2f} ({valid['nll']:.4f} nats/token)  lr {event['learning_rate']:.4g}  "
                f"{event['tokens_per_s']:,.0f} tok/s  {record['elapsed']:.0f}s")
            if stop["signum"] is not None and epoch + 1 < config.epochs:
                interrupt(stop["signum"])

    best_params = state.params
    if record["best_step"] is not None and record["best_step"] != record["windows"]:
        (best_state, _), _ = checkpointer.restore(record["best_step"], (state, carry))
        best_params = best_state.params
    checkpointer.close()
    valid = evaluate(model, best_params, corpus.valid, eval_batch, config.num_steps, eval_step, mesh=mesh)
    test = evaluate(model, best_params, corpus.test, eval_batch, config.num_steps, eval_step, name="test", mesh=mesh)
    sample = ""
    if config.sample_length:
        sample = generate(model, best_params, corpus.vocab, config.sample_prompt, config.sample_length,
                          temperature=config.sample_temperature, key=jax.random.PRNGKey(config.seed + 1))
    summary = {"best_step": record["best_step"], "valid": valid, "test": test, "wall_s": record["elapsed"],
               "epochs": config.epochs, "skipped_steps": record["skipped_steps"], "sample": sample}
    if primary:
        _write_atomically(run_dir / "summary.json", json.dumps(summary, indent=2))
    log(f"best valid ppl {valid['perplexity']:.2f} ({valid['nll']:.4f} nats/token), test ppl "
        f"{test['perplexity']:.2f} ({test['nll']:.4f} nats/token); run saved in {run_dir}")
    return TrainResult(run_dir=run_dir, config=config, history=history, valid=valid, test=test, sample=sample,
                       params=best_params, train_step=train_step, vocab=corpus.vocab)


class LineProgress:
    """A progress report for a stream that is not a terminal: `desc: n/total win  key=value ...` on its own line,
    at most every `interval` seconds (and when closed), in place of a bar's carriage-return redraws."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", *, stream=None, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.n, self.desc = total, initial, desc
        self.stream, self.interval, self.clock = stream, interval, clock
        self.postfix: dict = {}
        self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        self._print()

    def _print(self) -> None:
        self.last = self.clock()
        extra = "".join(f"  {key}={value}" for key, value in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} win{extra}", file=self.stream or sys.stderr, flush=True)


def progress_bar(total: int, initial: int, desc: str, *, enabled: bool = True):
    """tqdm's bar on a terminal; `LineProgress` when stderr is redirected; a silent tqdm when not `enabled`."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, unit="win", disable=not enabled, mininterval=0.5,
                leave=False)


def load_run_for_sampling(run_dir: str | os.PathLike, which: str = "best"):
    """(model, params, vocabulary, config) of a saved run, from its best or newest intact checkpoint."""
    from rnn_jax.checkpoints import Checkpointer

    run_dir = pathlib.Path(run_dir)
    config = _resolve_config(None, run_dir, resume=True)
    vocab = data_lib.Vocabulary.load(run_dir / "vocab.json")
    if vocab.size != config.model.vocab_size:
        raise data_lib.DataError(f"{run_dir / 'vocab.json'} has {vocab.size} entries but the run's model has "
                                 f"vocab_size {config.model.vocab_size}: the vocabulary does not belong to this run")
    model = LanguageModel(config.model)
    params = model.init(jax.random.PRNGKey(0))
    optimizer = make_optimizer(config.optim, 1, 1)
    template = (TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                           key=jax.random.PRNGKey(0)), model.initial_state(config.batch_size))
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
    try:
        (state, _), record, step = checkpointer.restore_latest(template)
        if which == "best" and record.get("best_step") not in (None, step):
            (state, _), _ = checkpointer.restore(record["best_step"], template)
    finally:
        checkpointer.close()
    return model, state.params, vocab, config
