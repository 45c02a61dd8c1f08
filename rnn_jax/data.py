"""Text corpora for language modelling: reading, tokenising, vocabularies and batching.

Tokenisation:
- word level (PTB convention): whitespace tokens, one `<eos>` appended per line, `<unk>` for words outside the
  vocabulary, which is built from the training split (optionally capped in size or by minimum count);
- character level: every character is a token; `<unk>` stands for characters outside the vocabulary.

Sources (`DataConfig.source`):
- ``"builtin"``: the documentation topics that ship with CPython (`pydoc_data.topics`), real English text
  about Python that needs no download and no file; split 90/5/5;
- a directory holding train/valid/test files (``ptb.train.txt`` or ``train.txt`` naming);
- a single text file, split into train/valid/test by fraction at line boundaries;
- ``"ptb"``: the Penn Treebank (Mikolov's preprocessing), downloaded once from its canonical address into a
  cache with size and MD5 verification (`rnn_jax.downloads.download_ptb`);
- ``"tinyshakespeare"``: Karpathy's Tiny Shakespeare (1,115,394 characters), downloaded once into the same cache
  with size and SHA-256 verification (`rnn_jax.downloads.download_tinyshakespeare`), split by `split`.

Batching follows Zaremba et al. 2014: the token stream is reshaped to (B, N) contiguous rows and cut along time
into windows of T steps; the recurrent state is carried from one window to the next.

Examples:
    >>> from rnn_jax.data import DataConfig, load_corpus, batchify, num_windows, window
    >>> corpus = load_corpus(DataConfig(source="builtin", level="char", max_vocab=100))
    >>> corpus.vocab.size
    100
    >>> rows = batchify(corpus.train, batch_size=32)
    >>> inputs, targets = window(rows, 0, num_steps=20)
    >>> inputs.shape, targets.shape
    ((32, 20), (32, 20))
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
from typing import Iterable, Optional, Sequence

import numpy as np

from rnn_jax.downloads import (PTB_FILES, PTB_URL, TINYSHAKESPEARE, default_cache_dir,  # noqa: F401 (re-exported)
                               download_ptb, download_tinyshakespeare)
from rnn_jax.errors import DataError  # noqa: F401 (re-exported: `rnn_jax.data.DataError`)

EOS = "<eos>"
UNK = "<unk>"
LEVELS = ("char", "word")




# ----------------------------------------------------------------------------------------------- vocabulary


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token <-> id mapping. `tokens[i]` is the token of id i; `unk` (if not None) receives unknown tokens."""

    tokens: tuple[str, ...]
    level: str
    unk: Optional[str] = UNK

    def __post_init__(self):
        if self.level not in LEVELS:
            raise DataError(f"vocabulary level must be one of {LEVELS}; got {self.level!r}")
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError("vocabulary tokens must be distinct")
        if self.unk is not None and self.unk not in self.tokens:
            raise DataError(f"the unknown token {self.unk!r} is not in the vocabulary")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @property
    def size(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Token ids (int32); unknown tokens map to `unk`, or raise if the vocabulary has none."""
        index = self._index  # type: ignore[attr-defined]
        if self.unk is None:
            try:
                return np.fromiter((index[t] for t in tokens), np.int32)
            except KeyError as e:
                raise DataError(f"token {e.args[0]!r} is not in the vocabulary, which has no unknown token") from None
        unk_id = index[self.unk]
        return np.fromiter((index.get(t, unk_id) for t in tokens), np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def detokenize(self, ids: Iterable[int]) -> str:
        """Text for ids: characters joined (`unk` shown as U+FFFD), or words joined by spaces with `<eos>` as a
        line break."""
        tokens = self.decode(ids)
        if self.level == "char":
            return "".join("\ufffd" if t == self.unk else t for t in tokens)
        return " ".join(tokens).replace(f" {EOS} ", "\n").replace(f" {EOS}", "\n").replace(f"{EOS} ", "\n")

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text, self.level)

    def to_json(self) -> dict:
        return {"level": self.level, "unk": self.unk, "tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabulary":
        try:
            return cls(tokens=tuple(data["tokens"]), level=data["level"], unk=data.get("unk"))
        except (KeyError, TypeError) as e:
            raise DataError(f"not a vocabulary: expected keys 'tokens', 'level', 'unk'; {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = pathlib.Path(path)
        try:
            return cls.from_json(json.loads(read_text(path)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not a JSON vocabulary file ({e})") from None


def tokenize(text: str, level: str) -> list[str]:
    """Characters, or PTB-style words (whitespace split, `<eos>` after each line)."""
    if level == "char":
        return list(text)
    if level == "word":
        tokens: list[str] = []
        for line in text.splitlines():
            tokens.extend(line.split())
            tokens.append(EOS)
        return tokens
    raise DataError(f"tokenisation level must be one of {LEVELS}; got {level!r}")


def build_vocab(tokens: Sequence[str], level: str, *, max_size: int | None = None, min_count: int = 1,
                unk: str = UNK) -> Vocabulary:
    """Vocabulary of the training tokens, most frequent first (ties by token), `unk` included.

    Args:
        tokens: the training split's tokens.
        level: "char" or "word".
        max_size: cap on the number of entries, `unk` included (e.g. 100 for the notes' network).
        min_count: drop tokens seen fewer times.
        unk: the unknown token; kept in its frequency position when the corpus has it (PTB), else appended.
    """
    if max_size is not None and max_size < 2:
        raise DataError(f"max_vocab must be at least 2 (one token plus {unk}); got {max_size}")
    if min_count < 1:
        raise DataError(f"min_count must be >= 1; got {min_count}")
    counts = collections.Counter(tokens)
    ranked = [t for t, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_count]
    if unk not in ranked:
        limit = None if max_size is None else max_size - 1
        ranked = ranked[:limit] + [unk]
    elif max_size is not None and len(ranked) > max_size:
        ranked = [t for t in ranked if t != unk][: max_size - 1] + [unk]
    return Vocabulary(tokens=tuple(ranked), level=level, unk=unk)


# ------------------------------------------------------------------------------------------------- reading


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file; clear `DataError`s for missing, empty and non-UTF-8 files."""
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty" + (" (only whitespace)" if raw else ""))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} cannot be decoded "
                        "(convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`)") from None


def builtin_text() -> str:
    """The documentation topics shipped with CPython (`pydoc_data.topics`): real text, no download."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip("\n") for name in sorted(topics)) + "\n"


def split_text(text: str, fractions: Sequence[float], where: str = "text") -> tuple[str, str, str]:
    """Splits text into train/valid/test by fraction of characters, at line boundaries."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three positive numbers summing to 1; got {tuple(fractions)}")
    cuts = []
    for position in (fractions[0], fractions[0] + fractions[1]):
        cut = text.find("\n", int(len(text) * position))
        cuts.append(len(text) if cut < 0 else cut + 1)
    parts = (text[: cuts[0]], text[cuts[0] : cuts[1]], text[cuts[1] :])
    for name, part in zip(("train", "valid", "test"), parts):
        if not part.strip():
            raise DataError(f"{where}: the {name} split is empty ({len(text)} characters split {tuple(fractions)}); "
                            "use a longer file or other fractions")
    return parts  # type: ignore[return-value]


