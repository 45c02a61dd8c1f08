"""LRU against the paper's equations written out with NumPy complex numbers, and its ring initialisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import scan
from rnn_jax.cells import lru

E, H = 3, 4


def numpy_lru(params, s, xs):
    """Orvieto et al. 2023: λ = exp(−e^ν + i e^θ), s = λ s + e^γ (B x), h = Re(C s) + D x (+ d)."""
    p = {name: np.asarray(value, np.float64) for name, value in params._asdict().items() if value is not None}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    B, C = p["B"][0] + 1j * p["B"][1], p["C"][0] + 1j * p["C"][1]
    outputs = []
    for x in np.asarray(xs, np.float64).swapaxes(0, 1):
        s = lam * s + np.exp(p["gamma_log"]) * (x @ B.T)
        outputs.append((s @ C.T).real + x @ p["D"].T + p.get("d", 0.0))
    return s, np.stack(outputs, 1)


def test_matches_the_papers_equations():
    params = lru.init(jax.random.key(0), E, H, use_bias=True)
    params = params._replace(d=jnp.arange(H, dtype=jnp.float32) / 10)
    xs = jax.random.normal(jax.random.key(1), (2, 6, E))
    s0 = (np.arange(2 * H).reshape(2, H) - 3.0) / 4 + 0.5j
    carry = lru.LRUState(re=jnp.asarray(s0.real, jnp.float32), im=jnp.asarray(s0.imag, jnp.float32))
    final, hs = scan(lru, params, carry, xs)
    want_final, want_hs = numpy_lru(params, s0, xs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.re + 1j * final.im, want_final, rtol=1e-5, atol=1e-5)


def test_ring_initialisation():
    params = lru.init(jax.random.key(0), E, 2000, r_min=0.5, r_max=0.9, max_phase=math.pi / 4)
    radius = np.exp(-np.exp(np.asarray(params.nu_log, np.float64)))
    phase = np.exp(np.asarray(params.theta_log, np.float64))
    assert radius.min() >= 0.5 - 1e-5 and radius.max() <= 0.9 + 1e-5
    assert phase.min() >= 0 and phase.max() <= math.pi / 4 + 1e-5
    # λ uniform on the ring's area: |λ|² uniform in [r_min², r_max²]
    assert abs(np.mean(radius**2) - (0.25 + 0.81) / 2) < 0.02
    np.testing.assert_allclose(np.exp(2 * np.asarray(params.gamma_log, np.float64)), 1 - radius**2, rtol=1e-4)
