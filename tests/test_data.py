"""Data pipeline: tokenisation, vocabularies, reading errors, splits and batching (downloads: test_downloads.py)."""

import numpy as np
import pytest

from rnn_jax import data
from rnn_jax.data import DataConfig, DataError, Vocabulary


def test_word_tokens_follow_ptb_convention():
    assert data.tokenize("the cat\n sat  down\n", "word") == ["the", "cat", "<eos>", "sat", "down", "<eos>"]
    assert data.tokenize("ab\nc", "char") == ["a", "b", "\n", "c"]
    with pytest.raises(DataError, match="level must be one of"):
        data.tokenize("x", "byte")


def test_build_vocab_order_caps_and_unk():
    tokens = list("aaabbc") + ["d"]
    vocab = data.build_vocab(tokens, "char")
    assert vocab.tokens == ("a", "b", "c", "d", "<unk>")
    capped = data.build_vocab(tokens, "char", max_size=3)
    assert capped.tokens == ("a", "b", "<unk>")
    np.testing.assert_array_equal(capped.encode("abcz"), [0, 1, 2, 2])
    assert data.build_vocab(tokens, "char", min_count=2).tokens == ("a", "b", "<unk>")
    ptb_like = data.build_vocab(["x", "<unk>", "<unk>", "y", "y", "y"], "word")
    assert ptb_like.tokens == ("y", "<unk>", "x")  # PTB's own <unk> keeps its frequency rank
    with pytest.raises(DataError, match="max_vocab must be at least 2"):
        data.build_vocab(tokens, "char", max_size=1)


def test_vocab_roundtrip_and_detokenize(tmp_path):
    vocab = data.build_vocab(data.tokenize("to be or\nnot to be\n", "word"), "word")
    ids = vocab.encode(data.tokenize("to be\nor not\n", "word"))
    assert vocab.detokenize(ids) == "to be\nor not\n"
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a JSON vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"words": []}')
    with pytest.raises(DataError, match="not a vocabulary"):
        Vocabulary.load(tmp_path / "other.json")
    with pytest.raises(DataError, match="no unknown token"):
        Vocabulary(tokens=("a",), level="char", unk=None).encode("ab")


def test_read_text_errors_name_file_and_problem(tmp_path):
    with pytest.raises(DataError, match="missing.txt: no such file"):
        data.read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        data.read_text(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_bytes(b" \n\n")
    with pytest.raises(DataError, match=r"blank.txt: the file is empty \(only whitespace\)"):
        data.read_text(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 ok".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8 text: byte 0xe9 at offset 3"):
        data.read_text(tmp_path / "latin1.txt")
    with pytest.raises(DataError, match="is a directory"):
        data.read_text(tmp_path)


def test_split_text_at_line_boundaries():
    text = "".join(f"line {i}\n" for i in range(100))
    train, valid, test = data.split_text(text, (0.9, 0.05, 0.05))
    assert train + valid + test == text
    assert all(part.endswith("\n") for part in (train, valid, test))
    assert abs(len(train) / len(text) - 0.9) < 0.02
    with pytest.raises(DataError, match="three positive numbers summing to 1"):
        data.split_text(text, (0.9, 0.2, 0.1))
    with pytest.raises(DataError, match="the valid split is empty"):
        data.split_text("one line only\n", (0.9, 0.05, 0.05), "tiny.txt")


@pytest.mark.parametrize("naming", ["ptb.{}.txt", "{}.txt"])
def test_directory_source_both_namings(tmp_path, naming):
    for split, text in (("train", "a b a\nb a\n"), ("valid", "a c\n"), ("test", "b\n")):
        (tmp_path / naming.format(split)).write_text(text)
    corpus = data.load_corpus(DataConfig(source=str(tmp_path), level="word", max_vocab=None))
    assert set(corpus.vocab.tokens) == {"a", "b", "<eos>", "<unk>"}  # built from train only
    assert corpus.vocab.decode(corpus.valid) == ["a", "<unk>", "<eos>"]


def test_directory_missing_split(tmp_path):
    (tmp_path / "train.txt").write_text("x\n")
    with pytest.raises(DataError, match="no valid file .looked for ptb.valid.txt or valid.txt"):
        data.read_split_dir(tmp_path)


def test_builtin_corpus_needs_nothing():
    corpus = data.load_corpus(DataConfig(source="builtin", level="char", max_vocab=100))
    assert corpus.vocab.size == 100
    assert len(corpus.train) > 300_000 and len(corpus.valid) > 10_000 and len(corpus.test) > 10_000
    unk = corpus.vocab.encode(["<unk>"])[0]
    assert np.mean(corpus.train == unk) < 1e-3  # 99 characters cover the text: the vocabulary is meaningful
    assert "assert" in corpus.vocab.detokenize(corpus.train[:2000])


def test_single_file_source_and_vocab_reuse(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"word{i % 7} and more\n" for i in range(200)))
    corpus = data.load_corpus(DataConfig(source=str(path), level="word", max_vocab=None))
    again = data.load_corpus(DataConfig(source=str(path), level="word", max_vocab=3), vocab=corpus.vocab)
    assert again.vocab is corpus.vocab
    with pytest.raises(DataError, match="saved vocabulary is word-level but the data config asks for char"):
        data.load_corpus(DataConfig(source=str(path), level="char"), vocab=corpus.vocab)
    with pytest.raises(DataError, match="nope: no such file or directory"):
        data.load_corpus(DataConfig(source=str(tmp_path / "nope")))


