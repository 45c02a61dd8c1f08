"""Native CPU kernels for the recurrent loop and the softmax loss, called through `jax.ffi`, compiled on first use.

`rnn_jax.fused_scan` runs the loops (forward and backward) of an LSTM and of a reset-after GRU with these
kernels when it can: float32, the CPU backend, and a C++ compiler on the machine. Everywhere else it runs its
XLA loop, which gives the same results (tested to float32 rounding). XLA executes a loop body as a chain of
small kernels, each with a few microseconds of dispatch and a thread-pool wake-up for the product; a native loop
is one call, split over the hidden units between threads that meet once per step, with vectorised gate math
(see `rnn_cpu.cc`). `rnn_jax.lm.output_nll` (the language model's loss) uses the softmax cross-entropy kernels
under the same conditions: one pass per row of the logits instead of XLA's eight passes over all of them. On
one device it trains with `output_layer_forward` (logits, loss and gradient in one call, the gradient in row
panels, `rows_to_panels`) and `output_layer_backward` (the output layer's three backward products in one call).
The loop and cross-entropy kernels treat their rows independently: under `jax.vmap` the mapped axis joins the
rows (one call), and with rows sharded over devices each device runs the kernel on its own rows (see `_call`);
the row-panel pair runs its XLA form under `jax.vmap`.

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

from rnn_jax import _checks

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
                             ("rnn_jax_xent_value_and_grad", library.RnnJaxXentValueAndGrad),
                             ("rnn_jax_output_backward", library.RnnJaxOutputBackward),
                             ("rnn_jax_output_forward", library.RnnJaxOutputForward)):
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


def _ffi(target: str, out_types, attrs: dict | None = None, aliases: dict | None = None):
    """The kernel `target` as a function of its operands (`out_types(*operands)`: its outputs' types)."""
    return lambda *ops: jax.ffi.ffi_call(target, out_types(*ops), vmap_method="sequential",
                                         input_output_aliases=aliases)(*ops, **(attrs or {}))


def _call(kernel, row_axes: tuple, out_row_axes: tuple, operands: tuple):
    """`kernel(*operands)` for a kernel whose rows are independent: per operand and per output, `row_axes` are the
    axes along which rows lie (empty for a shared operand, such as weights).

    Two transformations use that independence:
    - Under `jax.vmap` the mapped axis is folded into the first row axis, so a vmapped loop is one kernel call over
      n x B rows rather than n calls of B rows each; per-example code written for one sequence and vmapped over a
      batch then runs as the batched call. Only where a shared operand is itself mapped (an ensemble of weights)
      does each element get its own call.
    - Under `jit` with rows sharded over devices (data parallelism, `rnn_jax.parallel`) each device runs the kernel
      on its own rows (`custom_partitioning`), the shared operands replicated, instead of gathering every row onto
      every device and repeating the whole batch's work there.
    """
    @jax.custom_batching.custom_vmap
    def call(*ops):
        return _rows_partitioned(kernel, row_axes, out_row_axes, ops)(*ops)

    @call.def_vmap
    def fold_mapped_axis_into_rows(axis_size, in_batched, *ops):
        if any(batched and not axes for batched, axes in zip(in_batched, row_axes)):
            outs = jax.vmap(kernel, in_axes=[0 if batched else None for batched in in_batched])(*ops)
            return outs, (True,) * len(outs)
        folded = []
        for op, batched, axes in zip(ops, in_batched, row_axes):
            if axes:
                op = jnp.moveaxis(op if batched else jnp.broadcast_to(op, (axis_size,) + op.shape), 0, axes[0])
                op = op.reshape(op.shape[:axes[0]] + (-1,) + op.shape[axes[0] + 2:])
            folded.append(op)
        outs = _call(kernel, row_axes, out_row_axes, tuple(folded))
        outs = [jnp.moveaxis(out.reshape(out.shape[:axes[0]] + (axis_size, -1) + out.shape[axes[0] + 1:]), axes[0], 0)
                for out, axes in zip(outs, out_row_axes)]
        return tuple(outs), (True,) * len(outs)

    return call(*operands)


def _rows_partitioned(kernel, row_axes, out_row_axes, operands):
    """`kernel` under `custom_partitioning`: the k-th row axis of every operand and output is one factor, sharded as
    in the first operand where it is sharded; every other axis, and every shared operand, is replicated."""
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec

    ranks = [op.ndim for op in operands]
    out_ranks = [out.ndim for out in jax.eval_shape(kernel, *operands)]
    replicated = []

    def factors(rank, axes, tag):
        names = [f"rows{axes.index(a)}" if a in axes else f"{tag}_{a}" for a in range(rank)]
        replicated.extend(name for name in names if not name.startswith("rows"))
        return " ".join(names)

    rule = (", ".join(factors(rank, axes, f"in{i}") for i, (rank, axes) in enumerate(zip(ranks, row_axes))) + " -> "
            + ", ".join(factors(rank, axes, f"out{i}") for i, (rank, axes) in enumerate(zip(out_ranks, out_row_axes))))

    def shardings(mesh, arg_shapes):
        row_specs = {}
        for shape, axes in zip(arg_shapes, row_axes):
            spec = tuple(shape.sharding.spec) + (None,) * (len(shape.shape) - len(shape.sharding.spec))
            for k, axis in enumerate(axes):
                if row_specs.get(k) is None:  # the first operand whose k-th row axis is sharded decides
                    row_specs[k] = spec[axis]
        sharding = lambda rank, axes: NamedSharding(mesh, PartitionSpec(
            *[row_specs.get(axes.index(a)) if a in axes else None for a in range(rank)]))
        return (tuple(sharding(rank, axes) for rank, axes in zip(ranks, row_axes)),
                tuple(sharding(rank, axes) for rank, axes in zip(out_ranks, out_row_axes)))

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[1]

    def partition(mesh, arg_shapes, result_shape):
        arg_shardings, result_shardings = shardings(mesh, arg_shapes)
        return mesh, kernel, result_shardings, arg_shardings

    partitioned = custom_partitioning(kernel)
    partitioned.def_partition(partition, infer_sharding_from_operands=infer_sharding_from_operands,
                              sharding_rule=rule, need_replication_factors=tuple(replicated))
    return partitioned


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

    return _call(_ffi("rnn_jax_lstm_forward", out_types, {"reverse": np.int64(reverse)}),
                 ((1,), (), (0,), (0,), ()), ((1,), (1,), (1,)), (projected, W, h0, c0, bias))


def lstm_backward(W, acts, cs, c0, d_hs, d_h_final, d_c_final, *, reverse: bool = False):
    """Backward of `lstm_forward` through the loop: `(d_projected (T, B, 4H), d_h0 (B, H), d_c0 (B, H))`.

    d_projected is also the cotangent of every step's W h_{t-1}; the caller turns it into dW, dU, db and dx.
    """
    _require()

    def out_types(W, acts, cs, c0, d_hs, d_h_final, d_c_final):
        return (jax.ShapeDtypeStruct(acts.shape, jnp.float32),) + (jax.ShapeDtypeStruct(c0.shape, jnp.float32),) * 2

    return _call(_ffi("rnn_jax_lstm_backward", out_types, {"reverse": np.int64(reverse)}),
                 ((), (1,), (1,), (0,), (1,), (0,), (0,)), ((1,), (0,), (0,)),
                 (W, acts, cs, c0, d_hs, d_h_final, d_c_final))


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

    return _call(_ffi("rnn_jax_gru_forward", out_types, {"reverse": np.int64(reverse)}),
                 ((1,), (), (), (0,), ()), ((1,), (1,)), (projected, W, b_rg, h0, bias))


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

    return _call(_ffi("rnn_jax_gru_backward", out_types, {"reverse": np.int64(reverse)}),
                 ((), (1,), (1,), (0,), (1,), (0,)), ((1,), (1,), (0,)), (W, acts, hs, h0, d_hs, d_h_final))


def _row_flattened(target: str, with_gradient: bool):
    """The cross-entropy kernel `target` on logits (..., K) and targets (...): the leading axes are flattened into
    the kernel's rows and restored on its outputs (per-row losses (...), and the gradient (..., K))."""
    def out_types(logits, bias, targets):
        rows = (int(np.prod(logits.shape[:-1])),)
        second = logits.shape if with_gradient else rows
        return jax.ShapeDtypeStruct(rows, jnp.float32), jax.ShapeDtypeStruct(second, jnp.float32)

    flat = _ffi(target, out_types, aliases={0: 1} if with_gradient else None)

    def kernel(logits, bias, targets):
        lead = logits.shape[:-1]
        first, second = flat(logits.reshape(-1, logits.shape[-1]), bias, targets.reshape(-1))
        return first.reshape(lead), second.reshape(lead + ((logits.shape[-1],) if with_gradient else ()))

    return kernel


def _xent_call(target: str, with_gradient: bool, logits, bias, targets):
    rows = tuple(range(logits.ndim - 1))
    return _call(_row_flattened(target, with_gradient), (rows, (), rows), (rows, rows),
                 (logits, bias, targets.astype(jnp.int32)))


def softmax_xent_forward(logits: jax.Array, bias: jax.Array, targets: jax.Array):
    """Softmax cross-entropy of the rows of `logits + bias` against integer targets: `(lse, nll)`, each (...).

    Args:
        logits: (..., K) float32 (rows along any leading axes), typically the product h V^T without its bias.
        bias: (K,) float32 (zeros for none).
        targets: (...) int32 in [0, K); one outside gives a NaN loss.

    Returns:
        lse (...), the log of each row's normaliser, and nll (...) = lse - (logits + bias)[..., targets].
    """
    _require()
    return _xent_call("rnn_jax_xent_forward", False, logits, bias, targets)


def softmax_xent_value_and_grad(logits: jax.Array, bias: jax.Array, targets: jax.Array):
    """`(nll (...), d_logits (..., K))` in one pass per row: the loss of `softmax_xent_forward` and its gradient for
    a unit cotangent, d_logits = softmax(logits + bias) - onehot(targets), row by row.

    For training: a cotangent g (...) of nll gives the logits' gradient g[..., None] * d_logits, and since that row
    scale commutes with the products that read it, no backward pass over the (..., K) logits is needed. The result
    is written over `logits` when XLA can donate it (it can inside a jitted step where nothing else reads them).
    A target outside [0, K) gives NaN for that row's loss and gradient.
    """
    _require()
    return _xent_call("rnn_jax_xent_value_and_grad", True, logits, bias, targets)


PANEL_ROWS = 16


def rows_to_panels(x: jax.Array) -> jax.Array:
    """(N, K) row-major -> the same entries in row panels, still shaped (N, K): the layout in which
    `output_layer_forward` writes the loss's gradient and `output_layer_backward` reads it.

    Rows go in groups of 16 (the last one N mod 16 rows wide), each group stored class-major: entry (n, k) lands at
    flat offset 16 p K + k w + (n - 16 p), p = n // 16 and w its group's width. Both products of the output
    layer's backward pass then read D contiguously (see `rnn_cpu.cc`).
    """
    rows, classes = x.shape
    full = rows - rows % PANEL_ROWS
    head = x[:full].reshape(-1, PANEL_ROWS, classes).transpose(0, 2, 1).reshape(full, classes)
    return jnp.concatenate([head, x[full:].T.reshape(rows - full, classes)])


def panels_to_rows(x: jax.Array) -> jax.Array:
    """The inverse of `rows_to_panels`: (N, K) in row panels -> (N, K) row-major."""
    rows, classes = x.shape
    full = rows - rows % PANEL_ROWS
    head = x[:full].reshape(-1, classes, PANEL_ROWS).transpose(0, 2, 1).reshape(full, classes)
    return jnp.concatenate([head, x[full:].reshape(classes, rows - full).T])


def _native_or_reference(native, reference):
    """`native`, with `jax.vmap` running `reference` (the same function in XLA ops) instead.

    The row-panel layout of the pair below depends on the number of rows per call, and the backward kernel's
    weight gradients sum over its rows, so the mapped axis cannot fold into the rows as in `_call`.
    """
    @jax.custom_batching.custom_vmap
    def call(*ops):
        return native(*ops)

    @call.def_vmap
    def mapped(axis_size, in_batched, *ops):
        outs = jax.vmap(reference, in_axes=[0 if batched else None for batched in in_batched])(*ops)
        return tuple(outs), (True,) * len(outs)

    return call


def _check_operands(name: str, expected: str, operands: dict, ok: bool) -> None:
    if not ok:
        got = ", ".join(f"{key} {tuple(jnp.shape(value))} {jnp.result_type(value)}" for key, value in operands.items())
        raise _checks.ShapeError(f"{name}: expected {expected}; got {got}")


def output_layer_forward(h: jax.Array, V: jax.Array, bias: jax.Array, targets: jax.Array):
    """The output layer and its loss for training in one native call: `(nll (N,), d_panels (N, K))`, the loss of
    `softmax_xent_value_and_grad(h @ V.T, bias, targets)` and its gradient in row panels (`rows_to_panels`).

    The product writes the logits straight into row panels (its tiles are one panel's layout) and the softmax
    then runs across each panel's 16 rows at once, so the (N, K) logits are never stored row-major.

    Args:
        h: (N, H) float32, the output layer's inputs.
        V: (K, H) float32, the output weights.
        bias: (K,) float32 (zeros for none).
        targets: (N,) int in [0, K); one outside gives a NaN loss and gradient row.

    Returns:
        nll (N,) and d_panels = rows_to_panels(softmax(h V^T + bias) - onehot(targets)), (N, K).

    Example:
        >>> import jax.numpy as jnp
        >>> from rnn_jax import kernels
        >>> nll, d = kernels.output_layer_forward(jnp.zeros((20, 3)), jnp.zeros((5, 3)), jnp.zeros(5),
        ...                                       jnp.zeros(20, jnp.int32))  # doctest: +SKIP
        >>> kernels.panels_to_rows(d)[0]  # doctest: +SKIP
        Array([-0.8,  0.2,  0.2,  0.2,  0.2], dtype=float32)
    """
    _require()
    targets = jnp.asarray(targets)
    _check_operands("output_layer_forward", "h (N, H), V (K, H), bias (K,) float32 and targets (N,) integer",
                    {"h": h, "V": V, "bias": bias, "targets": targets},
                    h.ndim == 2 and V.ndim == 2 and V.shape[1:] == h.shape[1:] and bias.shape == V.shape[:1]
                    and targets.shape == h.shape[:1] and h.dtype == V.dtype == bias.dtype == jnp.float32
                    and jnp.issubdtype(targets.dtype, jnp.integer))

    def out_types(h, V, bias, targets):
        return (jax.ShapeDtypeStruct(h.shape[:1], jnp.float32),
                jax.ShapeDtypeStruct((h.shape[0], V.shape[0]), jnp.float32))

    def reference(h, V, bias, targets):
        nll, d_logits = softmax_xent_value_and_grad(h @ V.T, bias, targets)
        return nll, rows_to_panels(d_logits)

    return _native_or_reference(_ffi("rnn_jax_output_forward", out_types), reference)(
        h, V, bias, targets.astype(jnp.int32))


def output_layer_backward(d_panels: jax.Array, h: jax.Array, g: jax.Array, V: jax.Array):
    """The output layer's backward pass from the loss gradient in row panels: `(dh, dV, dc)`.

    For logits z = h V^T + c, losses with gradient D = d loss / dz for a unit cotangent (from
    `output_layer_forward`) and a cotangent g of the losses:
        dh = g ⊙ (D V),   dV = D^T (g ⊙ h),   dc = D^T g.
    One native call reads D once per product, in a layout where both run near the machine's matrix-product peak.

    Args:
        d_panels: (N, K) float32, D in row panels.
        h: (N, H) float32, the output layer's inputs.
        g: (N,) float32, the cotangent of each row's loss.
        V: (K, H) float32, the output weights.

    Returns:
        dh (N, H), dV (K, H), dc (K,), float32.
    """
    _require()
    _check_operands("output_layer_backward", "d_panels (N, K), h (N, H), g (N,), V (K, H), all float32",
                    {"d_panels": d_panels, "h": h, "g": g, "V": V},
                    d_panels.ndim == 2 and h.ndim == 2 and V.ndim == 2 and h.shape[0] == d_panels.shape[0]
                    and g.shape == d_panels.shape[:1] and V.shape == (d_panels.shape[1], h.shape[1])
                    and d_panels.dtype == h.dtype == g.dtype == V.dtype == jnp.float32)

    def out_types(d_panels, h, g, V):
        return (jax.ShapeDtypeStruct(h.shape, jnp.float32), jax.ShapeDtypeStruct(V.shape, jnp.float32),
                jax.ShapeDtypeStruct(V.shape[:1], jnp.float32))

    def reference(d_panels, h, g, V):
        d = panels_to_rows(d_panels)
        return g[:, None] * (d @ V), d.T @ (g[:, None] * h), g @ d

    return _native_or_reference(_ffi("rnn_jax_output_backward", out_types), reference)(d_panels, h, g, V)
