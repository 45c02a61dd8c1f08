"""MGU: one gate as reset and update, checked by hand."""

import math

import jax.numpy as jnp
import numpy as np

from rnn_jax import HiddenState, mgu


def test_matrix_case_by_hand():
    W = jnp.array([[[0.5, -0.2], [0.1, 0.3]], [[-0.6, 0.4], [0.2, 0.9]]])  # (f, g) x (H, H)
    U = jnp.array([[[1.0], [-1.0]], [[0.5], [0.25]]])
    params = mgu.MGUParams(W=W, U=U, b=None)
    h, x = np.array([0.3, -0.7]), 0.4
    f = 1 / (1 + np.exp(-(np.asarray(W[0]) @ h + np.asarray(U[0])[:, 0] * x)))
    g = np.tanh(np.asarray(W[1]) @ (f * h) + np.asarray(U[1])[:, 0] * x)
    carry, out = mgu.step(params, HiddenState(h=jnp.asarray(h, jnp.float32)), jnp.array([x]))
    np.testing.assert_allclose(out, (1 - f) * h + f * g, rtol=1e-5)
    assert math.isclose(float(f[0]), 1 / (1 + math.exp(-(0.15 + 0.14 + 0.4))), rel_tol=1e-6)
