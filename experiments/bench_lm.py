"""Benchmark suite: the language-model train step and inference, rnn_jax's runners against peers.

Command:  python -m experiments.bench_lm [--configs notes,zaremba_small,zaremba_medium,long] [--cells lstm,gru]
          [--workloads train,infer] [--rounds 5] [--compile-lengths 16,64,256,1024] [--out bench_results]
Expected: a markdown table (tokens/s median [min-max] over interleaved rounds, the step's compile time (lower +
          XLA compile) and first-step time (set-up, compile and first call), peak temporary memory of the compiled
          step (PyTorch: what one step allocates at its peak, from its profiler), achieved FLOP/s as a fraction
          of this machine's fp32 matrix-product peak measured in the same run),
          plus compile time against T for unroll=1 and full unroll; JSON and PNG plots in --out. Peers are
          optional: PyTorch nn.LSTM/nn.GRU and Flax nn.RNN everywhere, and on a GPU also PyTorch on CUDA (cuDNN)
          and jax.experimental.rnn (cuDNN, LSTM only). A peer whose library, device or cell is missing is
          reported as skipped, with the reason. `products_only` is neither: the step's matrix products alone,
          one after another (see `products_only_step`), for the time they take by themselves.
Source:   the workloads below; every implementation runs in this process, measured in interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax.cli import parse_config
from rnn_jax.hostmem import reuse_freed_memory
from rnn_jax.cells import get_cell, init_options
from rnn_jax.lm import LanguageModel, LMConfig
from rnn_jax.errors import run_command
from rnn_jax.training import (OptimConfig, TrainState, make_eval_step, make_optimizer, make_train_step,
                              sparse_embedding_pays)

WORKLOADS = {  # name: (V, E=H, layers, T, B, bias)
    "notes": (100, 20, 1, 20, 32, False, 10),
    "zaremba_small": (10000, 200, 2, 20, 20, True, 200),
    "zaremba_medium": (10000, 650, 2, 35, 20, True, 650),
    "long": (1000, 256, 1, 512, 16, True, 256),
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Which workloads, cells and implementations to time, and how long.

    Attributes:
        configs: workloads (sizes in `WORKLOADS`).
        cells: recurrent cells (a peer without the cell is reported as skipped).
        workloads: "train" (loss, gradients and update) and/or "infer" (logits).
        implementations: rnn_jax's runners, the peers (torch, flax, torch_cuda, jax_rnn) and the products-only
            reference.
        rounds: interleaved timing rounds (the median is reported).
        min_seconds: the least time each implementation is timed per round.
        compile_lengths: T values of the compile-time measurement (full unroll up to T=64; "" for none).
        out: the output folder for JSON, markdown and plots (none: no files).
        reuse_host_memory: call `rnn_jax.hostmem.reuse_freed_memory` first, for the whole process.
    """

    configs: tuple[str, ...] = ("notes", "zaremba_small", "zaremba_medium", "long")
    cells: tuple[str, ...] = ("lstm", "gru")
    workloads: tuple[str, ...] = ("train", "infer")
    implementations: tuple[str, ...] = ("fused", "fused_xla", "hoisted", "scan_unroll1", "scan_unroll4", "scan_unrollT",
                                        "unrolled", "torch", "flax", "torch_cuda", "jax_rnn", "products_only")
    rounds: int = 5
    min_seconds: float = 0.3
    compile_lengths: tuple[int, ...] = (16, 64, 256, 1024)  # a full unroll of T=256 would take ~2 min
    out: Optional[str] = "bench_results"
    reuse_host_memory: bool = True

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        return {"configs": list(WORKLOADS), "workloads": ["train", "infer"],
                "implementations": list(BenchConfig.implementations)}


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


PEER_CELLS = {"torch": ("lstm", "gru"), "torch_cuda": ("lstm", "gru"), "flax": ("lstm", "gru"), "jax_rnn": ("lstm",)}
"""The cells each peer library has; any other cell is reported as "no peer"."""


PEERS = ("torch", "flax", "torch_cuda", "jax_rnn")
REFERENCES = ("products_only",)  # references; everything neither a peer nor a reference is an rnn_jax runner


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


def workload(name: str) -> Workload:
    V, H, L, T, B, bias, E = WORKLOADS[name]
    return Workload(name, V, H, L, T, B, bias, E)


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


