"""Regularisers: mask shapes, one mask where the method says so, expectation preserved, rate 0 is the identity,
gradients against a written-out reference, evaluation deterministic, and the command line."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train_lm
from rnn_jax import regularisers
from rnn_jax.cells import gru, lstm, mingru
from rnn_jax.errors import ConfigError
from rnn_jax.lm import LanguageModel, LMConfig, output_nll, reduce_nll
from rnn_jax.stack import run_layers


def test_embedding_dropout_drops_whole_words_and_keeps_the_expectation():
    tokens = jnp.array([[3, 1, 3, 4], [4, 4, 0, 3]])
    scale = regularisers.embedding_dropout_scale(jax.random.key(0), tokens, vocab_size=6, rate=0.4)
    assert scale.shape == tokens.shape
    for token in (3, 4):  # every occurrence shares its word's draw
        assert len(set(np.asarray(scale)[np.asarray(tokens) == token].tolist())) == 1
    assert set(np.asarray(scale).ravel().tolist()) <= {0.0, float(np.float32(1 / 0.6))}
    many = jax.vmap(lambda k: regularisers.embedding_dropout_scale(k, jnp.arange(6)[None], 6, 0.4))(
        jax.random.split(jax.random.key(1), 4000))
    np.testing.assert_allclose(many.mean(), 1.0, atol=0.02)
    assert np.all(regularisers.embedding_dropout_scale(jax.random.key(2), tokens, 6, 0.0) == 1.0)


def test_weight_drop_masks_only_the_recurrent_weights_once_per_call():
    layers = (lstm.init(jax.random.key(0), 3, 8), lstm.init(jax.random.key(1), 8, 8))
    dropped = regularisers.weight_drop(jax.random.key(2), layers, lstm, 0.5)
    for before, after in zip(layers, dropped):
        assert after.W.shape == before.W.shape
        kept = np.asarray(after.W) != 0
        np.testing.assert_allclose(np.asarray(after.W)[kept], 2.0 * np.asarray(before.W)[kept], rtol=1e-6)
        assert 0.3 < 1 - kept.mean() < 0.7
        assert after.U is before.U and after.b is before.b  # input weights and biases untouched
    assert not np.array_equal(np.asarray(dropped[0].W) == 0, np.asarray(dropped[1].W)[:, :, :8] == 0)
    assert regularisers.weight_drop(jax.random.key(2), layers, lstm, 0.0) is layers
    mean = jax.vmap(lambda k: regularisers.weight_drop(k, layers[:1], lstm, 0.5)[0].W)(
        jax.random.split(jax.random.key(3), 3000)).mean(0)
    np.testing.assert_allclose(mean, layers[0].W, atol=0.05)


def test_weight_drop_is_refused_for_cells_without_recurrent_matrices():
    with pytest.raises(ConfigError, match="the mingru cell has none"):
        regularisers.weight_drop(jax.random.key(0), (mingru.init(jax.random.key(0), 3, 4),), mingru, 0.5)
    with pytest.raises(ConfigError, match="weight_drop=0.5 needs recurrent weight matrices"):
        LMConfig(cell="mingru", weight_drop=0.5)
    assert LMConfig(cell="gru", weight_drop=0.5).weight_drop == 0.5 and gru.recurrent_weights == ("W",)


def test_activation_penalty_by_hand():
    raw = jnp.array([[[1.0, 2.0], [3.0, 2.0], [3.0, 0.0]]])  # (B=1, T=3, H=2)
    dropped = raw * jnp.array([2.0, 0.0])
    ar = np.mean(np.square([[2, 0], [6, 0], [6, 0]]))  # 76 / 6
    tar = np.mean(np.square([[2, 0], [0, -2]]))  # 8 / 4
    penalty = regularisers.activation_penalty(dropped, raw, 0.5, 3.0)
    np.testing.assert_allclose(penalty, 0.5 * ar + 3.0 * tar, rtol=1e-6)
    np.testing.assert_allclose(regularisers.activation_penalty(dropped.transpose(1, 0, 2), raw.transpose(1, 0, 2),
                                                               0.5, 3.0, time_axis=0), penalty, rtol=1e-6)
    assert float(regularisers.activation_penalty(dropped, raw, 0.0, 0.0)) == 0.0


CONFIG = LMConfig(vocab_size=11, embed_size=5, hidden_size=6, num_layers=2, use_bias=True, embed_dropout=0.3,
                  weight_drop=0.4, ar_alpha=2.0, tar_beta=1.5)


def reference_loss(model, params, tokens, targets, key):
    """The regularised loss written out: the table with dropped words zeroed, the stack with dropped W, AR/TAR."""
    cfg = model.config
    keep = jax.random.bernoulli(jax.random.fold_in(key, 1), 1 - cfg.embed_dropout, (cfg.vocab_size,))
    table = jnp.where(keep[:, None], params.embedding / (1 - cfg.embed_dropout), 0.0)
    xs = table[tokens]
    layers = regularisers.weight_drop(jax.random.fold_in(key, 2), params.rnn, model.layer_cell, cfg.weight_drop)
    _, hs = run_layers(model.layer_cell, layers, model.initial_state(tokens.shape[0]), xs, runner="scan")
    nll = output_nll(params, hs, targets, native=False)
    ar = cfg.ar_alpha * jnp.mean(hs ** 2)  # dropout is 0 here: dropped and raw outputs are the same
    tar = cfg.tar_beta * jnp.mean(jnp.diff(hs, axis=1) ** 2)
    return reduce_nll(nll, "token_mean") + ar + tar


def test_training_features_match_the_written_out_reference_in_value_and_gradient():
    model = LanguageModel(CONFIG)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 7), 0, 11)
    targets = jax.random.randint(jax.random.key(2), (3, 7), 0, 11)
    key = jax.random.key(3)

    def loss(params):
        xs = model.embed(params, tokens)
        hs, _, penalty = model.training_features(params, model.initial_state(3), xs, tokens, key)
        return reduce_nll(output_nll(params, hs, targets, native=False), "token_mean") + penalty

    got, want = jax.value_and_grad(loss)(params), jax.value_and_grad(
        lambda p: reference_loss(model, p, tokens, targets, key))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), got, want)
    assert float(got[0]) > float(jax.jit(loss)(params)) - 1e-3  # the penalty is part of the loss
    dropped_rows = np.flatnonzero(np.all(np.asarray(got[1].embedding) == 0, axis=1))
    assert set(dropped_rows) >= set(range(11)) - set(np.asarray(tokens).ravel().tolist())


def test_evaluation_is_deterministic_and_ignores_the_regularisers():
    plain = LanguageModel(dataclasses.replace(CONFIG, embed_dropout=0.0, weight_drop=0.0, ar_alpha=0.0, tar_beta=0.0))
    regularised = LanguageModel(CONFIG)
    params = plain.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, 11)
    want, _ = plain.apply(params, plain.initial_state(2), tokens)
    for key in (None, jax.random.key(7)):
        got, _ = regularised.apply(params, regularised.initial_state(2), tokens, key=key, train=False)
        np.testing.assert_array_equal(got, want)


def test_the_regularisers_train_from_the_command_line(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i % 13} of a small text\n" for i in range(300)))
    result = train_lm.main(["--data-source", str(path), "--data-max-vocab", "none", "--run-dir", str(tmp_path / "run"),
                            "--max-windows-per-epoch", "4", "--epochs", "1", "--sample-length", "0", "--no-progress",
                            "--model-embed-dropout", "0.1", "--model-weight-drop", "0.3", "--model-ar-alpha", "2",
                            "--model-tar-beta", "1", "--model-use-bias"])
    assert result.config.model.weight_drop == 0.3 and np.isfinite(result.valid["nll"])
    saved = (tmp_path / "run" / "config.json").read_text()
    assert '"embed_dropout": 0.1' in saved and '"tar_beta": 1.0' in saved
