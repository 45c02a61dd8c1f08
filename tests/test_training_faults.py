"""Faults in real runs: SIGKILL at random moments (also mid-save), SIGTERM/SIGINT, damaged checkpoints,
non-finite steps, determinism. Kills and signals hit real subprocesses running experiments/train_lm.py."""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.checkpoints import CheckpointError, Checkpointer
from rnn_jax.lm import LanguageModel
from rnn_jax.training import (NonFiniteError, TrainConfig, TrainState, config_from_dict, make_optimizer,
                              train)

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS, WINDOWS = 2, 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(1)
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, size=6)) for _ in range(1500)) + "\n")
    return path


def cli_args(corpus, run_dir):
    return [sys.executable, "-m", "experiments.train_lm", "--data-source", str(corpus), "--data-max-vocab", "none",
            "--run-dir", str(run_dir), "--no-progress", "--epochs", str(EPOCHS), "--max-windows-per-epoch",
            str(WINDOWS), "--checkpoint-every", "1", "--keep-checkpoints", "3", "--sample-length", "12",
            "--model-hidden-size", "16", "--model-num-layers", "2", "--model-dropout", "0.2", "--log-every", "4",
            "--batch-size", "8", "--num-steps", "12"]


def start(corpus, run_dir, resume=False):
    args = cli_args(corpus, run_dir) + (["--resume"] if resume else [])
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def finish(process, timeout=240):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def final_state(run_dir):
    """The newest checkpoint of a run, restored with the run's own config."""
    config = config_from_dict(TrainConfig, json.loads((run_dir / "config.json").read_text()))
    model = LanguageModel(config.model)
    params = model.init(jax.random.PRNGKey(0))
    optimizer = make_optimizer(config.optim, 1, 1)
    template = (TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(0)),
                model.initial_state(config.batch_size))
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=config.keep_checkpoints)
    try:
        tree, record, step = checkpointer.restore_latest(template)
    finally:
        checkpointer.close()
    return tree, step


def summary(run_dir):
    data = json.loads((run_dir / "summary.json").read_text())
    return data["valid"], data["test"], data["sample"]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, out, err = finish(start(corpus, run_dir))
    assert code == 0, err
    return run_dir


def checkpoint_entries(run_dir):
    directory = run_dir / "checkpoints"
    return os.listdir(directory) if directory.is_dir() else []


def wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    raise TimeoutError("the run made no progress")


@pytest.mark.slow  # minutes of repeated runs; the default run keeps the SIGTERM, damage and resume tests
def test_sigkill_at_random_moments_then_resume_is_bit_exact(corpus, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    kills = []
    process = start(corpus, run_dir)
    # Kill points: after a random number of saved checkpoints, plus one as soon as a save is half-written.
    plan = [("after", 3), ("during_save", 14), ("after", 30), ("during_save", 40)]
    for mode, min_step in plan:
        seen = {}

        def progressed():
            entries = checkpoint_entries(run_dir)
            steps = [int(e) for e in entries if e.isdigit()]
            if not steps or max(steps) < min_step:
                return False
            seen["mid_save"] = any("tmp" in e for e in entries)
            # A save's tmp dir is usually caught within a few steps; if not, kill anyway (counted as "after").
            return mode == "after" or seen["mid_save"] or max(steps) >= min_step + 6
        if wait_for(progressed, process):
            if mode == "after":
                time.sleep(rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGKILL)
            process.wait()
            landed = "during_save" if seen.get("mid_save") else "after"
            kills.append((landed, max(int(e) for e in checkpoint_entries(run_dir) if e.isdigit())))
        else:  # the run finished before this kill point; nothing left to kill
            break
        process = start(corpus, run_dir, resume=True)
    code, out, err = finish(process)
    assert code == 0, err
    assert len(kills) >= 3, kills
    full_tree, full_step = final_state(uninterrupted)
    tree, step = final_state(run_dir)
    assert step == full_step == EPOCHS * WINDOWS
    chex.assert_trees_all_equal(tree, full_tree)  # parameters, optimiser state, PRNG key and carry, bit for bit
    assert summary(run_dir) == summary(uninterrupted)
    print(f"SIGKILL points (mode, newest checkpoint at kill): {kills}")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143),
                                          pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_sigterm_and_sigint_save_and_exit_nonzero(corpus, uninterrupted, tmp_path, signum, code):
    run_dir = tmp_path / "run"
    process = start(corpus, run_dir)
    assert wait_for(lambda: sum(e.isdigit() for e in checkpoint_entries(run_dir)) >= 2, process)
    process.send_signal(signum)
    returncode, out, err = finish(process)
    name = signal.Signals(signum).name
    assert returncode == code, err
    assert f"{name} received: saved checkpoint" in err and "continue with --resume" in err
    returncode, out, err = finish(start(corpus, run_dir, resume=True))
    assert returncode == 0, err
    chex.assert_trees_all_equal(final_state(run_dir)[0], final_state(uninterrupted)[0])


