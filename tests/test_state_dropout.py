"""Locked recurrent dropout and zoneout: mask shapes, one mask across time (locked) or a fresh one per step
(zoneout), expectation preserved, rate 0 the identity, values and gradients against written-out loops, the fused
path equal to the reference runner, evaluation deterministic, and the language model's options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import ShapeError, elman, fused_scan, gru, hoisted_scan, indrnn, lstm, mingru, scan
from rnn_jax.errors import ConfigError
from rnn_jax.lm import LanguageModel, LMConfig
from rnn_jax.state_dropout import (LockedParams, ZoneoutCarry, locked_dropout, locked_mask, with_key,
                                   zoneout)

E, H, B, T = 3, 5, 4, 6
LOCKABLE = [pytest.param(lstm, {}, id="lstm"), pytest.param(gru, {"reset_after": True}, id="gru_reset_after"),
            pytest.param(elman, {}, id="elman"), pytest.param(indrnn, {}, id="indrnn")]


def problem(cell, opts, dtype=jnp.float64, rate=0.5):
    params = cell.init(jax.random.key(0), E, H, dtype=dtype, **opts)
    carry = jax.tree.map(lambda a: a + 0.3, cell.initial_state(H, (B,), dtype))
    xs = jax.random.normal(jax.random.key(1), (B, T, E), dtype)
    return params, carry, xs, locked_mask(jax.random.key(2), carry, rate)


def loss_of(run):
    weights = jax.random.normal(jax.random.key(7), (B, T, H), jnp.float64)

    def loss(params, carry, xs):
        final, hs = run(params, carry, xs)
        return jnp.vdot(hs, weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

    return loss


def lstm_reference(params, mask):
    """Gal's LSTM written out: h_(t-1) masked where it enters the gates, c untouched, one mask for all t."""
    def run(p, carry, xs):
        hs = []
        for t in range(xs.shape[1]):
            carry, h = lstm.step(p, carry._replace(h=carry.h * mask), xs[:, t])
            carry = carry._replace(h=h)
            hs.append(h)
        return carry, jnp.stack(hs, 1)
    return run


def test_locked_mask_shape_values_and_expectation():
    carry = lstm.initial_state(H, (B,))
    mask = locked_mask(jax.random.key(0), carry, 0.25)
    assert mask.shape == (B, H) and mask.dtype == carry.h.dtype
    assert set(np.asarray(mask).ravel().tolist()) <= {0.0, float(np.float32(1 / 0.75))}
    many = jax.vmap(lambda k: locked_mask(k, carry, 0.25))(jax.random.split(jax.random.key(1), 3000))
    np.testing.assert_allclose(many.mean(), 1.0, atol=0.02)
    assert np.all(locked_mask(jax.random.key(2), carry, 0.0) == 1.0)


def test_locked_lstm_equals_gals_equations_values_and_gradients(x64):
    params, carry, xs, mask = problem(lstm, {})
    cell = locked_dropout(lstm)
    reference = jax.value_and_grad(loss_of(lstm_reference(params, mask)), argnums=(0, 1, 2))(params, carry, xs)
    for runner in (scan, hoisted_scan, fused_scan):
        run = lambda p, c, x: runner(cell, LockedParams(p, mask), c, x)
        got = jax.value_and_grad(loss_of(run), argnums=(0, 1, 2))(params, carry, xs)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), got, reference)


@pytest.mark.parametrize("cell, opts", LOCKABLE)
def test_fused_locked_dropout_equals_the_reference_runner(cell, opts, x64):
    params, carry, xs, mask = problem(cell, opts)
    locked = locked_dropout(cell)
    results = [jax.value_and_grad(loss_of(lambda p, c, x, r=runner: r(locked, LockedParams(p, mask), c, x)),
                                  argnums=(0, 1, 2))(params, carry, xs) for runner in (fused_scan, scan)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), *results)
    jaxpr = str(jax.make_jaxpr(lambda p: fused_scan(locked, LockedParams(p, mask), carry, xs))(params))
    assert "custom_vjp_call" in jaxpr  # the fused path really ran


@pytest.mark.parametrize("cell, opts", LOCKABLE[:2])
def test_an_all_ones_mask_is_the_cell_itself(cell, opts):
    params, carry, xs, _ = problem(cell, opts, dtype=jnp.float32, rate=0.0)
    locked = locked_dropout(cell)
    ones = locked.init(jax.random.key(0), E, H, **opts).mask
    assert ones.shape == (H,) and np.all(ones == 1)
    got = fused_scan(locked, LockedParams(params, ones), carry, xs)
    want = fused_scan(cell, params, carry, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)


def test_locked_dropout_needs_a_fused_spec_and_checks_the_mask():
    with pytest.raises(ConfigError, match="the mingru cell has none"):
        locked_dropout(mingru)
    with pytest.raises(ConfigError, match="recurrent_dropout=0.3 needs a cell"):
        LMConfig(cell="mingru", recurrent_dropout=0.3)
    with pytest.raises(ConfigError, match="recurrent_dropout=0.3 needs a cell"):
        LMConfig(cell="gru", recurrent_dropout=0.3)  # the notes' GRU form does not fuse; reset_after does
    params, carry, xs, _ = problem(lstm, {}, dtype=jnp.float32)
    with pytest.raises(ShapeError, match="the locked dropout mask must have the carry.s h shape"):
        scan(locked_dropout(lstm), LockedParams(params, jnp.ones((B, H + 1))), carry, xs)


