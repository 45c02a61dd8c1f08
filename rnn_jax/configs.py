"""Named training configs: each states its command, the result to expect and where that comes from.

| name | what |
|---|---|
| `notes` | the notes' network (E=10, H=20, V=100, no bias) on the built-in text, characters; the main job |
| `zaremba_small` / `_medium` / `_large` | Zaremba et al. 2014 on PTB words, their exact hyperparameters |
| `shakespeare_char` | a 2-layer LSTM on tiny Shakespeare characters |
| `shakespeare_word` | Zaremba's small recipe on tiny Shakespeare words |

Every config is a `rnn_jax.training.TrainConfig`; `rnn-jax-train --config NAME` (in a checkout also
`python -m experiments.train_lm --config NAME`) runs one and `--model-hidden-size 64`-style options override any
field. The PTB configs download PTB and the Shakespeare configs Tiny Shakespeare on first use (verified, cached;
`rnn_jax.downloads`); offline, pass a local copy with `--data-source PATH`.
"""

from __future__ import annotations

import dataclasses

from rnn_jax.errors import ConfigError
from rnn_jax.data import DataConfig
from rnn_jax.lm import LMConfig
from rnn_jax.training import OptimConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named config with the command that runs it, the result it should reach and the source of that figure."""

    name: str
    config: TrainConfig
    command: str
    expected: str
    source: str


def _zaremba(size: str, hidden: int, scale: float, clip: float, steps: int, full_epochs: int, decay: float,
             dropout: float, epochs: int, expected: str) -> Preset:
    config = TrainConfig(
        model=LMConfig(vocab_size=10000, embed_size=hidden, hidden_size=hidden, num_layers=2, cell="lstm",
                       use_bias=True, output_bias=True, initializer="uniform", init_scale=scale, dropout=dropout),
        data=DataConfig(source="ptb", level="word", max_vocab=None),
        optim=OptimConfig(name="sgd", learning_rate=1.0, clip_norm=clip, schedule="zaremba",
                          decay_after=full_epochs, decay=decay),
        batch_size=20, num_steps=steps, epochs=epochs, loss_reduction="sum_time_mean_batch",
        log_every=100, sample_prompt="the", sample_length=60)
    return Preset(name=f"zaremba_{size}", config=config,
                  command=f"rnn-jax-train --config zaremba_{size}",
                  expected=expected,
                  source="Zaremba, Sutskever & Vinyals 2014, 'Recurrent Neural Network Regularization', Table 1; "
                         "../shared/REFERENCES.md")


PRESETS: dict[str, Preset] = {}
for preset in (
    Preset(
        name="notes",
        config=TrainConfig(
            model=LMConfig(vocab_size=100, embed_size=10, hidden_size=20, num_layers=1, cell="lstm", use_bias=False,
                           output_bias=False, initializer="uniform", init_scale=0.1),
            data=DataConfig(source="builtin", level="char", max_vocab=100),
            optim=OptimConfig(name="adam", learning_rate=2e-2, clip_norm=5.0, schedule="cosine", warmup_steps=50),
            batch_size=32, num_steps=50, epochs=20, log_every=25, sample_prompt="The ", sample_length=300),
        command="rnn-jax-train",
        expected="valid perplexity about 6.3 (1.85 nats/char) and test about 5.5 after 20 epochs, from 100 "
                 "(uniform guessing) at the start; about 30 s on 2 CPU cores",
        source="measured with this repository; the network is ../shared/NOTES.md's worked "
               "example, 4400 weights",
    ),
    _zaremba("small", 200, 0.1, 5.0, 20, 4, 0.5, 0.0, 13, "valid 120.7 / test 114.5 perplexity on PTB; after "
             "epoch 1 train ≈ 265-271, valid ≈ 178-182"),
    _zaremba("medium", 650, 0.05, 5.0, 35, 6, 0.8, 0.5, 39, "valid 86.2 / test 82.7 perplexity on PTB"),
    _zaremba("large", 1500, 0.04, 10.0, 35, 14, 1 / 1.15, 0.65, 55, "valid 82.2 / test 78.4 perplexity on PTB"),
    Preset(
        name="shakespeare_char",
        config=TrainConfig(
            model=LMConfig(vocab_size=66, embed_size=64, hidden_size=256, num_layers=2, cell="lstm", use_bias=True,
                           output_bias=True, initializer="pytorch", init_scale=None, dropout=0.1),
            data=DataConfig(source="tinyshakespeare", level="char", max_vocab=None, split=(0.9, 0.05, 0.05)),
            optim=OptimConfig(name="adam", learning_rate=3e-3, clip_norm=1.0, schedule="cosine", warmup_steps=100),
            batch_size=64, num_steps=100, epochs=3, log_every=20, sample_prompt="ROMEO:\n", sample_length=400),
        command="rnn-jax-train --config shakespeare_char",
        expected="valid loss 1.71 nats/char (perplexity 5.55), test 1.76, after 3 epochs in about 4 minutes on "
                 "2 CPU cores (measured: 252 s, 12-13k tokens/s)",
        source="measured with this repository; char-RNN results on tiny Shakespeare are usually reported at "
               "1.4-1.6 nats/char for LSTMs of this size",
    ),
    Preset(
        name="shakespeare_word",
        config=TrainConfig(
            model=LMConfig(vocab_size=10000, embed_size=200, hidden_size=200, num_layers=2, cell="lstm",
                           use_bias=True, output_bias=True, initializer="uniform", init_scale=0.1, dropout=0.5),
            data=DataConfig(source="tinyshakespeare", level="word", max_vocab=10000, split=(0.9, 0.05, 0.05)),
            optim=OptimConfig(name="sgd", learning_rate=1.0, clip_norm=5.0, schedule="zaremba", decay_after=4,
                              decay=0.5),
            batch_size=20, num_steps=20, epochs=8, loss_reduction="sum_time_mean_batch", log_every=100,
            sample_prompt="KING", sample_length=60),
        command="rnn-jax-train --config shakespeare_word",
        expected="valid perplexity well under 200 after 8 epochs",
        source="Zaremba et al. 2014's small recipe with their medium network's dropout, applied to tiny Shakespeare "
               "words (no published reference on this corpus)",
    ),
):
    PRESETS[preset.name] = preset


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; expected one of {sorted(PRESETS)}") from None
