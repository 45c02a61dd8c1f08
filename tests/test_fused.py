"""fused_scan: the hand-written backward equals autodiff of the reference runner, in float64, for every fusable cell;
everything else falls back to hoisted_scan with the same results; prefetch_scan equals lax.scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import cell_cases_with_variants_slow
from rnn_jax import ShapeError, elman, fused_scan, gru, hoisted_scan, lstm, output_size, scan
from rnn_jax.fused import prefetch_scan

E, H = 4, 5
FUSABLE = [pytest.param(lstm, {}, id="lstm"), pytest.param(gru, {"reset_after": True}, id="gru_reset_after"),
           pytest.param(elman, {}, id="elman")]


def problem(cell, opts, batch_shape=(3,), T=6, dtype=jnp.float64, seed=0):
    params = cell.init(jax.random.key(seed), E, H, dtype=dtype, **opts)
    carry = jax.tree.map(lambda a: a + 0.3, cell.initial_state(H, batch_shape, dtype))
    xs = jax.random.normal(jax.random.key(seed + 1), batch_shape + (T, E), dtype)
    return params, carry, xs


def loss_and_grads(runner, cell, params, carry, xs, **kwargs):
    """A loss that reads every output and the final carry, so every cotangent path is exercised."""
    weights = jax.random.normal(jax.random.key(7), xs.shape[:-1] + (output_size(cell, H),), xs.dtype)

    def loss(p, c, x):
        final, hs = runner(cell, p, c, x, **kwargs)
        return jnp.vdot(hs, weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, carry, xs)


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol), a, b)


def _combinations():
    """Every cell x bias x direction; by default each cell runs two of them, covering both values of each option."""
    for index, case in enumerate(FUSABLE):
        for use_bias in (True, False):
            for reverse in (False, True):
                default = (use_bias != reverse) if index % 2 == 0 else (use_bias == reverse)
                yield pytest.param(*case.values, use_bias, reverse, id=f"{case.id}-bias{use_bias}-reverse{reverse}",
                                   marks=() if default else pytest.mark.slow)


@pytest.mark.parametrize("cell, opts, use_bias, reverse", _combinations())
def test_values_and_gradients_equal_the_reference(cell, opts, use_bias, reverse, x64):
    params, carry, xs = problem(cell, {**opts, "use_bias": use_bias})
    fused = loss_and_grads(fused_scan, cell, params, carry, xs, reverse=reverse)
    reference = loss_and_grads(hoisted_scan, cell, params, carry, xs, reverse=reverse)
    assert_trees_close(fused, reference)


@pytest.mark.parametrize("cell, opts", FUSABLE)
def test_the_fused_path_is_taken(cell, opts):
    """The sequence really runs through the custom VJP (a fallback would pass the equality tests trivially)."""
    params, carry, xs = problem(cell, opts, dtype=jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda p: fused_scan(cell, p, carry, xs))(params))
    assert "custom_vjp_call" in jaxpr


@pytest.mark.parametrize("batch_shape, unroll", [((), 1), ((2, 3), 3), pytest.param((), 3, marks=pytest.mark.slow),
                                                pytest.param((2, 3), True, marks=pytest.mark.slow)])
def test_batch_shapes_unroll_and_time_major(batch_shape, unroll, x64):
    params, carry, xs = problem(lstm, {}, batch_shape=batch_shape)
    reference = loss_and_grads(hoisted_scan, lstm, params, carry, xs)
    assert_trees_close(loss_and_grads(fused_scan, lstm, params, carry, xs, unroll=unroll), reference)
    xs_tm = jnp.moveaxis(xs, -2, 0)
    final, hs = fused_scan(lstm, params, carry, xs_tm, time_major=True, unroll=unroll)
    want_final, want_hs = hoisted_scan(lstm, params, carry, xs)
    assert_trees_close((final, jnp.moveaxis(hs, 0, -2)), (want_final, want_hs))


def test_single_step_and_jit(x64):
    params, carry, xs = problem(gru, {"reset_after": True}, T=1)
    reference = loss_and_grads(hoisted_scan, gru, params, carry, xs)
    assert_trees_close(jax.jit(lambda *a: loss_and_grads(fused_scan, gru, *a))(params, carry, xs), reference)


@pytest.mark.parametrize("cell, opts", cell_cases_with_variants_slow())
def test_every_cell_gives_the_reference_result(cell, opts):
    """Non-fusable cells (and the notes' GRU form) fall back; all give hoisted_scan's values and gradients."""
    params = cell.init(jax.random.key(0), E, H, **opts)
    carry = jax.tree.map(lambda a: a + 0.2, cell.initial_state(H, (3,)))
    xs = jax.random.normal(jax.random.key(1), (3, 6, E))
    fused = loss_and_grads(fused_scan, cell, params, carry, xs)
    reference = loss_and_grads(hoisted_scan, cell, params, carry, xs)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=3e-5), fused, reference)


def test_flags_and_remat_fall_back_with_the_same_results():
    params, carry, xs = problem(lstm, {}, dtype=jnp.float32)
    lengths = jnp.array([6, 2, 0])
    for kwargs in ({"seq_lengths": lengths}, {"mask": jnp.ones((3, 6), bool).at[1, 3].set(False)},
                   {"resets": jnp.zeros((3, 6), bool).at[0, 2].set(True)}, {"remat": 2}):
        assert_trees_close(fused_scan(lstm, params, carry, xs, **kwargs), hoisted_scan(lstm, params, carry, xs, **kwargs),
                           rtol=1e-6, atol=1e-6)


def test_bfloat16_parameters_keep_float32_state():
    params, carry, xs = problem(lstm, {}, dtype=jnp.float32)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    final, hs = fused_scan(lstm, params, carry, xs, native=False)
    assert hs.dtype == jnp.float32 and final.c.dtype == jnp.float32
    want_final, want = hoisted_scan(lstm, params, carry, xs)  # the same bf16 products, step by step
    np.testing.assert_allclose(hs, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final.c, want_final.c, rtol=1e-5, atol=1e-5)
    loss = lambda run: (lambda p: (run(lstm, p, carry, xs)[1] ** 2).sum())
    grads = jax.grad(loss(lambda *a: fused_scan(*a, native=False)))(params)
    want_grads = jax.grad(loss(hoisted_scan))(params)
    assert grads.W.dtype == jnp.bfloat16
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32), rtol=2e-2,
                                   atol=2e-2 * float(np.abs(np.asarray(expected, np.float32)).max()))


def test_bad_inputs_get_the_cells_errors():
    params, carry, xs = problem(lstm, {}, dtype=jnp.float32)
    with pytest.raises(ShapeError, match=r"LSTM input x must have shape"):
        fused_scan(lstm, params, carry, xs[..., :3])
    with pytest.raises(ShapeError, match=r"LSTM carry.h must have shape"):
        fused_scan(lstm, params, lstm.initial_state(H, (4,)), xs)
    with pytest.raises(TypeError, match=r"lstm\.\w+ expects LSTMParams; got GRUResetAfterParams"):
        fused_scan(lstm, gru.init(jax.random.key(0), E, H, reset_after=True), carry, xs)
    with pytest.raises(ShapeError, match=r"at least rank 2"):
        fused_scan(lstm, params, carry, xs[0, 0])


@pytest.mark.parametrize("reverse", [False, True])
def test_prefetch_scan_equals_lax_scan(reverse):
    xs = (jnp.arange(12.0).reshape(6, 2), jnp.arange(6))
    body = lambda c, x: (c * 0.5 + x[0].sum() + x[1], (c, x[0] * 2))
    got = prefetch_scan(body, jnp.float32(1.0), xs, reverse=reverse, unroll=2)
    want = jax.lax.scan(body, jnp.float32(1.0), xs, reverse=reverse)
    assert_trees_close(got, want, rtol=0, atol=0)


def test_equals_plain_scan_of_the_step():
    """Against the step function itself (not only hoisted_scan): the same equations, time step by time step."""
    params, carry, xs = problem(gru, {"reset_after": True}, dtype=jnp.float32)
    assert_trees_close(fused_scan(gru, params, carry, xs), scan(gru.step, params, carry, xs), rtol=1e-5, atol=1e-6)
