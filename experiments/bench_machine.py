"""The machine a benchmark ran on, recorded beside its figures: CPU model and flags, device, versions, this
machine's float32 matrix-product peak measured in the same run, XLA's product rates by operand dtype and the
native recurrent loop's step time by operand format.

Command:  python -m experiments.bench_machine
Expected: the CPU, then GFLOP/s of XLA's matrix products at the language models' shapes in three forms: float32,
          bf16 operands with float32 sums (`rnn_jax.precision`'s form) and bf16 operands with a bf16 result; the
          weight-gradient products a^T b as XLA runs them and as `precision.transposed_product` does; then
          microseconds per step of the native LSTM loop (forward and backward) with float32 operands and with
          bf16 dot products (on CPUs with AVX512-BF16), the measurement behind `kernels._build.bf16_dot_products`.
Source:   one jitted `jnp.matmul` (or `transposed_product`) per shape and form, one jitted
          `kernels.lstm_forward` + `lstm_backward` per shape and format; best of 5 rounds of at least 0.3 s.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp

from rnn_jax import precision as rnn_precision


def matmul_peak() -> float:
    """fp32 matrix-product FLOP/s of this machine, measured now (best of single products, 1024 to 2048)."""
    # highest: fp32, not TF32 on a GPU
    return max(product_rate(n, n, n, jnp.float32, None, min_seconds=0.0, precision="highest") for n in (1024, 2048))


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



PRODUCT_SHAPES = ((2048, 2048, 2048), (400, 200, 10000), (700, 650, 2600), (1600, 256, 1024), (1600, 64, 1024))
PRODUCT_FORMS = {"float32": (jnp.float32, None), "bf16 operands, float32 sums": (jnp.bfloat16, jnp.float32),
                 "bf16 operands, bf16 result": (jnp.bfloat16, None)}


ROUNDS, MIN_SECONDS = 5, 0.3  # each timing: the best of ROUNDS rounds of at least MIN_SECONDS


def best_seconds_per_call(f, *args, rounds: int | None = None, min_seconds: float | None = None) -> float:
    """Seconds per call of the jitted `f(*args)` after one warm-up call: the best of `rounds` (ROUNDS), each
    calling it until `min_seconds` (MIN_SECONDS) have passed (at least once)."""
    rounds = ROUNDS if rounds is None else rounds
    min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
    f(*args).block_until_ready()
    best = float("inf")
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < min_seconds:
            f(*args).block_until_ready()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def product_rate(m: int, k: int, n: int, dtype, accumulate, rounds: int | None = None,
                 min_seconds: float | None = None, precision=None) -> float:
    """FLOP/s of one jitted (m, k) x (k, n) product with operands in `dtype` (`best_seconds_per_call`)."""
    a = jax.random.normal(jax.random.key(0), (m, k)).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (k, n)).astype(dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision, preferred_element_type=accumulate))
    return 2 * m * k * n / best_seconds_per_call(f, a, b, rounds=rounds, min_seconds=min_seconds)


GRADIENT_SHAPES = ((8192, 1024, 512), (8192, 1000, 256), (400, 10000, 200), (700, 2600, 1300), (700, 10000, 650))
"""(N, I, J) of a^T b summed over N rows: long's [dU dW] and dV, zaremba_small's dV, zaremba_medium's both."""
GRADIENT_FORMS = {
    "float32": (jnp.float32, lambda a, b: jnp.matmul(a.T, b)),
    "bf16, XLA's a^T b": (jnp.bfloat16, lambda a, b: jnp.matmul(a.T, b, preferred_element_type=jnp.float32)),
    "bf16, precision.transposed_product": (jnp.bfloat16, rnn_precision.transposed_product),
}


def gradient_rate(n: int, i: int, j: int, dtype, product) -> float:
    """FLOP/s of one jitted weight-gradient product a^T b, a (n, i) and b (n, j) in `dtype`."""
    a = jax.random.normal(jax.random.key(0), (n, i)).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, j)).astype(dtype)
    return 2 * n * i * j / best_seconds_per_call(jax.jit(product), a, b)


