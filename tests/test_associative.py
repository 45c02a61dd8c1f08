"""associative_scan = scan for every state-linear cell: values, final carries and gradients, with every option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import LINEAR_CELL_CASES
from rnn_jax import associative_scan, get_runner, gru, lstm, run_sequence, scan
from rnn_jax.cells import base, mingru, minlstm, rglru, slstm
from rnn_jax.errors import ConfigError

B, T, E, H = 3, 7, 4, 5


def setup(cell, opts, seed=0, batch=B, steps=T):
    params = cell.init(jax.random.key(seed), E, H, **opts)
    carry = jax.tree.map(lambda a: a + 0.3, cell.initial_state(H, (batch,)))
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, steps, E))
    return params, carry, xs


def loss_and_grads(run, cell, params, carry, xs, **options):
    """(final carry, hs) and the gradients of a loss of both with respect to params, carry and xs."""

    def loss(params, carry, xs):
        final, hs = run(cell, params, carry, xs, **options)
        return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    return run(cell, params, carry, xs, **options), jax.grad(loss, argnums=(0, 1, 2))(params, carry, xs)


def assert_close(got, want, tolerance=2e-5):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance), got, want)


def flags():
    lengths = jnp.array([T, 3, 0])
    mask = jnp.ones((B, T), bool).at[0, 2].set(False).at[1, 5].set(False)
    resets = jnp.zeros((B, T), bool).at[0, 3].set(True).at[2, 0].set(True).at[1, 5].set(True)
    return lengths, mask, resets


OPTIONS = {
    "plain": {},
    "reverse": {"reverse": True},
    "seq_lengths": {"seq_lengths": flags()[0]},
    "seq_lengths_reverse": {"seq_lengths": flags()[0], "reverse": True},
    "mask_and_resets": {"mask": flags()[1], "resets": flags()[2]},
    "resets_to_a_carry_reverse": {"resets": flags()[2], "reverse": True},
    "remat_3": {"remat": 3, "seq_lengths": flags()[0]},
    "remat_sqrt_unroll_2": {"remat": "sqrt", "unroll": 2, "reverse": True},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("cell, opts", LINEAR_CELL_CASES)
def test_equals_scan_in_values_carries_and_gradients(cell, opts, option):
    params, carry, xs = setup(cell, opts)
    options = dict(OPTIONS[option])
    if option.startswith("resets_to_a_carry"):
        options["reset_carry"] = jax.tree.map(lambda a: a + 0.7, cell.initial_state(H, (B,)))
    scan_options = {key: value for key, value in options.items() if key not in ("remat", "unroll")}
    want = loss_and_grads(scan, cell, params, carry, xs, **scan_options)
    got = jax.jit(lambda *a: loss_and_grads(associative_scan, cell, *a, **options))(params, carry, xs)
    assert_close(got, want)


@pytest.mark.parametrize("option", ["plain", "reverse", "mask_and_resets", "remat_3"])
@pytest.mark.parametrize("cell", [mingru, minlstm], ids=["mingru", "minlstm"])
def test_log_space_equals_scan(cell, option):
    params, carry, xs = setup(cell, {})
    carry = jax.tree.map(jnp.abs, carry)  # log space needs a non-negative state
    options = OPTIONS[option]
    scan_options = {key: value for key, value in options.items() if key != "remat"}
    want = loss_and_grads(scan, cell, params, carry, xs, **scan_options)
    assert_close(loss_and_grads(associative_scan, cell, params, carry, xs, log_space=True, **options), want)


def test_log_space_resets_to_a_positive_carry():
    params, carry, xs = setup(mingru, {})
    reset_carry = jax.tree.map(lambda a: a + 2.0, mingru.initial_state(H, (B,)))
    options = {"resets": flags()[2], "reset_carry": reset_carry}
    assert_close(associative_scan(mingru, params, carry, xs, log_space=True, **options),
                 scan(mingru, params, carry, xs, **options))


def test_time_major_and_any_batch_shape():
    params, carry, xs = setup(minlstm, {})
    want = scan(minlstm, params, carry, xs, seq_lengths=flags()[0])
    got = associative_scan(minlstm, params, carry, jnp.swapaxes(xs, 0, 1), time_major=True, seq_lengths=flags()[0])
    assert_close((got[0], jnp.swapaxes(got[1], 0, 1)), want)
    many = jax.random.normal(jax.random.key(5), (2, 3, T, E))
    carries = minlstm.initial_state(H, (2, 3))
    assert_close(associative_scan(minlstm, params, carries, many), scan(minlstm, params, carries, many))


def test_a_long_sequence_in_log_space_stays_exact():
    """T = 4096 with forget gates near 1: the products of a_t span hundreds of orders of magnitude."""
    params, carry, xs = setup(mingru, {}, batch=2, steps=4096)
    carry = jax.tree.map(jnp.abs, carry)
    params = params._replace(b=params.b.at[0].set(-4.0))  # z ≈ 0.02: long memories
    want = scan(mingru, params, carry, xs)
    for log_space in (False, True):
        assert_close(associative_scan(mingru, params, carry, xs, log_space=log_space), want, tolerance=1e-4)


def test_no_steps_returns_the_carry():
    params, carry, xs = setup(mingru, {})
    final, hs = associative_scan(mingru, params, carry, xs[:, :0])
    assert hs.shape == (B, 0, H)
    assert_close(final, carry)


def test_cells_that_are_not_state_linear_are_refused():
    for cell in (lstm, gru, slstm):
        params, carry, xs = setup(cell, {})
        assert base.state_linear(cell) is None
        with pytest.raises(ConfigError, match=r"linear in the state .* is not\. Use runner 'scan'"):
            associative_scan(cell, params, carry, xs)
    params, carry, xs = setup(rglru, {})
    with pytest.raises(ConfigError, match="log_space=True needs a cell with log_coefficients"):
        associative_scan(rglru, params, carry, xs, log_space=True)


def test_registered_as_a_runner():
    assert get_runner("associative") is associative_scan
    params, carry, xs = setup(mingru, {})
    assert_close(run_sequence(mingru, params, carry, xs, runner="associative"), scan(mingru, params, carry, xs))
