"""The one place that decides which runner actually runs a cell: the one asked for, or the nearest one that this
cell and these options support. A fallback is never an error; it is logged once (logger "rnn_jax.runners", level
INFO) and recorded in `FALLBACKS`.

| asked | runs instead | when |
|---|---|---|
| "fused" | "hoisted" | the cell has no fused spec for these parameters, or seq_lengths/mask/resets/remat are given |
| "fused", "hoisted" | "scan" | the cell has no hoisting hooks (`project_inputs`, `step_projected`) |
"""

from __future__ import annotations

import logging
from typing import Any

from rnn_jax.cells import base

LOGGER = logging.getLogger("rnn_jax.runners")
FALLBACKS: dict[tuple[str, str, str], str] = {}
"""(cell, asked, run) -> why, for every fallback taken in this process."""


def _cell_name(cell: Any) -> str:
    return getattr(cell, "__name__", None) or type(cell).__name__


def choose(cell: Any, params: Any, asked: str, *, options_given: bool = False) -> str:
    """The runner that runs: "fused", "hoisted" or "scan" for `asked` in those three."""
    ran, why = asked, None
    if asked in ("fused", "hoisted") and not base.can_hoist(cell):
        ran, why = "scan", "the cell has no project_inputs/step_projected"
    elif asked == "fused" and base.fused_spec(cell, params) is None:
        ran, why = "hoisted", "the cell has no fused spec for these parameters"
    elif asked == "fused" and options_given:
        ran, why = "hoisted", "seq_lengths, mask, resets and remat run on the hoisted loop"
    if why is not None:
        key = (_cell_name(cell), asked, ran)
        if key not in FALLBACKS:
            FALLBACKS[key] = why
            LOGGER.info("runner %r runs %s as %r: %s", asked, key[0], ran, why)
    return ran
