"""GRU cell: the notes' worked example, both forms by hand, init and errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import ShapeError, gru, lstm


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def scalar_params(form, w, u, b, b_rg=0.0):
    W = jnp.array([[[w[g]]] for g in gru.GATES])
    U = jnp.array([[[u[g]]] for g in gru.GATES])
    B = jnp.array([[b[g]] for g in gru.GATES])
    if form == "notes":
        return gru.GRUParams(W=W, U=U, b=B)
    return gru.GRUResetAfterParams(W=W, U=U, b=B, b_rg=jnp.array([b_rg]))


def test_notes_example_update_gate_at_0_8():
    # Update gate pinned at 0.8: W_u = U_u = 0 and b_u = log 4, since σ(log 4) = 4/5.
    w = {"r": 0.3, "u": 0.0, "g": -0.6}
    u = {"r": -0.2, "u": 0.0, "g": 1.1}
    b = {"r": 0.05, "u": math.log(4.0), "g": 0.1}
    params = scalar_params("notes", w, u, b)
    h_prev, x = 0.5, 0.7
    carry, h = gru.step(params, gru.HiddenState(h=jnp.array([h_prev])), jnp.array([x]))
    r = sigmoid(w["r"] * h_prev + u["r"] * x + b["r"])
    g = math.tanh(w["g"] * (r * h_prev) + u["g"] * x + b["g"])
    np.testing.assert_allclose(h, [0.8 * g + 0.2 * h_prev], rtol=1e-6)
    np.testing.assert_allclose(carry.h, h)


def test_hand_computed_forms_differ_exactly_where_the_notes_say():
    w = {"r": 0.4, "u": -0.5, "g": 0.9}
    u = {"r": 0.7, "u": 0.2, "g": -1.3}
    b = {"r": -0.1, "u": 0.3, "g": 0.25}
    b_rg = 0.15
    h_prev, x = -0.4, 0.6
    r = sigmoid(w["r"] * h_prev + u["r"] * x + b["r"])
    upd = sigmoid(w["u"] * h_prev + u["u"] * x + b["u"])
    g_before = math.tanh(w["g"] * (r * h_prev) + u["g"] * x + b["g"])
    g_after = math.tanh(u["g"] * x + b["g"] + r * (w["g"] * h_prev + b_rg))
    carry = gru.HiddenState(h=jnp.array([h_prev]))
    _, h_notes = gru.step(scalar_params("notes", w, u, b), carry, jnp.array([x]))
    _, h_after = gru.step(scalar_params("after", w, u, b, b_rg), carry, jnp.array([x]))
    np.testing.assert_allclose(h_notes, [upd * g_before + (1 - upd) * h_prev], rtol=1e-6)
    np.testing.assert_allclose(h_after, [upd * g_after + (1 - upd) * h_prev], rtol=1e-6)
    assert abs(float(h_notes[0]) - float(h_after[0])) > 1e-3


def test_init_forms_and_shapes():
    notes = gru.init(jax.random.key(0), 6, 4)
    assert isinstance(notes, gru.GRUParams)
    assert notes.W.shape == (3, 4, 4) and notes.U.shape == (3, 4, 6) and notes.b.shape == (3, 4)
    after = gru.init(jax.random.key(0), 6, 4, reset_after=True)
    assert isinstance(after, gru.GRUResetAfterParams) and after.b_rg.shape == (4,)
    bare = gru.init(jax.random.key(0), 6, 4, reset_after=True, use_bias=False)
    assert bare.b is None and bare.b_rg is None


def test_errors():
    params = gru.init(jax.random.key(0), 6, 4)
    with pytest.raises(TypeError, match="expects GRUParams or GRUResetAfterParams; got LSTMParams"):
        gru.step(lstm.init(jax.random.key(0), 6, 4), gru.initial_state(4), jnp.ones(6))
    with pytest.raises(TypeError, match="carry must be a HiddenState"):
        gru.step(params, lstm.initial_state(4), jnp.ones(6))
    with pytest.raises(ShapeError, match=r"W \(recurrent weights.*got \(3, 4, 5\)"):
        gru.step(params._replace(W=jnp.ones((3, 4, 5))), gru.initial_state(4), jnp.ones(6))
    after = gru.init(jax.random.key(0), 6, 4, reset_after=True)
    with pytest.raises(ValueError, match="b and b_rg both present or both None"):
        gru.step(after._replace(b_rg=None), gru.initial_state(4), jnp.ones(6))
