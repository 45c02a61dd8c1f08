"""CIFG: the forget gate is 1 − i, checked by hand."""

import math

import jax.numpy as jnp
import numpy as np

from rnn_jax import cifg, lstm


def test_scalar_case_by_hand():
    w, u, b = {"i": 0.3, "o": -0.4, "g": 0.9}, {"i": 1.2, "o": 0.5, "g": -0.7}, {"i": 0.1, "o": 0.2, "g": 0.0}
    params = cifg.CIFGParams(W=jnp.array([[[w[k]]] for k in cifg.GATES]), U=jnp.array([[[u[k]]] for k in cifg.GATES]),
                             b=jnp.array([[b[k]] for k in cifg.GATES]))
    h, c, x = -0.2, 0.6, 0.8
    pre = {k: w[k] * h + u[k] * x + b[k] for k in cifg.GATES}
    i, o, g = 1 / (1 + math.exp(-pre["i"])), 1 / (1 + math.exp(-pre["o"])), math.tanh(pre["g"])
    c_new = (1 - i) * c + i * g
    carry, out = cifg.step(params, lstm.LSTMState(h=jnp.array([h]), c=jnp.array([c])), jnp.array([x]))
    np.testing.assert_allclose(carry.c, [c_new], rtol=1e-6)
    np.testing.assert_allclose(out, [o * math.tanh(c_new)], rtol=1e-6)
