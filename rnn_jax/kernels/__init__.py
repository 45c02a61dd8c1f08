"""Native CPU kernels for the recurrent loop and the softmax loss, called through `jax.ffi`, compiled on first use.

`rnn_jax.fused_scan` runs the loops (forward and backward) of an LSTM and of a reset-after GRU with these
kernels when it can: float32, the CPU backend, and a C++ compiler on the machine. Everywhere else it runs its
XLA loop, which gives the same results (tested to float32 rounding). XLA executes a loop body as a chain of
small kernels, each with a few microseconds of dispatch and a thread-pool wake-up for the product; a native loop
is one call, split over the hidden units between threads that meet once per step, with vectorised gate math
(see `rnn_cpu.cc`). `rnn_jax.lm.output_nll` (the language model's loss) uses the softmax cross-entropy kernels
under the same conditions: one pass per row of the logits instead of XLA's eight passes over all of them.

The library is compiled with the system's `c++` (or `$CXX`) and `-march=native` against the XLA FFI headers
that ship with jaxlib, into `$RNN_JAX_KERNEL_CACHE` (default `~/.cache/rnn_jax/kernels`), keyed by the source,
jaxlib's version, the compiler and this CPU's feature flags; a failed build warns once and the XLA loop runs.

Environment:
    RNN_JAX_NATIVE=0           never use the native kernels.
    RNN_JAX_KERNEL_THREADS=N   threads per loop (default: the machine's cores, at most 8).
    RNN_JAX_KERNEL_CACHE=DIR   where compiled kernels are kept.

Example:
    >>> from rnn_jax import kernels
    >>> kernels.available()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_name("rnn_cpu.cc")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared")
_lock = threading.Lock()


def enabled() -> bool:
    """Whether native kernels may be used at all (`RNN_JAX_NATIVE` is not "0")."""
    return os.environ.get("RNN_JAX_NATIVE", "1") != "0"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("RNN_JAX_KERNEL_CACHE", pathlib.Path.home() / ".cache" / "rnn_jax" / "kernels"))


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _cpu_flags() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def build(compiler: str | None = None, out_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Compiles `rnn_cpu.cc` (if not already cached) and returns the shared library's path.

    Raises:
        RuntimeError: no compiler, or the compiler failed (its output is in the message).
    """
    compiler = compiler or _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++); the XLA loop will run instead")
    include = jax.ffi.include_dir()
    key = hashlib.sha256("\n".join([SOURCE.read_text(), jax.__version__, jax.lib.__version__, compiler, " ".join(FLAGS),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir()
    target = out_dir / f"rnn_jax_rnn_cpu_{key}.so"
    if target.exists():
        return target
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: build into the temporary directory instead
        out_dir = pathlib.Path(tempfile.gettempdir()) / "rnn_jax_kernels"
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / target.name
        if target.exists():
            return target
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        partial = pathlib.Path(scratch) / target.name
        result = subprocess.run([compiler, *FLAGS, f"-I{include}", str(SOURCE), "-o", str(partial)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} with {compiler} failed:\n{result.stderr[-4000:]}")
        os.replace(partial, target)  # atomic: concurrent builders (test workers) each publish a whole file
    return target


@functools.lru_cache(maxsize=None)
def _load() -> bool:
    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
        for name, symbol in (("rnn_jax_lstm_forward", library.RnnJaxLstmForward),
                             ("rnn_jax_lstm_backward", library.RnnJaxLstmBackward),
                             ("rnn_jax_gru_forward", library.RnnJaxGruForward),
                             ("rnn_jax_gru_backward", library.RnnJaxGruBackward),
                             ("rnn_jax_xent_forward", library.RnnJaxXentForward),
                             ("rnn_jax_xent_value_and_grad", library.RnnJaxXentValueAndGrad)):
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
        return True
    except Exception as error:  # noqa: BLE001 - any failure means "use the XLA loop", said once
        warnings.warn(f"rnn_jax native loop kernels unavailable, using the XLA loop: {error}", RuntimeWarning,
                      stacklevel=3)
        return False


def available(dtype=jnp.float32) -> bool:
    """Whether the kernels (`lstm_forward`, `gru_forward`, ...) can run here for `dtype` (builds them if needed).

    Needs float32, the CPU backend, and a jax whose FFI passes XLA's intra-op thread pool (0.6 or newer).
    """
    if (not enabled() or jnp.dtype(dtype) != jnp.float32 or jax.default_backend() != "cpu"
            or jax.__version_info__ < (0, 6)):
        return False
    with _lock:
        return _load()


def _require() -> None:
    with _lock:
        if not _load():
            raise RuntimeError("the native loop kernels could not be built or loaded (see the warning above); "
                               "use rnn_jax.fused_scan(..., native=False) or set RNN_JAX_NATIVE=0")


def _call(target: str, out_types, row_axes: tuple, out_row_axes: tuple, operands: tuple, attrs: dict,
          aliases: dict | None = None):
    """`jax.ffi.ffi_call(target)` on operands whose batch rows lie on `row_axes` (None: shared, such as weights).

    Under `jax.vmap` the mapped axis is folded into the rows, so a vmapped loop is one kernel call over n x B rows
    (the kernels treat rows independently) rather than n calls of B rows each; per-example code written for one
    sequence and vmapped over a batch then runs as the batched call. Only where a shared operand is itself mapped
    (an ensemble of weights) does each element get its own call.

    Args:
        out_types: a function of the operands giving the outputs' `jax.ShapeDtypeStruct`s.
        row_axes, out_row_axes: per operand and per output, the axis of the batch rows (or None).
    """
    def raw(*ops):
        return jax.ffi.ffi_call(target, out_types(*ops), vmap_method="sequential",
                                input_output_aliases=aliases)(*ops, **attrs)

    @jax.custom_batching.custom_vmap
    def call(*ops):
        return raw(*ops)

    @call.def_vmap
    def fold_mapped_axis_into_rows(axis_size, in_batched, *ops):
        if any(batched and axis is None for batched, axis in zip(in_batched, row_axes)):
            outs = jax.vmap(raw, in_axes=[0 if batched else None for batched in in_batched])(*ops)
            return outs, (True,) * len(outs)
        folded = []
        for op, batched, axis in zip(ops, in_batched, row_axes):
            if axis is not None:
                op = jnp.moveaxis(op if batched else jnp.broadcast_to(op, (axis_size,) + op.shape), 0, axis)
                op = op.reshape(op.shape[:axis] + (-1,) + op.shape[axis + 2:])
            folded.append(op)
        outs = _call(target, out_types, row_axes, out_row_axes, tuple(folded), attrs, aliases)
        outs = [jnp.moveaxis(out.reshape(out.shape[:axis] + (axis_size, -1) + out.shape[axis + 1:]), axis, 0)
                for out, axis in zip(outs, out_row_axes)]
        return tuple(outs), (True,) * len(outs)

    return call(*operands)


def lstm_forward(projected: jax.Array, W: jax.Array, h0: jax.Array, c0: jax.Array, bias: jax.Array | None = None, *,
                 reverse: bool = False):
    """The LSTM loop given the input products: `(hs, cs, acts)`.

    Args:
        projected: U x_t for every step, (T, B, 4H), gates i, f, o, g.
        W: recurrent weights, (4H, H).
        h0, c0: initial carry, (B, H).
        bias: b, (4H,), added inside the loop (None: no bias); passing U x_t + b here with no bias is the same.
        reverse: run from t = T-1 down to 0 (outputs stay indexed by t).

    Returns:
        hs, cs (T, B, H) and the activated gates acts (T, B, 4H), float32.
    """
    _require()
    bias = jnp.zeros(projected.shape[-1:], jnp.float32) if bias is None else bias

    def out_types(projected, W, h0, c0, bias):
        steps, batch, _ = projected.shape
        return (jax.ShapeDtypeStruct((steps, batch, h0.shape[-1]), jnp.float32),) * 2 + (
            jax.ShapeDtypeStruct(projected.shape, jnp.float32),)

    return _call("rnn_jax_lstm_forward", out_types, (1, None, 0, 0, None), (1, 1, 1), (projected, W, h0, c0, bias),
                 {"reverse": np.int64(reverse)})


def lstm_backward(W, acts, cs, c0, d_hs, d_h_final, d_c_final, *, reverse: bool = False):
    """Backward of `lstm_forward` through the loop: `(d_projected (T, B, 4H), d_h0 (B, H), d_c0 (B, H))`.

    d_projected is also the cotangent of every step's W h_{t-1}; the caller turns it into dW, dU, db and dx.
    """
    _require()

    def out_types(W, acts, cs, c0, d_hs, d_h_final, d_c_final):
        return (jax.ShapeDtypeStruct(acts.shape, jnp.float32),) + (jax.ShapeDtypeStruct(c0.shape, jnp.float32),) * 2

    return _call("rnn_jax_lstm_backward", out_types, (None, 1, 1, 0, 1, 0, 0), (1, 0, 0),
                 (W, acts, cs, c0, d_hs, d_h_final, d_c_final), {"reverse": np.int64(reverse)})


def gru_forward(projected: jax.Array, W: jax.Array, b_rg: jax.Array, h0: jax.Array, bias: jax.Array | None = None, *,
                reverse: bool = False):
    """The reset-after GRU loop given the input products: `(hs, acts)`.

    Args:
        projected: U x_t for every step, (T, B, 3H), gates r, u, g.
        W: recurrent weights, (3H, H).
        b_rg: the candidate's recurrent bias, (H,) (zeros for none).
        h0: initial state, (B, H).
        bias: the input bias b, (3H,), added inside the loop (None: no bias).
        reverse: run from t = T-1 down to 0 (outputs stay indexed by t).

    Returns:
        hs (T, B, H) and acts (T, B, 4H): r, u, g and ρ = (W_g h_{t-1} + b_rg), float32.
    """
    _require()
    bias = jnp.zeros(projected.shape[-1:], jnp.float32) if bias is None else bias

    def out_types(projected, W, b_rg, h0, bias):
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        return (jax.ShapeDtypeStruct((steps, batch, hidden), jnp.float32),
                jax.ShapeDtypeStruct((steps, batch, 4 * hidden), jnp.float32))

    return _call("rnn_jax_gru_forward", out_types, (1, None, None, 0, None), (1, 1), (projected, W, b_rg, h0, bias),
                 {"reverse": np.int64(reverse)})


def gru_backward(W, acts, hs, h0, d_hs, d_h_final, *, reverse: bool = False):
    """Backward of `gru_forward` through the loop: `(d_projected, d_rec (T, B, 3H), d_h0 (B, H))`.

    d_rec, the cotangent of every step's W h_{t-1} (+ b_rg in the candidate slot), differs from d_projected only
    there (by the factor r); the caller turns them into dW, dU, db, db_rg and dx.
    """
    _require()

    def out_types(W, acts, hs, h0, d_hs, d_h_final):
        steps, batch, hidden = hs.shape
        return (jax.ShapeDtypeStruct((steps, batch, 3 * hidden), jnp.float32),) * 2 + (
            jax.ShapeDtypeStruct(h0.shape, jnp.float32),)

    return _call("rnn_jax_gru_backward", out_types, (None, 1, 1, 0, 1, 0), (1, 1, 0),
                 (W, acts, hs, h0, d_hs, d_h_final), {"reverse": np.int64(reverse)})


def softmax_xent_forward(logits: jax.Array, bias: jax.Array, targets: jax.Array):
    """Softmax cross-entropy of the rows of `logits + bias` against integer targets: `(lse, nll)`, each (N,).

    Args:
        logits: (N, K) float32, typically the product h V^T without its bias.
        bias: (K,) float32 (zeros for none).
        targets: (N,) int32 in [0, K); one outside gives a NaN loss.

    Returns:
        lse (N,), the log of each row's normaliser, and nll (N,) = lse - (logits + bias)[n, targets[n]].
    """
    _require()
    out_types = lambda logits, bias, targets: (jax.ShapeDtypeStruct(logits.shape[:1], jnp.float32),) * 2
    return _call("rnn_jax_xent_forward", out_types, (0, None, 0), (0, 0), (logits, bias, targets.astype(jnp.int32)),
                 {})


def softmax_xent_value_and_grad(logits: jax.Array, bias: jax.Array, targets: jax.Array):
    """`(nll (N,), d_logits (N, K))` in one pass per row: the loss of `softmax_xent_forward` and its gradient for a
    unit cotangent, d_logits[n] = softmax(logits[n] + bias) - onehot(targets[n]).

    For training: a cotangent g (N,) of nll gives the logits' gradient g[:, None] * d_logits, and since that row
    scale commutes with the products that read it, no backward pass over the (N, K) logits is needed. The result
    is written over `logits` when XLA can donate it (it can inside a jitted step where nothing else reads them).
    A target outside [0, K) gives NaN for that row's loss and gradient.
    """
    _require()
    out_types = lambda logits, bias, targets: (jax.ShapeDtypeStruct(logits.shape[:1], jnp.float32),
                                               jax.ShapeDtypeStruct(logits.shape, jnp.float32))
    return _call("rnn_jax_xent_value_and_grad", out_types, (0, None, 0), (0, 0),
                 (logits, bias, targets.astype(jnp.int32)), {}, aliases={0: 1})
