"""A run's metrics on disk: `metrics.jsonl` (every event), `metrics.csv` (one row per epoch) and a plot.

`metrics.jsonl` is the source of truth. With `tensorboard=True` every event's numbers are also written as
TensorBoard scalars (`<kind>/<field>` against the training window) to `<run dir>/tensorboard/` through
tensorboardX (the `tensorboard` extra); view them with `tensorboard --logdir runs`.

Examples:
    >>> log = RunLog("runs/x")                                         # doctest: +SKIP
    >>> log.write({"kind": "train", "windows": 50, "train_nll": 3.1})  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import os
import numbers
import pathlib

from rnn_jax.errors import ConfigError

EPOCH_COLUMNS = ("epoch", "windows", "step", "wall_s", "learning_rate", "train_nll", "train_perplexity",
                 "valid_nll", "valid_perplexity", "tokens_per_s", "skipped_steps")


class RunLog:
    """Appends events to `metrics.jsonl`; rewrites `metrics.csv` and `perplexity.png` from them on demand."""

    def __init__(self, run_dir: str | pathlib.Path, enabled: bool = True, tensorboard: bool = False):
        self.run_dir = pathlib.Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.enabled = enabled  # False on all but the primary process of a multi-host run
        self.tensorboard = _tensorboard_writer(self.run_dir / "tensorboard") if tensorboard and enabled else None

    def events(self) -> list[dict]:
        """Logged events; a line cut short by a killed process is skipped."""
        if not self.jsonl.exists():
            return []
        events = []
        for line in self.jsonl.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def write(self, event: dict) -> None:
        if not self.enabled:
            return
        with self.jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        if self.tensorboard is not None:
            step = int(event.get("windows", 0))
            for key, value in event.items():
                if isinstance(value, numbers.Real) and not isinstance(value, bool) and key not in ("windows", "epoch"):
                    self.tensorboard.add_scalar(f"{event.get('kind', 'event')}/{key}", value, step)

    def close(self) -> None:
        """Writes out what the TensorBoard writer still queues (its worker thread writes every 10 s before)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def truncate_after(self, windows: int) -> None:
        """Drops events logged after `windows` training windows (those a resumed run will redo)."""
        if not self.enabled:
            return
        kept = [e for e in self.events() if e.get("windows", 0) <= windows]
        tmp = self.jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in kept), encoding="utf-8")
        os.replace(tmp, self.jsonl)

    def write_csv(self) -> pathlib.Path:
        path = self.run_dir / "metrics.csv"
        if not self.enabled:
            return path
        tmp = self.run_dir / ".metrics.csv.tmp"
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for event in self.events():
                if event.get("kind") == "epoch":
                    writer.writerow(event)
        os.replace(tmp, path)
        return path

    def plot(self, title: str = "") -> pathlib.Path:
        """perplexity.png: train and valid perplexity against training steps and against wall time."""
        if not self.enabled:
            return self.run_dir / "perplexity.png"
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        events = self.events()
        train = [e for e in events if e.get("kind") == "train"]
        epochs = [e for e in events if e.get("kind") == "epoch"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        for ax, x_key, x_label in ((axes[0], "windows", "training steps (windows)"), (axes[1], "wall_s", "wall time (s)")):
            ax.plot([e[x_key] for e in train], [math.exp(min(e["train_nll"], 50)) for e in train],
                    label="train (running)", color="tab:blue", alpha=0.6)
            ax.plot([e[x_key] for e in epochs], [e["train_perplexity"] for e in epochs], "o", color="tab:blue",
                    label="train (epoch)")
            ax.plot([e[x_key] for e in epochs], [e["valid_perplexity"] for e in epochs], "s-", color="tab:orange",
                    label="valid")
            ax.set_xlabel(x_label)
            ax.set_ylabel("perplexity")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        path = self.run_dir / "perplexity.png"
        tmp = self.run_dir / ".perplexity.png.tmp"
        fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        os.replace(tmp, path)
        return path


def _tensorboard_writer(directory: pathlib.Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard=True needs tensorboardX; install it with pip install 'rnn-jax-lab[tensorboard]' "
                          "(or pip install tensorboardX), or leave --tensorboard off: metrics.jsonl has every figure"
                          ) from None
    return SummaryWriter(str(directory), flush_secs=10)