def tokens(w: Workload, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, w.vocab, (w.batch, w.steps + 1))
    return data[:, :-1], data[:, 1:]


# -------------------------------------------------------------------------------------- implementations


def takes_reset_after(cell: str) -> bool:
    """Whether the cell has the cuDNN/PyTorch reset-after form (the peers' GRU), which the benchmark then uses."""
    return "reset_after" in inspect.signature(get_cell(cell).init).parameters


def rnn_jax_step(w: Workload, cell: str, train: bool, variant: str) -> Built:
    runner, unroll = {"fused": ("fused", 1), "fused_xla": ("fused_xla", 1), "hoisted": ("hoisted", 1),
                      "scan_unroll1": ("scan", 1), "scan_unroll4": ("scan", 4), "scan_unrollT": ("scan", w.steps),
                      "unrolled": ("unrolled", 1)}[variant]
    model = LanguageModel(LMConfig(vocab_size=w.vocab, embed_size=w.embed, hidden_size=w.hidden, num_layers=w.layers,
                                   cell=cell, use_bias=w.bias, output_bias=w.bias, runner=runner, unroll=unroll,
                                   gru_reset_after=takes_reset_after(cell)))
    params = model.init(jax.random.PRNGKey(0))
    inputs, targets = (jnp.asarray(a) for a in tokens(w))
    native = variant != "fused_xla"  # fused_xla: the default step with every native kernel off
    if train:
        optim = OptimConfig(name="sgd", learning_rate=0.1, clip_norm=None)
        optimizer = make_optimizer(optim, 1, 1)
        # As `rnn_jax.training.train` builds it: at the Zaremba sizes only the batch's embedding rows are updated.
        sparse = sparse_embedding_pays(optim, model.config, w.batch * w.steps)
        step = jax.jit(make_train_step(model, optimizer, "token_mean", native=native, sparse_embedding=sparse),
                       donate_argnums=(0, 1))
        state = [TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(1)),
                 model.initial_state(w.batch)]
        temp_bytes, compile_s = _compiled(step, state[0], state[1], inputs, targets)

        def run():
            state[0], state[1], metrics = step(state[0], state[1], inputs, targets)
            return metrics["loss"]
    else:
        step = jax.jit(make_eval_step(model, native=native))
        carry = model.initial_state(w.batch)
        temp_bytes, compile_s = _compiled(step, params, carry, inputs, targets)
        run = lambda: step(params, carry, inputs, targets)[1]
    return Built(run, jax.block_until_ready, temp_bytes, compile_s)


def _optax_built(loss_fn: Callable, params: Any, train: bool) -> Built:
    """A JAX peer's step: `loss_fn(params)` alone (inference) or with its gradient and an SGD update (train)."""
    if not train:
        step = jax.jit(loss_fn)
        temp_bytes, compile_s = _compiled(step, params)
        return Built(lambda: step(params), jax.block_until_ready, temp_bytes, compile_s)
    optimizer = optax.sgd(0.1)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, optimizer.init(params)]
    temp_bytes, compile_s = _compiled(step, *state)

    def run():
        state[0], state[1], loss = step(state[0], state[1])
        return loss
    return Built(run, jax.block_until_ready, temp_bytes, compile_s)


def flax_step(w: Workload, cell: str, train: bool) -> Built:
    from flax import linen as nn

    cell_type = nn.OptimizedLSTMCell if cell == "lstm" else nn.GRUCell

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Embed(w.vocab, w.embed)(x)
            for _ in range(w.layers):
                h = nn.RNN(cell_type(w.hidden))(h)
            return nn.Dense(w.vocab, use_bias=w.bias)(h)

    model = Model()
    inputs, targets = (jnp.asarray(a) for a in tokens(w))
    params = model.init(jax.random.PRNGKey(0), inputs)
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, inputs), targets).mean()
    return _optax_built(loss_fn, params, train)


