"""The language-model benchmark's workloads and what every timed implementation is built into (`bench_lm`).

Each workload is a language model's sizes (vocabulary, embedding, hidden size, layers, T, B); an implementation
of its train or inference step is a `Built`, one call of which is one step.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from rnn_jax.cells import get_cell, init_options

WORKLOADS = {  # name: (V, E=H, layers, T, B, bias)
    "notes": (100, 20, 1, 20, 32, False, 10),
    "zaremba_small": (10000, 200, 2, 20, 20, True, 200),
    "zaremba_medium": (10000, 650, 2, 35, 20, True, 650),
    "long": (1000, 256, 1, 512, 16, True, 256),
}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    vocab: int
    hidden: int
    layers: int
    steps: int
    batch: int
    bias: bool
    embed: int

    def flops_per_token(self, cell: str, train: bool) -> float:
        """2 FLOPs per weight of the layers' matrix products and the output layer, per token (x3 to train).

        A layer's product weights are its parameter leaves of rank 2 or more, read from the cell's own `init`, so
        every registered cell is counted (for the LSTM: 4H(E + H) per layer)."""
        layer = get_cell(cell)
        inputs = [self.embed] + [self.hidden] * (self.layers - 1)
        options = init_options(layer, {"use_bias": False}, defaults={"use_bias": False})  # biases are no product
        weights = sum(leaf.size for e in inputs for leaf in jax.tree.leaves(
            jax.eval_shape(lambda e=e: layer.init(jax.random.PRNGKey(0), e, self.hidden, **options)))
            if leaf.ndim >= 2)
        return (2 * weights + 2 * self.vocab * self.hidden) * (3 if train else 1)


def workload(name: str) -> Workload:
    V, H, L, T, B, bias, E = WORKLOADS[name]
    return Workload(name, V, H, L, T, B, bias, E)


def tokens(w: Workload, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, w.vocab, (w.batch, w.steps + 1))
    return data[:, :-1], data[:, 1:]


PEER_CELLS = {"torch": ("lstm", "gru"), "torch_cuda": ("lstm", "gru"), "flax": ("lstm", "gru"), "jax_rnn": ("lstm",)}
"""The cells each peer library has; any other cell is reported as "no peer"."""


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here (no GPU, a cell its library lacks); the run reports it as skipped."""


@dataclasses.dataclass
class Built:
    """One implementation, ready to time: `wait(run())` is one step."""

    run: Callable[[], Any]
    wait: Callable[[Any], Any]
    temp_bytes: Optional[int]  # XLA's temporaries of the compiled step; PyTorch's peak allocation in a step
    compile_s: Optional[float]  # lower + XLA compile of the step; None where nothing is compiled (PyTorch eager)


def _compiled(step, *args) -> tuple[int, float]:
    """(temporary bytes, seconds to lower and compile) of a jitted step; the call after it reuses the executable."""
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes), time.perf_counter() - start

