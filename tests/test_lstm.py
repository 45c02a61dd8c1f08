"""LSTM cell: a hand-computed case, init options and the boundary errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import DTypeError, ShapeError, gru, lstm


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_hand_computed_two_steps():
    # H = E = 1; per-gate scalars chosen by hand, gates in the notes' order i, f, o, g.
    w = {"i": 0.5, "f": -0.3, "o": 0.8, "g": 1.2}
    u = {"i": 1.0, "f": 0.4, "o": -0.7, "g": 0.9}
    b = {"i": 0.1, "f": 1.0, "o": 0.0, "g": -0.2}
    params = lstm.LSTMParams(
        W=jnp.array([[[w[g]]] for g in lstm.GATES]),
        U=jnp.array([[[u[g]]] for g in lstm.GATES]),
        b=jnp.array([[b[g]] for g in lstm.GATES]),
    )
    h, c = 0.0, 0.0
    carry = lstm.initial_state(1)
    for x in (1.5, -0.5):
        i = sigmoid(w["i"] * h + u["i"] * x + b["i"])
        f = sigmoid(w["f"] * h + u["f"] * x + b["f"])
        o = sigmoid(w["o"] * h + u["o"] * x + b["o"])
        g = math.tanh(w["g"] * h + u["g"] * x + b["g"])
        c = f * c + i * g
        h = o * math.tanh(c)
        carry, out = lstm.step(params, carry, jnp.array([x]))
        np.testing.assert_allclose(out, [h], rtol=1e-6)
        np.testing.assert_allclose(carry.c, [c], rtol=1e-6)
        if x == 1.5:  # first step in numbers: c = σ(1.6)·tanh(1.15) = 0.83201·0.81775, h = σ(-1.05)·tanh(c) = 0.15340
            np.testing.assert_allclose(carry.c, [0.68039], atol=1e-5)
            np.testing.assert_allclose(out, [0.15340], atol=1e-5)


def test_init_shapes_follow_the_notes():
    params = lstm.init(jax.random.key(0), input_size=10, hidden_size=20, use_bias=False)
    assert params.W.shape == (4, 20, 20) and params.U.shape == (4, 20, 10) and params.b is None
    for g in lstm.GATES:
        assert params.U[lstm.GATE_INDEX[g]].shape == (20, 10)  # U_g is H x E
        assert params.W[lstm.GATE_INDEX[g]].shape == (20, 20)  # W_g is H x H


def test_forget_bias_and_uniform_init():
    params = lstm.init(jax.random.key(1), 3, 5, initializer="uniform", init_scale=0.1, forget_bias=1.0)
    f = lstm.GATE_INDEX["f"]
    assert np.all(np.abs(np.asarray(params.W)) <= 0.1) and np.all(np.abs(np.asarray(params.U)) <= 0.1)
    assert np.all(np.asarray(params.b[f]) >= 0.9) and np.all(np.asarray(params.b[f]) <= 1.1)
    others = np.delete(np.asarray(params.b), f, axis=0)
    assert np.all(np.abs(others) <= 0.1)
    with pytest.raises(ValueError, match="forget_bias needs use_bias=True"):
        lstm.init(jax.random.key(1), 3, 5, use_bias=False, forget_bias=1.0)


def test_errors_name_expected_and_received():
    params = lstm.init(jax.random.key(0), 10, 20)
    carry = lstm.initial_state(20, (3,))
    with pytest.raises(ShapeError, match=r"input x must have shape .*\(3, 10\); got \(3, 7\)"):
        lstm.step(params, carry, jnp.ones((3, 7)))
    with pytest.raises(ShapeError, match=r"carry.h must have shape .*\(2, 20\); got \(3, 20\)"):
        lstm.step(params, carry, jnp.ones((2, 10)))
    with pytest.raises(DTypeError, match="int32"):
        lstm.step(params, carry, jnp.ones((3, 10), jnp.int32))
    with pytest.raises(TypeError, match="expects LSTMParams; got GRUParams"):
        lstm.step(gru.init(jax.random.key(0), 10, 20), carry, jnp.ones((3, 10)))
    bad = params._replace(U=params.U[:, :10, :5])  # H disagrees with W
    with pytest.raises(ShapeError, match=r"U \(input weights.*got \(4, 10, 5\)"):
        lstm.step(bad, carry, jnp.ones((3, 5)))
    with pytest.raises(ShapeError, match=r"b \(bias"):
        lstm.step(params._replace(b=params.b[:3]), carry, jnp.ones((3, 10)))
    with pytest.raises(DTypeError, match="carry.h must have dtype float32.*the state stays float32"):
        lstm.step(lstm.init(jax.random.key(0), 10, 20, dtype=jnp.bfloat16), lstm.initial_state(20, (3,), jnp.bfloat16),
                  jnp.ones((3, 10)))
