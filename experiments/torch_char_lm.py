"""The PyTorch peer of the quality benchmark: a character LSTM (nn.Embedding -> nn.LSTM -> nn.Linear) trained for
a wall-clock budget with the same data, split, recipe options and time-fitted cosine schedule as rnn_jax's runs.

Command:  python -m experiments.torch_char_lm --data-source PATH --max-seconds 110 [--hidden-size 512 ...]
Expected: one JSON line on stdout: held-out nats/char (valid and test together: the text's last 10%), steps,
          tokens and seconds. Used by experiments/bench_quality.py, one process per run.
Source:   PyTorch 2.x defaults for initialisation; Adam with global-norm clipping; the split of rnn_jax.data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from typing import Sequence

import numpy as np

from rnn_jax import data as data_lib
from rnn_jax.cli import parse_config
from rnn_jax.errors import run_command
from rnn_jax.train.budget import EVAL_RESERVE, process_seconds


@dataclasses.dataclass(frozen=True)
class TorchRecipe:
    """A character LSTM recipe for PyTorch.

    Attributes:
        data_source: a text file (split 90/5/5 at line boundaries, as rnn_jax splits it).
        max_seconds: wall-clock budget from process start.
        embed_size: E.
        hidden_size: H.
        num_layers: L.
        batch_size: B.
        num_steps: T.
        learning_rate: Adam's peak rate (cosine to `final_fraction` of it over the fitted number of steps, after
            the warm-up).
        final_fraction: the cosine's end rate as a fraction of the peak (rnn_jax's `OptimConfig.final_fraction`).
        warmup_steps: linear warm-up steps.
        dropout: nn.LSTM's dropout between layers and on the output.
        clip_norm: global gradient-norm clip.
        seed: torch.manual_seed.
        threads: torch.set_num_threads (0: PyTorch's default).
        compute_dtype: "float32", or "bfloat16" for `torch.autocast("cpu", torch.bfloat16)` around the forward
            pass (float32 parameters and optimiser, as rnn_jax's `--model-compute-dtype bfloat16`).
    """

    data_source: str = ""
    max_seconds: float = 110.0
    embed_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    batch_size: int = 64
    num_steps: int = 100
    learning_rate: float = 3e-3
    final_fraction: float = 0.0
    warmup_steps: int = 100
    dropout: float = 0.1
    clip_norm: float = 1.0
    seed: int = 0
    threads: int = 0
    compute_dtype: str = "float32"

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        return {"compute_dtype": ["float32", "bfloat16"]}


def encoded_splits(path: str):
    texts = data_lib.split_text(data_lib.read_text(path), (0.9, 0.05, 0.05), path)
    vocab = data_lib.build_vocab(data_lib.tokenize(texts[0], "char"), "char")
    return vocab, [vocab.encode(data_lib.tokenize(text, "char")) for text in texts]


def build_model(torch, recipe: TorchRecipe, vocab_size: int):
    class CharLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab_size, recipe.embed_size)
            self.lstm = torch.nn.LSTM(recipe.embed_size, recipe.hidden_size, recipe.num_layers, batch_first=True,
                                      dropout=recipe.dropout if recipe.num_layers > 1 else 0.0)
            self.drop = torch.nn.Dropout(recipe.dropout)
            self.output = torch.nn.Linear(recipe.hidden_size, vocab_size)

        def forward(self, tokens, state):
            hs, state = self.lstm(self.drop(self.embedding(tokens)), state)
            return self.output(self.drop(hs)), state

    return CharLSTM()


def autocast(torch, recipe: TorchRecipe):
    """The recipe's precision for the forward pass: bf16 autocast, or nothing for float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.compute_dtype == "bfloat16")


def held_out_nll(torch, model, ids: np.ndarray, recipe: TorchRecipe) -> tuple[float, int]:
    """(summed NLL, tokens) over a split with the state carried through it, as rnn_jax's `evaluate` does, in the
    recipe's precision."""
    batch_size, num_steps = recipe.batch_size, recipe.num_steps
    rows = torch.as_tensor(data_lib.batchify(ids, batch_size))
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for index in range(data_lib.num_windows(rows.numpy(), num_steps, drop_last=False)):
            inputs, targets = (torch.as_tensor(a).long() for a in data_lib.window(rows.numpy(), index, num_steps))
            with autocast(torch, recipe):
                logits, state = model(inputs, state)
            total += float(torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                             targets.reshape(-1), reduction="sum"))
            count += targets.numel()
    model.train()
    return total, count


def train_for_budget(torch, recipe: TorchRecipe, model, rows: np.ndarray) -> tuple[int, float]:
    """Trains until the budget is spent; the cosine's length is fitted once to the pace of the first steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    windows = data_lib.num_windows(rows, recipe.num_steps)
    total_steps, step, state, pace = 10**9, 0, None, None
    while process_seconds() < recipe.max_seconds:
        inputs, targets = (torch.as_tensor(a).long() for a in data_lib.window(rows, step % windows, recipe.num_steps))
        if step % windows == 0:
            state = None
        warm = min(1.0, (step + 1) / max(recipe.warmup_steps, 1))
        progress = min(1.0, max(0, step - recipe.warmup_steps) / max(total_steps - recipe.warmup_steps, 1))
        for group in optimizer.param_groups:
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            group["lr"] = recipe.learning_rate * warm * (recipe.final_fraction + (1 - recipe.final_fraction) * cosine)
        with autocast(torch, recipe):
            logits, state = model(inputs, state)
        state = tuple(s.detach().float() for s in state)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
        optimizer.step()
        step += 1
        if step == 2:
            pace = (process_seconds(), step)
        elif pace is not None and step == pace[1] + 10:
            seconds_per_step = (process_seconds() - pace[0]) / 10
            left = (recipe.max_seconds - process_seconds()) * (1 - EVAL_RESERVE)
            total_steps = step + int(left / seconds_per_step)
    return step, float(loss)


def main(argv: Sequence[str] | None = None) -> dict:
    import torch

    recipe = parse_config(TorchRecipe(), argv, description=__doc__.splitlines()[0])
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    vocab, (train_ids, valid_ids, test_ids) = encoded_splits(recipe.data_source)
    model = build_model(torch, recipe, vocab.size)
    rows = data_lib.batchify(train_ids, recipe.batch_size)
    steps, last_loss = train_for_budget(torch, recipe, model, rows)
    train_seconds = process_seconds()
    sums = [held_out_nll(torch, model, ids, recipe) for ids in (valid_ids, test_ids)]
    result = {"held_out_nll": sum(s for s, _ in sums) / sum(c for _, c in sums), "steps": steps,
              "tokens": steps * recipe.batch_size * recipe.num_steps, "train_seconds": train_seconds,
              "seconds": process_seconds(), "last_train_loss": last_loss, "torch": torch.__version__}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
