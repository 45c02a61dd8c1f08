"""Generates text from a trained run's best checkpoint (or the newest one).

Command:  python -m experiments.sample --run-dir runs/notes [--prompt "The "] [--length 300]
          [--temperature 0.8] [--seed 0] [--checkpoint latest|best]
Expected: text in the style of the run's corpus; the same seed gives the same text.
Source:   rnn_jax.training.generate.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rnn_jax.training import load_run_for_sampling, generate
from rnn_jax.errors import add_debug_flag, run_command
import jax


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--prompt", default=None, help="default: the run config's sample_prompt")
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    model, params, vocab, config = load_run_for_sampling(args.run_dir, which=args.checkpoint)
    prompt = config.sample_prompt if args.prompt is None else args.prompt
    text = generate(model, params, vocab, prompt, args.length, temperature=args.temperature,
                    key=jax.random.PRNGKey(args.seed))
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(run_command(main))
