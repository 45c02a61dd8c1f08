"""Shared fixtures: the cells under test, the shared data folder, float64 mode; settings that let the same tests
run on an accelerator."""

from __future__ import annotations

import os
import pathlib

# Each pytest-xdist worker is a process of its own: without this, the first would take 75% of a GPU's memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# The kernels' tests run them on every CPU, also where the policy's "auto" prefers XLA's form (no AVX-512);
# without a compiler they skip.
from rnn_jax.kernels._build import find_compiler  # noqa: E402

if "RNN_JAX_NATIVE" not in os.environ and find_compiler():
    os.environ["RNN_JAX_NATIVE"] = "require"

import jax  # noqa: E402
import pytest  # noqa: E402

# The tests compare float32 results at 1e-5: full-precision products on every backend (GPUs default to TF32 and
# TPUs to one bf16 pass; on a CPU this changes nothing).
jax.config.update("jax_default_matmul_precision", "highest")

from rnn_jax import LSTMPCell, cifg, elman, gru, ln_gru, ln_lstm, lstm, mgu, peephole
from rnn_jax.cells import indrnn, lru, mingru, minlstm, rglru, slstm

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare" / "input.txt"

# Every cell, including each GRU form, as (id, cell module, init keyword options).
CELL_CASES = [
    pytest.param(lstm, {}, id="lstm"),
    pytest.param(gru, {}, id="gru"),
    pytest.param(gru, {"reset_after": True}, id="gru_reset_after"),
    pytest.param(elman, {}, id="elman"),
    pytest.param(peephole, {}, id="peephole_lstm"),
    pytest.param(LSTMPCell(proj_size=3), {}, id="lstmp"),
    pytest.param(ln_lstm, {}, id="ln_lstm"),
    pytest.param(ln_gru, {}, id="ln_gru"),
    pytest.param(cifg, {}, id="cifg"),
    pytest.param(mgu, {}, id="mgu"),
    pytest.param(indrnn, {}, id="indrnn"),
    pytest.param(mingru, {}, id="mingru"),
    pytest.param(minlstm, {}, id="minlstm"),
    pytest.param(lru, {}, id="lru"),
    pytest.param(rglru, {}, id="rglru"),
    pytest.param(slstm, {}, id="slstm"),
]

# The state-linear cells: their `associative_scan` equals `scan` (tests/test_associative.py).
LINEAR_CELL_CASES = [case for case in CELL_CASES if case.id in ("mingru", "minlstm", "lru", "rglru")]


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (restored afterwards); skipped where the backend has no float64."""
    if jax.default_backend() == "tpu":
        pytest.skip("float64 is not supported on TPU")
    with jax.enable_x64(True):
        yield


@pytest.fixture
def shakespeare_path():
    if not SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare not found at {SHAKESPEARE} (the shared data folder beside the repository)")
    return SHAKESPEARE


BASE_CELL_CASES = CELL_CASES[:4]  # lstm, gru (both forms), elman


def cell_cases_with_variants_slow():
    """CELL_CASES where the variants (beyond BASE_CELL_CASES) are marked slow, for the largest test matrices."""
    return BASE_CELL_CASES + [pytest.param(*case.values, id=case.id, marks=pytest.mark.slow)
                              for case in CELL_CASES[4:]]
