"""Peak memory of a training gradient against sequence length, with and without rematerialisation.

Command:  python -m experiments.bench_remat [--cell lstm] [--hidden-size 256] [--batch-size 16]
          [--lengths 64,256,1024,4096] [--out bench_results/remat.json]
Expected: without remat the backward pass keeps every step's activations, so temporary memory grows
          linearly with T; with remat="sqrt" it grows like sqrt(T) (plus the inputs and outputs themselves).
Source:   XLA's compiled memory analysis (`jax.jit(...).lower(...).compile().memory_analysis()`), which is
          exact and independent of machine load; the gradients are tested equal in tests/test_runners.py.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from rnn_jax import get_cell, hoisted_scan, param_dtype
from rnn_jax.cli import parse_config
from rnn_jax.errors import run_command


@dataclasses.dataclass(frozen=True)
class RematBenchConfig:
    """Temporary memory of jit(grad(loss)) against T, without and with remat="sqrt".

    Attributes:
        cell: the recurrent cell.
        input_size: E.
        hidden_size: H.
        batch_size: B.
        lengths: the sequence lengths T measured.
        out: the JSON file written (none: no file).
    """

    cell: str = "lstm"
    input_size: int = 64
    hidden_size: int = 256
    batch_size: int = 16
    lengths: tuple[int, ...] = (64, 256, 1024, 4096)
    out: Optional[str] = "bench_results/remat.json"

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        from rnn_jax.cells import names

        return {"cell": names()}


def temp_bytes(cell, params, xs, remat, hidden_size: int) -> int:
    carry = cell.initial_state(hidden_size, xs.shape[:1], param_dtype(params))

    def loss(params, xs):
        _, hs = hoisted_scan(cell, params, carry, xs, remat=remat)
        return jnp.sum(hs ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params, xs).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    config = parse_config(RematBenchConfig(), argv, description=__doc__.splitlines()[0])
    cell = get_cell(config.cell)
    params = cell.init(jax.random.key(0), config.input_size, config.hidden_size)
    rows = []
    print(f"{config.cell.upper()} E={config.input_size} H={config.hidden_size} B={config.batch_size}: "
          f"temporary memory of jit(grad(loss)), {jax.devices()[0].platform}")
    print(f"{'T':>6} {'no remat (MiB)':>15} {'remat=sqrt (MiB)':>17} {'ratio':>7}")
    for T in config.lengths:
        xs = jnp.zeros((config.batch_size, T, config.input_size))
        plain, sqrt = (temp_bytes(cell, params, xs, remat, config.hidden_size) for remat in (None, "sqrt"))
        rows.append({"T": T, "plain_bytes": plain, "remat_sqrt_bytes": sqrt, "ratio": plain / max(sqrt, 1)})
        print(f"{T:>6} {plain / 2**20:>15.2f} {sqrt / 2**20:>17.2f} {plain / max(sqrt, 1):>7.1f}")
    if config.out:
        path = pathlib.Path(config.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": dataclasses.asdict(config), "device": str(jax.devices()[0]),
                                    "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    sys.exit(run_command(main))
