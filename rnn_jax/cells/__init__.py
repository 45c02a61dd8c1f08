"""Recurrent cells. Each is a cell object (a module, or an instance) with `init`, `initial_state`, `step`, plus
`project_inputs` and `step_projected` for the hoisted fast path.

| name | cell | gates | source |
|---|---|---|---|
| `lstm` | `rnn_jax.cells.lstm` | i, f, o, g | the notes; Hochreiter & Schmidhuber 1997 |
| `gru` | `rnn_jax.cells.gru` | r, u, g | the notes; Cho et al. 2014, Chung et al. 2014 |
| `elman` | `rnn_jax.cells.elman` | - | Elman 1990 |
| `peephole_lstm` | `rnn_jax.cells.peephole` | i, f, o, g + peepholes | Gers & Schmidhuber 2000 |
| `lstmp` | `rnn_jax.cells.lstmp.LSTMPCell(P)` | i, f, o, g + projection | Sak et al. 2014 |
| `ln_lstm`, `ln_gru` | `rnn_jax.cells.layernorm` | as LSTM / GRU | Ba et al. 2016 |
| `cifg` | `rnn_jax.cells.cifg` | i, o, g (f = 1 − i) | Greff et al. 2017 |
| `mgu` | `rnn_jax.cells.mgu` | f, g | Zhou et al. 2016 |
"""

from rnn_jax.cells import cifg, elman, gru, lstm, mgu, peephole
from rnn_jax.cells._common import HiddenState, output_size
from rnn_jax.cells.layernorm import ln_gru, ln_lstm
from rnn_jax.cells.lstmp import LSTMPCell

CELLS = {"lstm": lstm, "gru": gru, "elman": elman, "peephole_lstm": peephole, "ln_lstm": ln_lstm, "ln_gru": ln_gru,
         "cifg": cifg, "mgu": mgu}


def get_cell(name: str, *, proj_size: int | None = None):
    """A cell by name (see the table above); "lstmp" needs `proj_size`."""
    if name == "lstmp":
        if proj_size is None:
            raise ValueError("cell 'lstmp' needs proj_size (the projection size P)")
        return LSTMPCell(proj_size)
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {sorted(CELLS) + ['lstmp']}") from None


__all__ = ["CELLS", "HiddenState", "LSTMPCell", "cifg", "elman", "get_cell", "gru", "ln_gru", "ln_lstm", "lstm", "mgu",
           "output_size", "peephole"]
