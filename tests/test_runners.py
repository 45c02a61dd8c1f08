"""Runners: scan = unrolled = hoisted = fused = a plain Python step loop, for every option and every cell."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CELL_CASES, cell_cases_with_variants_slow
from rnn_jax import ShapeError, fused_scan, get_runner, gru, hoisted_scan, lstm, output_size, scan, unrolled

B, T, E, H = 3, 6, 4, 5


def setup(cell, opts, seed=0):
    params = cell.init(jax.random.key(seed), E, H, **opts)
    carry = jax.tree.map(lambda a: a + 0.2, cell.initial_state(H, (B,)))
    xs = jax.random.normal(jax.random.key(seed + 1), (B, T, E))
    return params, carry, xs


def oracle(cell, params, carry, xs, reverse=False, seq_lengths=None):
    """Per-example Python loop over the valid steps only: the independent reference."""
    lengths = [T] * B if seq_lengths is None else list(seq_lengths)
    finals, outputs = [], np.zeros((B, T, output_size(cell, H)), np.float32)
    for b in range(B):
        c = jax.tree.map(lambda a: a[b], carry)
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in steps:
            c, h = cell.step(params, c, xs[b, t])
            outputs[b, t] = np.asarray(h)
        finals.append(c)
    return jax.tree.map(lambda *a: jnp.stack(a), *finals), outputs


def assert_close(a, b):
    # atol covers float32 rounding that layer normalisation (LN cells) amplifies when a normalised vector is
    # nearly constant; a wrong step or mask is off by orders of magnitude more.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=3e-5), a, b)


RUNS = {
    "scan": lambda cell, *args, **kw: scan(cell.step, *args, **kw),
    "unrolled": lambda cell, *args, **kw: unrolled(cell.step, *args, **kw),
    "hoisted": hoisted_scan,
    "fused": fused_scan,
}


# fused_scan hands padded runs to hoisted_scan (tests/test_fused.py checks that hand-over), so it runs unpadded here.
@pytest.mark.parametrize("runner, padded", [(r, p) for r in sorted(RUNS) for p in (False, True) if (r, p) != ("fused", True)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell, opts", cell_cases_with_variants_slow())
def test_runner_matches_python_loop(cell, opts, runner, reverse, padded):
    params, carry, xs = setup(cell, opts)
    lengths = np.array([T, 2, 0]) if padded else None
    final, hs = RUNS[runner](cell, params, carry, xs, reverse=reverse, seq_lengths=lengths)
    want_final, want_hs = oracle(cell, params, carry, xs, reverse=reverse, seq_lengths=lengths)
    assert_close(final, want_final)
    assert_close(hs, want_hs)
    if padded:  # padded outputs are exactly zero; a zero-length sequence keeps its initial carry
        assert np.all(np.asarray(hs)[1, 2:] == 0) and np.all(np.asarray(hs)[2] == 0)
        assert_close(jax.tree.map(lambda a: a[2], final), jax.tree.map(lambda a: a[2], carry))


@pytest.mark.parametrize("unroll", [1, 2, 4, T, True])
@pytest.mark.parametrize("cell, opts", cell_cases_with_variants_slow())
def test_every_unroll_gives_the_same_result(cell, opts, unroll):
    params, carry, xs = setup(cell, opts)
    reference = unrolled(cell.step, params, carry, xs)
    assert_close(jax.jit(lambda p, c, x: scan(cell.step, p, c, x, unroll=unroll))(params, carry, xs), reference)
    assert_close(hoisted_scan(cell, params, carry, xs, unroll=unroll), reference)
    assert_close(fused_scan(cell, params, carry, xs, unroll=unroll), reference)


@pytest.mark.parametrize("runner", sorted(RUNS))
def test_time_major_equals_batch_major(runner):
    params, carry, xs = setup(lstm, {})
    lengths = jnp.array([4, T, 1])
    final_b, hs_b = RUNS[runner](lstm, params, carry, xs, seq_lengths=lengths)
    final_t, hs_t = RUNS[runner](lstm, params, carry, jnp.swapaxes(xs, 0, 1), time_major=True, seq_lengths=lengths)
    assert hs_t.shape == (T, B, H)
    assert_close(final_b, final_t)
    assert_close(hs_b, jnp.swapaxes(hs_t, 0, 1))


def test_jit_with_traced_lengths_and_many_batch_axes():
    params = lstm.init(jax.random.key(0), E, H)
    xs = jax.random.normal(jax.random.key(1), (2, 2, T, E))
    lengths = jnp.array([[T, 3], [1, 0]])
    run = jax.jit(lambda p, c, x, n: hoisted_scan(lstm, p, c, x, seq_lengths=n))
    final, hs = run(params, lstm.initial_state(H, (2, 2)), xs, lengths)
    assert hs.shape == (2, 2, T, H)
    _, single = scan(lstm.step, params, lstm.initial_state(H), xs[0, 1, :3])
    np.testing.assert_allclose(hs[0, 1, :3], single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h[0, 1], single[-1], rtol=1e-5, atol=1e-6)


def test_get_runner_names():
    params, carry, xs = setup(lstm, {})
    results = [get_runner(name)(lstm, params, carry, xs) for name in ("scan", "unrolled", "hoisted")]
    assert_close(results[0], results[1])
    assert_close(results[0], results[2])
    with pytest.raises(ValueError, match="unknown runner"):
        get_runner("loop")


def test_runner_errors():
    params, carry, xs = setup(lstm, {})
    with pytest.raises(ShapeError, match=r"xs \(the input sequence\) must have at least rank 2"):
        scan(lstm.step, params, carry, xs[0, 0])
    with pytest.raises(ShapeError, match=r"carry.h must have shape .*\(6, 5\); got \(3, 5\)"):
        scan(lstm.step, params, carry, xs, time_major=True)  # (B, T, E) read as time-major: batch is 6
    with pytest.raises(ValueError, match="unroll must be a positive int"):
        scan(lstm.step, params, carry, xs, unroll=0)
    with pytest.raises(ShapeError, match=r"seq_lengths must have shape .*\(3,\); got \(2,\)"):
        scan(lstm.step, params, carry, xs, seq_lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"seq_lengths must lie in \[0, 6\]; got a value 7"):
        scan(lstm.step, params, carry, xs, seq_lengths=jnp.array([1, 2, 7]))
    with pytest.raises(TypeError, match="seq_lengths must be an integer array; got float32"):
        scan(lstm.step, params, carry, xs, seq_lengths=jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="must be a floating-point array"):
        scan(lstm.step, params, carry, jnp.ones((B, T, E), jnp.int32))


# Property-based: any shapes, lengths and unroll values give the oracle's answer.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.integers(1, 3), steps=st.integers(1, 7), features=st.integers(1, 4), hidden=st.integers(1, 5),
       unroll=st.one_of(st.integers(1, 8), st.just(True)), reverse=st.booleans(), data=st.data())
def test_property_scan_matches_oracle(batch, steps, features, hidden, unroll, reverse, data):
    lengths = np.array(data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch)))
    params = lstm.init(jax.random.key(0), features, hidden)
    carry = lstm.initial_state(hidden, (batch,))
    xs = jax.random.normal(jax.random.key(1), (batch, steps, features))
    final, hs = hoisted_scan(lstm, params, carry, xs, unroll=unroll, reverse=reverse, seq_lengths=lengths)
    for b in range(batch):
        c = jax.tree.map(lambda a: a[b], carry)
        order = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in order:
            c, h = lstm.step(params, c, xs[b, t])
            np.testing.assert_allclose(hs[b, t], h, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(final.h[b], c.h, rtol=2e-5, atol=2e-6)
        assert np.all(np.asarray(hs[b, lengths[b]:]) == 0)


@pytest.mark.parametrize("runner", sorted(RUNS))
def test_arbitrary_mask_freezes_carry_and_zeroes_output(runner):
    params, carry, xs = setup(gru, {})
    mask = np.ones((B, T), bool)
    mask[0, [1, 3]] = False
    mask[2, :] = False
    final, hs = RUNS[runner](gru, params, carry, xs, mask=jnp.asarray(mask))
    for b in range(B):  # oracle: skip the masked steps
        c = jax.tree.map(lambda a: a[b], carry)
        for t in range(T):
            if mask[b, t]:
                c, h = gru.step(params, c, xs[b, t])
                np.testing.assert_allclose(hs[b, t], h, rtol=2e-5, atol=2e-6)
            else:
                assert np.all(np.asarray(hs[b, t]) == 0)
        np.testing.assert_allclose(final.h[b], c.h, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("runner", sorted(RUNS))
def test_resets_restart_the_carry_like_separate_sequences(runner):
    params, carry, xs = setup(lstm, {})
    resets = np.zeros((B, T), bool)
    resets[:, 3] = True  # two episodes of 3 steps packed in one sequence
    reset_to = jax.tree.map(lambda a: jnp.full_like(a, 0.05), carry)
    final, hs = RUNS[runner](lstm, params, carry, xs, resets=jnp.asarray(resets), reset_carry=reset_to)
    first = scan(lstm.step, params, carry, xs[:, :3])
    second = scan(lstm.step, params, reset_to, xs[:, 3:])
    assert_close(hs, jnp.concatenate([first[1], second[1]], axis=1))
    assert_close(final, second[0])
    zeros = RUNS[runner](lstm, params, carry, xs, resets=jnp.asarray(resets))  # default: reset to zeros
    assert_close(zeros[0], scan(lstm.step, params, lstm.initial_state(H, (B,)), xs[:, 3:])[0])


@pytest.mark.parametrize("remat", [2, "sqrt", *(pytest.param(r, marks=pytest.mark.slow) for r in (1, 4, T))])
@pytest.mark.parametrize("reverse", [False, True])
def test_remat_keeps_values_and_gradients(remat, reverse):
    params, carry, xs = setup(lstm, {})
    lengths = jnp.array([T, 4, 1])

    def loss(params, xs, remat):
        final, hs = hoisted_scan(lstm, params, carry, xs, reverse=reverse, seq_lengths=lengths, remat=remat)
        return jnp.sum(hs ** 2) + jnp.sum(final.c)

    plain = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, None)
    checkpointed = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(params, xs, remat)
    assert_close(plain, checkpointed)


def test_flag_errors():
    params, carry, xs = setup(lstm, {})
    with pytest.raises(ShapeError, match=r"mask must have shape \(\*batch, T\) = \(3, 6\); got \(6, 3\)"):
        scan(lstm.step, params, carry, xs, mask=jnp.ones((T, B), bool))
    with pytest.raises(TypeError, match="resets must be a bool array; got int32"):
        scan(lstm.step, params, carry, xs, resets=jnp.ones((B, T), jnp.int32))
    with pytest.raises(ValueError, match="remat must be None, a positive int"):
        scan(lstm.step, params, carry, xs, remat="all")
    with pytest.raises(ValueError, match="remat is available in scan and hoisted_scan"):
        unrolled(lstm.step, params, carry, xs, remat=2)


@pytest.mark.parametrize("cell, opts", CELL_CASES[4:])
def test_variants_hoisted_padded_reverse_match_python_loop(cell, opts):
    """The variants' quick check in the default run (their full runner matrix is marked slow)."""
    params, carry, xs = setup(cell, opts)
    lengths = np.array([T, 2, 0])
    final, hs = hoisted_scan(cell, params, carry, xs, reverse=True, seq_lengths=lengths)
    want_final, want_hs = oracle(cell, params, carry, xs, reverse=True, seq_lengths=lengths)
    assert_close(final, want_final)
    assert_close(hs, want_hs)
