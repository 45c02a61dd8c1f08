"""sLSTM against xLSTM's equations written out in NumPy (block-diagonal heads, exponential input gate, stabiliser),
and its fused path against scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import fused_scan, runners, scan
from rnn_jax.cells import slstm

E, H, HEADS = 3, 6, 2


def numpy_slstm(params, state, xs, stabilised=True):
    """Beck et al. 2024, sLSTM with a sigmoid forget gate; stabilised=False runs the raw exp(ĩ) form."""
    W, U, b = (np.asarray(a, np.float64) for a in (params.W, params.U, params.b))
    R = np.zeros((4, H, H))  # the block-diagonal matrix written out
    size = H // HEADS
    for n in range(HEADS):
        R[:, n * size:(n + 1) * size, n * size:(n + 1) * size] = W[:, n]
    h, c, n_, m = (np.asarray(a, np.float64) for a in state)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    outputs = []
    for x in np.asarray(xs, np.float64).swapaxes(0, 1):
        pre = [x @ U[k].T + h @ R[k].T + b[k] for k in range(4)]
        f = sigmoid(pre[1])
        if stabilised:
            m_new = np.maximum(np.log(f) + m, pre[0])
            i, f = np.exp(pre[0] - m_new), np.exp(np.log(f) + m - m_new)
            m = m_new
        else:
            i = np.exp(pre[0])
        c = f * c + i * np.tanh(pre[3])
        n_ = f * n_ + i
        h = sigmoid(pre[2]) * c / n_
        outputs.append(h)
    return (h, c, n_, m), np.stack(outputs, 1)


def setup(scale=1.0):
    params = slstm.init(jax.random.key(0), E, H, num_heads=HEADS)
    params = params._replace(b=params.b.at[1].add(2.0))
    xs = scale * jax.random.normal(jax.random.key(1), (2, 6, E))
    carry = slstm.initial_state(H, (2,))
    return params, carry, xs


def test_matches_the_papers_equations():
    params, carry, xs = setup()
    final, hs = scan(slstm, params, carry, xs)
    want_final, want_hs = numpy_slstm(params, carry, xs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-6)
    for got, want in zip(final, want_final):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The stabiliser changes nothing but the scale of c and n: h equals the raw exponential form's.
    np.testing.assert_allclose(hs, numpy_slstm(params, carry, xs, stabilised=False)[1], rtol=1e-5, atol=1e-6)


def test_the_stabiliser_keeps_huge_input_gates_finite():
    params, carry, xs = setup()
    params = params._replace(b=params.b.at[0].add(200.0))  # exp(200) overflows float32
    final, hs = scan(slstm, params, carry, xs)
    assert bool(jnp.isfinite(hs).all()) and all(bool(jnp.isfinite(leaf).all()) for leaf in final)
    np.testing.assert_allclose(hs, numpy_slstm(params, carry, xs)[1], rtol=1e-4, atol=1e-5)


def test_heads_mix_only_their_own_units():
    params, carry, _ = setup()
    jacobian = jax.jacobian(lambda h: slstm.BLOCK_DIAGONAL.apply(params.W, h))(jnp.ones(H))  # (4H, H)
    size = H // HEADS
    for gate in range(4):
        block = np.asarray(jacobian[gate * H:(gate + 1) * H])
        for row_head in range(HEADS):
            for column_head in range(HEADS):
                part = block[row_head * size:(row_head + 1) * size, column_head * size:(column_head + 1) * size]
                assert (np.abs(part).sum() == 0) == (row_head != column_head)


@pytest.mark.parametrize("reverse", [False, True])
def test_fused_equals_scan_in_values_and_gradients(reverse, monkeypatch):
    # FALLBACKS is per process: other tests in this worker may have recorded sLSTM fallbacks for other options.
    monkeypatch.setattr(runners, "FALLBACKS", {})
    monkeypatch.setattr(runners._fallback, "FALLBACKS", runners.FALLBACKS)
    params, carry, xs = setup()
    carry = jax.tree.map(lambda a: a + 0.2, carry)

    def loss(run):
        def f(params, carry, xs):
            final, hs = run(slstm, params, carry, xs, reverse=reverse)
            return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(leaf**2) for leaf in final)
        return jax.value_and_grad(f, argnums=(0, 1, 2))

    got, want = loss(fused_scan)(params, carry, xs), loss(scan)(params, carry, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, want)
    assert not [key for key in runners.FALLBACKS if key[0].endswith("slstm")]  # the fused path ran


def test_bad_heads_are_refused():
    with pytest.raises(ValueError, match="num_heads must be a positive int dividing hidden_size=6"):
        slstm.init(jax.random.key(0), E, H, num_heads=4)
    assert slstm.init(jax.random.key(0), E, 8).W.shape == (4, 4, 2, 2)  # 4 heads where H allows
