"""Peephole LSTM: zero peepholes give the plain LSTM; a scalar case by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import lstm, peephole


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_zero_peepholes_is_the_lstm():
    params = peephole.init(jax.random.key(0), 3, 4)
    params = params._replace(P=jnp.zeros_like(params.P))
    carry = lstm.LSTMState(h=jnp.full((2, 4), 0.3), c=jnp.full((2, 4), -0.5))
    x = jax.random.normal(jax.random.key(1), (2, 3))
    np.testing.assert_allclose(peephole.step(params, carry, x)[1],
                               lstm.step(lstm.LSTMParams(params.W, params.U, params.b), carry, x)[1], rtol=1e-6)


def test_scalar_case_by_hand():
    # H = E = 1, all W = U = 0.5, b = 0; peepholes p_i, p_f, p_o = 0.2, -0.3, 0.7.
    params = peephole.PeepholeLSTMParams(W=jnp.full((4, 1, 1), 0.5), U=jnp.full((4, 1, 1), 0.5),
                                         b=jnp.zeros((4, 1)), P=jnp.array([[0.2], [-0.3], [0.7]]))
    h, c, x = 0.4, 1.0, -1.0
    a = 0.5 * h + 0.5 * x
    i, f, g = sigmoid(a + 0.2 * c), sigmoid(a - 0.3 * c), math.tanh(a)
    c_new = f * c + i * g
    h_new = sigmoid(a + 0.7 * c_new) * math.tanh(c_new)
    carry, out = peephole.step(params, lstm.LSTMState(h=jnp.array([h]), c=jnp.array([c])), jnp.array([x]))
    np.testing.assert_allclose(out, [h_new], rtol=1e-6)
    np.testing.assert_allclose(carry.c, [c_new], rtol=1e-6)
