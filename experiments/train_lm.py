"""Trains a language model from a named config (default: the notes' network on the built-in text).

Command:  python -m experiments.train_lm [--config NAME] [--run-dir DIR] [--resume] [--FIELD VALUE ...]
Expected: each config's expected result and its source are printed at the start (see rnn_jax/configs.py);
          the default `notes` reaches a validation perplexity of about 6 on 2 CPU cores in under two minutes.
Source:   rnn_jax.configs.PRESETS.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rnn_jax.cli import add_config_arguments, apply_overrides
from rnn_jax.configs import PRESETS, get_preset
from rnn_jax.hostmem import reuse_freed_memory
from rnn_jax.parallel import initialize_distributed
from rnn_jax.training import TrainConfig, train
from rnn_jax.errors import add_debug_flag, run_command


def main(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="notes", choices=sorted(PRESETS), help="named config (default: notes)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: runs/<config>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch remains)")
    parser.add_argument("--no-reuse-host-memory", action="store_true",
                        help="leave glibc malloc as it is (by default freed memory is reused: see rnn_jax.hostmem)")
    add_config_arguments(parser, TrainConfig)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if not args.no_reuse_host_memory:
        reuse_freed_memory()  # before the first JAX computation, so XLA's threads share the tuned arena
    initialize_distributed()  # no-op on one host; see BUILD.md for multi-host launches
    preset = get_preset(args.config)
    config = apply_overrides(preset.config, args)
    run_dir = args.run_dir or f"runs/{preset.name}"
    print(f"config {preset.name}: {preset.command}\n  expected: {preset.expected}\n  source: {preset.source}")
    overridden = config != preset.config
    result = train(config if (not args.resume or overridden) else None, run_dir, resume=args.resume,
                   progress=not args.no_progress)  # SIGTERM/SIGINT: run_command reports it, exit 128 + signal
    if result.sample:
        print("\nsample:\n" + result.sample)
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