SPLIT_NAMES = {"train": ("ptb.train.txt", "train.txt"), "valid": ("ptb.valid.txt", "valid.txt"),
               "test": ("ptb.test.txt", "test.txt")}


def read_split_dir(directory: str | os.PathLike) -> tuple[str, str, str]:
    """train/valid/test texts from a directory (``ptb.train.txt`` or ``train.txt`` naming)."""
    directory = pathlib.Path(directory)
    texts = []
    for split, names in SPLIT_NAMES.items():
        found = [directory / n for n in names if (directory / n).is_file()]
        if not found:
            raise DataError(f"{directory}: no {split} file (looked for {' or '.join(names)})")
        texts.append(read_text(found[0]))
    return tuple(texts)  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------------- corpus


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes tokens.

    Attributes:
        source: "builtin", "ptb", "tinyshakespeare" (both downloaded once and verified), a directory with
            train/valid/test files, or one text file.
        level: "char" or "word".
        split: train/valid/test fractions for a single file or the built-in text.
        max_vocab: cap on the vocabulary size, `<unk>` included (None: no cap).
        min_count: minimum count of a training token to enter the vocabulary.
        lowercase: lowercase the text before tokenising.
        cache_dir: download cache for "ptb" and "tinyshakespeare" (None: $RNN_JAX_CACHE or ~/.cache/rnn_jax).
    """

    source: str = "builtin"
    level: str = "char"
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    max_vocab: Optional[int] = 100
    min_count: int = 1
    lowercase: bool = False
    cache_dir: Optional[str] = None

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        """The accepted values of the fields that take names (for the command line's help)."""
        return {"level": list(LEVELS)}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Token ids of the three splits and the vocabulary built from train."""

    vocab: Vocabulary
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    description: str


def read_splits(config: DataConfig) -> tuple[tuple[str, str, str], str]:
    """(train, valid, test) texts for a config, and a one-line description of the source."""
    if config.source == "builtin":
        return split_text(builtin_text(), config.split, "builtin"), "CPython documentation topics (pydoc_data)"
    if config.source == "ptb":
        directory = download_ptb(config.cache_dir)
        return read_split_dir(directory), f"Penn Treebank ({directory})"
    if config.source == "tinyshakespeare":
        path = download_tinyshakespeare(config.cache_dir)
        return split_text(read_text(path), config.split, str(path)), f"Tiny Shakespeare ({path}) split {config.split}"
    path = pathlib.Path(config.source).expanduser()
    if path.is_dir():
        return read_split_dir(path), f"directory {path}"
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (corpus source; or use 'builtin', 'ptb' or "
                        "'tinyshakespeare')")
    return split_text(read_text(path), config.split, str(path)), f"file {path} split {tuple(config.split)}"


def load_corpus(config: DataConfig, vocab: Vocabulary | None = None) -> Corpus:
    """Reads, tokenises and encodes the three splits; builds the vocabulary from train unless one is given."""
    if config.level not in LEVELS:
        raise DataError(f"DataConfig.level must be one of {LEVELS}; got {config.level!r}")
    texts, description = read_splits(config)
    if config.lowercase:
        texts = tuple(t.lower() for t in texts)
    tokens = [tokenize(t, config.level) for t in texts]
    if vocab is None:
        vocab = build_vocab(tokens[0], config.level, max_size=config.max_vocab, min_count=config.min_count)
    elif vocab.level != config.level:
        raise DataError(f"the saved vocabulary is {vocab.level}-level but the data config asks for {config.level}-level")
    train, valid, test = (vocab.encode(t) for t in tokens)
    return Corpus(vocab=vocab, train=train, valid=valid, test=test, description=description)


# ------------------------------------------------------------------------------------------------ batching


def batchify(ids: np.ndarray, batch_size: int, *, name: str = "split") -> np.ndarray:
    """(B, N) contiguous rows of a token stream (the tail that does not fill a row is dropped)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1; got {batch_size}")
    columns = len(ids) // batch_size
    if columns < 2:
        raise DataError(f"the {name} split has {len(ids)} tokens: too short for batch size {batch_size} "
                        f"(needs at least {2 * batch_size}: each row must hold an input and its next token)")
    return np.asarray(ids[: columns * batch_size]).reshape(batch_size, columns)


def num_windows(rows: np.ndarray, num_steps: int, *, drop_last: bool = True) -> int:
    """How many windows of `num_steps` inputs (each with next-token targets) the rows hold."""
    predictable = rows.shape[1] - 1
    return predictable // num_steps if drop_last else -(-predictable // num_steps)


def window(rows: np.ndarray, index: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Window `index`: inputs rows[:, i T : (i+1) T] and targets shifted by one; the last may be shorter."""
    start = index * num_steps
    return window_at(rows, start, min(num_steps, rows.shape[1] - 1 - start))


def sampled_length(rng: np.random.Generator, num_steps: int) -> int:
    """AWD-LSTM's window length (Merity et al. 2017, section 4.1): N(T, 5), or N(T/2, 5) with probability 0.05,
    rounded down and at least 5, so that every start position is seen across epochs."""
    mean = num_steps if rng.random() < 0.95 else num_steps / 2
    return max(5, int(rng.normal(mean, 5)))


def epoch_windows(rows: np.ndarray, num_steps: int, *, sample_lengths: bool = False, seed: int = 0,
                  epoch: int = 0) -> list[tuple[int, int]]:
    """One epoch's training windows over the rows, as (start, length) in order.

    Fixed (the default): `num_windows(rows, T)` windows of T. With sample_lengths, each window's length is drawn
    by `sampled_length` from a generator seeded by (seed, epoch), so a resumed epoch replays the same windows, and
    the windows run to the end of the rows (the last may be shorter).
    """
    if not sample_lengths:
        return [(index * num_steps, num_steps) for index in range(num_windows(rows, num_steps))]
    rng, predictable = np.random.default_rng([seed, epoch]), rows.shape[1] - 1
    windows, start = [], 0
    while start < predictable:
        length = min(sampled_length(rng, num_steps), predictable - start)
        windows.append((start, length))
        start += length
    return windows


def window_at(rows: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs rows[:, start : start + length] and their next-token targets."""
    return rows[:, start : start + length], rows[:, start + 1 : start + length + 1]


def check_trainable(rows: np.ndarray, num_steps: int, name: str = "train") -> None:
    if num_steps < 1:
        raise DataError(f"num_steps must be >= 1; got {num_steps}")
    if num_windows(rows, num_steps) < 1:
        raise DataError(f"the {name} split is too short: {rows.shape[1]} tokens per batch row, a window needs "
                        f"{num_steps + 1}; use a smaller batch_size or num_steps, or a longer corpus")
