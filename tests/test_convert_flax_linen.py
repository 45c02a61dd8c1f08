"""Flax Linen cells <-> rnn_jax: same outputs over a sequence, exact round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from rnn_jax import gru, lstm, scan
from rnn_jax.convert import flax_linen as convert

B, T, E, H = 2, 6, 3, 5


def run_flax(cell, variables, carry, xs):
    outputs = []
    for t in range(xs.shape[1]):
        carry, h = cell.apply(variables, carry, xs[:, t])
        outputs.append(h)
    return carry, jnp.stack(outputs, axis=1)


def scaled(variables, factor=2.5):
    return jax.tree.map(lambda a: a * factor, variables)  # exercise the nonlinearities


@pytest.mark.parametrize("cell_type", [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_lstm_cells(cell_type):
    cell = cell_type(features=H)
    xs = jax.random.normal(jax.random.key(0), (B, T, E))
    carry = cell.initialize_carry(jax.random.key(1), (B, E))
    variables = scaled(cell.init(jax.random.key(2), carry, xs[:, 0]))
    (c_flax, h_flax), hs_flax = run_flax(cell, variables, carry, xs)
    params = convert.from_linen_lstm(variables)
    final, hs = scan(lstm.step, params, lstm.LSTMState(h=carry[1], c=carry[0]), xs)  # Flax's carry is (c, h)
    np.testing.assert_allclose(hs, hs_flax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.c, c_flax, rtol=1e-5, atol=1e-6)
    back = convert.to_linen_lstm(params)
    jax.tree.map(np.testing.assert_array_equal, back, dict(variables["params"]))


def test_gru_cell():
    cell = nn.GRUCell(features=H)
    xs = jax.random.normal(jax.random.key(0), (B, T, E))
    carry = jax.random.normal(jax.random.key(1), (B, H))
    variables = scaled(cell.init(jax.random.key(2), carry, xs[:, 0]))
    final_flax, hs_flax = run_flax(cell, variables, carry, xs)
    params = convert.from_linen_gru(variables)
    final, hs = scan(gru.step, params, gru.HiddenState(h=carry), xs)
    np.testing.assert_allclose(hs, hs_flax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h, final_flax, rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, convert.to_linen_gru(params), dict(variables["params"]))


def test_errors():
    with pytest.raises(TypeError, match="notes' GRU .* has no Flax equivalent"):
        convert.to_linen_gru(gru.init(jax.random.key(0), E, H))
    with pytest.raises(KeyError, match="not the parameters of a Flax LSTMCell"):
        convert.from_linen_lstm({"params": {"ii": {}}})