def jax_rnn_step(w: Workload, cell: str, train: bool, lstm: Optional[Callable] = None) -> Built:
    """`jax.experimental.rnn.lstm` (cuDNN) between an embedding and an output layer, as a peer on a GPU.

    Args:
        lstm: the LSTM function, with `jax.experimental.rnn.lstm`'s signature. None uses that one, which runs on
            a GPU only; a stand-in (for example one that unpacks the weights for `lstm_ref`) runs the same model
            elsewhere.
    """
    if cell != "lstm":
        raise PeerUnavailable("jax.experimental.rnn has an LSTM only")
    from jax.experimental import rnn

    if lstm is None:
        if jax.default_backend() != "gpu":
            raise PeerUnavailable(f"jax.experimental.rnn needs cuDNN; this backend is {jax.default_backend()}")
        lstm = rnn.lstm
    embed_key, lstm_key, out_key = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"embedding": jax.random.normal(embed_key, (w.vocab, w.embed)),
              "lstm": rnn.init_lstm_weight(lstm_key, w.embed, w.hidden, w.layers, False),  # cuDNN: biases always
              "output": jax.random.normal(out_key, (w.hidden, w.vocab)) * w.hidden ** -0.5}
    if w.bias:
        params["output_bias"] = jnp.zeros((w.vocab,))
    inputs, targets = (jnp.asarray(a) for a in tokens(w))
    zeros = jnp.zeros((w.layers, w.batch, w.hidden))
    lengths = jnp.full((w.batch,), w.steps, jnp.int32)

    def loss_fn(p):
        ys, _, _ = lstm(p["embedding"][inputs], zeros, zeros, p["lstm"], lengths, w.embed, w.hidden, w.layers, 0.0,
                        False)
        logits = ys @ p["output"] + p.get("output_bias", 0.0)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    return _optax_built(loss_fn, params, train)


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


def torch_step(w: Workload, cell: str, train: bool, device: str = "cpu") -> Built:
    import torch

    if device != "cpu" and not torch.cuda.is_available():
        raise PeerUnavailable(f"PyTorch {torch.__version__} sees no CUDA device")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    rnn_type = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    embed = torch.nn.Embedding(w.vocab, w.embed).to(device)
    rnn = rnn_type(w.embed, w.hidden, num_layers=w.layers, bias=w.bias, batch_first=True).to(device)
    head = torch.nn.Linear(w.hidden, w.vocab, bias=w.bias).to(device)
    parameters = list(embed.parameters()) + list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    inputs, targets = (torch.from_numpy(a).to(device) for a in tokens(w))
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        out, _ = rnn(embed(inputs))
        return loss_fn(head(out).reshape(-1, w.vocab), targets.reshape(-1))

    if train:
        def run():
            optimizer.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            optimizer.step()
            return loss
    else:
        def run():
            with torch.no_grad():
                return forward()
    # Memory one step takes beyond what is already allocated (parameters, inputs): XLA's temporaries' counterpart.
    if device == "cpu":
        temp_bytes = torch_cpu_peak_bytes(lambda: run().item())
    else:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run().item()
        temp_bytes = torch.cuda.max_memory_allocated() - before
    return Built(run, lambda out: out.item(), temp_bytes, None)  # item() waits for the device


