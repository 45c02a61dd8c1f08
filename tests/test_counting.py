"""Parameter counting on trees that init creates."""

import jax

from rnn_jax import Stacked, count_params, elman, gru, lstm, param_breakdown


def test_notes_worked_example_lstm_weights():
    params = lstm.init(jax.random.key(0), 10, 20, use_bias=False)
    assert count_params(params) == 4 * (20 * 10) + 4 * (20 * 20) == 2400


def test_gru_elman_bias_and_layers():
    assert count_params(gru.init(jax.random.key(0), 10, 20, use_bias=False)) == 3 * (200 + 400)
    assert count_params(gru.init(jax.random.key(0), 10, 20)) == 3 * (200 + 400 + 20)
    assert count_params(gru.init(jax.random.key(0), 10, 20, reset_after=True)) == 3 * (200 + 400 + 20) + 20
    assert count_params(elman.init(jax.random.key(0), 10, 20)) == 200 + 400 + 20
    two = Stacked(lstm, 2).init(jax.random.key(0), 10, 20)
    assert count_params(two) == 4 * (20 * 10 + 20 * 20 + 20) + 4 * (20 * 20 + 20 * 20 + 20)


def test_breakdown_paths_and_depth():
    tree = {"rnn": Stacked(lstm, 2).init(jax.random.key(0), 10, 20, use_bias=False), "output": {"V": jax.numpy.ones((100, 20))}}
    full = param_breakdown(tree)
    assert full["rnn.0.W"] == 1600 and full["rnn.0.U"] == 800 and full["rnn.1.U"] == 1600
    assert "rnn.0.b" not in full  # an absent bias is no parameter
    assert param_breakdown(tree, depth=1) == {"output": 2000, "rnn": 2400 + 3200}
    assert sum(full.values()) == count_params(tree)
