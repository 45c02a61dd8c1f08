"""Elman cell: a hand-computed case and its shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import ShapeError, elman


def test_hand_computed_matrix_case():
    # H = 2, E = 1: h_t = tanh(W h_{t-1} + U x_t + b), worked row by row.
    params = elman.ElmanParams(W=jnp.array([[0.5, -1.0], [0.25, 0.0]]), U=jnp.array([[2.0], [-1.0]]),
                               b=jnp.array([0.1, 0.2]))
    h_prev, x = [0.4, -0.2], 0.3
    expected = [math.tanh(0.5 * 0.4 - 1.0 * -0.2 + 2.0 * x + 0.1), math.tanh(0.25 * 0.4 + 0.0 - 1.0 * x + 0.2)]
    carry, h = elman.step(params, elman.HiddenState(h=jnp.array(h_prev)), jnp.array([x]))
    np.testing.assert_allclose(h, expected, atol=1e-6)
    np.testing.assert_allclose(expected, [math.tanh(1.1), 0.0], atol=1e-12)


def test_init_shapes_and_errors():
    params = elman.init(jax.random.key(0), 3, 5)
    assert params.W.shape == (5, 5) and params.U.shape == (5, 3) and params.b.shape == (5,)
    assert elman.init(jax.random.key(0), 3, 5, use_bias=False).b is None
    with pytest.raises(ShapeError, match=r"U \(input weights.*\(H=5, E\)"):
        elman.step(params._replace(U=jnp.ones((4, 3))), elman.initial_state(5), jnp.ones(3))
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        elman.init(jax.random.key(0), 3, 0)
