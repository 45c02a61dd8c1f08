"""RG-LRU against Griffin's equations written out in NumPy, and its initial decays."""

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import scan
from rnn_jax.cells import rglru

E, H = 3, 6


def numpy_rglru(params, h, xs):
    """De et al. 2024: a_t = σ(Λ)^(8 r_t), h_t = a_t h_{t-1} + sqrt(1 − a_t²) (i_t v_t)."""
    U, b, lam = (np.asarray(a, np.float64) for a in (params.U, params.b, params.Lambda))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    outputs = []
    for x in np.asarray(xs, np.float64).swapaxes(0, 1):
        r, i, v = sigmoid(x @ U[0].T + b[0]), sigmoid(x @ U[1].T + b[1]), x @ U[2].T + b[2]
        a = sigmoid(lam) ** (8 * r)
        h = a * h + np.sqrt(1 - a**2) * (i * v)
        outputs.append(h)
    return h, np.stack(outputs, 1)


def test_matches_the_papers_equations():
    params = rglru.init(jax.random.key(0), E, H)
    xs = jax.random.normal(jax.random.key(1), (2, 6, E))
    h0 = np.linspace(-1, 1, 2 * H).reshape(2, H)
    final, hs = scan(rglru, params, rglru.initial_state(H, (2,))._replace(h=jnp.asarray(h0, jnp.float32)), xs)
    want_final, want_hs = numpy_rglru(params, h0, xs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h, want_final, rtol=1e-5, atol=1e-6)


def test_initial_decays_follow_the_paper():
    params = rglru.init(jax.random.key(0), E, 1000)
    a_to_c = np.asarray(jax.nn.sigmoid(params.Lambda), np.float64) ** rglru.C
    assert a_to_c.min() >= 0.9 - 1e-5 and a_to_c.max() <= 0.999 + 1e-5
    assert abs(np.median(a_to_c) - 0.9495) < 0.01  # uniform in [0.9, 0.999]
