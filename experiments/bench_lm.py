"""Benchmark suite: the language-model train step and inference, rnn_jax's runners against peers.

Command:  python -m experiments.bench_lm [--configs notes,zaremba_small,zaremba_medium,long] [--cells lstm,gru]
          [--workloads train,infer] [--rounds 5] [--compile-lengths 16,64,256,1024] [--out bench_results]
Expected: a markdown table (tokens/s median [min-max] over interleaved rounds, the step's compile time (lower +
          XLA compile) and first-step time (set-up, compile and first call), peak temporary memory of the compiled
          step (PyTorch: what one step allocates at its peak, from its profiler), achieved FLOP/s as a fraction
          of this machine's fp32 matrix-product peak measured in the same run),
          plus compile time against T for unroll=1 and full unroll; JSON and PNG plots in --out. Peers are
          optional: PyTorch nn.LSTM/nn.GRU (float32, and bf16 under autocast beside rnn_jax's bf16 row
          `fused_bf16`) and Flax nn.RNN everywhere, and on a GPU also PyTorch on CUDA (cuDNN)
          and jax.experimental.rnn (cuDNN, LSTM only). A peer whose library, device or cell is missing is
          reported as skipped, with the reason. `products_only` is neither: the step's matrix products alone,
          one after another (see `products_only_step`), for the time they take by themselves.
Source:   the workloads below; every implementation runs in this process, measured in interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from experiments.bench_machine import cpu_description, device_description, matmul_peak, versions  # noqa: F401
from experiments.bench_peers import flax_step, jax_rnn_step, torch_cpu_peak_bytes, torch_step  # noqa: F401
from experiments.bench_products import (chain_products, product_times, products_only,  # noqa: F401
                                        products_only_step, step_products)
from experiments.bench_workloads import (PEER_CELLS, WORKLOADS, Built, PeerUnavailable, Workload,  # noqa: F401
                                         _compiled, tokens, workload)
from rnn_jax.cli import parse_config
from rnn_jax.hostmem import reuse_freed_memory
from rnn_jax.cells import get_cell
from rnn_jax.lm import LanguageModel, LMConfig
from rnn_jax.errors import run_command
from rnn_jax.training import (OptimConfig, TrainState, make_eval_step, make_optimizer, make_train_step,
                              sparse_embedding_pays)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Which workloads, cells and implementations to time, and how long.

    Attributes:
        configs: workloads (sizes in `WORKLOADS`).
        cells: recurrent cells (a peer without the cell is reported as skipped).
        workloads: "train" (loss, gradients and update) and/or "infer" (logits).
        implementations: rnn_jax's runners, the peers (torch, flax, torch_cuda, jax_rnn) and the products-only
            reference; "fused_bf16" is the default with `compute_dtype="bfloat16"`, "torch_bf16" and
            "torch_cuda_bf16" PyTorch under `torch.autocast(device, torch.bfloat16)`, its peers.
        rounds: interleaved timing rounds (the median is reported).
        min_seconds: the least time each implementation is timed per round.
        compile_lengths: T values of the compile-time measurement (full unroll up to T=64; "" for none).
        out: the output folder for JSON, markdown and plots (none: no files).
        reuse_host_memory: call `rnn_jax.hostmem.reuse_freed_memory` first, for the whole process.
    """

    configs: tuple[str, ...] = ("notes", "zaremba_small", "zaremba_medium", "long")
    cells: tuple[str, ...] = ("lstm", "gru")
    workloads: tuple[str, ...] = ("train", "infer")
    implementations: tuple[str, ...] = ("fused", "fused_xla", "fused_bf16", "hoisted", "scan_unroll1", "scan_unroll4",
                                        "scan_unrollT", "unrolled", "torch", "torch_bf16", "flax", "torch_cuda",
                                        "torch_cuda_bf16", "jax_rnn", "products_only")
    rounds: int = 5
    min_seconds: float = 0.3
    compile_lengths: tuple[int, ...] = (16, 64, 256, 1024)  # a full unroll of T=256 would take ~2 min
    out: Optional[str] = "bench_results"
    reuse_host_memory: bool = True

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        return {"configs": list(WORKLOADS), "workloads": ["train", "infer"],
                "implementations": list(BenchConfig.implementations)}


