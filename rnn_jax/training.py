"""Alias of `rnn_jax.train` (the training package), kept for existing imports."""

from rnn_jax.train import *  # noqa: F401,F403
from rnn_jax.train import __all__  # noqa: F401
