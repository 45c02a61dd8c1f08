"""Converters between rnn_jax parameters and other libraries' recurrent layers, exact in both directions.

- `rnn_jax.convert.pytorch`: `torch.nn.LSTM` / `torch.nn.GRU` (whole multi-layer modules, or state dicts; an
  LSTM with `proj_size` maps to `LSTMPParams`, a bidirectional layer to `BidirectionalParams`).
- `rnn_jax.convert.flax_linen`: Flax Linen `LSTMCell`, `OptimizedLSTMCell`, `GRUCell` parameter dicts.
- `rnn_jax.convert.equinox`: `eqx.nn.LSTMCell`, `eqx.nn.GRUCell`.

Conventions, side by side (rnn_jax follows the notes: W recurrent, U input):

| | rnn_jax | PyTorch | Flax Linen | Equinox |
|---|---|---|---|---|
| input weights | U (G, H, E) | `weight_ih` (G·H, E) | `i*` kernels (E, H) | `weight_ih` (G·H, E) |
| recurrent weights | W (G, H, H) | `weight_hh` (G·H, H) | `h*` kernels (H, H) | `weight_hh` (G·H, H) |
| LSTM gate order | i, f, o, g | i, f, g, o | named ii..io / hi..ho | i, f, g, o |
| LSTM bias | b (one) | `bias_ih` + `bias_hh` (folded) | on the `h*` side | one `bias` |
| GRU form | notes' (reset before W) by default; reset-after as `GRUResetAfterParams` | reset after | reset after | reset after |
| GRU update polarity | u weights the new candidate | z = 1 − u | z = 1 − u | z = 1 − u |
| GRU candidate biases | b_g (input), b_rg (recurrent) | `b_in`, `b_hn` | `in.bias`, `hn.bias` | `bias` part n, `bias_n` |

The notes' GRU form computes a different function from the reset-after form, so it converts to none of these.
Converting to PyTorch writes folded biases into `bias_ih` and zeros into `bias_hh` (same function, different
split); everything else round-trips bit for bit.
"""
