"""Layer-normalised LSTM and GRU against a NumPy oracle of Ba et al.'s equations."""

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import HiddenState, ln_gru, ln_lstm, lstm


def ln(z, gamma, beta=0.0):
    z = np.asarray(z, np.float64)
    return gamma * (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5) + beta


def sig(z):
    return 1 / (1 + np.exp(-z))


def random_gains(params, key):
    keys = jax.random.split(key, 2)
    return params._replace(gamma_x=1 + 0.3 * jax.random.normal(keys[0], params.gamma_x.shape),
                           gamma_h=1 + 0.3 * jax.random.normal(keys[1], params.gamma_h.shape))


def test_ln_lstm_matches_numpy():
    params = random_gains(ln_lstm.init(jax.random.key(0), 3, 6), jax.random.key(1))
    params = params._replace(gamma_c=jnp.linspace(0.5, 1.5, 6), beta_c=jnp.linspace(-0.2, 0.2, 6))
    h, c = np.linspace(-0.5, 0.5, 6), np.linspace(1.0, -1.0, 6)
    x = np.array([0.2, -1.0, 0.7])
    p = jax.tree.map(np.asarray, params)
    a = np.stack([ln(p.U[k] @ x, p.gamma_x[k]) + ln(p.W[k] @ h, p.gamma_h[k]) + p.b[k] for k in range(4)])
    i, f, o, g = sig(a[0]), sig(a[1]), sig(a[2]), np.tanh(a[3])  # gate order i, f, o, g
    c_new = f * c + i * g
    h_new = o * np.tanh(ln(c_new, p.gamma_c, p.beta_c))
    carry, out = ln_lstm.step(params, lstm.LSTMState(h=jnp.asarray(h, jnp.float32), c=jnp.asarray(c, jnp.float32)),
                              jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out, h_new, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(carry.c, c_new, rtol=1e-4, atol=1e-5)


def test_ln_gru_matches_numpy():
    params = random_gains(ln_gru.init(jax.random.key(2), 3, 5), jax.random.key(3))
    h, x = np.linspace(-0.8, 0.6, 5), np.array([1.0, 0.5, -0.3])
    p = jax.tree.map(np.asarray, params)
    r = sig(ln(p.U[0] @ x, p.gamma_x[0]) + ln(p.W[0] @ h, p.gamma_h[0]) + p.b[0])
    u = sig(ln(p.U[1] @ x, p.gamma_x[1]) + ln(p.W[1] @ h, p.gamma_h[1]) + p.b[1])
    g = np.tanh(ln(p.U[2] @ x, p.gamma_x[2]) + ln(p.W[2] @ (r * h), p.gamma_h[2]) + p.b[2])
    _, out = ln_gru.step(params, HiddenState(h=jnp.asarray(h, jnp.float32)), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out, u * g + (1 - u) * h, rtol=1e-4, atol=1e-5)
