"""Ways of running a state-linear recurrence against sequence length: sequential scans vs one parallel prefix scan.

Command:  python -m experiments.bench_scan [--cells mingru,lru] [--lengths 64,256,1024,4096,16384]
          [--forms scan,scan_unroll8,hoisted,associative,associative_log] [--workloads forward,train]
          [--batch-size 4] [--input-size 128] [--hidden-size 128] [--rounds 3] [--out bench_results]
Expected: a table per (cell, workload, T) of tokens/s (median [min-max] over interleaved rounds), the ratio to
          `scan` (unroll 1), compile time (lower + XLA compile), XLA's temporary memory of the compiled call and
          the largest difference of the form's states from `scan`'s; JSON, markdown and two PNG plots in --out.
          On a CPU with few cores the sequential loop usually wins (the prefix scan does ~2x the arithmetic and
          log T passes over memory); the parallel form pays where many cores or an accelerator run the O(log T)
          depth, and at long T.
Source:   the forms are the runners of `rnn_jax.runners` ("associative_log" is `associative_scan(...,
          log_space=True)`, for cells with log-space coefficients); all run in this process, in interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_lm import timed_rounds
from experiments.bench_machine import device_description, versions
from rnn_jax import get_cell, param_dtype
from rnn_jax.cells import base
from rnn_jax.cli import parse_config
from rnn_jax.errors import ConfigError, run_command
from rnn_jax.runners import associative_scan, hoisted_scan, scan

FORMS: dict[str, Callable] = {
    "scan": functools.partial(scan, unroll=1),
    "scan_unroll8": functools.partial(scan, unroll=8),
    "hoisted": hoisted_scan,
    "associative": associative_scan,
    "associative_log": functools.partial(associative_scan, log_space=True),
}


@dataclasses.dataclass(frozen=True)
class ScanBenchConfig:
    """Sequential scans against the associative scan for state-linear cells, forward and train step, against T.

    Attributes:
        cells: state-linear cells to measure.
        lengths: the sequence lengths T.
        forms: ways of running the recurrence ("associative_log" only for cells with log-space coefficients).
        workloads: "forward" (the states) and/or "train" (loss and parameter gradients).
        batch_size: B.
        input_size: E.
        hidden_size: H.
        rounds: interleaved timing rounds (the median is reported).
        min_seconds: the least time each form is timed per round.
        out: the output folder for JSON, markdown and plots (none: no files).
    """

    cells: tuple[str, ...] = ("mingru", "lru")
    lengths: tuple[int, ...] = (64, 256, 1024, 4096, 16384)
    forms: tuple[str, ...] = tuple(FORMS)
    workloads: tuple[str, ...] = ("forward", "train")
    batch_size: int = 4
    input_size: int = 128
    hidden_size: int = 128
    rounds: int = 3
    min_seconds: float = 0.3
    out: Optional[str] = "bench_results"

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        from rnn_jax.cells import CELLS

        return {"cells": sorted(name for name, cell in CELLS.items() if base.state_linear(cell) is not None),
                "forms": list(FORMS), "workloads": ["forward", "train"]}


def check_config(config: ScanBenchConfig) -> None:
    """A ConfigError naming what is unknown and what is accepted."""
    for label, given, known in (("form", config.forms, FORMS), ("workload", config.workloads, ("forward", "train"))):
        unknown = [name for name in given if name not in known]
        if unknown:
            raise ConfigError(f"unknown {label}(s) {unknown}; expected some of {list(known)}")
    for cell_name in config.cells:
        if base.state_linear(get_cell(cell_name)) is None:
            raise ConfigError(f"cell {cell_name!r} is not state-linear, so the associative runner cannot run it; "
                              "pick among mingru, minlstm, lru, rglru")


def applicable(form: str, cell) -> bool:
    """Whether the form can run the cell (the log-space scan needs log-space coefficients)."""
    return form != "associative_log" or base.state_linear(cell).log_coefficients is not None


def build(form: str, cell, params, carry, xs, train: bool):
    """(jitted call, its arguments): the sequence's states, or the loss and parameter gradients of mean(h²)."""
    runner = FORMS[form]

    def states(params, xs):
        return runner(cell, params, carry, xs)[1]

    if train:
        def loss(params, xs):
            hs = states(params, xs)
            return jnp.mean(jnp.square(hs.astype(jnp.float32)))

        return jax.jit(jax.value_and_grad(loss)), (params, xs)
    return jax.jit(states), (params, xs)


def compiled(call, args) -> tuple[Callable, float, int]:
    """(executable, seconds to lower and compile, XLA's temporary bytes)."""
    start = time.perf_counter()
    executable = call.lower(*args).compile()
    return executable, time.perf_counter() - start, int(executable.memory_analysis().temp_size_in_bytes)


def largest_difference(result, reference) -> float:
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(reference)))


