"""Compiling and loading the native kernels: one shared library per source, jaxlib, compiler and CPU.

The library is compiled with the system's `c++` (or `$CXX`) and `-march=native` against the XLA FFI headers that
ship with jaxlib, into `$RNN_JAX_KERNEL_CACHE` (default `~/.cache/rnn_jax/kernels`), keyed by the sources, jaxlib's
version, the compiler and this CPU's feature flags. A failed build is reported once per process, with the reason
and the path of the compiler's log; nothing of it is cached, so the next process tries again.
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

from rnn_jax.kernels import policy

HERE = pathlib.Path(__file__).parent
SOURCES = (HERE / "recurrent.cc", HERE / "xent.cc")
HEADERS = (HERE / "simd.h", HERE / "operands.h")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared")
TARGETS = {"rnn_jax_lstm_forward": "RnnJaxLstmForward", "rnn_jax_lstm_backward": "RnnJaxLstmBackward",
           "rnn_jax_gru_forward": "RnnJaxGruForward", "rnn_jax_gru_backward": "RnnJaxGruBackward",
           "rnn_jax_xent_forward": "RnnJaxXentForward", "rnn_jax_xent_value_and_grad": "RnnJaxXentValueAndGrad",
           "rnn_jax_output_backward": "RnnJaxOutputBackward", "rnn_jax_output_forward": "RnnJaxOutputForward"}
_lock = threading.Lock()
_failure: dict[str, str] = {}


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("RNN_JAX_KERNEL_CACHE", pathlib.Path.home() / ".cache" / "rnn_jax" / "kernels"))


def find_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> str:
    """The CPU's feature-flags line from /proc/cpuinfo (read once per process), or "" where there is none."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def cache_key(compiler_path: str) -> str:
    texts = [path.read_text() for path in SOURCES + HEADERS]
    return hashlib.sha256("\n".join(texts + [jax.__version__, jax.lib.__version__, compiler_path, " ".join(FLAGS),
                                             cpu_flags()]).encode()).hexdigest()[:16]


def _writable(out_dir: pathlib.Path) -> pathlib.Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir
    except OSError:  # a read-only home: build into the temporary directory instead
        fallback = pathlib.Path(tempfile.gettempdir()) / "rnn_jax_kernels"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def build(compiler: str | None = None, out_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Compiles the kernels (if not already cached) and returns the shared library's path.

    Raises:
        RuntimeError: no compiler, or the compiler failed (the message ends with its output and names its log).
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    out_dir = _writable(out_dir or cache_dir())
    target = out_dir / f"rnn_jax_kernels_{cache_key(compiler)}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        partial = pathlib.Path(scratch) / target.name
        command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", *map(str, SOURCES), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            log = target.with_suffix(".log")
            log.write_text(" ".join(command) + "\n\n" + result.stderr)
            names = ", ".join(path.name for path in SOURCES)
            raise RuntimeError(f"compiling {names} with {compiler} failed (log: {log}):\n{result.stderr[-4000:]}")
        os.replace(partial, target)  # atomic: concurrent builders (test workers) each publish a whole file
    return target


@functools.lru_cache(maxsize=None)
def _load() -> bool:
    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
        for name, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
        return True
    except Exception as error:  # noqa: BLE001 - any failure means "use XLA's form", said once
        _failure["error"] = f"{type(error).__name__}: {error}"
        if policy.mode() != "require":
            warnings.warn(f"rnn_jax native kernels unavailable, XLA's form runs instead (same results, slower). "
                          f"Why: {error}. Kernel cache: {cache_dir()}; `python -m rnn_jax.kernels info` tells more, "
                          "RNN_JAX_NATIVE=0 silences this.", RuntimeWarning, stacklevel=4)
        return False


def loaded() -> bool:
    """Builds (if needed) and loads the kernels once per process; whether that worked."""
    with _lock:
        return _load()


def failure() -> str | None:
    """Why the kernels could not be built or loaded in this process (None if they were, or were never tried)."""
    return _failure.get("error")


def suited_cpu() -> bool:
    """Whether this CPU runs the kernels faster than XLA's form: their 16-lane vectors are one AVX-512 register,
    but two AVX2 registers, where the compiled micro-kernels spill and lose to XLA (docs/guide/performance.md)."""
    return "avx512f" in cpu_flags().split()


BF16_DOT_MIN_HIDDEN = 64


def bf16_dot_products(hidden: int) -> bool:
    """Whether the loops multiply bf16 weights by bf16 operands (AVX512-BF16 dot products, float32 sums; `operands.h`)
    rather than in float32 on the weights' exact values: where the CPU has avx512_bf16 but no AMX, and H is even
    and at least `BF16_DOT_MIN_HIDDEN`.

    A dot-product instruction does two multiply-adds per lane, which doubles the product rate on a core with one
    512-bit FMA per cycle (AMD Zen 4); Intel's AMX CPUs issue two float32 FMAs per cycle, which the dot products
    only match, and there the per-step rounding of h and d_rec made them slower. Below H=64 the products are too
    small to gain (the notes' LSTM, H=20: the same train step), so the float32 form, which does not round h,
    stays (docs/guide/performance.md)."""
    flags = cpu_flags().split()
    return ("avx512_bf16" in flags and "amx_bf16" not in flags and hidden % 2 == 0
            and hidden >= BF16_DOT_MIN_HIDDEN)


def eligible(dtype) -> bool:
    """Whether the kernels exist for this dtype and backend (float32 on the CPU, jax 0.6 or newer)."""
    return (jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu" and jax.__version_info__ >= (0, 6))


def available(dtype=jnp.float32, native: bool | None = None) -> bool:
    """Whether the kernels run here for `dtype` under the native policy (builds them if needed).

    Raises:
        RuntimeError: in "require" mode, when the kernels apply but could not be built or loaded.
    """
    mode = policy.requested(native)
    if mode == "off" or not eligible(dtype) or (mode == "auto" and not suited_cpu()):
        return False
    if loaded():
        return True
    if mode == "require":
        raise RuntimeError(f"RNN_JAX_NATIVE=require, but the native kernels could not be built or loaded: "
                           f"{failure()}. Install a C++ compiler (or set $CXX), or use the mode 'auto'.")
    return False


def require() -> None:
    """Raises unless the kernels are loaded (every kernel entry point calls this first)."""
    if not loaded():
        raise RuntimeError(f"the native kernels could not be built or loaded ({failure()}); use "
                           "rnn_jax.fused_scan(..., native=False) or set RNN_JAX_NATIVE=0")
