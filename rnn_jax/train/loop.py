"""The training loop: `train(config, run_dir)` runs, logs, checkpoints and resumes a language-model run.

The loop follows Zaremba et al. 2014: the training stream is reshaped to (B, N) rows and cut into windows of
T steps; the recurrent state is carried from window to window (no gradient across windows) and reset to zero
at each epoch; evaluation carries the state through the whole split and reports
perplexity = exp(total NLL / predicted tokens).

A run directory holds: `config.json`, `vocab.json`, `metrics.jsonl` (every logged event), `metrics.csv` (one
row per epoch), `perplexity.png` (train/valid perplexity against steps and wall time) and `checkpoints/`
(orbax: the last `keep_checkpoints` and the best on validation). `train(..., resume=True)` continues from the
newest intact checkpoint exactly where the run stopped: parameters, optimiser state, PRNG key, carried state and
the loop's position (`LoopPosition`) are all restored.

Examples:
    >>> from rnn_jax.configs import PRESETS
    >>> from rnn_jax.train import train
    >>> result = train(PRESETS["notes"].config, "runs/notes")          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import signal
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax.errors import ConfigError, DivergenceError, ExpectedError
from rnn_jax import data as data_lib
from rnn_jax import kernels, parallel
from rnn_jax.checkpoints import Checkpointer
from rnn_jax.lm import LanguageModel
from rnn_jax.runlog import RunLog
from rnn_jax.train.config import TrainConfig, config_to_dict
from rnn_jax.train.budget import Budget, BudgetClock
from rnn_jax.train.optim import after_validation, evaluation_params, learning_rate_schedule, make_optimizer
from rnn_jax.train.position import LoopPosition, TrainResult, divergence  # noqa: F401  (re-exported)
from rnn_jax.train.progress import perplexity_text, progress_bar
from rnn_jax.train.run_dir import load_corpus, resolve_config, write_atomically
from rnn_jax.train.sampling import generate
from rnn_jax.train.signals import TrainingInterrupted, stop_on_signals
from rnn_jax.train.sparse_embedding import sparse_embedding_pays
from rnn_jax.train.step import TrainState, evaluate, make_eval_step, make_train_step


class NonFiniteError(ExpectedError, FloatingPointError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


class _Run:
    """One training run's moving parts: data rows, compiled steps, state, carry, position, checkpoints, logs."""

    def __init__(self, config: TrainConfig, corpus, run_dir: pathlib.Path, optimizer, primary: bool, log,
                 progress: bool):
        self.config, self.corpus, self.log, self.primary, self.progress = config, corpus, log, primary, progress
        rows = data_lib.batchify(corpus.train, config.batch_size, name="train")
        data_lib.check_trainable(rows, config.num_steps)
        windows = data_lib.num_windows(rows, config.num_steps)
        self.mesh = parallel.make_mesh(config.num_devices)
        parallel.check_divisible(config.batch_size, self.mesh)
        parallel.check_divisible(config.eval_batch_size or config.batch_size, self.mesh, "eval_batch_size")
        self.rows = parallel.local_rows(rows)  # this process's rows; all of them on a single host
        self.windows_per_epoch = min(windows, config.max_windows_per_epoch or windows)
        self.eval_batch = config.eval_batch_size or config.batch_size
        self.model = LanguageModel(config.model)
        self.budget = BudgetClock(Budget(config.max_seconds, config.max_tokens, config.batch_size * config.num_steps))
        if optimizer is not None and config.sample_window_lengths:
            raise ConfigError("sample_window_lengths scales each step's learning rate through the config's optimiser "
                              "(its `length_scale` argument); pass the optimiser as OptimConfig, not as an optax object")
        self.given_optimizer = optimizer
        self._build_optimizer(self.budget.limits.planned_steps(self.windows_per_epoch * config.epochs))
        init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
        params = self.model.init(init_key)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.optimizer.init(params),
                           key=train_key)
        self.state = parallel.place(state, self.replicated)
        self.carry = self.fresh_carry()
        self.position = LoopPosition()
        self.pending: list = []  # dispatched steps whose metrics are not read yet: (window, epoch, run step, metrics)
        self.checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
        self.runlog = RunLog(run_dir, enabled=primary, tensorboard=config.tensorboard)

    def _build_optimizer(self, total_steps: int) -> None:
        """The schedule over `total_steps` and the compiled steps (rebuilt when a time budget fits the schedule)."""
        config, optimizer = self.config, self.given_optimizer
        self.total_steps = total_steps
        self.schedule = None if optimizer else learning_rate_schedule(config.optim, self.windows_per_epoch, total_steps)
        self.optimizer = optimizer or make_optimizer(config.optim, self.windows_per_epoch, total_steps)
        self._compile_steps()

    def _fit_schedule(self) -> None:
        """Under a time budget: once the pace is measured, fits the schedule's length to the seconds left."""
        position = self.position
        if position.fitted_steps is not None or self.given_optimizer is not None:
            return
        cap = self.budget.limits.planned_steps(self.windows_per_epoch * self.config.epochs)
        position.fitted_steps = self.budget.fit(position.windows, cap)
        if position.fitted_steps is None:
            return
        if position.fitted_steps != self.total_steps:
            self._build_optimizer(position.fitted_steps)
        self.log(f"time budget: the schedule runs over {position.fitted_steps} steps")

    def _compile_steps(self) -> None:
        config, mesh = self.config, self.mesh
        self.rows_sharding, self.replicated = parallel.rows_sharded(mesh), parallel.replicated(mesh)
        # SGD's update of a row the batch did not use is zero, so only the used rows are updated (same result).
        sparse = (self.schedule is not None and
                  sparse_embedding_pays(config.optim, config.model, config.batch_size * config.num_steps, mesh.size))
        shards = (self.replicated, self.rows_sharding, self.rows_sharding, self.rows_sharding)
        # Fixed shardings in and out: the step compiles once, whatever the device count.
        self.train_step = parallel.under_mesh(mesh, jax.jit(
            make_train_step(self.model, self.optimizer, config.loss_reduction, sparse_embedding=sparse,
                            nominal_steps=config.num_steps if config.sample_window_lengths else None),
            donate_argnums=(0, 1), in_shardings=shards,
            out_shardings=(self.replicated, self.rows_sharding, self.replicated)))
        self.eval_step = jax.jit(make_eval_step(self.model), in_shardings=shards,
                                 out_shardings=(self.rows_sharding, self.replicated))  # `evaluate` adds the mesh

    def fresh_carry(self):
        return parallel.place(self.model.initial_state(self.config.batch_size), self.rows_sharding)

    def restore(self, run_dir: pathlib.Path) -> None:
        """Continues from the newest intact checkpoint (damaged newer ones are moved aside and reported)."""
        if not self.checkpointer.steps():
            self.runlog.truncate_after(0)
            self.log(f"{run_dir} has no checkpoint yet: starting the run from the beginning")
            return
        (self.state, self.carry), record, restored_step = self.checkpointer.restore_latest(
            (self.state, self.carry), report=self.log)
        for damaged in [step for step in self.checkpointer.steps() if step > restored_step]:
            self.log(f"checkpoint {damaged} is damaged: moved aside to {self.checkpointer.quarantine(damaged).name}")
        self.position = LoopPosition.from_record(record)
        self.budget.seconds_before = self.position.budget_seconds
        if self.position.fitted_steps is not None and self.position.fitted_steps != self.total_steps:
            self._build_optimizer(self.position.fitted_steps)  # the schedule the run was fitted to
        self.runlog.truncate_after(self.position.windows)
        self.log(f"resumed {run_dir} at checkpoint {restored_step}: epoch {self.position.epoch + 1}, window "
                 f"{self.position.window}")

    def save(self, valid_nll=None) -> None:
        self.position.budget_seconds = self.budget.seconds()
        record = dict(dataclasses.asdict(self.position), config=config_to_dict(self.config))
        self.checkpointer.save(self.position.windows, (self.state, self.carry), record, valid_nll=valid_nll)

    def interrupt(self, signum: int, clock) -> None:
        self._drain()
        self.position.elapsed, self.position.epoch_seconds = clock()
        self.save()
        self.checkpointer.close()
        name = signal.Signals(signum).name
        raise TrainingInterrupted(f"{name} received: saved checkpoint {self.position.windows} (epoch "
                                  f"{self.position.epoch + 1}, window {self.position.window}) in "
                                  f"{self.checkpointer.directory}; continue with --resume", signum)

    def clocks(self, start: float, epoch_start: float):
        return lambda: (time.perf_counter() - start, time.perf_counter() - epoch_start)

    def run_epochs(self, stop: dict) -> list:
        """Trains to the last epoch; returns the epoch events (those before a resume included)."""
        config, position = self.config, self.position
        start = time.perf_counter() - position.elapsed
        history = [event for event in self.runlog.events() if event.get("kind") == "epoch"]
        for epoch in range(position.epoch, config.epochs):
            if position.window == 0:
                self.carry = self.fresh_carry()
                position.epoch_nll, position.epoch_windows, position.epoch_seconds = 0.0, 0, 0.0
                position.epoch_skipped, position.running = 0, []
            epoch_start = time.perf_counter() - position.epoch_seconds
            clock = self.clocks(start, epoch_start)
            self.plan = self._epoch_plan(epoch)
            bar = progress_bar(len(self.plan), position.window, f"epoch {epoch + 1}/{config.epochs}",
                               enabled=self.progress and self.primary)
            spent = None
            for index in range(position.window, len(self.plan)):
                if stop["signum"] is not None:
                    bar.close()
                    self.interrupt(stop["signum"], clock)
                self._window(index, epoch)
                bar.update(1)
                self._account_if_due(epoch, bar, clock)
                spent = self.budget.spent(position.windows)
                if spent:
                    break
            bar.close()
            self._drain()
            history.append(self._end_epoch(epoch, clock, [event["valid_nll"] for event in history]))
            if spent:
                self.log(f"stopped after {position.windows} steps: {spent}")
                break
            if stop["signum"] is not None and epoch + 1 < config.epochs:
                self.interrupt(stop["signum"], clock)
        return history

    def _epoch_plan(self, epoch: int) -> list:
        """The epoch's windows, (start, length) each: fixed, or of sampled lengths (`data.epoch_windows`)."""
        config = self.config
        plan = data_lib.epoch_windows(self.rows, config.num_steps, sample_lengths=config.sample_window_lengths,
                                      seed=config.seed, epoch=epoch)
        return plan[:config.max_windows_per_epoch or len(plan)]

    def _window(self, index: int, epoch: int) -> None:
        """Dispatches the train step on window `index`. JAX runs it asynchronously: its metrics stay on the device
        until `_drain` reads them, so the host does not wait for every step."""
        position = self.position
        inputs, targets = data_lib.window_at(self.rows, *self.plan[index])
        self.state, self.carry, metrics = self.train_step(self.state, self.carry,
                                                          parallel.global_batch(self.mesh, inputs),
                                                          parallel.global_batch(self.mesh, targets))
        position.window, position.windows = index + 1, position.windows + 1
        self.pending.append((index, epoch, position.windows, metrics))

    def _account_if_due(self, epoch: int, bar, clock) -> None:
        """At a log line or a mid-epoch checkpoint: reads the pending metrics, then logs or saves (each only after
        an applied step, as an uninterrupted synchronous loop would)."""
        config, position = self.config, self.position
        due_log = position.windows % config.log_every == 0
        due_checkpoint = bool(config.checkpoint_every) and position.window % config.checkpoint_every == 0 \
            and position.window < len(self.plan)
        if not (due_log or due_checkpoint):
            return
        applied = self._drain()
        self._fit_schedule()
        if applied and due_log and position.running:
            self._log_train(epoch, bar, clock)
        if applied and due_checkpoint:
            position.elapsed, position.epoch_seconds = clock()
            self.save()

    def _drain(self) -> bool:
        """Reads the dispatched steps' metrics in one transfer and accounts for them in order; whether the last
        one was applied (True when none was pending)."""
        pending, self.pending = self.pending, []
        applied = True
        for (index, epoch, windows, _), metrics in zip(pending, jax.device_get([entry[3] for entry in pending])):
            applied = bool(metrics["finite"])
            if not applied:
                self._skipped(index, epoch, windows, float(metrics["loss"]))
                continue
            position = self.position
            position.bad_in_row = 0
            position.epoch_nll += float(metrics["nll"])
            position.epoch_windows += 1
            position.running.append((float(metrics["nll"]), float(metrics["grad_norm"])))
        return applied

    def _skipped(self, index: int, epoch: int, windows: int, loss: float) -> None:
        position = self.position
        position.bad_in_row += 1
        position.skipped_steps += 1
        position.epoch_skipped += 1
        self.runlog.write({"kind": "skipped", "windows": windows, "epoch": epoch + 1, "loss": loss})
        if position.bad_in_row >= self.config.max_bad_steps:
            raise NonFiniteError(
                f"{position.bad_in_row} consecutive non-finite training steps (the last at window {index} of epoch "
                f"{epoch + 1}, run step {windows}); none was applied. The last good checkpoint in "
                f"{self.checkpointer.directory} is intact; lower the learning rate or check the data")

    def _log_train(self, epoch: int, bar, clock) -> None:
        config, running = self.config, self.position.running
        mean_nll = float(np.mean([nll for nll, _ in running]))
        elapsed, epoch_seconds = clock()
        tokens_per_s = self.position.epoch_windows * config.batch_size * config.num_steps / max(epoch_seconds, 1e-9)
        bar.set_postfix(loss=f"{mean_nll:.3f}", ppl=f"{math.exp(min(mean_nll, 50)):.1f}", tok_s=f"{tokens_per_s:,.0f}")
        self.runlog.write({"kind": "train", "windows": self.position.windows, "epoch": epoch + 1, "wall_s": elapsed,
                           "train_nll": mean_nll, "grad_norm": running[-1][1], "tokens_per_s": tokens_per_s})
        self.position.running = []

    def _learning_rate(self) -> float:
        if self.schedule is not None:
            return float(self.schedule(max(int(self.state.step) - 1, 0)))
        found = optax.tree_utils.tree_get(self.state.opt_state, "learning_rate", default=None)
        return float(found) if found is not None else float("nan")

    def _end_epoch(self, epoch: int, clock, previous_valid: list) -> dict:
        """Evaluates (the averaged parameters once NT-ASGD averages), logs, checkpoints and plots after epoch
        `epoch`; returns its event."""
        config, position = self.config, self.position
        _, epoch_time = clock()
        params = evaluation_params(self.state.params, self.state.opt_state)
        valid = evaluate(self.model, params, self.corpus.valid, self.eval_batch, config.num_steps,
                         self.eval_step, mesh=self.mesh)
        train_nll = position.epoch_nll / position.epoch_windows if position.epoch_windows else None
        position.epoch, position.window, position.elapsed = epoch + 1, 0, clock()[0]
        diverged = divergence(valid["nll"], position.best_valid_nll, self.corpus.vocab.size)
        self.state = self.state._replace(
            opt_state=after_validation(config.optim, self.state.opt_state, previous_valid, valid["nll"]))
        if not diverged and (position.best_valid_nll is None or valid["nll"] < position.best_valid_nll):
            position.best_valid_nll, position.best_step = valid["nll"], position.windows
        event = {"kind": "epoch", "epoch": epoch + 1, "windows": position.windows, "step": int(self.state.step),
                 "wall_s": position.elapsed, "learning_rate": self._learning_rate(), "train_nll": train_nll,
                 "train_perplexity": None if train_nll is None else math.exp(min(train_nll, 700)),
                 "valid_nll": valid["nll"], "valid_perplexity": valid["perplexity"],
                 "skipped_steps": position.skipped_steps, "skipped_in_epoch": position.epoch_skipped,
                 "tokens_per_s": position.epoch_windows * config.batch_size * config.num_steps / max(epoch_time, 1e-9)}
        self.runlog.write(dict(event, diverged=diverged) if diverged else event)
        if diverged and config.stop_on_divergence:
            saved = (f"the best checkpoint (run step {position.best_step}) in {self.checkpointer.directory} is intact"
                     if position.best_step is not None else "no checkpoint holds a diverged state")
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1}: {diverged}. The epoch's end was not saved; {saved}. Lower "
                "the learning rate or clip the gradients (--optim-clip-norm), or pass --stop-on-divergence false to "
                "go on regardless")
        self.save(valid_nll=valid["nll"])
        self.runlog.write_csv()
        self.runlog.plot(title=f"{config.model.cell.upper()} {config.model.num_layers}x{config.model.hidden_size}, "
                               f"{self.corpus.description}")
        skipped = f"  {position.epoch_skipped} steps skipped (non-finite)" if position.epoch_skipped else ""
        self.log(f"epoch {epoch + 1}/{config.epochs}  train ppl {perplexity_text(train_nll)}  valid ppl "
                 f"{perplexity_text(valid['nll'])} ({valid['nll']:.4g} nats/token)  lr {event['learning_rate']:.4g}  "
                 f"{event['tokens_per_s']:,.0f} tok/s  {position.elapsed:.0f}s{skipped}")
        return event

    def finish(self, run_dir: pathlib.Path, history: list) -> "TrainResult":
        """Evaluates the best parameters on valid and test, samples, writes summary.json."""
        config, position = self.config, self.position
        best_state = self.state
        if position.best_step is not None and position.best_step != position.windows:
            (best_state, _), _ = self.checkpointer.restore(position.best_step, (self.state, self.carry))
        best_params = evaluation_params(best_state.params, best_state.opt_state)
        self.checkpointer.close()
        self.runlog.close()
        split = lambda ids, name: evaluate(self.model, best_params, ids, self.eval_batch, config.num_steps,
                                           self.eval_step, name=name, mesh=self.mesh)
        valid, test = split(self.corpus.valid, "valid"), split(self.corpus.test, "test")
        sample = ""
        if config.sample_length:
            sample = generate(self.model, best_params, self.corpus.vocab, config.sample_prompt, config.sample_length,
                              temperature=config.sample_temperature, key=jax.random.PRNGKey(config.seed + 1))
        summary = {"best_step": position.best_step, "valid": valid, "test": test, "wall_s": position.elapsed,
                   "epochs": config.epochs, "skipped_steps": position.skipped_steps, "sample": sample}
        if self.primary:
            write_atomically(run_dir / "summary.json", json.dumps(summary, indent=2))
        self.log(f"best valid ppl {perplexity_text(valid['nll'])} ({valid['nll']:.4f} nats/token), test ppl "
                 f"{perplexity_text(test['nll'])} ({test['nll']:.4f} nats/token); run saved in {run_dir}")
        return TrainResult(run_dir=run_dir, config=config, history=history, valid=valid, test=test, sample=sample,
                           params=best_params, train_step=self.train_step, vocab=self.corpus.vocab)


