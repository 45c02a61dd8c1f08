"""Named training configs: each states its command, the result to expect and where that comes from.

| name | what |
|---|---|
| `notes` | the notes' network (E=10, H=20, V=100, no bias) on the built-in text, characters; the main job |
| `zaremba_small` / `_medium` / `_large` | Zaremba et al. 2014 on PTB words, their exact hyperparameters |
| `shakespeare_char` | the best 2-layer LSTM recipe for 110 s on tiny Shakespeare characters |
| `shakespeare_char_long` | the best LSTM recipe for 600 s on the same text |
| `shakespeare_word` | the best tied 2-layer LSTM recipe for 300 s on tiny Shakespeare words |
| `awd_lstm` | Merity et al. 2017's AWD-LSTM on PTB words, their hyperparameters |

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


def _shakespeare_char(name: str, *, hidden: int, dropout: float, learning_rate: float, seconds: float,
                      expected: str, compute_dtype: str = "float32") -> Preset:
    """A 2-layer character LSTM on Tiny Shakespeare trained for a wall-clock budget (`bench_quality`'s recipes)."""
    config = TrainConfig(
        model=LMConfig(vocab_size=66, embed_size=64, hidden_size=hidden, num_layers=2, cell="lstm", use_bias=True,
                       output_bias=True, initializer="pytorch", init_scale=None, dropout=dropout,
                       compute_dtype=compute_dtype),
        data=DataConfig(source="tinyshakespeare", level="char", max_vocab=None, split=(0.9, 0.05, 0.05)),
        optim=OptimConfig(name="adam", learning_rate=learning_rate, clip_norm=1.0, schedule="cosine",
                          warmup_steps=100),
        batch_size=32, num_steps=50, epochs=1000, max_seconds=seconds, log_every=50, sample_prompt="ROMEO:\n",
        sample_length=400)
    return Preset(name=name, config=config, command=f"rnn-jax-train --config {name}", expected=expected,
                  source="measured with this repository: the best of the recipes in docs/guide/benchmarks.md "
                         "(`python -m experiments.bench_quality`); nanoGPT's GPU shakespeare_char reaches 1.47")


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
    _shakespeare_char("shakespeare_char", hidden=256, dropout=0.0, learning_rate=1e-2, seconds=110.0,
                      compute_dtype="bfloat16",
                      expected="valid + test (the text's last 10%) about 1.49 nats/char after 110 s on 2 cores with "
                               "AVX512-BF16 (AMD EPYC Zen 4: 1.489-1.493, 2,029-2,195 steps; Intel Xeon with AMX: "
                               "1.496, 2,183 steps); on a CPU without avx512_bf16 add `--model-compute-dtype float32` "
                               "(its bf16 products have no hardware support; Zen 3, float32: 1.57, 850 steps)"),
    _shakespeare_char("shakespeare_char_long", hidden=512, dropout=0.2, learning_rate=5e-3, seconds=600.0,
                      expected="valid + test about 1.44 nats/char after 600 s on 2 cores with AVX-512 (Intel "
                               "Xeon: 1.438, 3,450 steps; Zen 4: 1.446, 2,850 steps), 1.48 on 2 Zen 3 cores (1,450 "
                               "steps)"),
    Preset(
        name="shakespeare_word",
        config=TrainConfig(
            model=LMConfig(vocab_size=10000, embed_size=256, hidden_size=256, num_layers=2, cell="lstm",
                           use_bias=True, output_bias=True, tie_weights=True, initializer="pytorch",
                           init_scale=None, dropout=0.5),
            data=DataConfig(source="tinyshakespeare", level="word", max_vocab=10000, split=(0.9, 0.05, 0.05)),
            optim=OptimConfig(name="adam", learning_rate=3e-3, clip_norm=1.0, schedule="cosine", warmup_steps=100),
            batch_size=32, num_steps=35, epochs=1000, max_seconds=300.0, log_every=100, sample_prompt="KING",
            sample_length=60),
        command="rnn-jax-train --config shakespeare_word",
        expected="valid + test perplexity about 118 (valid 111, test 125) after 300 s (11 epochs) on 2 cores of an "
                 "AMD EPYC Zen 4",
        source="measured with this repository (docs/guide/benchmarks.md); no published reference on these words",
    ),
    Preset(
        name="awd_lstm",
        config=TrainConfig(
            model=LMConfig(vocab_size=10000, embed_size=400, hidden_size=1150, num_layers=3, last_hidden_size=400,
                           cell="lstm", use_bias=True, output_bias=True, tie_weights=True, initializer="pytorch",
                           init_scale=None, embed_init_scale=0.1, dropout=0.4, input_dropout=0.4,
                           hidden_dropout=0.25, same_mask_over_time=True, embed_dropout=0.1, weight_drop=0.5,
                           ar_alpha=2.0, tar_beta=1.0),
            data=DataConfig(source="ptb", level="word", max_vocab=None),
            optim=OptimConfig(name="nt_asgd", learning_rate=30.0, clip_norm=0.25, schedule="constant",
                              weight_decay=1.2e-6, nonmono=5),
            batch_size=20, num_steps=70, sample_window_lengths=True, eval_batch_size=10, epochs=500, seed=141,
            log_every=200, sample_prompt="the", sample_length=60),
        command="rnn-jax-train --config awd_lstm",
        expected="valid 60.0 / test 57.3 perplexity on PTB (the paper's Table 1); the authors' code reports about "
                 "61.2 / 58.8 for this command before its optional fine-tuning stage, which this preset does not run. "
                 "500 epochs: days on 2 CPU cores (the authors: 65 s per epoch on an NVIDIA Quadro GP100)",
        source="Merity, Keskar & Socher 2017, 'Regularizing and Optimizing LSTM Language Models' (arXiv "
               "1708.02182), and its code's PTB command (github.com/salesforce/awd-lstm-lm: --batch_size 20 "
               "--dropouti 0.4 --dropouth 0.25 --seed 141 --epoch 500 with its defaults: 3 layers, 400/1150, "
               "tied, dropout 0.4, dropoute 0.1, wdrop 0.5, alpha 2, beta 1, lr 30, clip 0.25, bptt 70, wdecay 1.2e-6, "
               "NT-ASGD with nonmono 5)",
    ),
):
    PRESETS[preset.name] = preset


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; expected one of {sorted(PRESETS)}") from None
