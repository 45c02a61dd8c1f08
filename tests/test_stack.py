"""Stacks: the deep cell, the layer-by-layer runner and a hand-written two-layer loop agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CELL_CASES
from rnn_jax import Stacked, hoisted_scan, lstm, output_size, run_layers, scan, unrolled

B, T, E, H, L = 2, 5, 3, 4, 3


def assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=3e-5), a, b)


@pytest.mark.parametrize("cell, opts", CELL_CASES)
def test_deep_cell_equals_layer_by_layer(cell, opts):
    deep = Stacked(cell, L)
    params = deep.init(jax.random.key(0), E, H, **opts)
    carry = jax.tree.map(lambda a: a - 0.1, deep.initial_state(H, (B,)))
    assert len(params) == L  # layer 1 reads E inputs, the others the previous layer's output (cells check sizes)
    for layer, size in enumerate([E] + [output_size(cell, H)] * (L - 1)):
        jax.eval_shape(cell.step, params[layer], carry[layer], jnp.zeros((B, size)))
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    lengths = jnp.array([T, 3])

    # Independent oracle: each layer over the whole sequence with a Python loop.
    inputs, want_finals = xs, []
    for layer in range(L):
        final, hs = unrolled(cell.step, params[layer], carry[layer], inputs, seq_lengths=lengths)
        want_finals.append(final)
        inputs = hs
    for result in (
        scan(deep.step, params, carry, xs, seq_lengths=lengths),
        hoisted_scan(deep, params, carry, xs, seq_lengths=lengths),
        run_layers(cell, params, carry, xs, seq_lengths=lengths),
        run_layers(cell, params, carry, xs, seq_lengths=lengths, runner="scan"),
    ):
        assert_close(result[0], tuple(want_finals))
        assert_close(result[1], inputs)


def test_between_layers_hook_runs_between_layers_only():
    params = Stacked(lstm, 2).init(jax.random.key(0), E, H)
    carry = Stacked(lstm, 2).initial_state(H, (B,))
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    seen = []

    def double(layer, hs):
        seen.append(layer)
        return 2.0 * hs

    _, hs = run_layers(lstm, params, carry, xs, between_layers=double)
    _, first = scan(lstm.step, params[0], carry[0], xs)
    _, want = scan(lstm.step, params[1], carry[1], 2.0 * first)
    assert seen == [0]
    np.testing.assert_allclose(hs, want, rtol=1e-5, atol=1e-6)


def test_stack_errors():
    deep = Stacked(lstm, 2)
    params = deep.init(jax.random.key(0), E, H)
    with pytest.raises(ValueError, match="a stack of 2 layers needs carry as a tuple of 2"):
        deep.step(params, deep.initial_state(H, (B,))[:1], jnp.ones((B, E)))
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        Stacked(lstm, 0)
    with pytest.raises(ValueError, match="needs carries as a tuple of 2"):
        run_layers(lstm, params, deep.initial_state(H, (B,))[0], jnp.ones((B, T, E)))


def test_layers_may_differ_in_size():
    deep = Stacked(lstm, num_layers=3)
    params = deep.init(jax.random.key(0), 3, (6, 6, 2))
    assert [p.W.shape[-1] for p in params] == [6, 6, 2] and [p.U.shape[-1] for p in params] == [3, 6, 6]
    carry = deep.initial_state((6, 6, 2), (4,))
    final, hs = scan(deep, params, carry, jnp.ones((4, 5, 3)))
    assert hs.shape == (4, 5, 2) and deep.output_size((6, 6, 2)) == 2
    same = deep.init(jax.random.key(0), 3, 6)  # one size for all equals that size given per layer
    jax.tree.map(np.testing.assert_array_equal, same, deep.init(jax.random.key(0), 3, (6, 6, 6)))
    with pytest.raises(ValueError, match="needs one hidden size or 3 of them; got 2"):
        deep.init(jax.random.key(0), 3, (6, 2))
