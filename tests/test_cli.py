"""The command line built from config dataclasses: documented options, real defaults, choices, booleans,
--print-config; every config that a command parses documents every field."""

import dataclasses
import json
import typing

import pytest

from experiments import (bench_data_parallel, bench_lm, bench_quality, bench_remat, bench_scan, param_count,
                         torch_char_lm, train_lm)
from rnn_jax.cli import field_docs, parse_config
from rnn_jax.commands.sample import SampleConfig
from rnn_jax.training import TrainConfig

COMMAND_CONFIGS = [TrainConfig, SampleConfig, bench_lm.BenchConfig, bench_scan.ScanBenchConfig,
                   bench_remat.RematBenchConfig, bench_data_parallel.DataParallelBenchConfig,
                   param_count.ParamCountConfig, bench_quality.QualityBenchConfig, torch_char_lm.TorchRecipe]


def nested_configs(config_type):
    yield config_type
    for field_type in typing.get_type_hints(config_type).values():
        if dataclasses.is_dataclass(field_type):
            yield from nested_configs(field_type)


@pytest.mark.parametrize("config_type", [c for top in COMMAND_CONFIGS for c in nested_configs(top)],
                         ids=lambda c: c.__name__)
def test_every_option_of_every_command_is_documented(config_type):
    documented = field_docs(config_type)
    fields = [f.name for f in dataclasses.fields(config_type) if not dataclasses.is_dataclass(f.type)
              and not dataclasses.is_dataclass(typing.get_type_hints(config_type)[f.name])]
    assert [name for name in fields if not documented.get(name)] == []


def test_field_docs_join_continuation_lines_and_shared_entries():
    docs = field_docs(TrainConfig)
    assert docs["stop_on_divergence"].endswith("or more than twice the best so far.")
    from rnn_jax.train.config import OptimConfig
    assert field_docs(OptimConfig)["b1"] == field_docs(OptimConfig)["b2"] == "Adam's moment decays."


def test_help_shows_descriptions_the_presets_defaults_and_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_lm.main(["--config", "shakespeare_char", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--model-hidden-size HIDDEN_SIZE H. [default: 256]" in text  # the preset's value, not the class's 20
    assert "[default: adam; choices: adam, adamw, nt_asgd, sgd]" in text
    assert "choices: cifg, elman, gru" in text and "slstm" in text and "associative" in text
    assert "--model-use-bias [BOOL], --no-model-use-bias" in text and "from the preset config" not in text
    assert "Defaults shown are those of --config shakespeare_char" in text


def test_scripts_without_presets_do_not_mention_one(capsys):
    with pytest.raises(SystemExit):
        bench_scan.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "preset" not in text and "[default: mingru, lru; choices:" in text and "lru, mingru, minlstm, rglru" in text


@dataclasses.dataclass(frozen=True)
class Flags:
    """Attributes:
        bias: a boolean.
        sizes: a tuple.
    """

    bias: bool = True
    sizes: tuple[int, ...] = (1, 2)


@pytest.mark.parametrize("argv, bias", [([], True), (["--no-bias"], False), (["--bias"], True),
                                        (["--bias", "false"], False), (["--bias", "yes"], True)])
def test_booleans_take_a_value_a_flag_or_the_no_form(argv, bias):
    assert parse_config(Flags(), argv).bias is bias


def test_bad_values_are_refused_by_the_parser(capsys):
    for argv in (["--no-bias", "true"], ["--bias", "maybe"], ["--sizes", "1,x"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(Flags(), argv)
        assert exit_info.value.code == 2
    assert "takes no value" in capsys.readouterr().err
    assert parse_config(Flags(), ["--sizes", "3, 4"]).sizes == (3, 4)


def test_print_config_shows_the_resolved_config_and_exits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_lm.main(["--config", "notes", "--model-cell", "gru", "--no-model-use-bias", "--print-config"])
    assert exit_info.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["cell"] == "gru" and printed["model"]["use_bias"] is False
    assert printed["model"]["hidden_size"] == 20 and printed["batch_size"] == TrainConfig().batch_size
    with pytest.raises(SystemExit):
        parse_config(Flags(), ["--sizes", "5", "--print-config"])
    assert json.loads(capsys.readouterr().out) == {"bias": True, "sizes": [5]}


def test_the_compute_dtype_option_on_every_preset(capsys):
    from rnn_jax.configs import PRESETS

    for name in PRESETS:
        with pytest.raises(SystemExit) as exit_info:
            train_lm.main(["--config", name, "--model-compute-dtype", "bfloat16", "--print-config"])
        assert exit_info.value.code == 0
        assert json.loads(capsys.readouterr().out)["model"]["compute_dtype"] == "bfloat16"
    from rnn_jax.errors import run_command

    assert run_command(train_lm.main, ["--model-compute-dtype", "float16", "--print-config"]) != 0
    error = capsys.readouterr().err
    assert error.startswith("error: compute dtype float16 needs loss scaling") and "Traceback" not in error
