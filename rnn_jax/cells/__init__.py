"""Recurrent cells. Each module is a cell: `init`, `initial_state`, `step`, plus `project_inputs` and
`step_projected` for the hoisted fast path."""

from rnn_jax.cells import elman, gru, lstm
from rnn_jax.cells._common import HiddenState

CELLS = {"lstm": lstm, "gru": gru, "elman": elman}


def get_cell(name: str):
    """A cell module by name ("lstm", "gru", "elman")."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {sorted(CELLS)}") from None


__all__ = ["CELLS", "HiddenState", "elman", "get_cell", "gru", "lstm"]