def zoneout_reference(params, carry, xs, rate, draws):
    """Krueger et al.'s LSTM zoneout written out, with the keep-masks `draws[t] = (d_h, d_c)` given."""
    hs = []
    for t in range(xs.shape[1]):
        new, _ = lstm.step(params, carry, xs[:, t])
        d_h, d_c = draws[t]
        carry = carry._replace(h=jnp.where(d_h, carry.h, new.h), c=jnp.where(d_c, carry.c, new.c))
        hs.append(carry.h)
    return carry, jnp.stack(hs, 1)


def test_zoneout_draws_fresh_masks_each_step_and_matches_the_equations(x64):
    params, carry, xs, _ = problem(lstm, {})
    cell = zoneout(lstm, 0.4)
    key = jax.random.key(3)
    final, hs = scan(cell, params, with_key(carry, key), xs)
    # The same draws, replayed: the key splits into (next key, one key per carry field) each step.
    draws, k = [], key
    for _ in range(T):
        k, k_h, k_c = jax.random.split(k, 3)
        draws.append((jax.random.bernoulli(k_h, 0.4, (B, H)), jax.random.bernoulli(k_c, 0.4, (B, H))))
    want_final, want_hs = zoneout_reference(params, carry, xs, 0.4, draws)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-12)
    np.testing.assert_allclose(final.carry.c, want_final.c, rtol=1e-12)
    assert not all(np.array_equal(draws[0][0], d[0]) for d in draws[1:])  # a fresh mask at every step
    rate = np.mean([np.mean(d[0]) for d in draws])
    assert 0.2 < rate < 0.6
    # Gradients flow through the kept and the updated units alike (autodiff of the same written-out loop).
    grads = jax.grad(lambda p: jnp.sum(scan(cell, p, with_key(carry, key), xs)[1]))(params)
    want = jax.grad(lambda p: jnp.sum(zoneout_reference(p, carry, xs, 0.4, draws)[1]))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), grads, want)


def test_zoneout_evaluation_is_the_expectation_and_rate_0_and_1_are_the_limits():
    params, carry, xs, _ = problem(lstm, {}, dtype=jnp.float32)
    new, h = lstm.step(params, carry, xs[:, 0])
    zc, out = zoneout(lstm, 0.3).step(params, with_key(carry, None), xs[:, 0])
    assert zc.key is None
    np.testing.assert_allclose(zc.carry.c, 0.3 * carry.c + 0.7 * new.c, rtol=1e-6)
    np.testing.assert_allclose(out, zc.carry.h, rtol=1e-6)
    same = [hoisted_scan(zoneout(lstm, 0.3), params, with_key(carry, None), xs)[1] for _ in range(2)]
    np.testing.assert_array_equal(*same)
    identity = hoisted_scan(zoneout(lstm, 0.0), params, with_key(carry, jax.random.key(0)), xs)
    np.testing.assert_allclose(identity[1], hoisted_scan(lstm, params, carry, xs)[1], rtol=1e-6)
    frozen = scan(zoneout(lstm, 1.0), params, with_key(carry, jax.random.key(0)), xs)
    np.testing.assert_allclose(frozen[0].carry.c, carry.c)
    with pytest.raises(TypeError, match="needs a ZoneoutCarry"):
        zoneout(lstm, 0.3).step(params, carry, xs[:, 0])
    assert isinstance(zoneout(lstm, 0.3).initial_state(H, (B,)), ZoneoutCarry)


@pytest.mark.parametrize("options", [{"recurrent_dropout": 0.3}, {"zoneout": 0.2},
                                     {"recurrent_dropout": 0.3, "zoneout": 0.2, "cell": "gru",
                                      "gru_reset_after": True}])
def test_the_language_model_trains_with_them_and_evaluates_deterministically(options):
    model = LanguageModel(LMConfig(vocab_size=11, embed_size=6, hidden_size=H, num_layers=2, **options))
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 11)
    carry = model.initial_state(B)
    apply = jax.jit(model.apply, static_argnames="train")  # one compilation per mode, not op-by-op loops
    train = [apply(params, carry, tokens, key=jax.random.key(k), train=True)[0] for k in (2, 2, 3)]
    np.testing.assert_array_equal(train[0], train[1])  # one key, one draw
    assert not np.allclose(train[0], train[2])  # another key, other masks
    evaluated = [apply(params, carry, tokens)[0] for _ in range(2)]
    np.testing.assert_array_equal(*evaluated)
    final = apply(params, carry, tokens, key=jax.random.key(2), train=True)[1]
    assert jax.tree.structure(final) == jax.tree.structure(carry)  # the LM's carry stays the cell's own
    grads = jax.grad(lambda p: model.apply(p, carry, tokens, key=jax.random.key(2), train=True)[0].sum())(params)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        model.apply(params, carry, tokens, train=True)
