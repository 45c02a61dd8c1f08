"""The precision policy: 16-bit product operands with float32 sums, float32 state; checked against float32
references computed on bf16-rounded operands (hand-written LSTM and GRU steps from the notes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CELL_CASES
from rnn_jax import fused_scan, gru, kernels, lstm, precision, scan
from rnn_jax.errors import ConfigError
from rnn_jax.kernels import _build

E, H, B = 6, 8, 3


def rounded(a):
    """a rounded to bf16 and back: the value a bf16 operand holds, in float32."""
    return np.asarray(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_products_take_16_bit_operands_and_sum_in_float32():
    a = jax.random.normal(jax.random.key(0), (5, 300))
    b = jax.random.normal(jax.random.key(1), (300, 7))
    assert precision.matmul(a, b).dtype == jnp.float32
    np.testing.assert_array_equal(precision.matmul(a, b), a @ b)  # float32 operands: the plain product
    got = precision.matmul(a, b.astype(jnp.bfloat16))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, rounded(a) @ rounded(b), rtol=1e-5, atol=1e-5)
    # summing 300 products in bf16 would be off by ~1e-1; float32 sums stay at float32 rounding
    got = precision.einsum("ik,kj->ij", a.astype(jnp.bfloat16), b)
    np.testing.assert_allclose(got, rounded(a) @ rounded(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, i, j", [(300, 5, 7), (64, 48, 16), (37, 9, 130)])
def test_the_transposed_product_is_a_16_bit_product_with_float32_sums(rows, i, j):
    a = jax.random.normal(jax.random.key(0), (rows, i))
    b = jax.random.normal(jax.random.key(1), (rows, j))
    np.testing.assert_allclose(precision.transposed_product(a, b), a.T @ b, rtol=1e-5, atol=1e-5)
    product = jax.jit(precision.transposed_product)
    got = product(a.astype(jnp.bfloat16), b)
    assert got.dtype == jnp.float32 and got.shape == (i, j)
    want = rounded(a).astype(np.float64).T @ rounded(b).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    if jax.default_backend() == "cpu":  # XLA:CPU widens 16-bit operands of a^T b to float32 unless they are in place
        compiled = product.lower(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)).compile().as_text()
        entry = compiled[compiled.index("ENTRY"):]
        widened = [f"f32[{rows},{i}]", f"f32[{i},{rows}]", f"f32[{rows},{j}]"]
        assert not any(shape in entry for shape in widened), entry
    stacked = jnp.stack([a, 2 * a]).astype(jnp.bfloat16), jnp.stack([b, b]).astype(jnp.bfloat16)
    np.testing.assert_allclose(jax.jit(jax.vmap(precision.transposed_product))(*stacked),
                               jnp.stack([want, 2 * want]), rtol=1e-5, atol=2e-4)


def test_the_policy_casts_floating_leaves_only():
    policy = precision.get("bfloat16")
    tree = {"w": jnp.ones((2, 2)), "ids": jnp.arange(3), "none": None}
    cast = policy.cast_to_compute(tree)
    assert cast["w"].dtype == jnp.bfloat16 and cast["ids"].dtype == jnp.int32 and cast["none"] is None
    assert precision.get("float32").cast_to_compute(tree) is tree
    assert precision.state_dtype(jnp.bfloat16) == jnp.float32 and precision.state_dtype(jnp.float64) == jnp.float64
    # gradients reach the float32 parameters in float32
    grad = jax.grad(lambda w: precision.matmul(jnp.ones((1, 2)), policy.cast_to_compute(w)).sum())(jnp.ones((2, 3)))
    assert grad.dtype == jnp.float32


@pytest.mark.parametrize("compute, param, message", [
    ("float16", "float32", "needs loss scaling"),
    ("int8", "float32", "must be one of float32, bfloat16"),
    ("float32", "bfloat16", "narrower than the compute dtype"),
])
def test_bad_policies_are_refused_with_the_fix(compute, param, message):
    with pytest.raises(ConfigError, match=message):
        precision.get(compute, param)


def lstm_reference(params, x, h, c):
    """The notes' LSTM step in float64 from bf16-rounded products' operands (x, h, U, W) and a float32 state."""
    U, W, b = (rounded(a).astype(np.float64) for a in (params.U, params.W, params.b))
    pre = np.einsum("be,ghe->bgh", rounded(x), U) + np.einsum("bk,ghk->bgh", rounded(h), W) + b
    i, f, o, g = sigmoid(pre[:, 0]), sigmoid(pre[:, 1]), sigmoid(pre[:, 2]), np.tanh(pre[:, 3])
    c = f * c + i * g
    return o * np.tanh(c), c


def gru_reference(params, x, h):
    """The notes' GRU step (reset before the product) with bf16-rounded operands of every product."""
    U, W, b = (rounded(a).astype(np.float64) for a in (params.U, params.W, params.b))
    ux = np.einsum("be,ghe->bgh", rounded(x), U) + b
    r = sigmoid(ux[:, 0] + rounded(h) @ W[0].T)
    u = sigmoid(ux[:, 1] + rounded(h) @ W[1].T)
    g = np.tanh(ux[:, 2] + rounded(r * h) @ W[2].T)
    return u * g + (1 - u) * h


