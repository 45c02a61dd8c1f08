"""A run directory's files: the config to run (new or resumed), the corpus and its saved vocabulary, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from rnn_jax import data as data_lib
from rnn_jax.errors import ConfigError
from rnn_jax.train.config import TrainConfig, config_to_dict
from rnn_jax.train.sampling import saved_config


def write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def config_differences(saved: dict, given: dict, prefix: str = "") -> list[str]:
    """Each field whose value differs, as "model.hidden_size: saved 20, given 32" (nested configs dotted)."""
    differences = []
    for key in sorted(set(saved) | set(given)):
        old, new = saved.get(key), given.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: saved {old!r}, given {new!r}")
    return differences


def resolve_config(config: TrainConfig | None, run_dir: pathlib.Path, resume: bool) -> TrainConfig:
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if resume:
        saved = saved_config(run_dir)
        if config is None:
            return saved
        # vocab_size is derived from the corpus; the device count may change between runs (checkpoints restore
        # on any number of devices), so neither is compared.
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=saved.model.vocab_size))
        differences = config_differences(config_to_dict(saved),
                                         config_to_dict(dataclasses.replace(config, num_devices=saved.num_devices)))
        if differences:
            raise ConfigError(f"cannot resume {run_dir}: the config given differs from the one saved in its "
                              f"config.json ({'; '.join(differences)}). Resume without those options (--num-devices "
                              "may change), or start a new run directory")
        return config
    if config is None:
        raise ConfigError("train() needs a config unless resume=True")
    if has_checkpoints:
        raise FileExistsError(f"{run_dir} already holds a run with checkpoints; pass resume=True (--resume) to "
                              "continue it, or choose another run directory (nothing was overwritten)")
    return config


def load_corpus(config: TrainConfig, run_dir: pathlib.Path, resume: bool, primary: bool, log) -> tuple:
    """(corpus, config with the corpus's vocab_size); writes config.json and vocab.json for a new run."""
    vocab_path = run_dir / "vocab.json"
    saved_vocab = data_lib.Vocabulary.load(vocab_path) if resume else None
    corpus = data_lib.load_corpus(config.data, vocab=saved_vocab)
    if saved_vocab is not None and saved_vocab.size != config.model.vocab_size:
        raise data_lib.DataError(f"{vocab_path} has {saved_vocab.size} entries but the checkpointed model has "
                                 f"vocab_size {config.model.vocab_size}: the vocabulary file does not belong to this run")
    if config.model.vocab_size != corpus.vocab.size:
        log(f"vocab_size {config.model.vocab_size} -> {corpus.vocab.size} (the vocabulary built from the training split)")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=corpus.vocab.size))
    if not resume and primary:
        write_atomically(run_dir / "config.json", json.dumps(config_to_dict(config), indent=2))
        write_atomically(vocab_path, json.dumps(corpus.vocab.to_json(), ensure_ascii=False))
    return corpus, config
