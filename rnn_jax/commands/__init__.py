"""The installed console commands (`rnn-jax-train`, `rnn-jax-sample`); `experiments/` runs the same `main`s.

Each module has `main(argv) -> result` (what tests call) and `run() -> exit code` (the console entry point:
expected failures become a short message and an exit code, see `rnn_jax.errors.run_command`).
"""
