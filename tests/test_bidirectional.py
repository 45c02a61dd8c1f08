"""Bidirectional runs against two independent runs, with padding, and the learnable initial state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CELL_CASES
from rnn_jax import carry as carry_lib
from rnn_jax import gru, lstm, scan
from rnn_jax.bidirectional import Bidirectional

B, T, E, H = 3, 5, 2, 4


@pytest.mark.parametrize("cell, opts", CELL_CASES[:4])
def test_matches_a_forward_and_a_reversed_run_with_padding(cell, opts):
    bi = Bidirectional(cell)
    params = bi.init(jax.random.key(0), E, H, **opts)
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    lengths = np.array([T, 2, 4])
    final, hs = bi(params, bi.initial_state(H, (B,)), xs, seq_lengths=jnp.asarray(lengths))
    for b, n in enumerate(lengths):  # oracle: each sequence cut to its length, run both ways
        init = cell.initial_state(H)
        _, forward = scan(cell.step, params.forward, init, xs[b, :n])
        _, backward = scan(cell.step, params.backward, init, xs[b, :n][::-1])
        np.testing.assert_allclose(hs[b, :n], jnp.concatenate([forward, backward[::-1]], -1), rtol=2e-5, atol=3e-6)
        assert np.all(np.asarray(hs[b, n:]) == 0)


def test_sum_and_custom_merge_and_errors():
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    concat = Bidirectional(gru)
    params = concat.init(jax.random.key(0), E, H)
    carry = concat.initial_state(H, (B,))
    _, both = concat(params, carry, xs)
    _, summed = Bidirectional(gru, merge="sum")(params, carry, xs)
    _, product = Bidirectional(gru, merge=lambda f, b: f * b)(params, carry, xs)
    np.testing.assert_allclose(summed, both[..., :H] + both[..., H:], rtol=1e-6)
    np.testing.assert_allclose(product, both[..., :H] * both[..., H:], rtol=1e-6)
    with pytest.raises(ValueError, match="merge must be one of"):
        Bidirectional(gru, merge="max")
    with pytest.raises(ValueError, match="do not pass reverse"):
        concat(params, carry, xs, reverse=True)
    with pytest.raises(TypeError, match="needs BidirectionalParams"):
        concat(params.forward, carry, xs)


def test_learnable_initial_state_gets_gradients():
    params = lstm.init(jax.random.key(0), E, H)
    learned = carry_lib.learnable_state(lstm, H)
    assert learned.h.shape == (H,)
    xs = jax.random.normal(jax.random.key(1), (B, T, E))

    def loss(state):
        _, hs = scan(lstm.step, params, carry_lib.broadcast_state(state, (B,)), xs)
        return jnp.sum(hs)

    grads = jax.grad(loss)(learned)
    assert grads.h.shape == (H,) and float(jnp.abs(grads.h).sum()) > 0 and float(jnp.abs(grads.c).sum()) > 0
