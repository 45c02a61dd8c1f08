"""Running a cell over time. Every runner takes a cell and has one signature (see `rnn_jax.runners.scan`):

    runner(cell, params, carry, xs, *, unroll, reverse, time_major, seq_lengths, mask, resets, reset_carry, remat)

| name | function | what runs | use it for |
|---|---|---|---|
| "scan" | `scan` | `lax.scan` of `cell.step` (also takes a bare step function) | the reference; any cell |
| "unrolled" | `unrolled` | a Python loop traced into one graph (also a bare step function) | scan-vs-unroll studies |
| "hoisted" | `hoisted_scan` | input products for all T before the loop, then `lax.scan` | cells with hoisting hooks |
| "fused" | `fused_scan` | hoisting, a hand-written backward pass, native loops where allowed | training (the default) |
| "fused_xla" | `fused_scan(native=False)` | the same with XLA's loops always | comparing with the native loop |
| "associative" | `associative_scan` | one parallel prefix scan over time, O(log T) deep | state-linear cells, long T |

A runner asked for more than a cell supports runs the nearest one that fits (`rnn_jax.runners._fallback`:
logged once, recorded in `FALLBACKS`), so every name but "associative" works with every cell; "associative" needs
a cell whose update is linear in its state (minGRU, minLSTM, LRU, RG-LRU) and refuses others with a clear error.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm, runners
    >>> params = lstm.init(jax.random.key(0), 3, 5)
    >>> carry, hs = runners.run_sequence(lstm, params, lstm.initial_state(5, (2,)), jnp.ones((2, 4, 3)), runner="scan")
    >>> hs.shape
    (2, 4, 5)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from rnn_jax.runners._fallback import FALLBACKS
from rnn_jax.runners._layout import StepFn
from rnn_jax.runners.associative import associative_scan
from rnn_jax.runners.fused import fused_scan, prefetch_scan
from rnn_jax.runners.scan import hoisted_scan, scan, unrolled

CellRunner = Callable[..., tuple[Any, jax.Array]]

RUNNERS: dict[str, CellRunner] = {"scan": scan, "unrolled": unrolled, "hoisted": hoisted_scan, "fused": fused_scan,
                                  "fused_xla": functools.partial(fused_scan, native=False),
                                  "associative": associative_scan}


def get_runner(name: str) -> CellRunner:
    """A runner by name (see the table above), taking a cell: `runner(cell, params, carry, xs, **options)`."""
    try:
        return RUNNERS[name]
    except KeyError:
        raise ValueError(f"unknown runner {name!r}; expected one of {sorted(RUNNERS)}") from None


def run_sequence(cell, params, carry, xs: jax.Array, *, runner: str = "fused", **options):
    """`get_runner(runner)(cell, params, carry, xs, **options)`."""
    return get_runner(runner)(cell, params, carry, xs, **options)


__all__ = ["CellRunner", "associative_scan", "FALLBACKS", "RUNNERS", "StepFn", "fused_scan", "get_runner", "hoisted_scan",
           "prefetch_scan", "run_sequence", "scan", "unrolled"]
