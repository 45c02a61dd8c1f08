"""Trains a language model from a named config (default: the notes' network on the built-in text).

Command:  `rnn-jax-train [--config NAME] [--run-dir DIR] [--resume] [--FIELD VALUE ...]`
          (in a checkout also `python -m experiments.train_lm`)
Expected: each config's expected result and its source are printed at the start (see rnn_jax/configs.py);
          the default `notes` reaches a validation perplexity of about 6 on 2 CPU cores in under two minutes.
Source:   rnn_jax.configs.PRESETS.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rnn_jax.cli import add_config_arguments, add_print_config_flag, apply_overrides, print_config_and_exit
from rnn_jax.configs import PRESETS, get_preset
from rnn_jax.errors import add_debug_flag, run_command
from rnn_jax.hostmem import reuse_freed_memory
from rnn_jax.parallel import initialize_distributed
from rnn_jax.training import TrainConfig, train


def _preset_name(argv: Sequence[str] | None) -> str:
    """The --config given (before the full parser exists: its defaults are that preset's values)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config", default="notes")
    return early.parse_known_args(argv)[0].config


def parser_for(preset) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage="%(prog)s [--config NAME] [--run-dir DIR] [--resume] [options]",
        epilog=f"Defaults shown are those of --config {preset.name}; pass --config NAME --help for another's.")
    parser.add_argument("--config", default="notes", choices=sorted(PRESETS), help="named config [default: notes]")
    parser.add_argument("--run-dir", default=None, help="run directory [default: runs/<config>]")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch remains)")
    parser.add_argument("--no-reuse-host-memory", action="store_true",
                        help="leave glibc malloc as it is (by default freed memory is reused: see rnn_jax.hostmem)")
    add_print_config_flag(parser)
    add_debug_flag(parser)
    add_config_arguments(parser, TrainConfig, defaults=preset.config, title="run options (TrainConfig)")
    return parser


def main(argv: Sequence[str] | None = None):
    preset = get_preset(_preset_name(argv))
    args = parser_for(preset).parse_args(argv)
    config = apply_overrides(preset.config, args)
    if args.print_config:
        print_config_and_exit(config)
    if not args.no_reuse_host_memory:
        reuse_freed_memory()  # before the first JAX computation, so XLA's threads share the tuned arena
    initialize_distributed()  # no-op on one host; see BUILD.md for multi-host launches
    run_dir = args.run_dir or f"runs/{preset.name}"
    print(f"config {preset.name}: {preset.command}\n  expected: {preset.expected}\n  source: {preset.source}")
    overridden = config != preset.config
    result = train(config if (not args.resume or overridden) else None, run_dir, resume=args.resume,
                   progress=not args.no_progress)  # SIGTERM/SIGINT: run_command reports it, exit 128 + signal
    if result.sample:
        print("\nsample:\n" + result.sample)
    return result


def run() -> int:
    return run_command(main)


if __name__ == "__main__":
    sys.exit(run())