PEERS = ("torch", "flax", "torch_cuda", "jax_rnn")  # float32: the default's peers
BF16_PEERS = ("torch_bf16", "torch_cuda_bf16")
BF16_PAIR = ("fused_bf16", "torch_bf16")  # mixed precision on the CPU: rnn_jax's and PyTorch's
REFERENCES = ("products_only",)  # references; everything neither a peer nor a reference is an rnn_jax runner


# -------------------------------------------------------------------------------------- implementations


def takes_reset_after(cell: str) -> bool:
    """Whether the cell has the cuDNN/PyTorch reset-after form (the peers' GRU), which the benchmark then uses."""
    return "reset_after" in inspect.signature(get_cell(cell).init).parameters


def rnn_jax_step(w: Workload, cell: str, train: bool, variant: str) -> Built:
    runner, unroll = {"fused": ("fused", 1), "fused_xla": ("fused_xla", 1), "fused_bf16": ("fused", 1),
                      "hoisted": ("hoisted", 1),
                      "scan_unroll1": ("scan", 1), "scan_unroll4": ("scan", 4), "scan_unrollT": ("scan", w.steps),
                      "unrolled": ("unrolled", 1)}[variant]
    model = LanguageModel(LMConfig(vocab_size=w.vocab, embed_size=w.embed, hidden_size=w.hidden, num_layers=w.layers,
                                   cell=cell, use_bias=w.bias, output_bias=w.bias, runner=runner, unroll=unroll,
                                   gru_reset_after=takes_reset_after(cell),
                                   compute_dtype="bfloat16" if variant == "fused_bf16" else "float32"))
    params = model.init(jax.random.PRNGKey(0))
    inputs, targets = (jnp.asarray(a) for a in tokens(w))
    native = variant != "fused_xla"  # fused_xla: the default step with every native kernel off
    if train:
        optim = OptimConfig(name="sgd", learning_rate=0.1, clip_norm=None)
        optimizer = make_optimizer(optim, 1, 1)
        # As `rnn_jax.training.train` builds it: at the Zaremba sizes only the batch's embedding rows are updated.
        sparse = sparse_embedding_pays(optim, model.config, w.batch * w.steps)
        step = jax.jit(make_train_step(model, optimizer, "token_mean", native=native, sparse_embedding=sparse),
                       donate_argnums=(0, 1))
        state = [TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(1)),
                 model.initial_state(w.batch)]
        temp_bytes, compile_s = _compiled(step, state[0], state[1], inputs, targets)

        def run():
            state[0], state[1], metrics = step(state[0], state[1], inputs, targets)
            return metrics["loss"]
    else:
        step = jax.jit(make_eval_step(model, native=native))
        carry = model.initial_state(w.batch)
        temp_bytes, compile_s = _compiled(step, params, carry, inputs, targets)
        run = lambda: step(params, carry, inputs, targets)[1]
    return Built(run, jax.block_until_ready, temp_bytes, compile_s)


CPU_ONLY = {"torch": "PyTorch on the CPU", "torch_bf16": "PyTorch on the CPU",
            "fused_xla": "the default with the native CPU kernels off"}


def build(name: str, w: Workload, cell: str, train: bool) -> Built:
    if name in PEER_CELLS and cell not in PEER_CELLS[name]:
        raise PeerUnavailable(f"no peer: {name} has no {cell} cell")
    if name in CPU_ONLY and jax.default_backend() != "cpu":
        raise PeerUnavailable(f"a CPU-only row ({CPU_ONLY[name]}) on the {jax.default_backend()} backend")
    if name in ("torch", "torch_bf16"):
        return torch_step(w, cell, train, bf16=name == "torch_bf16")
    if name in ("torch_cuda", "torch_cuda_bf16"):
        return torch_step(w, cell, train, device="cuda", bf16=name == "torch_cuda_bf16")
    if name == "flax":
        return flax_step(w, cell, train)
    if name == "jax_rnn":
        return jax_rnn_step(w, cell, train)
    if name == "products_only":
        return products_only_step(w, cell, train)
    return rnn_jax_step(w, cell, train, name)


# ---------------------------------------------------------------------------------------------- measuring


