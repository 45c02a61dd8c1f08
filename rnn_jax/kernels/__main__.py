"""`python -m rnn_jax.kernels info|build`: the native kernels' state on this machine, or build them now."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import jax

from rnn_jax.kernels import _build, policy


def info() -> int:
    """Prints the mode, compiler, cache path and key, CPU flags of note, and whether the kernels load."""
    compiler = _build.find_compiler()
    flags = _build.cpu_flags().split()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    print(f"mode:      {policy.mode()} (RNN_JAX_NATIVE; 0 = off, 1 = auto, require)")
    print(f"backend:   {jax.default_backend()} (jax {jax.__version__})")
    print(f"compiler:  {compiler or 'none found (set $CXX or install g++)'}")
    print(f"cpu:       {' '.join(flag for flag in wanted if flag in flags) or 'no flags read'}")
    dot = _build.bf16_dot_products(_build.BF16_DOT_MIN_HIDDEN)
    print(f"bf16:      the loops multiply bf16 weights {'with AVX512-BF16 dot products' if dot else 'in float32'}"
          f"{f' (even H >= {_build.BF16_DOT_MIN_HIDDEN}; float32 below)' if dot else ''}")
    print(f"cache:     {_build.cache_dir()}")
    if compiler is not None:
        target = _build.cache_dir() / f"rnn_jax_kernels_{_build.cache_key(compiler)}.so"
        print(f"library:   {target} ({'built' if target.exists() else 'not built yet'})")
    if not _build.eligible("float32"):
        print("status:    the kernels do not apply on this backend; XLA's form runs")
        return 0
    ok = _build.loaded()
    print(f"status:    {'loaded' if ok else 'unavailable: ' + str(_build.failure())}")
    if ok and not _build.suited_cpu():
        print("note:      no AVX-512 on this CPU, so mode auto runs XLA's form (faster here); require runs them")
    return 0 if ok else 1


def build() -> int:
    try:
        print(_build.build())
    except RuntimeError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("info", "build"), help="info: report; build: compile into the cache")
    args = parser.parse_args(argv)
    return info() if args.command == "info" else build()


if __name__ == "__main__":
    sys.exit(main())
