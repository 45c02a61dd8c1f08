"""minLSTM against the paper's equations written out in NumPy, and its log-space coefficients."""

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import scan
from rnn_jax.cells import minlstm

E, H = 3, 4


def numpy_minlstm(params, h, xs):
    """Feng et al. 2024: f' = f / (f + i), i' = i / (f + i), h = f' h + i' g(U_h x + b_h)."""
    U, b = np.asarray(params.U, np.float64), np.asarray(params.b, np.float64)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    g = lambda v: np.where(v >= 0, v + 0.5, sigmoid(v))
    outputs = []
    for x in np.asarray(xs, np.float64).swapaxes(0, 1):
        f, i = sigmoid(x @ U[0].T + b[0]), sigmoid(x @ U[1].T + b[1])
        h = f / (f + i) * h + i / (f + i) * g(x @ U[2].T + b[2])
        outputs.append(h)
    return h, np.stack(outputs, 1)


def test_matches_the_papers_equations():
    params = minlstm.init(jax.random.key(0), E, H)
    xs = 2 * jax.random.normal(jax.random.key(1), (2, 6, E))
    h0 = np.full((2, H), -0.5)
    final, hs = scan(minlstm, params, minlstm.initial_state(H, (2,))._replace(h=jnp.asarray(h0, jnp.float32)), xs)
    want_final, want_hs = numpy_minlstm(params, h0, xs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h, want_final, rtol=1e-5, atol=1e-6)


def test_gates_sum_to_one_and_log_coefficients_match():
    params = minlstm.init(jax.random.key(0), E, H)
    projected = minlstm.project_inputs(params, 5 * jax.random.normal(jax.random.key(2), (50, E)))
    a, b = minlstm.linear.coefficients(params, projected)
    log_a, log_b = minlstm.linear.log_coefficients(params, projected)
    i_normalised = jnp.exp(log_b) / jnp.where(projected[:, 2] >= 0, projected[:, 2] + 0.5,
                                               jax.nn.sigmoid(projected[:, 2]))
    np.testing.assert_allclose(a + i_normalised, 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(log_a), a, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(log_b), b, rtol=1e-5)