def train(config: TrainConfig | None, run_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, optimizer: optax.GradientTransformation | None = None) -> TrainResult:
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
        optimizer: any `optax.GradientTransformation` to use instead of the one `config.optim` describes (the
            same one must be passed again to resume the run).

    Returns:
        `TrainResult`.
    """
    run_dir = pathlib.Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"the run directory {run_dir} is a file; give a directory (a new one, or one holding a run)")
    config = resolve_config(config, run_dir, resume)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0  # in a multi-host run only the first process writes logs and files
    log = log if primary else (lambda _: None)
    run = None
    try:
        with kernels.native_mode(config.native):
            corpus, config = load_corpus(config, run_dir, resume, primary, log)
            run = _Run(config, corpus, run_dir, optimizer, primary, log, progress)
            if resume:
                run.restore(run_dir)
            log(f"{corpus.description}: {len(corpus.train):,} train / {len(corpus.valid):,} valid / "
                f"{len(corpus.test):,} test tokens, vocabulary {corpus.vocab.size} ({corpus.vocab.level} level); "
                f"{run.windows_per_epoch} windows of {config.batch_size}x{config.num_steps} per epoch")
            with stop_on_signals() as stop:
                history = run.run_epochs(stop)
            return run.finish(run_dir, history)
    except BaseException:
        if created and (run is None or run.position.windows == 0):
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that never took a step leaves nothing behind
        raise
    finally:
        if run is not None:
            run.checkpointer.close()
