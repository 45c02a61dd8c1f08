"""experiments.param_count: the notes' worked example and its variants, from the arrays init creates."""

import pytest

from experiments import param_count


def test_default_prints_the_notes_worked_example(capsys):
    result = param_count.main([])
    out = capsys.readouterr().out
    assert (result["recurrent"], result["output"], result["total"], result["embedding"]) == (2400, 2000, 4400, 1000)
    assert "LSTM weights" in out and "2400" in out and "4400" in out


@pytest.mark.parametrize(
    "argv, recurrent, output",
    [
        (["--cell", "gru"], 3 * (200 + 400), 2000),
        (["--use-bias", "true"], 4 * (200 + 400 + 20), 2000),
        (["--output-bias", "true"], 2400, 2100),
        (["--num-layers", "2"], 2400 + 4 * (400 + 400), 2000),
        (["--cell", "gru", "--use-bias", "true", "--gru-reset-after", "true"], 3 * 620 + 20, 2000),
        (["--cell", "elman", "--hidden-size", "8", "--embed-size", "3", "--vocab-size", "7"], 24 + 64, 56),
    ],
)
def test_variants(argv, recurrent, output):
    result = param_count.main(argv + ["--json", "true"])
    assert (result["recurrent"], result["output"]) == (recurrent, output)
    assert result["total"] == recurrent + output