def measure(config: ScanBenchConfig, cell_name: str, workload: str, T: int) -> list[dict]:
    """Every applicable form at one (cell, workload, T), timed in interleaved rounds."""
    cell = get_cell(cell_name)
    B, E, H = config.batch_size, config.input_size, config.hidden_size
    params = cell.init(jax.random.key(0), E, H)
    carry = cell.initial_state(H, (B,), param_dtype(params))
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    entries, meta, reference = {}, {}, None
    for form in (f for f in config.forms if applicable(f, cell)):
        call, args = build(form, cell, params, carry, xs, workload == "train")
        executable, compile_s, temp_bytes = compiled(call, args)
        result = jax.block_until_ready(executable(*args))
        reference = result if reference is None else reference
        meta[form] = {"compile_s": compile_s, "temp_bytes": temp_bytes,
                      "max_abs_diff_vs_first": largest_difference(result, reference)}
        entries[form] = (functools.partial(executable, *args), jax.block_until_ready)
    rates = timed_rounds(entries, config.rounds, config.min_seconds, B * T)
    rows = []
    for form, values in rates.items():
        rows.append({"cell": cell_name, "workload": workload, "T": T, "form": form,
                     "tokens_per_s": statistics.median(values), "min": min(values), "max": max(values),
                     "rounds": values, **meta[form]})
    first = rows[0]["tokens_per_s"]
    for row in rows:
        row["vs_first"] = row["tokens_per_s"] / first
    return rows


def print_rows(rows: list[dict]) -> None:
    head = rows[0]
    print(f"\n{head['cell']} {head['workload']} T={head['T']} (ratios against {head['form']}):")
    for r in rows:
        print(f"  {r['form']:<16} {r['tokens_per_s']:>12,.0f} tok/s [{r['min']:,.0f}-{r['max']:,.0f}]  "
              f"{r['vs_first']:5.2f}x  compile {r['compile_s']:5.2f}s  temp {r['temp_bytes'] / 2**20:8.1f} MiB  "
              f"max|diff| {r['max_abs_diff_vs_first']:.1e}", flush=True)


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(ScanBenchConfig(), argv, description=__doc__.splitlines()[0])
    check_config(config)
    machine = device_description()
    print(f"machine: {os.cpu_count()} CPU core(s) of a {machine['cpu']['model']} ({', '.join(machine['cpu']['flags'])}); "
          f"{machine['device_kind']}; B={config.batch_size} "
          f"E={config.input_size} H={config.hidden_size}; forms {', '.join(config.forms)}", flush=True)
    results = []
    groups = [(c, w, T) for c in config.cells for w in config.workloads for T in config.lengths]
    for index, (cell_name, workload, T) in enumerate(groups, 1):
        print(f"[{index}/{len(groups)}] {cell_name} {workload} T={T} ...", flush=True)
        rows = measure(config, cell_name, workload, T)
        print_rows(rows)
        results += rows
    report = {"machine": {"cpus": os.cpu_count(), **device_description(), "versions": versions()},
              "config": dataclasses.asdict(config), "results": results}
    print("\n" + summary_table(report))
    if config.out:
        write_outputs(pathlib.Path(config.out), report)
    return report


def summary_table(report: dict) -> str:
    """One row per (cell, workload, T): tokens/s of each form and the fastest form's ratio to `scan`."""
    forms = list(dict.fromkeys(r["form"] for r in report["results"]))
    lines = ["| cell | workload | T | " + " | ".join(forms) + f" | fastest | associative / {forms[0]} |",
             "|---|---|---|" + "---|" * (len(forms) + 2)]
    for key in dict.fromkeys((r["cell"], r["workload"], r["T"]) for r in report["results"]):
        rows = {r["form"]: r for r in report["results"] if (r["cell"], r["workload"], r["T"]) == key}
        best = max(rows.values(), key=lambda r: r["tokens_per_s"])
        parallel = rows.get("associative")
        ratio = f"{parallel['vs_first']:.2f}x" if parallel else "-"
        speeds = " | ".join(f"{rows[f]['tokens_per_s']:,.0f}" if f in rows else "-" for f in forms)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {speeds} | {best['form']} | {ratio} |")
    return "\n".join(lines)


def detail_table(report: dict) -> str:
    lines = ["| cell | workload | T | form | tokens/s | min-max | vs first | compile s | temp MiB | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['cell']} | {r['workload']} | {r['T']} | {r['form']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['min']:,.0f}-{r['max']:,.0f} | {r['vs_first']:.2f} | {r['compile_s']:.2f} | "
                     f"{r['temp_bytes'] / 2**20:.1f} | {r['max_abs_diff_vs_first']:.1e} |")
    return "\n".join(lines)


def _plot_metric(report: dict, metric: Callable[[dict], float], ylabel: str, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["cell"], r["workload"]) for r in report["results"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), constrained_layout=True, squeeze=False)
    for ax, (cell_name, workload) in zip(axes[0], panels):
        rows = [r for r in report["results"] if (r["cell"], r["workload"]) == (cell_name, workload)]
        for form in dict.fromkeys(r["form"] for r in rows):
            points = sorted((r["T"], metric(r)) for r in rows if r["form"] == form)
            ax.plot(*np.array(points).T, "o-", label=form)
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel=ylabel, title=f"{cell_name} {workload}")
    axes[0, 0].legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_outputs(out: pathlib.Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_scan.json").write_text(json.dumps(report, indent=2))
    (out / "bench_scan.md").write_text(f"Machine: {report['machine']}\n\n{summary_table(report)}\n\n"
                                       f"{detail_table(report)}\n")
    _plot_metric(report, lambda r: r["tokens_per_s"], "tokens/s", out / "bench_scan_tokens.png")
    _plot_metric(report, lambda r: max(r["temp_bytes"], 1) / 2**20, "XLA temporaries (MiB)",
                 out / "bench_scan_memory.png")
    _plot_metric(report, lambda r: r["compile_s"], "lower + compile (s)", out / "bench_scan_compile.png")


if __name__ == "__main__":
    sys.exit(run_command(main))
