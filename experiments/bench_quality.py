"""Quality per wall-clock second: held-out loss on Tiny Shakespeare characters for rnn_jax's recipes and PyTorch.

Command:  python -m experiments.bench_quality --data-source PATH [--budgets 110,300,600]
          [--recipes lstm,lstm_float32,gru,mingru,minlstm,torch_same,torch_same_float32,torch_standard] [--out DIR]
Expected: a table of held-out nats/char (the text's last 10%: valid and test of the 90/5/5 split, nanoGPT's
          held-out share) per budget and recipe, with steps, tokens and seconds; JSON, markdown and a plot of
          held-out loss against wall time. Each run is its own process with `--max-seconds`, so start-up and
          compilation count against every recipe alike; run it on a quiet machine.
Source:   rnn_jax: `experiments.train_lm --config shakespeare_char` (budgets up to 110 s) or
          `shakespeare_char_long` (longer budgets) with the recipe's overrides; PyTorch: `experiments.torch_char_lm`
          (nn.LSTM) with the same preset's recipe and precision ("torch_same": bf16 under PyTorch's autocast where
          the preset computes in bf16; "torch_same_float32" in float32) and with the common char-RNN recipe 2x512,
          T=64, B=32, Adam 2e-3 ("torch_standard").
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

from experiments.bench_machine import device_description
from rnn_jax.cli import parse_config
from rnn_jax.errors import ConfigError, run_command

RNN_JAX = {  # overrides of the budget's preset (`preset_for`)
    "lstm": [],
    # the GRU diverges at the LSTM presets' Adam 1e-2 and 5e-3 (its gradient norm climbs after the first epoch)
    "gru": ["--model-cell", "gru", "--model-gru-reset-after", "--optim-learning-rate", "3e-3"],
    "lstm_float32": ["--model-compute-dtype", "float32"],
    "mingru": ["--model-cell", "mingru", "--model-runner", "associative"],
    "minlstm": ["--model-cell", "minlstm", "--model-runner", "associative"],
}
TORCH = {  # (starts from the budget's preset as `torch_same_recipe` translates it, overrides)
    "torch_same": (True, []),
    "torch_same_float32": (True, ["--compute-dtype", "float32"]),
    "torch_standard": (False, ["--hidden-size", "512", "--num-steps", "64", "--batch-size", "32", "--learning-rate",
                               "2e-3"]),
}


def preset_for(budget: float) -> str:
    """The rnn_jax preset whose recipe is tuned for this budget: `shakespeare_char` up to 110 s, else
    `shakespeare_char_long` (tuned for 600 s)."""
    return "shakespeare_char" if budget <= 110 else "shakespeare_char_long"


def torch_same_recipe(budget: float) -> list[str]:
    """The PyTorch peer's options for the budget's preset: same sizes, batch, window, optimiser, schedule and
    precision (bf16: PyTorch's autocast)."""
    from rnn_jax.configs import get_preset

    config = get_preset(preset_for(budget)).config
    m, o = config.model, config.optim
    return ["--embed-size", str(m.embed_size), "--hidden-size", str(m.hidden_size), "--num-layers", str(m.num_layers),
            "--batch-size", str(config.batch_size), "--num-steps", str(config.num_steps), "--learning-rate",
            str(o.learning_rate), "--warmup-steps", str(o.warmup_steps), "--dropout", str(m.dropout),
            "--clip-norm", str(o.clip_norm), "--final-fraction", str(o.final_fraction), "--compute-dtype",
            m.compute_dtype]


@dataclasses.dataclass(frozen=True)
class QualityBenchConfig:
    """Recipes trained for wall-clock budgets on Tiny Shakespeare, scored on the held-out last 10%.

    Attributes:
        data_source: Tiny Shakespeare's input.txt (or "tinyshakespeare": downloaded once and verified).
        budgets: wall-clock budgets in seconds, each from its process's start.
        recipes: rnn_jax recipes (lstm: the budget's preset; lstm_float32: it in float32; gru, mingru, minlstm)
            and PyTorch peers (torch_same: the preset's recipe and precision; torch_same_float32; torch_standard).
        out: the output folder for JSON, markdown and the plot (none: no files).
    """

    data_source: str = "tinyshakespeare"
    budgets: tuple[float, ...] = (110.0, 300.0, 600.0)
    recipes: tuple[str, ...] = ("lstm", "lstm_float32", "gru", "torch_same", "torch_same_float32", "torch_standard")
    out: Optional[str] = "bench_results"

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        return {"recipes": list(RNN_JAX) + list(TORCH)}


def run_rnn_jax(recipe: str, budget: float, data_source: str, work: pathlib.Path) -> dict:
    run_dir = work / f"{recipe}_{budget:g}"
    command = [sys.executable, "-m", "experiments.train_lm", "--config", preset_for(budget), "--data-source",
               data_source, "--max-seconds", str(budget), "--epochs", "1000", "--run-dir", str(run_dir),
               "--no-progress", "--sample-length", "0", *RNN_JAX[recipe]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=budget + 600)
    if done.returncode != 0:
        raise RuntimeError(f"{recipe} failed: {done.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    valid, test = summary["valid"], summary["test"]
    tokens = valid["tokens"] + test["tokens"]
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"kind": "epoch"' in line]
    saved = json.loads((run_dir / "config.json").read_text())
    return {"held_out_nll": (valid["nll"] * valid["tokens"] + test["nll"] * test["tokens"]) / tokens,
            "steps": epochs[-1]["windows"],
            "tokens": epochs[-1]["windows"] * saved["batch_size"] * saved["num_steps"],
            "curve": [(e["wall_s"], e["valid_nll"]) for e in epochs]}


def run_torch(recipe: str, budget: float, data_source: str) -> dict:
    from rnn_jax.downloads import download_tinyshakespeare

    path = str(download_tinyshakespeare()) if data_source == "tinyshakespeare" else data_source
    from_preset, overrides = TORCH[recipe]
    options = (torch_same_recipe(budget) if from_preset else []) + overrides
    command = [sys.executable, "-m", "experiments.torch_char_lm", "--data-source", path, "--max-seconds", str(budget),
               *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=budget + 600)
    if done.returncode != 0:
        raise RuntimeError(f"{recipe} failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"held_out_nll": result["held_out_nll"], "steps": result["steps"], "tokens": result["tokens"],
            "curve": []}


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(QualityBenchConfig(), argv, description=__doc__.splitlines()[0])
    unknown = [name for name in config.recipes if name not in RNN_JAX and name not in TORCH]
    if unknown:
        raise ConfigError(f"unknown recipe(s) {unknown}; expected some of {list(RNN_JAX) + list(TORCH)}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for budget in config.budgets:
            for recipe in config.recipes:
                print(f"[{len(rows) + 1}/{len(config.budgets) * len(config.recipes)}] {recipe} for {budget:g} s ...",
                      flush=True)
                run = (run_rnn_jax(recipe, budget, config.data_source, pathlib.Path(work)) if recipe in RNN_JAX
                       else run_torch(recipe, budget, config.data_source))
                rows.append({"budget_s": budget, "recipe": recipe, **run})
                print(f"  held-out {run['held_out_nll']:.4f} nats/char after {run['steps']} steps", flush=True)
    report = {"machine": device_description(), "config": dataclasses.asdict(config), "results": rows}
    print("\n" + table(report))
    if config.out:
        write_outputs(pathlib.Path(config.out), report)
    return report


def table(report: dict) -> str:
    lines = ["| budget (s) | recipe | held-out nats/char | steps | tokens |", "|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['budget_s']:g} | {r['recipe']} | {r['held_out_nll']:.4f} | {r['steps']:,} | "
                     f"{r['tokens']:,} |")
    return "\n".join(lines)


def write_outputs(out: pathlib.Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_quality.json").write_text(json.dumps(report, indent=2))
    (out / "bench_quality.md").write_text(f"Machine: {report['machine']}\n\n{table(report)}\n")
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for recipe in dict.fromkeys(r["recipe"] for r in report["results"]):
        rows = [r for r in report["results"] if r["recipe"] == recipe]
        ax.plot([r["budget_s"] for r in rows], [r["held_out_nll"] for r in rows], "o-", label=f"{recipe} (held out)")
        for r in rows:
            if r["curve"]:
                ax.plot(*zip(*r["curve"]), ":", alpha=0.5, color=ax.lines[-1].get_color())
    ax.set(xlabel="wall time (s)", ylabel="nats/char", title="Tiny Shakespeare, held-out last 10%")
    ax.legend(fontsize=8)
    fig.savefig(out / "bench_quality.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_command(main))
