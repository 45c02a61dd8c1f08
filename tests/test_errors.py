"""Command-line failures: each bad input gives one short message (what was expected, what came, what to do) and
the right exit code, never a traceback, and leaves nothing behind; `--debug` brings the traceback back."""

from __future__ import annotations

import errno
import json

import pytest

from experiments import param_count, sample, train_lm
from rnn_jax.errors import ConfigError, describe, run_command


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i % 13} of a small text\n" for i in range(400)))
    return path


def tiny(source, run_dir, *extra):
    return ["--data-source", str(source), "--data-max-vocab", "none", "--run-dir", str(run_dir),
            "--model-hidden-size", "8", "--model-embed-size", "8", "--epochs", "1", "--max-windows-per-epoch", "2",
            "--sample-length", "0", "--no-progress", *extra]


def run(capsys, main, argv):
    code = run_command(main, argv)
    err = capsys.readouterr().err
    return code, err


def write(path, content: bytes):
    path.write_bytes(content)
    return path


# (id, how to make the bad input from tmp_path, the extra options, exit code, words the message must hold)
BAD_INPUTS = [
    ("empty file", lambda d: write(d / "e.txt", b""), [], 1, ["the file is empty"]),
    ("not UTF-8", lambda d: write(d / "l.txt", "caf\xe9 ".encode("latin1") * 50), [], 1, ["not UTF-8", "iconv"]),
    ("3 characters", lambda d: write(d / "s.txt", b"abc"), [], 1, ["the valid split is empty", "longer file"]),
    ("missing path", lambda d: d / "nothing.txt", [], 1, ["nothing.txt", "no such file"]),
    ("directory without splits", lambda d: (d / "splits").mkdir() or d / "splits", [], 1, ["no train file"]),
    ("batch size 0", None, ["--batch-size", "0"], 2, ["TrainConfig.batch_size must be a positive int; got 0"]),
    ("batch size -3", None, ["--batch-size", "-3"], 2, ["TrainConfig.batch_size must be a positive int; got -3"]),
    ("num steps 0", None, ["--num-steps", "0"], 2, ["TrainConfig.num_steps must be a positive int; got 0"]),
    ("hidden size 0", None, ["--model-hidden-size", "0"], 2, ["LMConfig.hidden_size must be a positive int"]),
    ("unknown cell", None, ["--model-cell", "lstmm"], 2, ["unknown cell 'lstmm'", "expected one of"]),
    ("NaN learning rate", None, ["--optim-learning-rate", "nan"], 2, ["learning_rate must be > 0", "got nan"]),
    ("learning rate 1e39", None, ["--optim-learning-rate", "1e39"], 2, ["within float32's range", "got 1e+39"]),
    ("unknown optimiser", None, ["--optim-name", "adamm"], 2, ["OptimConfig.name must be one of"]),
]


@pytest.mark.parametrize("case, make, extra, code, words", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_short_message(tmp_path, text, capsys, case, make, extra, code, words):
    source = make(tmp_path) if make else text
    run_dir = tmp_path / "run"
    got, err = run(capsys, train_lm.main, tiny(source, run_dir, *extra))
    assert got == code, err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert not run_dir.exists()  # a run that never took a step leaves no directory behind


def test_resume_of_a_missing_run_dir(tmp_path, capsys):
    code, err = run(capsys, train_lm.main, ["--resume", "--run-dir", str(tmp_path / "none"), "--no-progress"])
    assert code == 1 and err == f"error: {tmp_path / 'none'} does not exist; give the run directory of a training run " \
                                "(runs/<config> by default)\n"
    assert not (tmp_path / "none").exists()


def test_run_dir_that_is_a_file_is_left_alone(tmp_path, text, capsys):
    (tmp_path / "run").write_text("keep me")
    code, err = run(capsys, train_lm.main, tiny(text, tmp_path / "run"))
    assert code == 2 and "is a file; give a directory" in err
    assert (tmp_path / "run").read_text() == "keep me"


def test_unwritable_parent_directory(text, capsys):
    code, err = run(capsys, train_lm.main, tiny(text, "/sys/rnn_jax_test/run"))  # read-only, even for root
    assert code == 1 and err.startswith("error: ") and "/sys/rnn_jax_test" in err and "Traceback" not in err


def test_resume_names_each_changed_field(tmp_path, text, capsys):
    assert run(capsys, train_lm.main, tiny(text, tmp_path / "run"))[0] == 0
    code, err = run(capsys, train_lm.main, tiny(text, tmp_path / "run", "--resume", "--model-hidden-size", "12",
                                                "--batch-size", "3"))
    assert code == 2 and "Traceback" not in err
    assert "model.hidden_size: saved 8, given 12" in err and "batch_size: saved 32, given 3" in err


def test_existing_run_is_never_overwritten(tmp_path, text, capsys):
    assert run(capsys, train_lm.main, tiny(text, tmp_path / "run"))[0] == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    code, err = run(capsys, train_lm.main, tiny(text, tmp_path / "run"))
    assert code == 1 and "already holds a run" in err and "--resume" in err
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_sample_errors_name_the_run_dir(tmp_path, capsys):
    code, err = run(capsys, sample.main, ["--run-dir", str(tmp_path / "none")])
    assert code == 1 and "none does not exist" in err and "--resume" not in err
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, sample.main, ["--run-dir", str(tmp_path / "empty")])
    assert code == 1 and "is not a run directory" in err


def test_param_count_bad_option_is_a_usage_error(capsys):
    code, err = run(capsys, param_count.main, ["--cell", "lstmm"])
    assert code == 2 and err.startswith("error: ") and "unknown cell" in err


def test_debug_shows_the_traceback(tmp_path, text, monkeypatch):
    with pytest.raises(ConfigError):
        run_command(train_lm.main, tiny(text, tmp_path / "run", "--batch-size", "0", "--debug"))
    monkeypatch.setenv("RNN_JAX_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_command(train_lm.main, tiny(text, tmp_path / "run", "--batch-size", "0"))


def test_describe_sorts_expected_from_unexpected():
    assert describe(OSError(errno.ENOSPC, "No space left on device", "/x")) == (
        "error: No space left on device: /x; free some space (what was saved before is intact)", 1)
    assert describe(KeyError("a bug")) is None
    assert describe(ValueError("a bug")) is None


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, text, capsys, monkeypatch):
    import orbax.checkpoint as ocp

    real_save, calls = ocp.CheckpointManager.save, []

    def save(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) > 1:
            raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    code, err = run(capsys, train_lm.main, tiny(text, tmp_path / "run", "--epochs", "2"))
    assert code == 1 and "the disk is full" in err and "--resume" in err and "Traceback" not in err
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    code, err = run(capsys, train_lm.main, ["--resume", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 2