def damage(step_dir, how):
    data_files = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)),
                        key=lambda p: p.stat().st_size)
    biggest = data_files[-1]
    if how == "truncated":
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    elif how == "emptied":
        biggest.write_bytes(b"")
    elif how == "files_removed":
        for path in data_files:
            path.unlink()
    elif how == "bytes_flipped":
        raw = bytearray(biggest.read_bytes())
        for k in range(len(raw) // 3, len(raw) // 3 + 8):
            raw[k] ^= 0xFF
        biggest.write_bytes(bytes(raw))
    elif how == "record_garbled":
        (step_dir / "record" / "metadata").write_text("{garbage")
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "bytes_flipped", *(pytest.param(how, marks=pytest.mark.slow)
                                                    for how in ("emptied", "files_removed", "record_garbled"))])
def test_damaged_latest_checkpoint_resumes_from_newest_intact(corpus, uninterrupted, tmp_path, how):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    steps = sorted(int(e.name) for e in (run_dir / "checkpoints").iterdir() if e.name.isdigit())
    newest, intact = steps[-1], steps[-2]
    damage(run_dir / "checkpoints" / str(newest), how)
    messages = []
    result = train(None, run_dir, resume=True, progress=False, log=messages.append)
    text = "\n".join(messages)
    assert f"checkpoint {newest} in" in text and "is damaged" in text
    assert f"resumed {run_dir} at checkpoint {intact}" in text
    assert (run_dir / "checkpoints" / f"{newest}.damaged").is_dir()  # kept for inspection, never deleted
    chex.assert_trees_all_equal(final_state(run_dir)[0], final_state(uninterrupted)[0])
    assert (result.valid, result.test, result.sample) == summary(uninterrupted)


def test_no_intact_checkpoint_is_a_clear_error_and_deletes_nothing(corpus, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    steps = [e for e in (run_dir / "checkpoints").iterdir() if e.name.isdigit()]
    for step_dir in steps:
        damage(step_dir, "bytes_flipped")
    with pytest.raises(CheckpointError, match=rf"no intact checkpoint .* \({len(steps)} tried, none deleted\)"):
        train(None, run_dir, resume=True, progress=False, log=lambda _: None)
    assert sorted(e.name for e in (run_dir / "checkpoints").iterdir() if e.name.isdigit()) == sorted(s.name for s in steps)


def test_non_finite_steps_are_skipped_then_stop_the_run(corpus, tmp_path):
    config = config_from_dict(TrainConfig, {
        "model": {"vocab_size": 10, "embed_size": 8, "hidden_size": 16},
        "data": {"source": str(corpus), "level": "char", "max_vocab": None},
        "optim": {"name": "sgd", "learning_rate": 1e38, "clip_norm": None},
        "batch_size": 8, "num_steps": 12, "epochs": 1, "max_windows_per_epoch": 20, "checkpoint_every": 1,
        "keep_checkpoints": 50, "max_bad_steps": 3, "sample_length": 0})
    with pytest.raises(NonFiniteError, match=r"3 consecutive non-finite training steps \(the last at window \d+ of "
                                             r"epoch 1, run step \d+\); none was applied"):
        train(config, tmp_path / "run", progress=False, log=lambda _: None)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "skipped" for e in events) == 3
    # The updated parameters overflow from the first step, so no step was applied and none was checkpointed.
    assert not [e for e in (tmp_path / "run" / "checkpoints").iterdir() if e.name.isdigit()]


