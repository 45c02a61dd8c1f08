"""reuse_freed_memory: large blocks freed by one step are reused by the next without page faults."""

import subprocess
import sys
import textwrap

import pytest

from rnn_jax.hostmem import reuse_freed_memory

PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from rnn_jax.hostmem import reuse_freed_memory
    if sys.argv[1] == "reuse":
        assert reuse_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def step():                       # a 64 MiB temporary, malloc'ed, touched and freed, as XLA:CPU does per call
        block = libc.malloc(64 * 2**20)
        ctypes.memset(block, 1, 64 * 2**20)
        libc.free(block)
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_memory_is_reused_without_page_faults():
    default, reused = faults_per_step("default"), faults_per_step("reuse")
    assert default > 4000  # 64 MiB of fresh pages each time (16k 4-KiB pages, fewer with huge pages)
    assert reused < 100


def test_argument_checked():
    with pytest.raises(ValueError, match="keep_bytes must be an int"):
        reuse_freed_memory(-1)
    with pytest.raises(ValueError, match="keep_bytes must be an int"):
        reuse_freed_memory(2**31)
