"""`bench_lm`'s `products_only` reference: the step's matrix products alone, one after another, and each timed
by itself."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench_workloads import Built, Workload, _compiled

def step_products(w: Workload, cell: str, train: bool, native: bool = True) -> tuple[dict, list]:
    """The step's matrix products as `(operands, [(name, flops, key, product), ...])`: `product(operands)` a
    tuple, `key` names its smallest operand (`chain_products` makes it wait for the product before).

    Every product of the step at its shape, with the product implementations the default step uses: per layer
    the input product x U^T, the recurrent products of all T steps as one (N x H) by (H x G·H) product, and in
    training the recurrent products' backward d W, the weight gradient [x, h_prev]^T d and the input gradient
    d U; then the output layer: in training its native forward call (logits and the softmax's gradient, in row
    panels) and backward call (dh, dV and the bias gradient), else the logits and the loss. Their FLOPs add up
    to the workload's `flops_per_token` times N. `native=False` (or no native kernels) runs the output layer in
    XLA, with the native pair's outputs.
    """
    from rnn_jax import kernels

    G = 4 if cell == "lstm" else 3
    N, K, H, V = w.batch * w.steps, G * w.hidden, w.hidden, w.vocab
    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(0.05 * rng.standard_normal(shape, np.float32))
    o = {"x": normal(N, w.embed), "h": normal(N, H), "d_pre": normal(N, K), "V": normal(V, H),
         "c": jnp.zeros((V,), jnp.float32), "targets": jnp.asarray(rng.integers(0, V, N), jnp.int32)}
    native = native and kernels.available()
    products = []
    for layer in range(w.layers):
        x, E = ("x", w.embed) if layer == 0 else ("h", H)
        o[f"U{layer}"], o[f"W{layer}"] = normal(K, E), normal(K, H)
        products.append((f"layer {layer}: x U^T ({N}x{E} by {E}x{K})", 2 * N * E * K, x,
                         lambda o, x=x, layer=layer: (o[x] @ o[f"U{layer}"].T,)))
        products.append((f"layer {layer}: h W^T, all steps ({N}x{H} by {H}x{K})", 2 * N * H * K, "h",
                         lambda o, layer=layer: (o["h"] @ o[f"W{layer}"].T,)))
        if train:
            products.append((f"layer {layer}: d W ({N}x{K} by {K}x{H})", 2 * N * K * H, f"W{layer}",
                             lambda o, layer=layer: (o["d_pre"] @ o[f"W{layer}"],)))
            products.append((f"layer {layer}: [x, h_prev]^T d ({E + H}x{N} by {N}x{K})", 2 * (E + H) * N * K, "h",
                             lambda o, x=x: (jnp.concatenate([o[x], o["h"]], axis=1).T @ o["d_pre"],)))
            products.append((f"layer {layer}: d U ({N}x{K} by {K}x{E})", 2 * N * K * E, f"U{layer}",
                             lambda o, layer=layer: (o["d_pre"] @ o[f"U{layer}"],)))
    if train:
        # The backward call reads the forward call's outputs; they are made once here so that each call can
        # also be timed alone.
        if native:
            o["nll"], o["d_panels"] = kernels.output_layer_forward(o["h"], o["V"], o["c"], o["targets"])
            forward = lambda o: kernels.output_layer_forward(o["h"], o["V"], o["c"], o["targets"])
            backward = lambda o: kernels.output_layer_backward(o["d_panels"], o["h"], o["nll"], o["V"])
        else:
            def forward(o):
                logits = o["h"] @ o["V"].T + o["c"]
                d = jax.nn.softmax(logits) - jax.nn.one_hot(o["targets"], V)
                return optax.softmax_cross_entropy_with_integer_labels(logits, o["targets"]), d

            o["nll"], o["d_panels"] = forward(o)  # row-major here, not in panels

            def backward(o):
                g = o["nll"][:, None]
                return g * (o["d_panels"] @ o["V"]), o["d_panels"].T @ (g * o["h"]), o["nll"] @ o["d_panels"]

        products.append((f"output layer forward: logits, softmax ({N}x{H} by {H}x{V})", 2 * N * H * V, "h", forward))
        products.append((f"output layer backward: dh, dV ({N}x{V} by {V}x{H}, {V}x{N} by {N}x{H})", 4 * N * V * H,
                         "h", backward))
    else:
        def loss(o):
            if native:
                return (kernels.softmax_xent_forward(o["h"] @ o["V"].T, o["c"], o["targets"])[1],)
            return (optax.softmax_cross_entropy_with_integer_labels(o["h"] @ o["V"].T + o["c"], o["targets"]),)

        products.append((f"output layer: logits, loss ({N}x{H} by {H}x{V})", 2 * N * H * V, "h", loss))
    return o, products


def chain_products(products: list, operands: dict, repeats: int = 1) -> list:
    """Runs `products` (from `step_products`) `repeats` times over, one after another: each product's smallest
    operand gets the previous product's sum times zero added, a dependence XLA keeps (it drops an
    `optimization_barrier` between independent products, and merges repeats of one product into one). The
    added pass is over the smallest operand only. Returns each product's sum."""
    sums = []
    for _ in range(repeats):
        for _, _, key, product in products:
            o = operands if not sums else {**operands, key: operands[key] + 0.0 * sums[-1]}
            sums.append(sum(value.sum() for value in product(o)))
    return sums


def products_only(w: Workload, cell: str, train: bool, native: bool = True) -> tuple[Callable, dict]:
    """(jitted function, its operands): the `products_only` reference, the step's matrix products
    (`step_products`) one after another (`chain_products`), and nothing else (no recurrence, gate arithmetic,
    embedding, update or norm); the function returns each product's sum.

    A reference, not a peer: each product has the machine to itself, as it would in a step that did nothing
    else. The default's tokens/s over this one says how far the step's other work and its T-piece recurrent
    products (hidden beside other products or not) take it from the time of its products alone; this one over
    the fastest peer is what a step that were only these products, run one at a time, would reach.
    """
    operands, products = step_products(w, cell, train, native)
    return jax.jit(lambda o: chain_products(products, o)), operands


def product_times(w: Workload, cell: str, train: bool, calls: int = 5) -> list[dict]:
    """Each of the step's products (`step_products`) timed alone: one jitted call runs it `repeats` times, one
    after another (`chain_products`; ~20 ms a call, so the call's own overhead hardly counts), median of `calls`
    calls."""
    operands, products = step_products(w, cell, train)
    rows = []
    for entry in products:
        name, flops = entry[:2]
        repeats = int(np.clip(0.02 * 1e11 / flops, 1, 50))
        call = jax.jit(lambda o, entry=entry, repeats=repeats: chain_products([entry], o, repeats))
        jax.block_until_ready(call(operands))
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            jax.block_until_ready(call(operands))
            seconds.append((time.perf_counter() - start) / repeats)
        rows.append({"product": name, "flops": flops, "seconds": statistics.median(seconds), "repeats": repeats})
    return rows


def products_only_step(w: Workload, cell: str, train: bool) -> Built:
    """The `products_only` reference (see `products_only`), ready to time."""
    step, operands = products_only(w, cell, train)
    temp_bytes, compile_s = _compiled(step, operands)
    return Built(lambda: step(operands), jax.block_until_ready, temp_bytes, compile_s)