@pytest.mark.slow  # two whole runs; the resume tests compare runs bit for bit in the default run
def test_same_config_and_seed_give_identical_runs(corpus, tmp_path):
    config = config_from_dict(TrainConfig, {
        "model": {"vocab_size": 10, "embed_size": 8, "hidden_size": 16, "dropout": 0.3, "num_layers": 2},
        "data": {"source": str(corpus), "level": "word", "max_vocab": None},
        "optim": {"name": "adam", "learning_rate": 0.01},
        "batch_size": 8, "num_steps": 10, "epochs": 2, "max_windows_per_epoch": 10, "log_every": 2,
        "sample_length": 10})
    runs = [train(config, tmp_path / name, progress=False, log=lambda _: None) for name in ("a", "b")]
    strip = lambda events: [{k: v for k, v in e.items() if k not in ("wall_s", "tokens_per_s")} for e in events]
    logs = [strip(json.loads(line) for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines())
            for n in ("a", "b")]
    assert logs[0] == logs[1]
    chex.assert_trees_all_equal(final_state(tmp_path / "a")[0], final_state(tmp_path / "b")[0])
    assert runs[0].sample == runs[1].sample


def run_cli(capsys, argv):
    from experiments import train_lm
    from rnn_jax.errors import run_command

    code = run_command(train_lm.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_cli(corpus, run_dir, *extra):
    return ["--data-source", str(corpus), "--data-max-vocab", "none", "--run-dir", str(run_dir), "--no-progress",
            "--model-hidden-size", "8", "--model-embed-size", "8", "--batch-size", "8", "--num-steps", "8",
            "--max-windows-per-epoch", "4", "--sample-length", "0", *extra]


def test_exploding_sgd_is_never_applied_nor_saved(corpus, tmp_path, capsys):
    """Every update overflows the parameters: no step is applied, nothing non-finite is saved, the run stops."""
    code, out, err = run_cli(capsys, tiny_cli(corpus, tmp_path / "run", "--optim-name", "sgd", "--optim-learning-rate",
                                              "1e37", "--optim-clip-norm", "none", "--max-bad-steps", "3"))
    assert code == 1 and err.startswith("error: 3 consecutive non-finite training steps") and "Traceback" not in err
    assert not list((tmp_path / "run" / "checkpoints").glob("[0-9]*"))


def test_an_epoch_without_an_applied_step_says_so(corpus, tmp_path, capsys):
    code, out, err = run_cli(capsys, tiny_cli(corpus, tmp_path / "run", "--optim-name", "sgd", "--optim-learning-rate",
                                              "1e37", "--optim-clip-norm", "none", "--optim-schedule", "constant",
                                              "--optim-warmup-steps", "0", "--epochs", "1"))
    assert code == 0, err
    event = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    # Every one of the 4 steps overflows, so the epoch has no training loss: it says "-", never perplexity 1.00.
    assert event["skipped_in_epoch"] == 4 and "4 steps skipped (non-finite)" in out
    assert event["train_nll"] is None and "train ppl -  valid ppl" in out


def test_divergence_stops_the_run_unless_asked_to_go_on(corpus, tmp_path, capsys):
    diverging = ("--optim-name", "adam", "--optim-learning-rate", "1e6", "--optim-clip-norm", "none", "--epochs", "2")
    code, out, err = run_cli(capsys, tiny_cli(corpus, tmp_path / "run", *diverging))
    assert code == 1 and err.startswith("error: training diverged in epoch 1: the validation loss") and \
        "above a uniform guess" in err and "--stop-on-divergence false" in err
    assert not list((tmp_path / "run" / "checkpoints").glob("[0-9]*"))  # the diverged state was not saved
    event = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert event["kind"] == "epoch" and "uniform guess" in event["diverged"]
    code, out, err = run_cli(capsys, tiny_cli(corpus, tmp_path / "on", *diverging, "--stop-on-divergence", "false"))
    assert code == 0, err
    assert all(len(line) < 200 for line in out.splitlines())  # perplexities in exponent form, never 300 digits
    assert "e+" in out.split("valid ppl ")[1].split()[0] or "inf" in out.split("valid ppl ")[1].split()[0]


def test_sampling_falls_back_to_the_newest_intact_checkpoint(corpus, uninterrupted, tmp_path, capsys):
    from experiments import sample
    from rnn_jax.errors import run_command

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    steps = sorted(int(e.name) for e in (run_dir / "checkpoints").iterdir() if e.name.isdigit())
    damage(run_dir / "checkpoints" / str(steps[-1]), "bytes_flipped")
    for step in steps[:-2]:  # the best one the intact record names is gone as well
        shutil.rmtree(run_dir / "checkpoints" / str(step))
    assert run_command(sample.main, ["--run-dir", str(run_dir), "--length", "5"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {steps[-1]} in" in err and "is damaged" in err
