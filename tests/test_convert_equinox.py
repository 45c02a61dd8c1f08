"""Equinox cells <-> rnn_jax: same outputs over a sequence, exact round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import gru, lstm, scan
from rnn_jax.convert import equinox as convert

eqx = pytest.importorskip("equinox", reason="equinox is in the test extra: pip install -e '.[test]'")

T, E, H = 7, 3, 5


def scaled(cell, factor=2.5):
    return jax.tree.map(lambda a: a * factor if isinstance(a, jax.Array) else a, cell)


@pytest.mark.parametrize("use_bias", [True, False])
def test_lstm_cell(use_bias):
    cell = scaled(eqx.nn.LSTMCell(E, H, use_bias=use_bias, key=jax.random.key(0)))
    xs = jax.random.normal(jax.random.key(1), (T, E))
    state = (jnp.full((H,), 0.1), jnp.full((H,), -0.2))
    outputs = []
    for t in range(T):
        state = cell(xs[t], state)
        outputs.append(state[0])
    params = convert.from_equinox(cell)
    final, hs = scan(lstm.step, params, lstm.LSTMState(h=jnp.full((H,), 0.1), c=jnp.full((H,), -0.2)), xs)
    np.testing.assert_allclose(hs, jnp.stack(outputs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.c, state[1], rtol=1e-5, atol=1e-6)
    back = convert.to_equinox(params, eqx.nn.LSTMCell(E, H, use_bias=use_bias, key=jax.random.key(9)))
    jax.tree.map(np.testing.assert_array_equal, back, cell)


@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_cell(use_bias):
    cell = scaled(eqx.nn.GRUCell(E, H, use_bias=use_bias, key=jax.random.key(0)))
    xs = jax.random.normal(jax.random.key(1), (T, E))
    h = jnp.linspace(-0.5, 0.5, H)
    outputs = []
    for t in range(T):
        h = cell(xs[t], h)
        outputs.append(h)
    params = convert.from_equinox(cell)
    _, hs = scan(gru.step, params, gru.HiddenState(h=jnp.linspace(-0.5, 0.5, H)), xs)
    np.testing.assert_allclose(hs, jnp.stack(outputs), rtol=1e-5, atol=1e-6)
    back = convert.to_equinox(params, eqx.nn.GRUCell(E, H, use_bias=use_bias, key=jax.random.key(9)))
    jax.tree.map(np.testing.assert_array_equal, back, cell)


def test_errors():
    with pytest.raises(TypeError, match="expected an equinox.nn.LSTMCell or GRUCell"):
        convert.from_equinox(object())
    with pytest.raises(TypeError, match="takes GRUResetAfterParams"):
        convert.to_equinox(gru.init(jax.random.key(0), E, H), eqx.nn.GRUCell(E, H, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="weight_ih: the Equinox cell has shape"):
        convert.to_equinox(lstm.init(jax.random.key(0), E + 1, H), eqx.nn.LSTMCell(E, H, key=jax.random.key(0)))