def torch_cpu_peak_bytes(call: Callable[[], Any]) -> int:
    """Peak bytes PyTorch allocates on the CPU during `call()`, beyond what was allocated before it.

    PyTorch keeps no allocator statistics on the CPU (`torch.cuda.max_memory_allocated` has no CPU twin); its
    profiler with `profile_memory=True` records every allocation and free during the call, and the running sum's
    maximum is the peak. The profiler cannot size a free of a block allocated before the call, so such frees are
    not subtracted: a train step that first drops the previous step's gradients counts its new ones in full, as
    `max_memory_allocated` would on a GPU.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    with tempfile.TemporaryDirectory() as tmp:
        trace = pathlib.Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    changes = sorted((e["ts"], e["args"].get("Ev Idx", 0), e["args"]["Bytes"]) for e in events
                     if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0)
    total = peak = 0
    for _, _, change in changes:
        total += change
        peak = max(peak, total)
    return peak


CPU_ONLY = {"torch": "PyTorch on the CPU", "fused_xla": "the default with the native CPU kernels off"}


def build(name: str, w: Workload, cell: str, train: bool) -> Built:
    if name in PEER_CELLS and cell not in PEER_CELLS[name]:
        raise PeerUnavailable(f"no peer: {name} has no {cell} cell")
    if name in CPU_ONLY and jax.default_backend() != "cpu":
        raise PeerUnavailable(f"a CPU-only row ({CPU_ONLY[name]}) on the {jax.default_backend()} backend")
    if name == "torch":
        return torch_step(w, cell, train)
    if name == "torch_cuda":
        return torch_step(w, cell, train, device="cuda")
    if name == "flax":
        return flax_step(w, cell, train)
    if name == "jax_rnn":
        return jax_rnn_step(w, cell, train)
    if name == "products_only":
        return products_only_step(w, cell, train)
    return rnn_jax_step(w, cell, train, name)


# ---------------------------------------------------------------------------------------------- measuring


def timed_rounds(entries: dict, rounds: int, min_seconds: float, tokens_per_call: int, warmup_calls: int = 1) -> dict:
    """Interleaved rounds: each round times every implementation once, in turn, for >= min_seconds.

    Each turn starts with `warmup_calls` untimed calls: the first step after another implementation ran finds
    the caches and the allocator as that one left them (at `zaremba_small`, PyTorch's first steps took up to
    1.6x its median, Flax's 1.2x; rnn_jax's default none), which a half-second round would otherwise count.
    """
    rates = {name: [] for name in entries}
    for _ in range(rounds):
        for name, (run, wait) in entries.items():
            for _ in range(warmup_calls):
                wait(run())
            calls, start = 0, time.perf_counter()
            while True:
                wait(run())
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            rates[name].append(calls * tokens_per_call / elapsed)
    return rates


def compile_times(cell: str, lengths: Sequence[int]) -> list[dict]:
    """Seconds to lower and compile the train step (no run) at each T, for the default, scan and a full unroll."""
    rows = []
    for T in lengths:
        w = Workload("compile", 1000, 128, 1, T, 8, True, 128)
        row = {"T": T}
        for variant, label in (("fused", "fused"), ("scan_unroll1", "unroll=1"), ("scan_unrollT", "full unroll")):
            if label == "full unroll" and T > 64:
                row[label] = None  # fully unrolled graphs of this size take minutes to compile; not measured
                continue
            row[label] = rnn_jax_step(w, cell, True, variant).compile_s
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(BenchConfig(), argv, description=__doc__.splitlines()[0])
    reused = reuse_freed_memory() if config.reuse_host_memory else False  # before JAX starts its threads
    peak = matmul_peak()
    machine = device_description()
    print(f"machine: {os.cpu_count()} CPU core(s) of a {machine['cpu']['model']} ({', '.join(machine['cpu']['flags'])}); "
          f"{machine['device_kind']} ({machine['platform']}); fp32 matmul peak measured {peak / 1e9:.1f} GFLOP/s; "
          f"freed host memory reused: {reused}")
    results, skipped, products = [], [], {}
    for name in config.configs:
        w = workload(name)
        for cell in config.cells:
            for kind in config.workloads:
                train = kind == "train"
                entries, meta = {}, {}
                for impl in config.implementations:
                    if impl in ("unrolled", "scan_unrollT") and w.steps > 64:
                        print(f"  {impl}: skipped (a full unroll of T={w.steps} steps compiles for minutes)")
                        continue
                    try:
                        start = time.perf_counter()
                        built = build(impl, w, cell, train)
                        built.wait(built.run())
                    except (ImportError, PeerUnavailable) as e:
                        print(f"  {impl}: skipped ({e})")
                        skipped.append({"config": name, "cell": cell, "workload": kind, "impl": impl,
                                        "reason": str(e)})
                        continue
                    meta[impl] = {"compile_s": built.compile_s, "first_step_s": time.perf_counter() - start,
                                  "temp_bytes": built.temp_bytes}
                    entries[impl] = (built.run, built.wait)
                rates = timed_rounds(entries, config.rounds, config.min_seconds, w.batch * w.steps)
                for impl, values in rates.items():
                    median = statistics.median(values)
                    results.append({"config": name, "cell": cell, "workload": kind, "impl": impl,
                                    "tokens_per_s": median, "min": min(values), "max": max(values), "rounds": values,
                                    "flops_fraction": median * w.flops_per_token(cell, train) / peak, **meta[impl]})
                best_peer = max((r["tokens_per_s"] for r in results if r["config"] == name and r["cell"] == cell
                                 and r["workload"] == kind and r["impl"] in PEERS), default=None)
                print(f"\n{name} {cell} {kind}: B={w.batch} T={w.steps} V={w.vocab} H={w.hidden} L={w.layers}")
                for r in [r for r in results if r["config"] == name and r["cell"] == cell and r["workload"] == kind]:
                    ratio = "" if not best_peer else f"{r['tokens_per_s'] / best_peer:5.2f}x best peer"
                    memory = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f} MiB"
                    compile_s = "    -" if r["compile_s"] is None else f"{r['compile_s']:5.2f}"
                    print(f"  {r['impl']:<13} {r['tokens_per_s']:>11,.0f} tok/s [{r['min']:,.0f}-{r['max']:,.0f}]  "
                          f"compile {compile_s}s  first step {r['first_step_s']:5.2f}s  temp {memory:>10}  "
                          f"{100 * r['flops_fraction']:5.1f}% peak  {ratio}")
                if "products_only" in entries:
                    key = f"{name} {cell} {kind}"
                    products[key] = product_times(w, cell, train)
                    print("  the step's products, each timed alone (chained repeats in one call, median of 5 calls):")
                    for row in products[key]:
                        print(f"    {row['product']:<64} {1e3 * row['seconds']:8.3f} ms  "
                              f"{row['flops'] / row['seconds'] / 1e9:5.0f} GFLOP/s")
    compiles = {cell: compile_times(cell, config.compile_lengths) for cell in config.cells}
    for cell, rows in compiles.items():
        print(f"\ncompile time (lower + compile, no run) of the {cell} train step against T (H=128, B=8):")
        for row in rows:
            full = "not measured" if row["full unroll"] is None else f"{row['full unroll']:.2f}s"
            print(f"  T={row['T']:>5}: fused {row['fused']:.2f}s, scan unroll=1 {row['unroll=1']:.2f}s, full unroll {full}")
    report = {"machine": {"cpus": os.cpu_count(), **device_description(), "matmul_peak_flops": peak, "host_memory_reused": reused,
                          "versions": versions()}, "config": dataclasses.asdict(config), "results": results,
              "skipped": skipped, "compile_vs_T": compiles, "product_times": products}
    print("\n" + summary_table(report))
    if config.out:
        write_outputs(pathlib.Path(config.out), report)
    return report


def markdown_table(report: dict) -> str:
    lines = ["| config | cell | workload | impl | tokens/s (median) | min-max | compile s | first step s | temp MiB "
             "| % fp32 peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        memory = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        lines.append(f"| {r['config']} | {r['cell']} | {r['workload']} | {r['impl']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['min']:,.0f}-{r['max']:,.0f} | {compile_s} | {r['first_step_s']:.2f} | {memory} | "
                     f"{100 * r['flops_fraction']:.1f} |")
    for r in report.get("skipped", []):
        lines.append(f"| {r['config']} | {r['cell']} | {r['workload']} | {r['impl']} | skipped: {r['reason']} "
                     "| | | | | |")
    return "\n".join(lines)


def product_table(report: dict) -> str:
    """The step's products timed alone (`product_times`), per (config, cell, workload) where they were timed."""
    lines = []
    for key, rows in report.get("product_times", {}).items():
        lines += [f"\nThe step's products, each timed alone ({key}):\n", "| product | ms | GFLOP/s | % of peak |",
                  "|---|---|---|---|"]
        peak = report["machine"]["matmul_peak_flops"]
        for row in rows:
            rate = row["flops"] / row["seconds"]
            lines.append(f"| {row['product']} | {1e3 * row['seconds']:.3f} | {rate / 1e9:.0f} | {100 * rate / peak:.0f}% |")
    return "\n".join(lines) + ("\n" if lines else "")


