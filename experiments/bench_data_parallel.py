"""Data-parallel training throughput: tokens/s of the language-model train step on 1, 2 and 4 devices.

Command:  python -m experiments.bench_data_parallel [--devices 1,2,4] [--hidden-size 256] [--batch-size 32]
          [--out bench_results/data_parallel.json]
Expected: on a CPU, the devices are forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count)
          sharing the same cores, so the figures show the sharding overhead rather than a speed-up; on a
          multi-GPU host they show the scaling. Each count runs in a fresh process, one after the other.
Source:   rnn_jax.training.make_train_step under rnn_jax.parallel's mesh; median of timed repeats after warm-up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Optional, Sequence

from rnn_jax.cli import parse_config
from rnn_jax.errors import run_command


@dataclasses.dataclass(frozen=True)
class DataParallelBenchConfig:
    """Tokens/s of the train step on 1, 2, 4 forced CPU devices (one process per device count).

    Attributes:
        devices: the device counts to measure, each in its own process.
        cell: the recurrent cell.
        vocab_size: V.
        hidden_size: E = H.
        num_layers: L.
        batch_size: B, split over the devices.
        num_steps: T.
        repeats: timed repeats per device count (the median is reported).
        steps_per_repeat: train steps per repeat.
        out: the JSON file written (none: no file).
        worker: internal: run the measurement for this many devices and print JSON.
    """

    devices: tuple[int, ...] = (1, 2, 4)
    cell: str = "lstm"
    vocab_size: int = 1000
    hidden_size: int = 256
    num_layers: int = 1
    batch_size: int = 32
    num_steps: int = 35
    repeats: int = 5
    steps_per_repeat: int = 10
    out: Optional[str] = "bench_results/data_parallel.json"
    worker: int = 0

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        from rnn_jax.cells import names

        return {"cell": names()}


def measure(config: DataParallelBenchConfig) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rnn_jax import parallel
    from rnn_jax.lm import LanguageModel, LMConfig
    from rnn_jax.training import OptimConfig, TrainState, make_optimizer, make_train_step

    mesh = parallel.make_mesh(config.worker)
    parallel.check_divisible(config.batch_size, mesh)
    model = LanguageModel(LMConfig(vocab_size=config.vocab_size, embed_size=config.hidden_size,
                                   hidden_size=config.hidden_size, num_layers=config.num_layers, cell=config.cell))
    optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=0.1), 100, 100)
    params = model.init(jax.random.PRNGKey(0))
    state = parallel.place(TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(1)),
                           parallel.replicated(mesh))
    carry = parallel.place(model.initial_state(config.batch_size), parallel.rows_sharded(mesh))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.vocab_size, (config.batch_size, config.num_steps + 1))
    inputs = parallel.global_batch(mesh, tokens[:, :-1])
    targets = parallel.global_batch(mesh, tokens[:, 1:])
    step = parallel.under_mesh(mesh, jax.jit(make_train_step(model, optimizer, "token_mean"), donate_argnums=(0, 1)))
    start = time.perf_counter()
    state, carry, metrics = step(state, carry, inputs, targets)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    rates = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        for _ in range(config.steps_per_repeat):
            state, carry, metrics = step(state, carry, inputs, targets)
        jax.block_until_ready(metrics)
        rates.append(config.steps_per_repeat * config.batch_size * config.num_steps / (time.perf_counter() - start))
    return {"devices": config.worker, "platform": jax.devices()[0].platform, "tokens_per_s": statistics.median(rates),
            "min": min(rates), "max": max(rates), "compile_s": compile_s}


def main(argv: Sequence[str] | None = None) -> list[dict]:
    config = parse_config(DataParallelBenchConfig(), argv, description=__doc__.splitlines()[0])
    if config.worker:
        print(json.dumps(measure(config)))
        return []
    rows = []
    for devices in config.devices:
        env = dict(os.environ)
        if "cuda" not in env.get("JAX_PLATFORMS", ""):
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(config.devices)}").strip()
        args = [sys.executable, "-m", "experiments.bench_data_parallel", "--worker", str(devices)]
        for field in dataclasses.fields(config):
            if field.name not in ("worker", "devices", "out"):
                args += ["--" + field.name.replace("_", "-"), str(getattr(config, field.name))]
        done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1])
        if done.returncode:
            raise RuntimeError(f"the {devices}-device run failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["tokens_per_s"]
    print(f"{config.cell.upper()} H={config.hidden_size} V={config.vocab_size} B={config.batch_size} T={config.num_steps}, "
          f"train step, {rows[0]['platform']}")
    print(f"{'devices':>8} {'tokens/s (median)':>18} {'min':>10} {'max':>10} {'vs 1':>6} {'compile s':>10}")
    for row in rows:
        print(f"{row['devices']:>8} {row['tokens_per_s']:>18,.0f} {row['min']:>10,.0f} {row['max']:>10,.0f} "
              f"{row['tokens_per_s'] / base:>6.2f} {row['compile_s']:>10.2f}")
    if config.out:
        path = pathlib.Path(config.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": dataclasses.asdict(config), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    sys.exit(run_command(main))
