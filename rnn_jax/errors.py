"""Errors a person can act on, and how a command-line entry point reports them.

Expected failures (a bad config, bad data, a damaged checkpoint, a run that diverged, a missing file, a full disk)
become one short message on stderr that says what was expected, what came and what to do, with exit code 2 for
usage and config errors and 1 for runtime failures. Anything else is a bug and keeps its traceback; `--debug` (or
`RNN_JAX_DEBUG=1`) shows the traceback of expected failures too.

Examples:
    >>> from rnn_jax.errors import ConfigError, describe
    >>> describe(ConfigError("LMConfig.hidden_size must be a positive int; got 0"))
    ('error: LMConfig.hidden_size must be a positive int; got 0', 2)
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Sequence

USAGE_EXIT, RUNTIME_EXIT = 2, 1
DEBUG_FLAG, DEBUG_ENV = "--debug", "RNN_JAX_DEBUG"


class ExpectedError(Exception):
    """A failure the user can fix (its message says how); a command reports it without a traceback."""

    exit_code = RUNTIME_EXIT


class ConfigError(ExpectedError, ValueError):
    """A config field or option that cannot run; the message names the field, the value and what is allowed."""

    exit_code = USAGE_EXIT


class DataError(ExpectedError, ValueError):
    """A corpus, vocabulary or download is unusable; the message names the file and the problem."""


class DivergenceError(ExpectedError, FloatingPointError):
    """Training diverged (validation loss non-finite, worse than a uniform guess, or far above its best)."""


_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check the permissions, or choose a directory you can write to",
    errno.EPERM: "check the permissions, or choose a directory you can write to",
    errno.EROFS: "choose a directory on a writable file system",
    errno.ENOSPC: "free some space (what was saved before is intact)",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file; give a directory",
    errno.EEXIST: "choose another path",
}


def _os_message(error: OSError) -> str:
    hint = _OS_HINTS.get(error.errno)
    if error.strerror and error.filename is not None:
        text = f"{error.strerror}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return f"{text}; {hint}" if hint and hint not in text else text


def describe(error: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an expected failure, None for anything else (a bug: keep its traceback)."""
    if isinstance(error, ExpectedError):
        return f"error: {error}", error.exit_code
    code = getattr(error, "exit_code", None)  # TrainingInterrupted: 128 + the signal number
    if isinstance(code, int):
        return f"stopped: {error}", code
    if isinstance(error, OSError) and error.errno in _OS_HINTS or type(error) in (FileNotFoundError, FileExistsError):
        return f"error: {_os_message(error)}", RUNTIME_EXIT
    return None


def add_debug_flag(parser) -> None:
    """The `--debug` option every command takes (`run_command` reads it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of an expected failure too (or set {DEBUG_ENV}=1)")


def run_command(main: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None) -> int:
    """Runs a command's `main(argv)`; reports expected failures briefly and returns the process's exit code.

    `--debug` in `argv` (the command's parser declares it with `add_debug_flag`) or `RNN_JAX_DEBUG=1` re-raises
    them instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        main(argv)
    except Exception as error:  # noqa: BLE001 - sorted into expected (reported) and unexpected (re-raised)
        described = describe(error)
        if described is None or debug:
            raise
        message, code = described
        print(message, file=sys.stderr)
        return code
    return 0

