"""Alias of `rnn_jax.runners.fused` (`fused_scan`, `prefetch_scan`), kept for existing imports."""

from rnn_jax.runners.fused import fused_scan, prefetch_scan

__all__ = ["fused_scan", "prefetch_scan"]
