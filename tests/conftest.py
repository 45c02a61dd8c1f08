"""Shared fixtures: the cells under test, the shared data folder, float64 mode."""

from __future__ import annotations

import pathlib

import jax
import pytest

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
    """Runs the test with float64 enabled (restored afterwards)."""
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
