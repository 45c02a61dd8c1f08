"""The peers of `bench_lm`: the same language model's step in PyTorch (nn.LSTM/nn.GRU, CPU or CUDA), Flax
(nn.RNN) and `jax.experimental.rnn` (cuDNN), each imported only when it runs."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from experiments.bench_workloads import Built, PeerUnavailable, Workload, _compiled, tokens

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


def torch_step(w: Workload, cell: str, train: bool, device: str = "cpu", bf16: bool = False) -> Built:
    """PyTorch's step in float32, or with `bf16` under `torch.autocast(device, torch.bfloat16)` (float32 parameters
    and optimiser, bf16 products: PyTorch's mixed precision)."""
    import contextlib

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
        with torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out, _ = rnn(embed(inputs))
            logits = head(out).reshape(-1, w.vocab)
        return loss_fn(logits.float(), targets.reshape(-1))

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

