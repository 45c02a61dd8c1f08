"""Converters between rnn_jax parameters and other libraries' recurrent layers.

- `rnn_jax.convert.pytorch`: `torch.nn.LSTM` / `torch.nn.GRU`, both ways, exactly.

Naming is the main trap: rnn_jax (the notes) calls the recurrent weights W and the input weights U; PyTorch
calls them `weight_hh` and `weight_ih`. See each converter's module docstring for its table.
"""