def timed_rounds(entries: dict, rounds: int, min_seconds: float, tokens_per_call: int, warmup_calls: int = 1) -> dict:
    """Interleaved rounds: each round times every implementation once, in turn, for >= min_seconds.

    Each turn starts with `warmup_calls` untimed calls: the first step after another implementation ran finds
    the caches and the allocator as that one left them (at `zaremba_small`, PyTorch's first steps took up to
    1.6x its median, Flax's 1.2x; rnn_jax's default none), which a half-second round would otherwise count.
    """
    rates = {name: [] for name in entries}
    for _ in range(rounds):
        for name, (run, wait) in entries.items():
            for _ in range(warmup_calls):
                wait(run())
            calls, start = 0, time.perf_counter()
            while True:
                wait(run())
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            rates[name].append(calls * tokens_per_call / elapsed)
    return rates


def compile_times(cell: str, lengths: Sequence[int]) -> list[dict]:
    """Seconds to lower and compile the train step (no run) at each T, for the default, scan and a full unroll."""
    rows = []
    for T in lengths:
        w = Workload("compile", 1000, 128, 1, T, 8, True, 128)
        row = {"T": T}
        for variant, label in (("fused", "fused"), ("scan_unroll1", "unroll=1"), ("scan_unrollT", "full unroll")):
            if label == "full unroll" and T > 64:
                row[label] = None  # fully unrolled graphs of this size take minutes to compile; not measured
                continue
            row[label] = rnn_jax_step(w, cell, True, variant).compile_s
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(BenchConfig(), argv, description=__doc__.splitlines()[0])
    reused = reuse_freed_memory() if config.reuse_host_memory else False  # before JAX starts its threads
    peak = matmul_peak()
    machine = device_description()
    print(f"machine: {os.cpu_count()} CPU core(s) of a {machine['cpu']['model']} ({', '.join(machine['cpu']['flags'])}); "
          f"{machine['device_kind']} ({machine['platform']}); fp32 matmul peak measured {peak / 1e9:.1f} GFLOP/s; "
          f"freed host memory reused: {reused}")
    results, skipped, products = [], [], {}
    for name in config.configs:
        w = workload(name)
        for cell in config.cells:
            for kind in config.workloads:
                train = kind == "train"
                entries, meta = {}, {}
                for impl in config.implementations:
                    if impl in ("unrolled", "scan_unrollT") and w.steps > 64:
                        print(f"  {impl}: skipped (a full unroll of T={w.steps} steps compiles for minutes)")
                        continue
                    try:
                        start = time.perf_counter()
                        built = build(impl, w, cell, train)
                        built.wait(built.run())
                    except (ImportError, PeerUnavailable) as e:
                        print(f"  {impl}: skipped ({e})")
                        skipped.append({"config": name, "cell": cell, "workload": kind, "impl": impl,
                                        "reason": str(e)})
                        continue
                    meta[impl] = {"compile_s": built.compile_s, "first_step_s": time.perf_counter() - start,
                                  "temp_bytes": built.temp_bytes}
                    entries[impl] = (built.run, built.wait)
                rates = timed_rounds(entries, config.rounds, config.min_seconds, w.batch * w.steps)
                for impl, values in rates.items():
                    median = statistics.median(values)
                    results.append({"config": name, "cell": cell, "workload": kind, "impl": impl,
                                    "tokens_per_s": median, "min": min(values), "max": max(values), "rounds": values,
                                    "flops_fraction": median * w.flops_per_token(cell, train) / peak, **meta[impl]})
                best_peer = max((r["tokens_per_s"] for r in results if r["config"] == name and r["cell"] == cell
                                 and r["workload"] == kind and r["impl"] in PEERS), default=None)
                print(f"\n{name} {cell} {kind}: B={w.batch} T={w.steps} V={w.vocab} H={w.hidden} L={w.layers}")
                for r in [r for r in results if r["config"] == name and r["cell"] == cell and r["workload"] == kind]:
                    ratio = "" if not best_peer else f"{r['tokens_per_s'] / best_peer:5.2f}x best peer"
                    memory = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f} MiB"
                    compile_s = "    -" if r["compile_s"] is None else f"{r['compile_s']:5.2f}"
                    print(f"  {r['impl']:<13} {r['tokens_per_s']:>11,.0f} tok/s [{r['min']:,.0f}-{r['max']:,.0f}]  "
                          f"compile {compile_s}s  first step {r['first_step_s']:5.2f}s  temp {memory:>10}  "
                          f"{100 * r['flops_fraction']:5.1f}% peak  {ratio}")
                if "products_only" in entries:
                    key = f"{name} {cell} {kind}"
                    products[key] = product_times(w, cell, train)
                    print("  the step's products, each timed alone (chained repeats in one call, median of 5 calls):")
                    for row in products[key]:
                        print(f"    {row['product']:<64} {1e3 * row['seconds']:8.3f} ms  "
                              f"{row['flops'] / row['seconds'] / 1e9:5.0f} GFLOP/s")
    compiles = {cell: compile_times(cell, config.compile_lengths) for cell in config.cells}
    for cell, rows in compiles.items():
        print(f"\ncompile time (lower + compile, no run) of the {cell} train step against T (H=128, B=8):")
        for row in rows:
            full = "not measured" if row["full unroll"] is None else f"{row['full unroll']:.2f}s"
            print(f"  T={row['T']:>5}: fused {row['fused']:.2f}s, scan unroll=1 {row['unroll=1']:.2f}s, full unroll {full}")
    report = {"machine": {"cpus": os.cpu_count(), **device_description(), "matmul_peak_flops": peak, "host_memory_reused": reused,
                          "versions": versions()}, "config": dataclasses.asdict(config), "results": results,
              "skipped": skipped, "compile_vs_T": compiles, "product_times": products}
    print("\n" + summary_table(report))
    if config.out:
        write_outputs(pathlib.Path(config.out), report)
    return report


