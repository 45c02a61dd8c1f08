"""rnn_jax: functional LSTM/GRU cells, sequence runners and language models in JAX.

A cell is three pure functions over NamedTuple pytrees (the lecture notes' notation: W recurrent, U input):

    params = lstm.init(key, input_size=E, hidden_size=H)
    carry = lstm.initial_state(H, batch_shape=(B,))
    carry, h = lstm.step(params, carry, x)            # x: (B, E) -> h: (B, H)
    carry, hs = rnn_jax.scan(lstm.step, params, carry, xs)   # xs: (B, T, E) -> hs: (B, T, H)
"""

from rnn_jax import initializers, precision
from rnn_jax._checks import DTypeError, ShapeError
from rnn_jax.cells import (CELLS, HiddenState, LSTMPCell, cifg, elman, get_cell, gru, indrnn, ln_gru, ln_lstm, lru, lstm,
                           mgu, mingru, minlstm, output_size, param_dtype, peephole, register_cell, rglru, slstm)
from rnn_jax.counting import count_params, param_breakdown
from rnn_jax.fused import fused_scan
from rnn_jax.runners import associative_scan, get_runner, hoisted_scan, run_sequence, scan, unrolled
from rnn_jax.stack import Stacked, run_layers

__version__ = "0.2.0"

__all__ = [
    "CELLS",
    "associative_scan",
    "LSTMPCell",
    "cifg",
    "ln_gru",
    "ln_lstm",
    "mgu",
    "mingru",
    "minlstm",
    "lru",
    "rglru",
    "slstm",
    "output_size",
    "peephole",
    "DTypeError",
    "HiddenState",
    "ShapeError",
    "Stacked",
    "count_params",
    "elman",
    "fused_scan",
    "get_cell",
    "get_runner",
    "gru",
    "hoisted_scan",
    "indrnn",
    "param_dtype",
    "register_cell",
    "run_sequence",
    "initializers",
    "precision",
    "lstm",
    "param_breakdown",
    "run_layers",
    "scan",
    "unrolled",
]