BAR = {"notes": 1.5, "zaremba_small": 1.5, "zaremba_medium": 1.2, "long": 1.0}  # target: default / fastest peer


def round_ratios(default: dict, peers: list[dict]) -> list[float]:
    """The default's tokens/s over the fastest peer's, round by round (each round times them minutes apart at
    most, so a drift of the shared machine's speed moves both): the spread of the run's ratio."""
    if not peers or "rounds" not in default or any("rounds" not in peer for peer in peers):
        return []
    return [mine / max(peer["rounds"][i] for peer in peers) for i, mine in enumerate(default["rounds"])]


def summary_table(report: dict) -> str:
    """One row per (config, cell, workload): tokens/s of every implementation, the default's ratio to the fastest
    peer (of the medians, and its range over the rounds), the target bar for the train step, and what meeting it
    takes: the default's share of the measured fp32 matrix-product peak now and the share the bar asks for (bar x
    the fastest peer's share; near or above 100%, no exact implementation of these FLOPs can meet it here); where
    `products_only` ran, also the default's tokens/s over that of its products run one after another alone, and
    theirs over the fastest peer's."""
    impls = list(dict.fromkeys(r["impl"] for r in report["results"]))
    with_reference = any(r["impl"] in REFERENCES for r in report["results"])
    extra = " default / products only | products only / best peer |" if with_reference else ""
    lines = ["| config | cell | workload | " + " | ".join(impls)
             + " | default / best peer | per round | bar | default % peak | bar needs % peak |" + extra,
             "|---|---|---|" + "---|" * (len(impls) + 5 + 2 * with_reference)]
    groups = list(dict.fromkeys((r["config"], r["cell"], r["workload"]) for r in report["results"]))
    for name, cell, kind in groups:
        rows = {r["impl"]: r for r in report["results"] if (r["config"], r["cell"], r["workload"]) == (name, cell, kind)}
        peers = [rows[k] for k in PEERS if k in rows]
        best = max(peers, key=lambda r: r["tokens_per_s"]) if peers else None
        default = rows.get("fused")
        ratio = f"{default['tokens_per_s'] / best['tokens_per_s']:.2f}x" if best and default else "-"
        per_round = round_ratios(default, peers) if default else []
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}x" if per_round else "-"
        has_bar = kind == "train" and name in BAR
        bar = f"{BAR[name]:.1f}x" if has_bar else "-"
        share = f"{100 * default['flops_fraction']:.0f}%" if default else "-"
        needs = f"{100 * BAR[name] * best['flops_fraction']:.0f}%" if has_bar and best else "-"
        cells = " | ".join(f"{rows[k]['tokens_per_s']:,.0f}" if k in rows else "-" for k in impls)
        row = f"| {name} | {cell} | {kind} | {cells} | {ratio} | {spread} | {bar} | {share} | {needs} |"
        if with_reference:
            reference = rows.get("products_only")
            of_reference = f"{default['tokens_per_s'] / reference['tokens_per_s']:.2f}" if reference and default else "-"
            over_peer = f"{reference['tokens_per_s'] / best['tokens_per_s']:.2f}x" if reference and best else "-"
            row += f" {of_reference} | {over_peer} |"
        lines.append(row)
    return "\n".join(lines)


