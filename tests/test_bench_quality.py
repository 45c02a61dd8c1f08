"""The quality benchmark: its table, JSON and plot from a report, its refusals, and (slow) a real run of an
rnn_jax recipe and the PyTorch peer for a few seconds each on a short text."""

import json

import pytest

from experiments import bench_quality
from rnn_jax.errors import ConfigError

REPORT = {"machine": {"platform": "cpu"}, "config": {}, "results": [
    {"budget_s": 110.0, "recipe": "lstm", "held_out_nll": 1.61, "steps": 1200, "tokens": 7_680_000,
     "curve": [(50.0, 1.9), (100.0, 1.65)]},
    {"budget_s": 300.0, "recipe": "lstm", "held_out_nll": 1.52, "steps": 3300, "tokens": 21_120_000, "curve": []},
    {"budget_s": 110.0, "recipe": "torch_same", "held_out_nll": 1.70, "steps": 900, "tokens": 5_760_000,
     "curve": []},
]}


def test_outputs_hold_the_table_json_and_plot(tmp_path):
    bench_quality.write_outputs(tmp_path, REPORT)
    assert json.loads((tmp_path / "bench_quality.json").read_text())["results"][1]["held_out_nll"] == 1.52
    table = (tmp_path / "bench_quality.md").read_text()
    assert "| 110 | lstm | 1.6100 | 1,200 | 7,680,000 |" in table and "| 110 | torch_same | 1.7000 |" in table
    assert (tmp_path / "bench_quality.png").stat().st_size > 1000


def test_unknown_recipes_are_refused():
    with pytest.raises(ConfigError, match=r"unknown recipe\(s\) \['tiny'\]"):
        bench_quality.main(["--recipes", "lstm,tiny", "--out", "none"])


@pytest.mark.slow
def test_a_short_real_run_of_rnn_jax_and_the_pytorch_peer(tmp_path, shakespeare_path):
    pytest.importorskip("torch")
    text = tmp_path / "short.txt"
    text.write_text(shakespeare_path.read_text()[:60_000])
    report = bench_quality.main(["--data-source", str(text), "--budgets", "25", "--recipes", "lstm,torch_same",
                                 "--out", str(tmp_path / "out")])
    rows = {r["recipe"]: r for r in report["results"]}
    for row in rows.values():  # trained: well below a uniform guess over ~60 characters (4.1 nats)
        assert 0 < row["held_out_nll"] < 3.6 and row["steps"] > 0
    assert (tmp_path / "out" / "bench_quality.png").exists()


def test_the_pytorch_peer_takes_the_budgets_preset_recipe():
    from experiments.torch_char_lm import TorchRecipe
    from rnn_jax.cli import parse_config
    from rnn_jax.configs import get_preset

    for budget, name in ((110, "shakespeare_char"), (600, "shakespeare_char_long")):
        assert bench_quality.preset_for(budget) == name
        recipe = parse_config(TorchRecipe(), bench_quality.torch_same_recipe(budget))
        config = get_preset(name).config
        m, o = config.model, config.optim
        assert (recipe.embed_size, recipe.hidden_size, recipe.num_layers, recipe.dropout) == (
            m.embed_size, m.hidden_size, m.num_layers, m.dropout)
        assert (recipe.batch_size, recipe.num_steps, recipe.learning_rate, recipe.warmup_steps, recipe.clip_norm,
                recipe.final_fraction, recipe.compute_dtype) == (
            config.batch_size, config.num_steps, o.learning_rate, o.warmup_steps, o.clip_norm, o.final_fraction,
            m.compute_dtype)
    assert get_preset("shakespeare_char").config.model.compute_dtype == "bfloat16"


def test_the_float32_peer_overrides_the_presets_precision():
    from experiments.torch_char_lm import TorchRecipe
    from rnn_jax.cli import parse_config

    from_preset, overrides = bench_quality.TORCH["torch_same_float32"]
    recipe = parse_config(TorchRecipe(), bench_quality.torch_same_recipe(110) + overrides)
    assert from_preset and recipe.compute_dtype == "float32" and recipe.hidden_size == 256
