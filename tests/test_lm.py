"""The language model: shapes, errors, dropout, weight tying, causality, any cell, overfitting one batch."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import chex
import numpy as np
import optax
import pytest

from rnn_jax import DTypeError, ShapeError, count_params, kernels, lstm
from rnn_jax.errors import ConfigError
from rnn_jax.lm import LanguageModel, LMConfig, dropout, output_logits, output_nll, sequence_loss

B, T = 3, 6


def model_and_params(**overrides):
    config = LMConfig(**{"vocab_size": 11, "embed_size": 4, "hidden_size": 5, **overrides})
    model = LanguageModel(config)
    return model, model.init(jax.random.key(0))


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman", "peephole_lstm", "ln_lstm", "ln_gru", "cifg", "mgu", "lstmp",
                                  "indrnn", "mingru", "minlstm", "lru", "rglru", "slstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_shapes_every_cell(cell, num_layers):
    proj = 3 if cell == "lstmp" else None
    model, params = model_and_params(cell=cell, num_layers=num_layers, use_bias=True, output_bias=True, proj_size=proj)
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 11)
    logits, carry = model.apply(params, model.initial_state(B), tokens)
    assert logits.shape == (B, T, 11) and len(carry) == num_layers


def test_notes_network_has_4400_weights_plus_embedding():
    model = LanguageModel(LMConfig(vocab_size=100, embed_size=10, hidden_size=20))
    params = model.init(jax.random.key(0))
    assert count_params(params.rnn) + count_params(params.output) == 4400
    assert count_params(params.embedding) == 1000


@pytest.mark.parametrize("runner", ["scan", "unrolled", "hoisted"])
def test_runners_agree_inside_the_model(runner):
    model, params = model_and_params(num_layers=2, cell="gru")
    other = LanguageModel(LMConfig(vocab_size=11, embed_size=4, hidden_size=5, num_layers=2, cell="gru", runner=runner))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 11)
    np.testing.assert_allclose(model.apply(params, model.initial_state(B), tokens)[0],
                               other.apply(params, other.initial_state(B), tokens)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["mingru", "lru"])
def test_the_associative_runner_inside_the_model(cell):
    model, params = model_and_params(num_layers=2, cell=cell)
    other = LanguageModel(LMConfig(vocab_size=11, embed_size=4, hidden_size=5, num_layers=2, cell=cell,
                                   runner="associative"))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 11)
    np.testing.assert_allclose(model.apply(params, model.initial_state(B), tokens)[0],
                               other.apply(params, other.initial_state(B), tokens)[0], rtol=1e-5, atol=1e-6)


def test_any_cell_object_works():
    class TanhFreeCell:  # a user cell with only the three functions (no hoisting hooks)
        init = staticmethod(lstm.init)
        initial_state = staticmethod(lstm.initial_state)
        step = staticmethod(lstm.step)

    model = LanguageModel(LMConfig(vocab_size=11, embed_size=4, hidden_size=5), cell=TanhFreeCell())
    params = model.init(jax.random.key(0))
    reference = LanguageModel(LMConfig(vocab_size=11, embed_size=4, hidden_size=5))
    tokens = jnp.ones((B, T), jnp.int32)
    np.testing.assert_allclose(model.apply(params, model.initial_state(B), tokens)[0],
                               reference.apply(params, reference.initial_state(B), tokens)[0], rtol=1e-5, atol=1e-7)


def test_token_errors_are_clear():
    model, params = model_and_params()
    carry = model.initial_state(B)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\]; got a value 11 .*vocabulary has 11"):
        model.apply(params, carry, jnp.full((B, T), 11))
    with pytest.raises(ValueError, match="got a value -1"):
        model.apply(params, carry, jnp.full((B, T), -1))
    with pytest.raises(DTypeError, match="tokens must be an integer array; got float32"):
        model.apply(params, carry, jnp.zeros((B, T)))
    with pytest.raises(ShapeError, match=r"tokens must have shape \(B, T\); got \(6,\)"):
        model.apply(params, carry, jnp.zeros((T,), jnp.int32))
    # Under jit the ids are not visible; an out-of-range id becomes NaN, never a silently clamped row.
    logits, _ = jax.jit(model.apply)(params, carry, jnp.full((B, T), 11))
    assert np.all(np.isnan(np.asarray(logits)))


def test_tied_weights_use_the_embedding():
    model, params = model_and_params(embed_size=5, tie_weights=True, output_bias=True)
    assert params.output.V is None and params.output.c.shape == (11,)
    logits, _ = model.apply(params, model.initial_state(1), jnp.zeros((1, 1), jnp.int32))
    _, h = lstm.step(params.rnn[0], lstm.initial_state(5, (1,)), params.embedding[:1])
    np.testing.assert_allclose(logits[0, 0], h[0] @ params.embedding.T + params.output.c, rtol=1e-5)
    with pytest.raises(ValueError, match="tie_weights needs embed_size == the top layer's output size"):
        LMConfig(embed_size=4, hidden_size=5, tie_weights=True)


def test_a_smaller_top_layer_ties_to_the_embedding_as_in_awd_lstm():
    model, params = model_and_params(embed_size=4, hidden_size=7, num_layers=3, last_hidden_size=4, tie_weights=True)
    assert [layer.W.shape[-1] for layer in params.rnn] == [7, 7, 4]
    assert [layer.U.shape[-1] for layer in params.rnn] == [4, 7, 7]
    carry = model.initial_state(B)
    assert [c.h.shape for c in carry] == [(B, 7), (B, 7), (B, 4)]
    logits, final = model.apply(params, carry, jnp.zeros((B, T), jnp.int32))
    assert logits.shape == (B, T, 11) and jax.tree.structure(final) == jax.tree.structure(carry)
    with pytest.raises(ValueError, match="last_hidden_size must be a positive int"):
        LMConfig(last_hidden_size=0)


def test_each_dropout_site_takes_its_own_rate():
    model, params = model_and_params(num_layers=2, dropout=0.0, input_dropout=0.5, hidden_dropout=0.0)
    tokens = jax.random.randint(jax.random.key(3), (B, T), 0, 11)
    carry, key = model.initial_state(B), jax.random.key(4)
    trained = model.hidden_states(params, carry, tokens, key=key, train=True)[0]
    # The oracle: only the embedding output dropped, with the first of the per-site keys, then evaluation.
    dropped = dropout(jax.random.split(key, 3)[0], model.embed(params, tokens), 0.5)
    want = model.hidden_states_from_embeddings(params, carry, dropped)[0]
    np.testing.assert_allclose(trained, want, rtol=1e-6)
    off, params = model_and_params(num_layers=2, dropout=0.5, input_dropout=0.0, hidden_dropout=0.0)
    raw = off.hidden_states(params, carry, tokens)[0]
    output_only = off.hidden_states(params, carry, tokens, key=key, train=True)[0]
    np.testing.assert_allclose(output_only, dropout(jax.random.split(key, 3)[2], raw, 0.5), rtol=1e-6)



@pytest.mark.skipif(not kernels.available(), reason="native kernel unavailable here (no C++ compiler, RNN_JAX_NATIVE=0, or not the CPU backend)")
@pytest.mark.parametrize("overrides", [
    {},                                                           # the notes' LM: no output bias
    {"output_bias": True, "vocab_size": 37},                     # a bias; V not a multiple of 16
    {"output_bias": True, "embed_size": 5, "tie_weights": True},  # V is the embedding table
    {"cell": "lstmp", "proj_size": 3, "output_bias": True},      # the output layer reads P features
], ids=["no_bias", "bias", "tied", "lstmp"])
def test_output_nll_native_equals_optax_on_the_logits(overrides):
    model, params = model_and_params(**overrides)
    vocab = model.config.vocab_size
    tokens = jax.random.randint(jax.random.key(1), (B, T + 1), 0, vocab)
    weights = jax.random.normal(jax.random.key(2), (B, T))

    def loss(params, native):
        hs, _ = model.hidden_states(params, model.initial_state(B), tokens[:, :-1])
        return jnp.sum(weights * output_nll(params, hs, tokens[:, 1:], native=native))

    def optax_loss(params):
        logits, _ = model.apply(params, model.initial_state(B), tokens[:, :-1])
        return jnp.sum(weights * optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))

    native_jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(p, True)))(params))
    assert "rnn_jax_output_forward" in native_jaxpr and "rnn_jax_output_backward" in native_jaxpr
    assert "rnn_jax_xent" not in str(jax.make_jaxpr(jax.grad(lambda p: loss(p, False)))(params))
    want, want_grad = jax.value_and_grad(optax_loss)(params)
    for native in (True, False):
        got, got_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, native)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        chex.assert_trees_all_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not kernels.available(), reason="native kernel unavailable here (no C++ compiler, RNN_JAX_NATIVE=0, or not the CPU backend)")
def test_output_nll_per_example_gradients_under_vmap():
    """vmap over examples of the native loss's gradient (the kernels then run their XLA form) equals optax's."""
    model, params = model_and_params(output_bias=True, vocab_size=37)
    tokens = jax.random.randint(jax.random.key(1), (B, T + 1), 0, 37)

    def per_example(native):
        def loss(params, window):
            hs, _ = model.hidden_states(params, model.initial_state(1), window[None, :-1])
            if native is None:
                logits = output_logits(params, hs)
                return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, window[None, 1:]))
            return jnp.sum(output_nll(params, hs, window[None, 1:], native=native))
        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, tokens)

    chex.assert_trees_all_close(per_example(True), per_example(None), rtol=1e-4, atol=1e-6)


def test_hidden_states_feed_apply_and_output_nll():
    model, params = model_and_params(output_bias=True, dropout=0.5)
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 11)
    key = jax.random.key(3)
    hs, carry = model.hidden_states(params, model.initial_state(B), tokens, key=key, train=True)
    logits, same_carry = model.apply(params, model.initial_state(B), tokens, key=key, train=True)
    np.testing.assert_allclose(output_logits(params, hs), logits, rtol=1e-6)  # the same dropout masks
    chex.assert_trees_all_equal(carry, same_carry)
    hs_tm, carry_tm = model.hidden_states(params, model.initial_state(B), tokens, key=key, train=True, time_major=True)
    np.testing.assert_allclose(hs_tm.transpose(1, 0, 2), hs, rtol=1e-6, atol=1e-7)  # the same masks, transposed
    chex.assert_trees_all_close(carry_tm, carry, rtol=1e-6, atol=1e-7)
    with pytest.raises(ShapeError, match=r"output_nll: .* got hs \(3, 6, 5\), targets \(3, 5\)"):
        output_nll(params, hs, tokens[:, 1:])
    with pytest.raises(DTypeError, match="output_nll targets must be an integer array; got float32"):
        output_nll(params, hs, tokens.astype(jnp.float32))


def test_embed_then_hidden_states_from_embeddings_is_hidden_states():
    """The split the sparse embedding update differentiates through: the table is not read after embed()."""
    model, params = model_and_params(dropout=0.5)
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 11)
    key = jax.random.key(3)
    for time_major in (False, True):
        xs = model.embed(params, tokens, time_major=time_major)
        assert xs.shape == ((T, B) if time_major else (B, T)) + params.embedding.shape[1:]
        np.testing.assert_array_equal(xs, params.embedding[tokens.T if time_major else tokens])
        want = model.hidden_states(params, model.initial_state(B), tokens, key=key, train=True, time_major=time_major)
        got = model.hidden_states_from_embeddings(params._replace(embedding=None), model.initial_state(B), xs,
                                                  key=key, train=True, time_major=time_major)
        chex.assert_trees_all_equal(got, want)
    assert bool(jnp.isnan(jax.jit(model.embed)(params, tokens.at[0, 0].set(11))[0, 0]).all())  # out of range
    with pytest.raises(ShapeError, match=r"xs must have shape \(B, T, E\) = \(\*, \*, 4\); got \(3, 6, 5\)"):
        model.hidden_states_from_embeddings(params, model.initial_state(B), jnp.zeros((B, T, 5)))
    with pytest.raises(DTypeError):
        model.hidden_states_from_embeddings(params, model.initial_state(B), tokens)


def test_dropout_function():
    x = jnp.ones((2, 50, 40))
    y = dropout(jax.random.key(0), x, 0.5)
    kept = np.asarray(y) != 0
    assert 0.4 < kept.mean() < 0.6 and np.allclose(np.asarray(y)[kept], 2.0)
    same = np.asarray(dropout(jax.random.key(0), x, 0.5, same_mask_over_time=True)) != 0
    assert np.all(same == same[:, :1, :])  # one mask for every time step
    assert not np.all(kept == kept[:, :1, :])
    assert dropout(jax.random.key(0), x, 0.0) is x
    for same in (False, True):
        np.testing.assert_array_equal(dropout(jax.random.key(0), x.transpose(1, 0, 2), 0.5, same, time_major=True),
                                      dropout(jax.random.key(0), x, 0.5, same).transpose(1, 0, 2))


def test_dropout_only_in_training_and_keyed():
    model, params = model_and_params(dropout=0.5, num_layers=2)
    tokens = jnp.ones((B, T), jnp.int32)
    carry = model.initial_state(B)
    evaluation = model.apply(params, carry, tokens)[0]
    a = model.apply(params, carry, tokens, key=jax.random.key(1), train=True)[0]
    b = model.apply(params, carry, tokens, key=jax.random.key(1), train=True)[0]
    c = model.apply(params, carry, tokens, key=jax.random.key(2), train=True)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, evaluation)
    np.testing.assert_array_equal(evaluation, model.apply(params, carry, tokens, train=False)[0])
    with pytest.raises(ValueError, match="needs a PRNG key"):
        model.apply(params, carry, tokens, train=True)


def test_causality_no_gradient_from_the_future():
    model, params = model_and_params(num_layers=2, cell="gru")
    xs = jax.random.normal(jax.random.key(3), (B, T, 4))
    targets = jnp.zeros((B, T), jnp.int32)
    for t in range(T):
        def loss_at_t(xs):
            logits, _ = model.apply_embeddings(params, model.initial_state(B), xs)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:, t], targets[:, t]).sum()

        grad = np.asarray(jax.grad(loss_at_t)(xs))
        assert np.all(grad[:, t + 1:] == 0), f"loss at step {t} depends on later inputs"
        assert np.any(grad[:, : t + 1] != 0)


def test_loss_reductions():
    logits = jax.random.normal(jax.random.key(0), (B, T, 7))
    targets = jax.random.randint(jax.random.key(1), (B, T), 0, 7)
    mean = sequence_loss(logits, targets, "token_mean")
    np.testing.assert_allclose(sequence_loss(logits, targets, "sum_time_mean_batch"), T * mean, rtol=1e-6)
    np.testing.assert_allclose(sequence_loss(logits, targets, "sum"), B * T * mean, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss reduction"):
        sequence_loss(logits, targets, "median")


def test_tiny_model_overfits_a_repeated_batch():
    model, params = model_and_params(vocab_size=20, embed_size=8, hidden_size=32, use_bias=True, output_bias=True)
    tokens = jax.random.randint(jax.random.key(5), (4, 13), 0, 20)
    optimizer = optax.adam(3e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            return sequence_loss(model.apply(p, model.initial_state(4), tokens[:, :-1])[0], tokens[:, 1:])
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    first = None
    for _ in range(300):
        params, opt_state, loss = step(params, opt_state)
        first = float(loss) if first is None else first
    assert first > 0.8 * math.log(20)
    assert float(loss) < 0.05 * math.log(20), f"final loss {float(loss)}"


def test_embed_init_scale_sets_the_outer_layers_as_awd_lstm_does():
    _, params = model_and_params(embed_init_scale=0.1, output_bias=True, initializer="pytorch", init_scale=None)
    assert float(jnp.abs(params.embedding).max()) <= 0.1 and float(jnp.abs(params.output.V).max()) <= 0.1
    assert float(jnp.abs(params.embedding).max()) > 0.05
    np.testing.assert_array_equal(params.output.c, 0.0)
    with pytest.raises(ValueError, match="embed_init_scale must be > 0"):
        LMConfig(embed_init_scale=0.0)


@pytest.mark.parametrize("overrides", [{}, {"output_bias": True, "tie_weights": True, "use_bias": True, "embed_size": 5}],
                         ids=["plain", "tied_with_biases"])
def test_bf16_compute_keeps_float32_parameters_state_and_loss(overrides):
    model, params = model_and_params(compute_dtype="bfloat16", num_layers=2, **overrides)
    model32 = LanguageModel(dataclasses.replace(model.config, compute_dtype="float32"))
    tokens = jax.random.randint(jax.random.key(1), (B, T + 1), 0, model.config.vocab_size)
    logits, carry = model.apply(params, model.initial_state(B), tokens[:, :-1])
    assert logits.dtype == jnp.float32 and {leaf.dtype for leaf in jax.tree.leaves(carry)} == {jnp.dtype(jnp.float32)}
    want, _ = model32.apply(params, model32.initial_state(B), tokens[:, :-1])
    np.testing.assert_allclose(logits, want, atol=2e-2)
    assert not np.allclose(logits, want, rtol=1e-5, atol=0)  # the products did run in bf16

    def loss(params, native):
        hs, _ = model.hidden_states(params, model.initial_state(B), tokens[:, :-1])
        return model.output_nll(params, hs, tokens[:, 1:], native=native).mean()

    value, grads = jax.value_and_grad(loss)(params, None)  # the native loss kernel where available
    want_value, want_grads = jax.value_and_grad(loss)(params, False)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got, expected, atol=3e-2 * float(np.abs(expected).max()))  # bf16 rounding


def test_a_bad_compute_dtype_is_refused():
    with pytest.raises(ConfigError, match="float16 needs loss scaling"):
        LMConfig(compute_dtype="float16")
