"""minGRU against the paper's equations written out in NumPy, and its log-space coefficients."""

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import scan
from rnn_jax.cells import mingru

E, H = 3, 4


def numpy_mingru(params, h, xs):
    """Feng et al. 2024, minGRU with g: z = σ(U_z x + b_z), h̃ = g(U_h x + b_h), h = (1 − z) h + z h̃."""
    U, b = np.asarray(params.U, np.float64), np.asarray(params.b, np.float64)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    g = lambda v: np.where(v >= 0, v + 0.5, sigmoid(v))
    outputs = []
    for x in np.asarray(xs, np.float64).swapaxes(0, 1):
        z = sigmoid(x @ U[0].T + b[0])
        h = (1 - z) * h + z * g(x @ U[1].T + b[1])
        outputs.append(h)
    return h, np.stack(outputs, 1)


def test_matches_the_papers_equations():
    params = mingru.init(jax.random.key(0), E, H)
    xs = 2 * jax.random.normal(jax.random.key(1), (2, 6, E))
    h0 = np.full((2, H), 0.25)
    final, hs = scan(mingru, params, mingru.initial_state(H, (2,))._replace(h=jnp.asarray(h0, jnp.float32)), xs)
    want_final, want_hs = numpy_mingru(params, h0, xs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h, want_final, rtol=1e-5, atol=1e-6)
    assert bool((hs > 0).all())  # g keeps the state positive, which the log-space form needs


def test_log_coefficients_are_the_logs_of_the_coefficients():
    params = mingru.init(jax.random.key(0), E, H)
    projected = mingru.project_inputs(params, 5 * jax.random.normal(jax.random.key(2), (50, E)))
    a, b = mingru.linear.coefficients(params, projected)
    log_a, log_b = mingru.linear.log_coefficients(params, projected)
    np.testing.assert_allclose(jnp.exp(log_a), a, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(log_b), b, rtol=1e-5)
