"""Initialisation schemes: bounds, orthogonality per gate, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import gru, initializers, lstm


def test_pytorch_default_bound():
    params = lstm.init(jax.random.key(0), 7, 16)
    bound = 1 / math.sqrt(16)
    for leaf in jax.tree.leaves(params):
        a = np.asarray(leaf)
        assert np.all(np.abs(a) <= bound) and np.abs(a).max() > 0.8 * bound


@pytest.mark.parametrize("scale", [0.1, 0.05, 0.04])
def test_zaremba_uniform_scales(scale):
    params = gru.init(jax.random.key(0), 30, 30, initializer="uniform", init_scale=scale)
    a = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(params)])
    assert np.all(np.abs(a) <= scale) and np.abs(a).max() > 0.95 * scale
    assert abs(a.mean()) < 0.1 * scale


def test_orthogonal_recurrent_weights_per_gate():
    params = lstm.init(jax.random.key(0), 5, 8, initializer="orthogonal")
    for W in np.asarray(params.W):
        np.testing.assert_allclose(W @ W.T, np.eye(8), atol=1e-5)
    assert not np.allclose(params.W[0], params.W[1])  # each gate gets its own matrix
    np.testing.assert_array_equal(params.b, 0)


def test_custom_scheme_and_errors():
    scheme = initializers.InitScheme(input=jax.nn.initializers.ones, recurrent=jax.nn.initializers.zeros,
                                     bias=jax.nn.initializers.zeros)
    params = lstm.init(jax.random.key(0), 2, 3, initializer=scheme)
    np.testing.assert_array_equal(params.U, 1)
    with pytest.raises(ValueError, match="needs init_scale"):
        lstm.init(jax.random.key(0), 2, 3, initializer="uniform")
    with pytest.raises(ValueError, match="only used with initializer='uniform'"):
        lstm.init(jax.random.key(0), 2, 3, init_scale=0.1)
    with pytest.raises(ValueError, match="unknown initializer 'xavier'"):
        lstm.init(jax.random.key(0), 2, 3, initializer="xavier")
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        initializers.uniform(0.0)


def test_dtype_is_honoured():
    params = lstm.init(jax.random.key(0), 2, 3, dtype=jnp.bfloat16, initializer="orthogonal")
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
