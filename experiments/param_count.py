"""Counts the trainable parameters of the notes' network from the arrays `init` creates.

Command:  python -m experiments.param_count [--cell gru] [--use-bias true] [--num-layers 2] ...
Expected: the notes' worked example by default: LSTM weights 2400, output layer V 2000, total 4400
          (E=10, H=20, V=100, no bias; the 100 x 10 embedding lives outside the LSTM and is listed apart).
Source:   ../shared/NOTES.md, "Worked example: counting trainable weights".
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Sequence

import jax

from rnn_jax import count_params, param_breakdown
from rnn_jax.cli import parse_config
from rnn_jax.lm import LanguageModel, LMConfig
from rnn_jax.errors import run_command


@dataclasses.dataclass(frozen=True)
class ParamCountConfig:
    """The network to count (defaults: the notes' worked example).

    Attributes:
        cell: the recurrent cell.
        embed_size: E.
        hidden_size: H.
        vocab_size: V.
        num_layers: L.
        use_bias: biases b_* in the recurrent cells.
        output_bias: the output layer's bias c.
        gru_reset_after: the cuDNN/PyTorch reset-after GRU (its second bias).
        json: print the counts as JSON instead of a table.
    """

    cell: str = "lstm"
    embed_size: int = 10
    hidden_size: int = 20
    vocab_size: int = 100
    num_layers: int = 1
    use_bias: bool = False
    output_bias: bool = False
    gru_reset_after: bool = False
    json: bool = False

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        from rnn_jax.cells import names

        return {"cell": names()}


def count(config: ParamCountConfig) -> dict:
    """Counts the parameters `LanguageModel.init` creates for `config`, per part and in total."""
    lm_config = LMConfig(vocab_size=config.vocab_size, embed_size=config.embed_size, hidden_size=config.hidden_size,
                         num_layers=config.num_layers, cell=config.cell, use_bias=config.use_bias,
                         output_bias=config.output_bias, gru_reset_after=config.gru_reset_after)
    params = LanguageModel(lm_config).init(jax.random.key(0))
    rows = []
    for layer, layer_params in enumerate(params.rnn, start=1):
        for field, n in param_breakdown(layer_params).items():
            shape = "x".join(map(str, getattr(layer_params, field).shape))
            rows.append((f"{config.cell.upper()} layer {layer} {field} ({shape})", n))
    for field, n in param_breakdown(params.output).items():
        rows.append((f"output layer {field} ({'x'.join(map(str, getattr(params.output, field).shape))})", n))
    recurrent, output = count_params(params.rnn), count_params(params.output)
    return {"rows": rows, "recurrent": recurrent, "output": output, "total": recurrent + output,
            "embedding": count_params(params.embedding)}


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(ParamCountConfig(), argv, description=__doc__.splitlines()[0])
    result = count(config)
    if config.json:
        print(json.dumps(result))
        return result
    name = config.cell.upper()
    print(f"{name} network: E={config.embed_size}, H={config.hidden_size}, V={config.vocab_size}, "
          f"{config.num_layers} layer(s), {'with' if config.use_bias else 'no'} bias")
    summary = [(f"{name} weights", result["recurrent"]), ("output layer", result["output"]),
               (f"total ({name} network)", result["total"]),
               (f"embedding {config.vocab_size}x{config.embed_size} (outside the network)", result["embedding"])]
    width = max(len(label) for label, _ in result["rows"] + summary) + 2
    for label, n in result["rows"]:
        print(f"  {label:<{width}}{n:>8}")
    for label, n in summary:
        print(f"{label:<{width + 2}}{n:>8}")
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
