"""Generates text from a trained run's best checkpoint (or its newest one).

Command:  python -m experiments.sample --run-dir runs/notes [--prompt "The "] [--length 300]
          [--temperature 0.8] [--top-k K] [--top-p P] [--num-samples N] [--seed 0] [--checkpoint best|latest]
          (installed: `rnn-jax-sample`, the same command)
Expected: text in the style of the run's corpus; the same seed gives the same texts.
Source:   rnn_jax.train.generate_many; the command is `rnn_jax.commands.sample`.
"""

import sys

from rnn_jax.commands.sample import main, run

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(run())
