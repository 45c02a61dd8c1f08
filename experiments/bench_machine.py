"""The machine a benchmark ran on, recorded beside its figures: CPU model and flags, device, versions, and this
machine's float32 matrix-product peak measured in the same run."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

def matmul_peak() -> float:
    """fp32 matrix-product FLOP/s of this machine, measured now (best of several products, 1024 to 2048)."""
    best = 0.0
    for n in (1024, 2048):
        a = jnp.ones((n, n), jnp.float32)
        f = jax.jit(lambda x: jnp.matmul(x, x, precision="highest"))  # highest: fp32, not TF32 on a GPU
        f(a).block_until_ready()
        for _ in range(5):
            start = time.perf_counter()
            f(a).block_until_ready()
            best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best


def cpu_description() -> dict:
    """The CPU's model name and the flags that decide its fast paths (AVX-512, its bf16 dot products, AMX)."""
    model, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"model": model, "flags": [flag for flag in wanted if flag in flags]}


def device_description() -> dict:
    """The backend, its first device's kind and the CPU (recorded beside every figure)."""
    device = jax.devices()[0]
    return {"platform": device.platform, "device": str(device), "device_kind": device.device_kind,
            "cpu": cpu_description()}


def versions() -> dict:
    from rnn_jax import kernels

    found = {"python": sys.version.split()[0], "jax": jax.__version__,
             "rnn_jax_native_kernels": kernels.available()}
    for name in ("flax", "torch", "optax"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found