def markdown_table(report: dict) -> str:
    lines = ["| config | cell | workload | impl | tokens/s (median) | min-max | compile s | first step s | temp MiB "
             "| % fp32 peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        memory = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        lines.append(f"| {r['config']} | {r['cell']} | {r['workload']} | {r['impl']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['min']:,.0f}-{r['max']:,.0f} | {compile_s} | {r['first_step_s']:.2f} | {memory} | "
                     f"{100 * r['flops_fraction']:.1f} |")
    for r in report.get("skipped", []):
        lines.append(f"| {r['config']} | {r['cell']} | {r['workload']} | {r['impl']} | skipped: {r['reason']} "
                     "| | | | | |")
    return "\n".join(lines)


def product_table(report: dict) -> str:
    """The step's products timed alone (`product_times`), per (config, cell, workload) where they were timed."""
    lines = []
    for key, rows in report.get("product_times", {}).items():
        lines += [f"\nThe step's products, each timed alone ({key}):\n", "| product | ms | GFLOP/s | % of peak |",
                  "|---|---|---|---|"]
        peak = report["machine"]["matmul_peak_flops"]
        for row in rows:
            rate = row["flops"] / row["seconds"]
            lines.append(f"| {row['product']} | {1e3 * row['seconds']:.3f} | {rate / 1e9:.0f} | {100 * rate / peak:.0f}% |")
    return "\n".join(lines) + ("\n" if lines else "")


BAR = {"notes": 1.5, "zaremba_small": 1.5, "zaremba_medium": 1.2, "long": 1.0}  # target: default / fastest peer


def round_ratios(default: dict, peers: list[dict]) -> list[float]:
    """The default's tokens/s over the fastest peer's, round by round (each round times them minutes apart at
    most, so a drift of the shared machine's speed moves both): the spread of the run's ratio."""
    if not peers or "rounds" not in default or any("rounds" not in peer for peer in peers):
        return []
    return [mine / max(peer["rounds"][i] for peer in peers) for i, mine in enumerate(default["rounds"])]