def gradient_table() -> list[dict]:
    """GFLOP/s of the weight-gradient products by form, printed as a table."""
    print("\nweight-gradient products a^T b, GFLOP/s\n| N x I x J | " + " | ".join(GRADIENT_FORMS) + " |\n|---|"
          + "---|" * len(GRADIENT_FORMS))
    rows = []
    for n, i, j in GRADIENT_SHAPES:
        rates = {form: gradient_rate(n, i, j, *types) / 1e9 for form, types in GRADIENT_FORMS.items()}
        rows.append({"gradient_shape": (n, i, j), "gflops": rates})
        print(f"| {n} x {i} x {j} | " + " | ".join(f"{rate:,.0f}" for rate in rates.values()) + " |", flush=True)
    return rows


LOOP_SHAPES = ((32, 20), (32, 256), (16, 256), (20, 200), (20, 650))  # (B, H): notes, shakespeare_char, long, Zaremba
LOOP_STEPS = 64


def loop_step_seconds(batch: int, hidden: int, bf16: bool, steps: int = LOOP_STEPS, rounds: int | None = None,
                      min_seconds: float | None = None) -> float:
    """Seconds per time step of the native LSTM loop, forward then backward (`rnn_jax.kernels.recurrent`), with
    bf16 dot products or float32 operands (`best_seconds_per_call`)."""
    from rnn_jax import kernels

    keys = jax.random.split(jax.random.key(0), 3)
    projected = jax.random.normal(keys[0], (steps, batch, 4 * hidden))
    W = 0.05 * jax.random.normal(keys[1], (4 * hidden, hidden))
    h0 = c0 = jnp.zeros((batch, hidden))

    def forward_backward(projected, W, d_hs):
        hs, cs, acts = kernels.lstm_forward(projected, W, h0, c0, bf16_products=bf16)
        return kernels.lstm_backward(W, acts, cs, c0, d_hs, h0, c0, bf16_products=bf16)[0]

    d_hs = jax.random.normal(keys[2], (steps, batch, hidden))
    return best_seconds_per_call(jax.jit(forward_backward), projected, W, d_hs, rounds=rounds,
                                 min_seconds=min_seconds) / steps


def loop_table(cpu: dict) -> list[dict]:
    """The native loop's microseconds per step by operand format, printed as a table (empty without kernels)."""
    from rnn_jax import kernels

    if not kernels.available(native=True):
        print("native kernels unavailable here: no loop table")
        return []
    formats = ("float32",) + (("bf16 dot products",) if "avx512_bf16" in cpu["flags"] else ())
    print(f"\nnative LSTM loop, forward + backward, us per step (T={LOOP_STEPS})\n| B x H | " + " | ".join(formats)
          + " | bf16 / float32 time |\n|---|" + "---|" * (len(formats) + 1))
    rows = []
    for batch, hidden in LOOP_SHAPES:
        times = {form: loop_step_seconds(batch, hidden, form != "float32") * 1e6 for form in formats}
        ratio = times["bf16 dot products"] / times["float32"] if len(times) == 2 else None
        rows.append({"shape": (batch, hidden), "us_per_step": times, "bf16_over_float32": ratio})
        print(f"| {batch} x {hidden} | " + " | ".join(f"{t:,.1f}" for t in times.values()) + " | "
              + ("-" if ratio is None else f"{ratio:.2f}") + " |", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    from rnn_jax.hostmem import reuse_freed_memory

    reuse_freed_memory()  # as the trainer and bench_lm: temporaries on pages already touched
    cpu = cpu_description()
    print(f"{cpu['model']} ({', '.join(cpu['flags'])}), jax {jax.__version__}")
    print("| M x K x N | " + " | ".join(PRODUCT_FORMS) + " |\n|---|" + "---|" * len(PRODUCT_FORMS))
    rows = []
    for m, k, n in PRODUCT_SHAPES:
        rates = {form: product_rate(m, k, n, *types) / 1e9 for form, types in PRODUCT_FORMS.items()}
        rows.append({"shape": (m, k, n), "gflops": rates})
        print(f"| {m} x {k} x {n} | " + " | ".join(f"{rate:,.0f}" for rate in rates.values()) + " |", flush=True)
    return rows + gradient_table() + loop_table(cpu)


if __name__ == "__main__":
    main(sys.argv[1:])
