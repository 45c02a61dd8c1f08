"""Budgets: the run stops at the token or time budget, evaluates and checkpoints there; the schedule ends with the
budget (tokens: planned up front; seconds: fitted to the measured pace, and kept on resume)."""

import json
import math

import pytest

from rnn_jax import data as data_lib
from rnn_jax.errors import ConfigError
from rnn_jax.lm import LMConfig
from rnn_jax.train import budget as budget_lib
from rnn_jax.training import OptimConfig, TrainConfig, train


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i % 17} of a small text\n" for i in range(600)))
    return path


def config_for(path, **overrides):
    return TrainConfig(model=LMConfig(vocab_size=30, embed_size=6, hidden_size=8),
                       data=data_lib.DataConfig(source=str(path), max_vocab=None),
                       optim=OptimConfig(name="adam", learning_rate=1e-2, schedule="cosine", final_fraction=0.0),
                       batch_size=4, num_steps=8, epochs=50, log_every=2, sample_length=0, **overrides)


def events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_process_clock_counts_from_process_start():
    assert 0 < budget_lib.process_seconds() < 24 * 3600


def test_budget_arithmetic():
    tokens = budget_lib.Budget(max_seconds=None, max_tokens=100, tokens_per_window=32)
    assert tokens.planned_steps(1000) == 4 and tokens.planned_steps(3) == 3
    assert tokens.spent(3, 1e9) is None and "token budget" in tokens.spent(4, 0.0)
    timed = budget_lib.Budget(max_seconds=10.0, max_tokens=None, tokens_per_window=32)
    assert timed.spent(10**6, 9.9) is None and "time budget (10 s)" in timed.spent(1, 10.0)
    # 6 s left at 0.1 s per window, 3% kept for the final evaluation: 58 more windows, capped by the epochs.
    assert timed.fitted_steps(20, 4.0, 0.1, cap=1000) == 20 + int(6.0 * 0.97 / 0.1)
    assert timed.fitted_steps(20, 4.0, 0.1, cap=50) == 50 and timed.fitted_steps(20, 11.0, 0.1, cap=50) == 21


def test_a_token_budget_stops_the_run_evaluates_saves_and_ends_the_schedule(text_file, tmp_path):
    config = config_for(text_file, max_tokens=7 * 4 * 8)
    result = train(config, tmp_path / "run", progress=False, log=lambda _: None)
    [epoch] = [e for e in events(tmp_path / "run") if e["kind"] == "epoch"]
    assert epoch["windows"] == 7 and epoch["step"] == 7
    # The schedule spans the budget's 7 steps: the last applied step (index 6) is 1/7 from the cosine's end.
    assert epoch["learning_rate"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 6 / 7)), rel=1e-5)
    assert math.isfinite(result.valid["nll"]) and math.isfinite(result.test["nll"])
    assert (tmp_path / "run" / "checkpoints" / "7").is_dir()


def test_a_time_budget_fits_the_schedule_and_stops(text_file, tmp_path, monkeypatch):
    clock = {"seconds": 0.0}
    monkeypatch.setattr("rnn_jax.train.budget.process_seconds", lambda: clock["seconds"])
    monkeypatch.setattr("rnn_jax.train.budget.FIT_AFTER_WINDOWS", 4)
    from rnn_jax.train import loop

    real_window = loop._Run._window

    def window_taking_a_second(self, index, epoch):  # each step costs one second of the budget's clock
        clock["seconds"] += 1.0
        real_window(self, index, epoch)

    monkeypatch.setattr(loop._Run, "_window", window_taking_a_second)
    lines = []
    result = train(config_for(text_file, max_seconds=30.0), tmp_path / "run", progress=False, log=lines.append)
    [epoch] = [e for e in events(tmp_path / "run") if e["kind"] == "epoch"]
    assert epoch["windows"] == 30  # the 30th second is the last
    # Paced at windows 2 and 6 (log lines): 1 s per window, 24 s left, 3% reserve: 6 + 23 steps.
    assert [line for line in lines if line.startswith("time budget")] == ["time budget: the schedule runs over 29 steps"]
    assert "stopped after 30 steps: the time budget (30 s) is spent" in lines
    assert epoch["learning_rate"] == pytest.approx(0.0, abs=1e-9)  # the fitted cosine has ended
    assert result.history[-1]["windows"] == 30


def test_bad_budgets_are_config_errors(text_file):
    with pytest.raises(ConfigError, match="max_tokens must be a positive int"):
        config_for(text_file, max_tokens=0)
    with pytest.raises(ConfigError, match="max_seconds must be > 0"):
        config_for(text_file, max_seconds=-1.0)
