"""Flax Linen modules: the parameter is the core pytree, outputs equal the functional API, training works."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from conftest import CELL_CASES
from rnn_jax import Stacked, gru, hoisted_scan, lstm, precision, run_layers
from rnn_jax import linen as rnn_linen
from rnn_jax.bidirectional import Bidirectional as CoreBidirectional

B, T, E, H = 2, 5, 3, 4


def close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_cell_and_rnn_are_the_core(cell, opts):
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    module = rnn_linen.Cell(cell=cell, hidden_size=H, init_options=opts)
    carry = module.initial_state((B,))  # no key needed
    variables = module.init(jax.random.key(0), carry, xs[:, 0])
    params = variables["params"]["cell"]
    assert type(params) is type(cell.init(jax.random.key(0), E, H, **opts))
    close(module.apply(variables, carry, xs[:, 0]), cell.step(params, carry, xs[:, 0]))
    layer = rnn_linen.RNN(cell=cell, hidden_size=H, init_options=opts)
    # Parameters made by the functional API drop straight in.
    functional = cell.init(jax.random.key(7), E, H, **opts)
    lengths = jnp.array([T, 2])
    close(layer.apply({"params": {"cell": functional}}, xs, seq_lengths=lengths),
          hoisted_scan(cell, functional, cell.initial_state(H, (B,)), xs, seq_lengths=lengths))


def test_stack_and_bidirectional_are_the_core():
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    stacked = rnn_linen.StackedRNN(cell="gru", hidden_size=H, num_layers=3)
    variables = stacked.init(jax.random.key(0), xs)
    layers = variables["params"]["layers"]
    assert len(layers) == 3 and layers[1].U.shape == (3, H, H)
    close(stacked.apply(variables, xs), run_layers(gru, layers, Stacked(gru, 3).initial_state(H, (B,)), xs))
    bi = rnn_linen.Bidirectional(cell="lstm", hidden_size=H, merge="sum")
    variables = bi.init(jax.random.key(0), xs)
    core = CoreBidirectional(lstm, merge="sum")
    close(bi.apply(variables, xs), core(variables["params"]["directions"], core.initial_state(H, (B,)), xs))


def test_learnable_initial_state_is_a_parameter():
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    layer = rnn_linen.RNN(cell="lstm", hidden_size=H, learnable_initial_state=True)
    variables = layer.init(jax.random.key(0), xs)
    assert variables["params"]["initial_state"].h.shape == (H,)
    grads = jax.grad(lambda v: jnp.sum(layer.apply(v, xs)[1]))(variables)
    assert float(jnp.abs(grads["params"]["initial_state"].c).sum()) > 0


class Tagger(nn.Module):
    """An ordinary Flax model with an rnn_jax layer inside: embedding -> bidirectional GRU -> dense."""

    @nn.compact
    def __call__(self, tokens):
        xs = nn.Embed(10, 8)(tokens)
        _, hs = rnn_linen.Bidirectional(cell="gru", hidden_size=16)(xs)
        return nn.Dense(10)(hs)


def test_trains_inside_a_flax_model_with_optax():
    # Task: output, at every step, the token seen two steps earlier (needs memory) -- or 0 for the first two.
    tokens = jax.random.randint(jax.random.key(0), (32, 12), 1, 10)
    targets = jnp.pad(tokens, ((0, 0), (2, 0)))[:, :12]
    model = Tagger()
    params = model.init(jax.random.key(1), tokens)
    optimizer = optax.adam(2e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, tokens), targets).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(150):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] > 2.0 and losses[-1] < 0.2, (losses[0], losses[-1])


def test_compute_dtype_runs_the_core_on_bf16_parameters():
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    layer = rnn_linen.StackedRNN(cell="lstm", hidden_size=H, num_layers=2, compute_dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), xs)
    layers = variables["params"]["layers"]
    assert {leaf.dtype for leaf in jax.tree.leaves(layers)} == {jnp.dtype(jnp.float32)}  # stored in float32
    carry, hs = layer.apply(variables, xs)
    assert hs.dtype == jnp.float32
    bf16 = precision.cast_to_compute(layers, jnp.bfloat16)
    close((carry, hs), run_layers(lstm, bf16, Stacked(lstm, 2).initial_state(H, (B,)), xs))
    cell = rnn_linen.Cell(cell="gru", hidden_size=H, compute_dtype=jnp.bfloat16)
    variables = cell.init(jax.random.key(0), cell.initial_state((B,)), xs[:, 0])
    close(cell.apply(variables, cell.initial_state((B,)), xs[:, 0]),
          gru.step(precision.cast_to_compute(variables["params"]["cell"], jnp.bfloat16), cell.initial_state((B,)),
                   xs[:, 0]))