def write_outputs(out: pathlib.Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_lm.json").write_text(json.dumps(report, indent=2))
    (out / "bench_lm.md").write_text(f"Machine: {report['machine']}\n\n" + summary_table(report) + "\n\n"
                                     + markdown_table(report) + "\n" + product_table(report))
    groups = sorted({(r["config"], r["cell"], r["workload"]) for r in report["results"]})
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 * len(groups)), constrained_layout=True, squeeze=False)
    for ax, (name, cell, kind) in zip(axes[:, 0], groups):
        rows = [r for r in report["results"] if (r["config"], r["cell"], r["workload"]) == (name, cell, kind)]
        ax.barh([r["impl"] for r in rows], [r["tokens_per_s"] for r in rows],
                xerr=[[r["tokens_per_s"] - r["min"] for r in rows], [r["max"] - r["tokens_per_s"] for r in rows]],
                color=["tab:orange" if r["impl"] in PEERS else "tab:gray" if r["impl"] in REFERENCES else "tab:blue"
                       for r in rows])
        ax.set_title(f"{name} {cell} {kind}", fontsize=9)
        ax.set_xlabel("tokens/s")
    fig.savefig(out / "bench_lm_tokens.png", dpi=90)
    plt.close(fig)
    if any(report["compile_vs_T"].values()):  # --compile-lengths "" measures none
        fig, ax = plt.subplots(figsize=(6, 4))
        for cell, rows in report["compile_vs_T"].items():
            ax.plot([r["T"] for r in rows], [r["fused"] for r in rows], "^-", label=f"{cell} fused (default)")
            ax.plot([r["T"] for r in rows], [r["unroll=1"] for r in rows], "o-", label=f"{cell} scan unroll=1")
            full = [(r["T"], r["full unroll"]) for r in rows if r["full unroll"] is not None]
            ax.plot([t for t, _ in full], [s for _, s in full], "s--", label=f"{cell} full unroll")
        ax.set_xscale("log")
        ax.set_yscale("log")  # flat scan lines near 1 s beside full unrolls of tens of seconds
        ax.set_xlabel("T")
        ax.set_ylabel("lower + compile time of the train step (s)")
        ax.legend()
        fig.savefig(out / "bench_compile_vs_T.png", dpi=90)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_command(main))