def test_batchify_and_windows_are_contiguous():
    ids = np.arange(103)
    rows = data.batchify(ids, 4)
    assert rows.shape == (4, 25)
    np.testing.assert_array_equal(rows[1], np.arange(25, 50))  # each row is a contiguous stretch of the stream
    assert data.num_windows(rows, 5) == 4 and data.num_windows(rows, 5, drop_last=False) == 5
    x, y = data.window(rows, 1, 5)
    np.testing.assert_array_equal(x[0], [5, 6, 7, 8, 9])
    np.testing.assert_array_equal(y[0], [6, 7, 8, 9, 10])
    x_last, y_last = data.window(rows, 4, 5)
    assert x_last.shape == (4, 4) and y_last[0, -1] == 24
    with pytest.raises(DataError, match="the valid split has 7 tokens: too short for batch size 4"):
        data.batchify(np.arange(7), 4, name="valid")
    with pytest.raises(DataError, match="train split is too short: 25 tokens per batch row, a window needs 31"):
        data.check_trainable(rows, 30)


# Property-based: arbitrary bytes either load or raise the documented DataError, never anything else.
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(lambda t: t.encode("utf-8"))),
       level=st.sampled_from(["char", "word"]), batch=st.integers(1, 4))
def test_property_random_bytes_load_or_raise_data_error(tmp_path_factory, raw, level, batch):
    path = tmp_path_factory.mktemp("fuzz") / "input.txt"
    path.write_bytes(raw)
    try:
        corpus = data.load_corpus(DataConfig(source=str(path), level=level, max_vocab=50))
        rows = data.batchify(corpus.train, batch)
        data.check_trainable(rows, 3)
    except DataError as e:
        assert str(path) in str(e) or "split" in str(e)
        return
    assert rows.shape[0] == batch and corpus.vocab.size <= 50


def test_epoch_windows_fixed_and_sampled_as_awd_lstm():
    rows = np.arange(2 * 1001).reshape(2, 1001)
    fixed = data.epoch_windows(rows, 70)
    assert fixed == [(i * 70, 70) for i in range(1000 // 70)]
    sampled = data.epoch_windows(rows, 70, sample_lengths=True, seed=3, epoch=1)
    assert sampled == data.epoch_windows(rows, 70, sample_lengths=True, seed=3, epoch=1)  # replayable on resume
    assert sampled != data.epoch_windows(rows, 70, sample_lengths=True, seed=3, epoch=2)
    starts, lengths = zip(*sampled)
    assert starts[0] == 0 and all(a + n == b for a, n, b in zip(starts, lengths, starts[1:]))
    assert starts[-1] + lengths[-1] == 1000  # the windows run to the end of the rows
    assert all(length >= 5 for length in lengths[:-1])
    inputs, targets = data.window_at(rows, *sampled[1])
    np.testing.assert_array_equal(targets, inputs + 1)
    many = [data.sampled_length(np.random.default_rng(seed), 70) for seed in range(2000)]
    assert 66 < np.mean(many) < 70 and min(many) >= 5 and 0.02 < np.mean(np.array(many) < 50) < 0.09
