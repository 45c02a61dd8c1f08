"""Host-memory reuse for CPU training: stop each step from page-faulting its temporaries afresh.

XLA:CPU allocates a compiled step's temporaries (activations, residuals, gradients) with `malloc` on every
call. glibc serves blocks above its mmap threshold with a fresh `mmap` and returns them with `munmap`, so every
step touches new pages and the kernel zero-fills each one: measured on the 2-core benchmark machine, the
zaremba_small train step took 11,900 minor page faults per call and 66 ms; with the setting below, 0 faults and
53 ms. `reuse_freed_memory()` tells glibc to serve large blocks from its heap and to keep freed memory, so a
step's temporaries land on pages the previous step already touched (the idea of a caching allocator).

The cost: the process keeps up to `keep_bytes` of freed memory instead of returning it to the OS, and large
blocks are never mmapped. It affects the whole process (PyTorch's CPU tensors too), so benchmarks that call it
give every implementation in the process the same allocator. It does nothing (and returns False) where the C
library is not glibc.

Examples:
    >>> from rnn_jax.hostmem import reuse_freed_memory
    >>> reuse_freed_memory()   # once, before training
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1


def reuse_freed_memory(keep_bytes: int = _INT_MAX) -> bool:
    """Makes glibc malloc keep and reuse freed memory (see the module docstring); True if it took effect.

    Args:
        keep_bytes: free memory at the top of the heap that glibc keeps before returning any to the OS
            (at most 2**31 - 1, mallopt's int).
    """
    if not isinstance(keep_bytes, int) or not 0 <= keep_bytes <= _INT_MAX:
        raise ValueError(f"keep_bytes must be an int in [0, {_INT_MAX}]; got {keep_bytes!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # One arena: a block too large for a thread's own arena would otherwise still be mmapped.
    return all([mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, keep_bytes)])
