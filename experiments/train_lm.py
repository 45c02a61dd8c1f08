"""Trains a language model from a named config (default: the notes' network on the built-in text).

Command:  python -m experiments.train_lm [--config NAME] [--run-dir DIR] [--resume] [--FIELD VALUE ...]
          (installed: `rnn-jax-train`, the same command)
Expected: each config's expected result and its source are printed at the start (see rnn_jax/configs.py);
          the default `notes` reaches a validation perplexity of about 6 on 2 CPU cores in under two minutes.
Source:   rnn_jax.configs.PRESETS; the command is `rnn_jax.commands.train`.
"""

import sys

from rnn_jax.commands.train import main, run

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(run())
