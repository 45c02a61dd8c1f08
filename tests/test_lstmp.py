"""LSTMP: shapes, errors, and the LSTM it reduces to when the projection is the identity on H units."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import LSTMPCell, ShapeError, Stacked, lstm, scan


def test_shapes_and_stack_sizes():
    cell = LSTMPCell(proj_size=3)
    params = cell.init(jax.random.key(0), 5, 8)
    assert params.W.shape == (4, 8, 3) and params.U.shape == (4, 8, 5) and params.W_p.shape == (3, 8)
    deep = Stacked(cell, 2)
    layers = deep.init(jax.random.key(1), 5, 8)
    assert layers[1].U.shape == (4, 8, 3)  # layer 2 reads the projected output
    carry, hs = scan(deep.step, layers, deep.initial_state(8, (2,)), jnp.ones((2, 4, 5)))
    assert hs.shape == (2, 4, 3) and carry[0].c.shape == (2, 8)
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        LSTMPCell(8).init(jax.random.key(0), 5, 8)
    with pytest.raises(ShapeError, match=r"carry.h must have shape .*\(2, 3\); got \(2, 8\)"):
        cell.step(params, lstm.initial_state(8, (2,)), jnp.ones((2, 5)))


def test_identity_projection_keeps_the_lstm_output():
    # With P = H - 1 and W_p selecting the first P units, h_t is the LSTM's h_t cut to P units, when the LSTM's
    # recurrent weights ignore the dropped unit.
    cell = LSTMPCell(proj_size=3)
    params = cell.init(jax.random.key(0), 2, 4)
    W_full = jnp.concatenate([params.W, jnp.zeros((4, 4, 1))], axis=-1)
    reference = lstm.LSTMParams(W=W_full, U=params.U, b=params.b)
    params = params._replace(W_p=jnp.eye(4)[:3])
    xs = jax.random.normal(jax.random.key(1), (2, 6, 2))
    _, hs = scan(cell.step, params, cell.initial_state(4, (2,)), xs)
    _, want = scan(lstm.step, reference, lstm.initial_state(4, (2,)), xs)
    np.testing.assert_allclose(hs, want[..., :3], rtol=1e-5, atol=1e-6)
