"""The cuDNN path's weight layout and layer, checked on any backend through `jax.experimental.rnn.lstm_ref` (cuDNN's
signature in pure JAX) against `fused_scan`'s XLA loop; `fused_scan` hands a layer to a spec's library loop where
it applies and the native policy allows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import fused_scan, lstm
from rnn_jax.cells._common import Cell
from rnn_jax.kernels import cudnn

B, T, E, H = 3, 6, 5, 4


def problem(use_bias=True):
    params = lstm.init(jax.random.key(0), E, H, use_bias=use_bias)
    carry = jax.tree.map(lambda a: a + 0.3, lstm.initial_state(H, (B,)))
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    return params, carry, xs


def loss(run):
    weights = jax.random.normal(jax.random.key(2), (B, T, H))
    return lambda p, c, x: (run(p, c, x)[1] * weights).sum() + sum(leaf.sum() for leaf in run(p, c, x)[0])


@pytest.mark.parametrize("use_bias", [True, False])
def test_the_packed_layer_equals_the_xla_loop_in_values_and_gradients(use_bias):
    params, carry, xs = problem(use_bias)
    assert cudnn.packed_weights(params).shape == (4 * H * (E + H) + 8 * H,)  # W_ih, W_hh, b_ih, b_hh
    library = lambda p, c, x: cudnn.lstm_layer(p, c, x, lstm_fn=cudnn.reference_lstm)
    xla = lambda p, c, x: fused_scan(lstm, p, c, x, native=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), library(params, carry, xs),
                 xla(params, carry, xs))
    got = jax.grad(loss(library), argnums=(0, 1, 2))(params, carry, xs)
    want = jax.grad(loss(xla), argnums=(0, 1, 2))(params, carry, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)


@pytest.mark.parametrize("reverse, time_major", [(True, False), (False, True), (True, True)])
def test_layout_options(reverse, time_major):
    params, carry, xs = problem()
    xs = jnp.swapaxes(xs, 0, 1) if time_major else xs
    got = cudnn.run(params, carry, xs, reverse=reverse, time_major=time_major, lstm_fn=cudnn.reference_lstm)
    want = fused_scan(lstm, params, carry, xs, reverse=reverse, time_major=time_major, native=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def test_where_cudnn_applies():
    params, carry, xs = problem()
    assert not cudnn.applies(params, carry, xs, backend="cpu")
    assert cudnn.applies(params, carry, xs, backend="gpu")
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    assert not cudnn.applies(bf16, carry, xs, backend="gpu")  # cuDNN's LSTM here: float32 only
    assert not cudnn.applies(params, lstm.initial_state(H, (2, B)), xs[None].repeat(2, 0), backend="gpu")


def test_fused_scan_hands_the_layer_to_the_library_under_the_native_policy():
    calls = []

    def run(params, carry, xs, **options):
        calls.append(options)
        return cudnn.run(params, carry, xs, lstm_fn=cudnn.reference_lstm, **options)

    library = cudnn.LibraryLoop(applies=lambda params, carry, xs: True, run=run)
    cell = Cell("lstm_with_a_library", init=lstm.init, initial_state=lstm.initial_state, step=lstm.step,
                project_inputs=lstm.project_inputs, step_projected=lstm.step_projected,
                fused=lstm.fused._replace(library=library))
    params, carry, xs = problem()
    got = fused_scan(cell, params, carry, xs, reverse=True)
    assert calls == [{"reverse": True, "time_major": False}]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got,
                 fused_scan(lstm, params, carry, xs, reverse=True, native=False))
    fused_scan(cell, params, carry, xs, native=False)  # the policy's switch turns the library off too
    assert len(calls) == 1
