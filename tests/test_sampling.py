"""Sampling: top-k and nucleus filters against a hand-computed oracle; several samples at once; seeds; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import data as data_lib
from rnn_jax.lm import LanguageModel, LMConfig
from rnn_jax.train import filter_logits, generate, generate_many

PROBABILITIES = np.array([0.1, 0.4, 0.05, 0.3, 0.15])  # order by mass: 1, 3, 4, 0, 2


def kept(logits):
    return sorted(np.flatnonzero(np.isfinite(np.asarray(logits))).tolist())


@pytest.mark.parametrize("top_k, expected", [(1, [1]), (2, [1, 3]), (4, [0, 1, 3, 4]), (5, [0, 1, 2, 3, 4]),
                                             (9, [0, 1, 2, 3, 4])])
def test_top_k_keeps_the_k_most_probable(top_k, expected):
    assert kept(filter_logits(jnp.log(PROBABILITIES), top_k=top_k)) == expected


@pytest.mark.parametrize("top_p, expected", [
    (0.3, [1]),            # 0.4 alone reaches 0.3
    (0.4, [1]),            # ... and 0.4 (the mass before the second token is already 0.4)
    (0.5, [1, 3]),         # 0.4 + 0.3 = 0.7 >= 0.5
    (0.8, [1, 3, 4]),      # 0.85
    (0.9, [0, 1, 3, 4]),   # 0.95
    (1.0, [0, 1, 2, 3, 4]),
])
def test_top_p_keeps_the_smallest_nucleus_reaching_p(top_p, expected):
    logits = jnp.log(PROBABILITIES) + 2.0  # a shift of the logits changes nothing
    filtered = filter_logits(logits, top_p=top_p)
    assert kept(filtered) == expected
    np.testing.assert_array_equal(np.asarray(filtered)[expected], np.asarray(logits)[expected])


def test_filters_work_row_by_row_and_combine():
    logits = jnp.log(jnp.stack([jnp.asarray(PROBABILITIES), jnp.asarray(PROBABILITIES[::-1])]))
    both = filter_logits(logits, top_k=3, top_p=0.5)
    assert kept(both[0]) == [1, 3] and kept(both[1]) == [1, 3]  # the second row is reversed: ids 3 and 1
    assert kept(filter_logits(logits, top_k=1)[1]) == [3]


@pytest.fixture
def model_and_vocab():
    vocab = data_lib.Vocabulary(tokens=tuple("abcdefgh") + ("<unk>",), level="char")
    model = LanguageModel(LMConfig(vocab_size=vocab.size, embed_size=4, hidden_size=8))
    return model, model.init(jax.random.PRNGKey(0)), vocab


def test_several_samples_side_by_side_are_seeded_and_distinct(model_and_vocab):
    model, params, vocab = model_and_vocab
    texts = generate_many(model, params, vocab, "ab", 20, num_samples=3, temperature=1.5, key=jax.random.PRNGKey(1))
    assert len(texts) == 3 and all(text.startswith("ab") and len(text) == 22 for text in texts)
    assert len(set(texts)) > 1  # independent draws (three equal 20-character samples are vanishingly unlikely)
    assert texts == generate_many(model, params, vocab, "ab", 20, num_samples=3, temperature=1.5,
                                  key=jax.random.PRNGKey(1))
    greedy = generate_many(model, params, vocab, "ab", 5, num_samples=2, temperature=0.0)
    assert greedy[0] == greedy[1] == generate(model, params, vocab, "ab", 5, temperature=0.0)


def test_top_k_one_is_greedy(model_and_vocab):
    model, params, vocab = model_and_vocab
    greedy = generate(model, params, vocab, "ab", 10, temperature=0.0)
    assert generate(model, params, vocab, "ab", 10, temperature=2.0, top_k=1, key=jax.random.PRNGKey(5)) == greedy
    assert generate(model, params, vocab, "ab", 10, temperature=2.0, top_p=1e-6, key=jax.random.PRNGKey(5)) == greedy


@pytest.mark.parametrize("options, message", [({"top_k": 0}, "top_k must be >= 1"), ({"top_p": 1.5}, "top_p must be in"),
                                              ({"num_samples": 0}, "num_samples must be >= 1"),
                                              ({"temperature": -1.0}, "temperature must be >= 0")])
def test_bad_sampling_options_are_refused(model_and_vocab, options, message):
    model, params, vocab = model_and_vocab
    with pytest.raises(ValueError, match=message):
        generate_many(model, params, vocab, "ab", 5, **options)