def test_lstm_and_gru_steps_equal_float32_math_on_rounded_operands():
    x = jax.random.normal(jax.random.key(2), (B, E))
    h0 = 0.5 * jax.random.normal(jax.random.key(3), (B, H))
    c0 = jax.random.normal(jax.random.key(4), (B, H))
    params = precision.get("bfloat16").cast_to_compute(lstm.init(jax.random.key(0), E, H))
    carry, h = lstm.step(params, lstm.LSTMState(h=h0, c=c0), x)
    want_h, want_c = lstm_reference(params, np.asarray(x), np.asarray(h0), np.asarray(c0))
    assert carry.c.dtype == h.dtype == jnp.float32
    np.testing.assert_allclose(h, want_h, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(carry.c, want_c, rtol=2e-6, atol=2e-6)
    params = precision.get("bfloat16").cast_to_compute(gru.init(jax.random.key(1), E, H))
    _, h = gru.step(params, gru.initial_state(H, (B,))._replace(h=h0), x)
    np.testing.assert_allclose(h, gru_reference(params, np.asarray(x), np.asarray(h0)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_every_cell_in_bf16_stays_near_float32(cell, opts):
    params = cell.init(jax.random.key(0), E, H, **opts)
    xs = jax.random.normal(jax.random.key(1), (B, 7, E))
    carry = cell.initial_state(H, (B,))
    _, want = scan(cell.step, params, carry, xs)
    final, hs = scan(cell.step, precision.get("bfloat16").cast_to_compute(params), carry, xs)
    assert hs.dtype == jnp.float32 and {leaf.dtype for leaf in jax.tree.leaves(final)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(hs, want, atol=3e-2)


NATIVE = pytest.mark.skipif(not kernels.available(), reason="native kernels unavailable here (no C++ compiler, "
                            "RNN_JAX_NATIVE=0, or not the CPU backend)")
BF16_DOT = pytest.mark.skipif("avx512_bf16" not in _build.cpu_flags().split(),
                              reason="this CPU has no AVX512-BF16 dot products")


@NATIVE
@pytest.mark.parametrize("hidden", [8, 66, pytest.param(80, marks=pytest.mark.slow)])
@pytest.mark.parametrize("cell, opts", [(lstm, {}), (gru, {"reset_after": True})], ids=["lstm", "gru_reset_after"])
def test_the_native_loop_with_bf16_weights_matches_the_xla_loop(cell, opts, hidden):
    params = precision.get("bfloat16").cast_to_compute(cell.init(jax.random.key(0), E, hidden, **opts))
    carry = jax.tree.map(lambda a: a + 0.2, cell.initial_state(hidden, (B,)))
    xs = jax.random.normal(jax.random.key(1), (B, 9, E))

    def loss(p, native):
        final, hs = fused_scan(cell, p, carry, xs, native=native)
        return (hs ** 2).sum() + sum(leaf.sum() for leaf in jax.tree.leaves(final)), hs

    (value, hs), grads = jax.value_and_grad(loss, has_aux=True)(params, None)
    (want_value, want_hs), want_grads = jax.value_and_grad(loss, has_aux=True)(params, False)
    if _build.bf16_dot_products(hidden):
        # bf16 operands with float32 sums, h and d_rec rounded where they enter: the XLA loop's math exactly
        tolerance, gradient_tolerance = dict(rtol=1e-5, atol=1e-5), 1e-2  # gradients: bf16, one rounding apart
    else:
        # float32 products of the bf16 weights; the XLA loop rounds h to bf16 first: bf16 rounding apart
        tolerance, gradient_tolerance = dict(rtol=1e-2, atol=2e-2), 3e-2
    np.testing.assert_allclose(hs, want_hs, **tolerance)
    np.testing.assert_allclose(value, want_value, rtol=tolerance["rtol"])
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        assert got.dtype == want.dtype == jnp.bfloat16
        scale = float(np.abs(np.asarray(want, np.float32)).max())
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   atol=gradient_tolerance * scale)


def lstm_loop_reference(projected, W, h0, c0, hs, cs):
    """Each step of the LSTM loop in float64 from the loop's own previous state (h rounded to bf16 where it enters
    the product with the bf16-rounded W): (hs, cs). Stepping from the loop's float32 states keeps an h that lies on
    a bf16 rounding boundary from rounding differently here than in the loop."""
    W = rounded(W).astype(np.float64)
    h_prev = np.concatenate([np.asarray(h0)[None], np.asarray(hs)[:-1]]).astype(np.float64)
    c_prev = np.concatenate([np.asarray(c0)[None], np.asarray(cs)[:-1]]).astype(np.float64)
    pre = np.asarray(projected, np.float64) + np.einsum("tbk,gk->tbg", rounded(h_prev), W)
    i, f, o, g = np.split(pre, 4, axis=-1)
    c = sigmoid(f) * c_prev + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


@NATIVE
@BF16_DOT
@pytest.mark.parametrize("hidden", [2, 34, 64])
def test_the_bf16_dot_product_loop_equals_float64_math_on_rounded_operands(hidden):
    steps, batch = 6, 5
    projected = jax.random.normal(jax.random.key(0), (steps, batch, 4 * hidden))
    W = 0.5 * jax.random.normal(jax.random.key(1), (4 * hidden, hidden))
    h0, c0 = (0.5 * jax.random.normal(jax.random.key(k), (batch, hidden)) for k in (2, 3))
    hs, cs, _ = kernels.lstm_forward(projected, W, h0, c0, bf16_products=True)
    want_hs, want_cs = lstm_loop_reference(projected, W, h0, c0, hs, cs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cs, want_cs, rtol=1e-5, atol=1e-5)
    # float32 operands differ from this reference by bf16 rounding
    hs32, cs32, _ = kernels.lstm_forward(projected, W, h0, c0)
    assert np.abs(np.asarray(hs32) - lstm_loop_reference(projected, W, h0, c0, hs32, cs32)[0]).max() > 1e-4


@NATIVE
@BF16_DOT
def test_the_bf16_dot_product_loop_refuses_an_odd_hidden_size():
    with pytest.raises(Exception, match="even hidden size"):
        kernels.lstm_forward(jnp.zeros((2, 1, 12)), jnp.zeros((12, 3)), jnp.zeros((1, 3)), jnp.zeros((1, 3)),
                             bf16_products=True)


def test_bf16_dot_products_where_they_pay(monkeypatch):
    for flags, hidden, want in (("flags : avx512f avx512_bf16", 256, True),
                                ("flags : avx512f avx512_bf16 amx_bf16 amx_tile", 256, False),
                                ("flags : avx512f", 256, False), ("flags : avx512f avx512_bf16", 255, False),
                                ("flags : avx512f avx512_bf16", 64, True), ("flags : avx512f avx512_bf16", 62, False)):
        monkeypatch.setattr(_build, "cpu_flags", lambda flags=flags: flags)
        assert _build.bf16_dot_products(hidden) is want
