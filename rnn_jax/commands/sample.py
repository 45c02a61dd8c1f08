"""Generates text from a trained run's best checkpoint (or its newest one).

Command:  `rnn-jax-sample --run-dir runs/notes [--prompt "The "] [--length 300] [--temperature 0.8]`
          `[--top-k K] [--top-p P] [--num-samples N] [--seed 0] [--checkpoint best|latest]`
          (in a checkout also `python -m experiments.sample`)
Expected: text in the style of the run's corpus; the same seed gives the same texts.
Source:   rnn_jax.train.generate_many.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Optional, Sequence

import jax

from rnn_jax.cli import parse_config
from rnn_jax.errors import ConfigError, run_command
from rnn_jax.train import generate_many, load_run_for_sampling


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """What to sample from which run.

    Attributes:
        run_dir: the run directory of a training run (runs/<config> by default there).
        prompt: the text to continue (None: the run config's sample_prompt).
        length: tokens to generate per sample.
        temperature: divides the logits; 0 is greedy decoding.
        top_k: sample among the k most probable tokens only (None: all).
        top_p: sample within the smallest set of tokens whose probability reaches p (nucleus; None: all).
        num_samples: continuations generated side by side.
        seed: PRNG seed; the same seed gives the same texts.
        checkpoint: "best" (best on validation) or "latest".
    """

    run_dir: str = ""
    prompt: Optional[str] = None
    length: int = 300
    temperature: float = 0.8
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    num_samples: int = 1
    seed: int = 0
    checkpoint: str = "best"

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        return {"checkpoint": ["best", "latest"]}


def main(argv: Sequence[str] | None = None) -> list[str]:
    config = parse_config(SampleConfig(), argv, description=__doc__.splitlines()[0])
    if not config.run_dir:
        raise ConfigError("no run directory given; pass --run-dir DIR (a training run's directory, e.g. runs/notes)")
    if config.checkpoint not in SampleConfig.field_choices()["checkpoint"]:
        raise ConfigError(f"--checkpoint must be best or latest; got {config.checkpoint!r}")
    model, params, vocab, run_config = load_run_for_sampling(config.run_dir, which=config.checkpoint)
    prompt = run_config.sample_prompt if config.prompt is None else config.prompt
    try:
        texts = generate_many(model, params, vocab, prompt, config.length, num_samples=config.num_samples,
                              temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                              key=jax.random.PRNGKey(config.seed))
    except ValueError as error:
        raise ConfigError(f"{error}; see --help for the accepted values") from None
    for index, text in enumerate(texts):
        print(text if len(texts) == 1 else f"--- sample {index + 1} of {len(texts)} ---\n{text}")
    return texts


def run() -> int:
    return run_command(main)


if __name__ == "__main__":
    sys.exit(run())