def summary_table(report: dict) -> str:
    """One row per (config, cell, workload): tokens/s of every implementation, the default's ratio to the fastest
    peer (of the medians, and its range over the rounds), the target bar for the train step, and what meeting it
    takes: the default's share of the measured fp32 matrix-product peak now and the share the bar asks for (bar x
    the fastest peer's share; near or above 100%, no exact implementation of these FLOPs can meet it here); where
    `products_only` ran, also the default's tokens/s over that of its products run one after another alone, and
    theirs over the fastest peer's."""
    impls = list(dict.fromkeys(r["impl"] for r in report["results"]))
    with_reference = any(r["impl"] in REFERENCES for r in report["results"])
    extra = " default / products only | products only / best peer |" if with_reference else ""
    with_bf16 = all(any(r["impl"] == name for r in report["results"]) for name in BF16_PAIR)
    extra += " bf16 / torch bf16 |" if with_bf16 else ""
    lines = ["| config | cell | workload | " + " | ".join(impls)
             + " | default / best peer | per round | bar | default % peak | bar needs % peak |" + extra,
             "|---|---|---|" + "---|" * (len(impls) + 5 + 2 * with_reference + with_bf16)]
    groups = list(dict.fromkeys((r["config"], r["cell"], r["workload"]) for r in report["results"]))
    for name, cell, kind in groups:
        rows = {r["impl"]: r for r in report["results"] if (r["config"], r["cell"], r["workload"]) == (name, cell, kind)}
        peers = [rows[k] for k in PEERS if k in rows]
        best = max(peers, key=lambda r: r["tokens_per_s"]) if peers else None
        default = rows.get("fused")
        ratio = f"{default['tokens_per_s'] / best['tokens_per_s']:.2f}x" if best and default else "-"
        per_round = round_ratios(default, peers) if default else []
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}x" if per_round else "-"
        has_bar = kind == "train" and name in BAR
        bar = f"{BAR[name]:.1f}x" if has_bar else "-"
        share = f"{100 * default['flops_fraction']:.0f}%" if default else "-"
        needs = f"{100 * BAR[name] * best['flops_fraction']:.0f}%" if has_bar and best else "-"
        cells = " | ".join(f"{rows[k]['tokens_per_s']:,.0f}" if k in rows else "-" for k in impls)
        row = f"| {name} | {cell} | {kind} | {cells} | {ratio} | {spread} | {bar} | {share} | {needs} |"
        if with_reference:
            reference = rows.get("products_only")
            of_reference = f"{default['tokens_per_s'] / reference['tokens_per_s']:.2f}" if reference and default else "-"
            over_peer = f"{reference['tokens_per_s'] / best['tokens_per_s']:.2f}x" if reference and best else "-"
            row += f" {of_reference} | {over_peer} |"
        if with_bf16:
            mine, theirs = (rows.get(name) for name in BF16_PAIR)
            row += f" {mine['tokens_per_s'] / theirs['tokens_per_s']:.2f}x |" if mine and theirs else " - |"
        lines.append(row)
    return "\n".join(lines)


def write_outputs(out: pathlib.Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_lm.json").write_text(json.dumps(report, indent=2))
    (out / "bench_lm.md").write_text(f"Machine: {report['machine']}\n\n" + summary_table(report) + "\n\n"
                                     + markdown_table(report) + "\n" + product_table(report))
    groups = sorted({(r["config"], r["cell"], r["workload"]) for r in report["results"]})
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 * len(groups)), constrained_layout=True, squeeze=False)
    for ax, (name, cell, kind) in zip(axes[:, 0], groups):
        rows = [r for r in report["results"] if (r["config"], r["cell"], r["workload"]) == (name, cell, kind)]
        ax.barh([r["impl"] for r in rows], [r["tokens_per_s"] for r in rows],
                xerr=[[r["tokens_per_s"] - r["min"] for r in rows], [r["max"] - r["tokens_per_s"] for r in rows]],
                color=["tab:orange" if r["impl"] in PEERS + BF16_PEERS
                       else "tab:gray" if r["impl"] in REFERENCES else "tab:blue"
                       for r in rows])
        ax.set_title(f"{name} {cell} {kind}", fontsize=9)
        ax.set_xlabel("tokens/s")
    fig.savefig(out / "bench_lm_tokens.png", dpi=90)
    plt.close(fig)
    if any(report["compile_vs_T"].values()):  # --compile-lengths "" measures none
        fig, ax = plt.subplots(figsize=(6, 4))
        for cell, rows in report["compile_vs_T"].items():
            ax.plot([r["T"] for r in rows], [r["fused"] for r in rows], "^-", label=f"{cell} fused (default)")
            ax.plot([r["T"] for r in rows], [r["unroll=1"] for r in rows], "o-", label=f"{cell} scan unroll=1")
            full = [(r["T"], r["full unroll"]) for r in rows if r["full unroll"] is not None]
            ax.plot([t for t, _ in full], [s for _, s in full], "s--", label=f"{cell} full unroll")
        ax.set_xscale("log")
        ax.set_yscale("log")  # flat scan lines near 1 s beside full unrolls of tens of seconds
        ax.set_xlabel("T")
        ax.set_ylabel("lower + compile time of the train step (s)")
        ax.legend()
        fig.savefig(out / "bench_compile_vs_T.png", dpi=90)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_command(main))
