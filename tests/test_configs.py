"""Named configs: Zaremba's exact hyperparameters, and every config runs a step at shrunk sizes."""

import dataclasses

import pytest

from rnn_jax.configs import PRESETS, get_preset
from rnn_jax.training import train


def test_every_preset_names_command_expectation_and_source():
    assert set(PRESETS) == {"notes", "zaremba_small", "zaremba_medium", "zaremba_large", "shakespeare_char",
                            "shakespeare_char_long", "shakespeare_word", "awd_lstm"}
    for preset in PRESETS.values():
        assert preset.command.startswith("rnn-jax-train")
        assert preset.expected and preset.source


@pytest.mark.parametrize(
    "name, hidden, scale, clip, steps, full, decay, dropout, epochs",
    [("small", 200, 0.1, 5, 20, 4, 0.5, 0.0, 13), ("medium", 650, 0.05, 5, 35, 6, 0.8, 0.5, 39),
     ("large", 1500, 0.04, 10, 35, 14, 1 / 1.15, 0.65, 55)],
)
def test_zaremba_hyperparameters_are_the_papers(name, hidden, scale, clip, steps, full, decay, dropout, epochs):
    config = get_preset(f"zaremba_{name}").config
    m, o = config.model, config.optim
    assert (m.num_layers, m.hidden_size, m.embed_size, m.init_scale, m.initializer) == (2, hidden, hidden, scale, "uniform")
    assert (m.dropout, m.forget_bias, m.cell, m.use_bias) == (dropout, 0.0, "lstm", True)
    assert (o.name, o.learning_rate, o.clip_norm, o.schedule, o.decay_after, o.decay) == ("sgd", 1.0, clip, "zaremba", full, decay)
    assert (config.batch_size, config.num_steps, config.epochs) == (20, steps, epochs)
    assert config.loss_reduction == "sum_time_mean_batch" and config.data.level == "word"


def test_notes_preset_is_the_notes_network():
    m = get_preset("notes").config.model
    assert (m.embed_size, m.hidden_size, m.vocab_size, m.use_bias, m.output_bias) == (10, 20, 100, False, False)
    assert get_preset("notes").config.data.source == "builtin"
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        get_preset("huge")


def shrink(config, source):
    top = None if config.model.last_hidden_size is None else 8
    model = dataclasses.replace(config.model, hidden_size=8, embed_size=8, last_hidden_size=top)
    return dataclasses.replace(config, model=model, data=dataclasses.replace(config.data, source=source),
                               epochs=1, max_windows_per_epoch=2, batch_size=4, num_steps=min(config.num_steps, 8),
                               sample_length=5, max_seconds=None, eval_batch_size=None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_a_step_at_shrunk_sizes(name, tmp_path):
    config = PRESETS[name].config
    text = "".join(f"the {w} said to the king and queen {w}\n" for w in ("cat", "dog", "fox", "owl") * 60)
    if config.data.source == "ptb":
        for split in ("train", "valid", "test"):
            (tmp_path / f"ptb.{split}.txt").write_text(text)
        source = str(tmp_path)
    elif config.data.source == "builtin":
        source = "builtin"
    else:
        (tmp_path / "input.txt").write_text(text * 3)
        source = str(tmp_path / "input.txt")
    result = train(shrink(config, source), tmp_path / "run", progress=False, log=lambda _: None)
    assert len(result.history) == 1 and result.history[0]["valid_nll"] > 0


def test_awd_lstm_preset_has_the_papers_hyperparameters():
    preset = get_preset("awd_lstm")
    config, m = preset.config, preset.config.model
    assert (m.num_layers, m.embed_size, m.hidden_size, m.last_hidden_size, m.tie_weights) == (3, 400, 1150, 400, True)
    assert (m.weight_drop, m.embed_dropout, m.input_dropout, m.hidden_dropout, m.dropout) == (0.5, 0.1, 0.4, 0.25, 0.4)
    assert m.same_mask_over_time and (m.ar_alpha, m.tar_beta) == (2.0, 1.0)
    assert (config.optim.name, config.optim.learning_rate, config.optim.clip_norm) == ("nt_asgd", 30.0, 0.25)
    assert (config.optim.weight_decay, config.optim.nonmono) == (1.2e-6, 5)
    assert (config.batch_size, config.num_steps, config.sample_window_lengths, config.epochs) == (20, 70, True, 500)
    assert "60.0" in preset.expected and "57.3" in preset.expected
