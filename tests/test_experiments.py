"""The experiment scripts: command-line overrides, resume and sampling (param_count has its own file)."""

import math

import pytest

from experiments import sample, train_lm
from rnn_jax.cli import parse_config
from rnn_jax.training import TrainConfig


def test_nested_overrides():
    config = parse_config(TrainConfig(), ["--model-hidden-size", "64", "--optim-name", "adam", "--data-split",
                                          "0.8,0.1,0.1", "--batch-size", "7", "--model-initializer", "pytorch",
                                          "--model-init-scale", "none"])
    assert config.model.hidden_size == 64 and config.optim.name == "adam" and config.batch_size == 7
    assert config.data.split == (0.8, 0.1, 0.1) and config.model.init_scale is None
    with pytest.raises(SystemExit):
        parse_config(TrainConfig(), ["--model-use-bias", "maybe"])


def test_train_resume_and_sample(tmp_path, capsys):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i % 13} of a small text\n" for i in range(400)))
    common = ["--data-source", str(path), "--data-max-vocab", "none", "--run-dir", str(tmp_path / "run"),
              "--max-windows-per-epoch", "3", "--sample-length", "10", "--no-progress", "--tensorboard"]
    result = train_lm.main(common + ["--epochs", "1"])
    out = capsys.readouterr().out
    assert "config notes" in out and "epoch 1/1" in out and "sample:" in out
    assert result.history[0]["epoch"] == 1
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))  # the optional TensorBoard mirror
    resumed = train_lm.main(["--resume", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert "resumed" in capsys.readouterr().out and len(resumed.history) == 1
    [text] = sample.main(["--run-dir", str(tmp_path / "run"), "--prompt", "line", "--length", "12", "--seed", "1"])
    assert text.startswith("line") and len(text) == 16
    assert [text] == sample.main(["--run-dir", str(tmp_path / "run"), "--prompt", "line", "--length", "12", "--seed",
                                  "1"])
    texts = sample.main(["--run-dir", str(tmp_path / "run"), "--prompt", "line", "--length", "12", "--num-samples", "3",
                         "--top-k", "3", "--top-p", "0.9", "--temperature", "1.0"])
    assert len(texts) == 3 and all(t.startswith("line") and len(t) == 16 for t in texts)
    assert "--- sample 3 of 3 ---" in capsys.readouterr().out


@pytest.mark.parametrize("cell, runner", [("mingru", "associative"), ("minlstm", "fused"), ("lru", "associative"),
                                          ("rglru", "fused"), ("slstm", "fused")])
def test_train_lm_trains_the_modern_cells(tmp_path, capsys, cell, runner):
    """Each of them learns a repetitive text in one short epoch: the validation loss ends below a uniform guess."""
    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i % 13} of a small text\n" for i in range(400)))
    result = train_lm.main(["--data-source", str(path), "--data-max-vocab", "none", "--run-dir", str(tmp_path / "run"),
                            "--batch-size", "4", "--num-steps", "16", "--max-windows-per-epoch", "60",
                            "--sample-length", "0", "--no-progress", "--epochs", "1", "--model-cell", cell,
                            "--model-runner", runner, "--optim-name", "adam", "--optim-learning-rate", "0.02",
                            "--optim-warmup-steps", "0", "--optim-schedule", "constant"])
    vocabulary = result.params.embedding.shape[0]
    assert result.valid["nll"] < 0.8 * math.log(vocabulary), (result.valid["nll"], math.log(vocabulary))
