"""Native CPU kernels for the recurrent loop and the softmax loss, called through `jax.ffi`, compiled on first use.

`rnn_jax.fused_scan` runs the loops (forward and backward) of an LSTM and of a reset-after GRU with these
kernels when it can: a float32 state (with float32 or bf16 weights), the CPU backend, and a C++ compiler on the
machine. Everywhere else it runs its XLA loop, which gives the same results (tested to float32 rounding). XLA
executes a loop body as a chain of small kernels, each with a few microseconds of dispatch and a thread-pool
wake-up for the product; a native loop is one call, split over the hidden units between threads that meet once per step, with vectorised gate math.
`rnn_jax.output.output_nll` (the language model's loss) uses the softmax cross-entropy kernels under the same
conditions: one pass per row of the logits instead of XLA's eight passes over all of them.

| module | what |
|---|---|
| `policy` | the one native switch: `native_mode("auto" / "off" / "require")`, `RNN_JAX_NATIVE` |
| `_build` | compiling `recurrent.cc` and `xent.cc` (with `simd.h`) into a cached shared library, loading it |
| `_ffi` | `jax.ffi` calls whose rows fold under `jax.vmap` and split over devices |
| `recurrent` | `lstm_forward`, `gru_forward` and their backward loops; `NativeLoop` adapters for `fused_scan` |
| `xent` | softmax cross-entropy rows; the output layer's training forward and backward in row panels |
| `cudnn` | the LSTM layer on GPUs through cuDNN (`jax.experimental.rnn`), the same policy's GPU counterpart |

`python -m rnn_jax.kernels info` says whether the kernels are built and why not; `... build` builds them.

Environment:
    RNN_JAX_NATIVE=0|1|require  the native policy (see `policy`).
    RNN_JAX_KERNEL_THREADS=N    threads per loop (default: the machine's cores, at most 8).
    RNN_JAX_KERNEL_CACHE=DIR    where compiled kernels are kept.

Examples:
    >>> from rnn_jax import kernels
    >>> kernels.available()  # doctest: +SKIP
    True
"""

from __future__ import annotations

from rnn_jax.kernels._build import FLAGS, SOURCES, available, build, cache_dir, eligible, failure, loaded
from rnn_jax.kernels.policy import MODES, mode, native_mode
from rnn_jax.kernels.recurrent import (GRU_LOOP, LSTM_LOOP, NativeLoop, gru_backward, gru_forward, lstm_backward,
                                       lstm_forward)
from rnn_jax.kernels.xent import (PANEL_ROWS, output_layer_backward, output_layer_forward, panels_to_rows,
                                  rows_to_panels, softmax_xent_forward, softmax_xent_value_and_grad)


def enabled() -> bool:
    """Whether native kernels may be used at all (the native mode is not "off")."""
    return mode() != "off"


__all__ = ["FLAGS", "GRU_LOOP", "LSTM_LOOP", "MODES", "NativeLoop", "PANEL_ROWS", "SOURCES", "available", "build",
           "cache_dir", "eligible", "enabled", "failure", "gru_backward", "gru_forward", "loaded", "lstm_backward",
           "lstm_forward", "mode", "native_mode", "output_layer_backward", "output_layer_forward", "panels_to_rows",
           "rows_to_panels", "softmax_xent_forward", "softmax_xent_value_and_grad"]
