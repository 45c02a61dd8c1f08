"""The cell contract, for every cell: jit = no-jit, fused = plain path, dtypes, batch shapes, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import CELL_CASES, cell_cases_with_variants_slow
from rnn_jax import CELLS, LSTMPCell, get_cell, output_size, scan

E, H = 3, 4


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_jit_equals_no_jit(cell, opts):
    params = cell.init(jax.random.key(0), E, H, **opts)
    carry = cell.initial_state(H, (2,))
    x = jax.random.normal(jax.random.key(1), (2, E))
    eager = cell.step(params, carry, x)
    jitted = jax.jit(cell.step)(params, carry, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), eager, jitted)


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_projected_path_equals_step(cell, opts):
    params = cell.init(jax.random.key(0), E, H, **opts)
    carry = cell.initial_state(H, (2,))
    carry = jax.tree.map(lambda a: a + 0.3, carry)
    x = jax.random.normal(jax.random.key(1), (2, E))
    plain = cell.step(params, carry, x)
    fused = cell.step_projected(params, carry, cell.project_inputs(params, x))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), plain, fused)


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_any_batch_shape(cell, opts, batch_shape):
    params = cell.init(jax.random.key(0), E, H, **opts)
    x = jax.random.normal(jax.random.key(1), batch_shape + (E,))
    carry, h = cell.step(params, cell.initial_state(H, batch_shape), x)
    assert h.shape == batch_shape + (output_size(cell, H),)
    assert all(leaf.shape[:-1] == batch_shape for leaf in jax.tree.leaves(carry))
    if batch_shape == (2, 3):  # each batch element is independent of the others
        _, h_one = cell.step(params, cell.initial_state(H), x[1, 2])
        np.testing.assert_allclose(h[1, 2], h_one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_bf16_params_keep_float32_state_and_outputs(cell, opts):
    params = cell.init(jax.random.key(0), E, H, dtype=jnp.bfloat16, **opts)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
    xs = jax.random.normal(jax.random.key(1), (2, 5, E))  # float32 inputs are cast to bf16 for the products
    final, hs = scan(cell.step, params, cell.initial_state(H, (2,)), xs)
    assert hs.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(final))
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    _, hs32 = scan(cell.step, params32, cell.initial_state(H, (2,)), xs.astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(hs, hs32, atol=2e-2)


@pytest.mark.parametrize("initializer, scale", [("pytorch", None), ("uniform", 0.05), ("orthogonal", None)])
@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_every_initializer_builds_every_cell(cell, opts, initializer, scale):
    params = cell.init(jax.random.key(0), E, H, initializer=initializer, init_scale=scale, **opts)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("cell, opts", cell_cases_with_variants_slow())  # variants: also held to scan's autodiff
def test_gradients_match_finite_differences(cell, opts, x64):
    params = cell.init(jax.random.key(0), E, H, dtype=jnp.float64, **opts)
    carry = jax.tree.map(lambda a: a + 0.1, cell.initial_state(H, (2,), jnp.float64))
    xs = jax.random.normal(jax.random.key(1), (2, 4, E), jnp.float64)

    def loss(params, xs):
        final, hs = scan(cell.step, params, carry, xs)
        return jnp.sum(hs**2) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

    check_grads(jax.jit(loss), (params, xs), order=2, modes=("rev",), eps=1e-5, atol=1e-5, rtol=1e-5)


def test_registry():
    assert set(CELLS) == {"lstm", "gru", "elman", "peephole_lstm", "ln_lstm", "ln_gru", "cifg", "mgu", "indrnn",
                          "mingru", "minlstm", "lru", "rglru", "slstm"}
    assert get_cell("gru") is CELLS["gru"]
    assert get_cell("lstmp", proj_size=4) == LSTMPCell(4)
    with pytest.raises(ValueError, match="unknown cell 'lstmm'"):
        get_cell("lstmm")
    with pytest.raises(ValueError, match="needs proj_size"):
        get_cell("lstmp")
