"""Flax NNX modules: the parameter is the core pytree, outputs equal the functional API, training works."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import CELL_CASES
from rnn_jax import Stacked, fused_scan, hoisted_scan, lstm, precision, run_layers
from rnn_jax import nnx as rnn_nnx
from rnn_jax.bidirectional import Bidirectional as CoreBidirectional

B, T, E, H = 2, 5, 3, 4


def close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


value = rnn_nnx.params_of


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_cell_and_rnn_are_the_core(cell, opts):
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    module = rnn_nnx.Cell(cell, E, H, rngs=nnx.Rngs(0), init_options=opts)
    carry = module.initial_state((B,))
    assert type(value(module.cell)) is type(cell.init(jax.random.key(0), E, H, **opts))
    close(module(carry, xs[:, 0]), cell.step(value(module.cell), carry, xs[:, 0]))
    layer = rnn_nnx.RNN(cell, E, H, rngs=nnx.Rngs(1), init_options=opts)
    lengths = jnp.array([2, T])
    close(layer(xs, seq_lengths=lengths),
          hoisted_scan(cell, value(layer.cell), cell.initial_state(H, (B,)), xs, seq_lengths=lengths))


def test_stack_and_bidirectional_are_the_core():
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    stacked = rnn_nnx.StackedRNN("lstm", E, H, 2, rngs=nnx.Rngs(0))
    close(stacked(xs), run_layers(lstm, value(stacked.layers), Stacked(lstm, 2).initial_state(H, (B,)), xs))
    bi = rnn_nnx.Bidirectional("mgu", E, H, rngs=nnx.Rngs(0))
    core = CoreBidirectional(bi.bi.cell)
    close(bi(xs), core(value(bi.directions), core.initial_state(H, (B,)), xs))


class Regressor(nnx.Module):
    """An ordinary NNX model: linear -> rnn_jax LSTM with a learnable initial state -> linear."""

    def __init__(self, rngs):
        self.inp = nnx.Linear(1, 8, rngs=rngs)
        self.rnn = rnn_nnx.RNN("lstm", 8, 16, rngs=rngs, learnable_initial_state=True)
        self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, xs):
        return self.out(self.rnn(self.inp(xs))[1])


def test_trains_inside_an_nnx_model_with_optax():
    # Task: the running sum of the inputs so far.
    xs = jax.random.uniform(jax.random.key(0), (32, 10, 1), minval=-1, maxval=1)
    targets = jnp.cumsum(xs, axis=1)
    model = Regressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs) - targets) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(200)]
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


def test_compute_dtype_runs_the_core_on_bf16_parameters():
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    layer = rnn_nnx.RNN("lstm", E, H, rngs=nnx.Rngs(0), compute_dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(value(layer.cell))} == {jnp.dtype(jnp.float32)}
    carry, hs = layer(xs)
    assert hs.dtype == jnp.float32
    bf16 = precision.cast_to_compute(value(layer.cell), jnp.bfloat16)
    close((carry, hs), fused_scan(lstm, bf16, lstm.initial_state(H, (B,)), xs))  # the module's runner
    grads = nnx.grad(lambda m: m(xs)[1].sum())(layer)
    assert {leaf.dtype for leaf in jax.tree.leaves(value(grads.cell))} == {jnp.dtype(jnp.float32)}
