"""The one switch for native code: whether the native CPU kernels run where they can.

Modes:
    "auto"     use the kernels where they apply (float32, CPU backend), pay (a CPU with AVX-512) and build;
               else XLA's form (default).
    "off"      never use them: XLA's form everywhere (same results, tested).
    "require"  use them wherever they apply, on any CPU, and a build or load failure is an error instead of a
               fallback (the tests run the kernels this way).

The mode comes from, first to last: an explicit `native=False` argument of a function that takes one (which
turns the kernels off for that call), the innermost `native_mode(...)` block, `TrainConfig.native` (the
trainer opens such a block), and the environment variable `RNN_JAX_NATIVE` (`0`/`off`, `1`/`auto`, `require`).
The choice is made when a function is traced: a jitted function keeps the choice of its first trace.

Examples:
    >>> from rnn_jax import kernels
    >>> with kernels.native_mode("off"):
    ...     kernels.mode()
    'off'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator, Optional

from rnn_jax.errors import ConfigError

MODES = ("auto", "off", "require")
ENV = "RNN_JAX_NATIVE"
_ENV_VALUES = {"": "auto", "1": "auto", "auto": "auto", "0": "off", "off": "off", "require": "require"}
_scoped: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("rnn_jax_native_mode", default=None)


def check_mode(mode: str, where: str = "native mode") -> str:
    if mode not in MODES:
        raise ConfigError(f"{where} must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def mode() -> str:
    """The mode in force here: the innermost `native_mode` block, else `RNN_JAX_NATIVE`, else "auto"."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    value = os.environ.get(ENV, "").strip().lower()
    if value not in _ENV_VALUES:
        raise ValueError(f"{ENV}={value!r} is not understood; use 0 (off), 1 (auto) or require")
    return _ENV_VALUES[value]


@contextlib.contextmanager
def native_mode(new_mode: Optional[str]) -> Iterator[None]:
    """Sets the mode inside the block (None leaves it as it is)."""
    if new_mode is None:
        yield
        return
    token = _scoped.set(check_mode(new_mode))
    try:
        yield
    finally:
        _scoped.reset(token)


def requested(native: Optional[bool]) -> str:
    """The mode for a call with argument `native` (None or True: the mode in force; False: "off")."""
    return "off" if native is False else mode()
