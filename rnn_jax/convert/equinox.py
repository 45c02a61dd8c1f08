"""Exact conversion between rnn_jax parameters and Equinox's `eqx.nn.LSTMCell` / `eqx.nn.GRUCell`.

Equinox stacks gates as rows like PyTorch: `weight_ih` (G·H, E), `weight_hh` (G·H, H), one `bias` (G·H,)
on the input side; LSTM gate order i, f, g, o; GRU order r, z, n with the reset applied after the recurrent
product, z = 1 − u, and `bias_n` the recurrent candidate bias (rnn_jax's b_rg). Equinox is optional: only
`to_equinox` imports it.

Examples:
    >>> import equinox as eqx, jax
    >>> from rnn_jax.convert import equinox as convert
    >>> params = convert.from_equinox(eqx.nn.LSTMCell(4, 8, key=jax.random.key(0)))   # LSTMParams
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from rnn_jax.cells import gru, lstm
from rnn_jax.convert.pytorch import LSTM_TORCH_ORDER

_SIGN = jnp.array([1.0, -1.0, 1.0])[:, None]  # GRU rows r, z, n -> r, u, g


def _kind(cell) -> str:
    name = type(cell).__name__
    if name not in ("LSTMCell", "GRUCell") or not hasattr(cell, "weight_ih"):
        raise TypeError(f"expected an equinox.nn.LSTMCell or GRUCell; got {name}")
    return name


def from_equinox(cell: Any):
    """`eqx.nn.LSTMCell` -> `LSTMParams`; `eqx.nn.GRUCell` -> `GRUResetAfterParams`."""
    kind = _kind(cell)
    H = cell.weight_hh.shape[-1]
    if kind == "LSTMCell":
        order = jnp.array(LSTM_TORCH_ORDER)
        U = jnp.asarray(cell.weight_ih).reshape(4, H, -1)[order]
        W = jnp.asarray(cell.weight_hh).reshape(4, H, H)[order]
        b = None if cell.bias is None else jnp.asarray(cell.bias).reshape(4, H)[order]
        return lstm.LSTMParams(W=W, U=U, b=b)
    U = jnp.asarray(cell.weight_ih).reshape(3, H, -1) * _SIGN[..., None]
    W = jnp.asarray(cell.weight_hh).reshape(3, H, H) * _SIGN[..., None]
    b = None if cell.bias is None else jnp.asarray(cell.bias).reshape(3, H) * _SIGN
    b_rg = None if cell.bias_n is None else jnp.asarray(cell.bias_n)
    return gru.GRUResetAfterParams(W=W, U=U, b=b, b_rg=b_rg)


def to_equinox(params, like: Any):
    """A copy of the Equinox cell `like` holding `params` (sizes and `use_bias` must match)."""
    import equinox as eqx

    kind = _kind(like)
    if kind == "LSTMCell":
        if not isinstance(params, lstm.LSTMParams):
            raise TypeError(f"an equinox LSTMCell takes LSTMParams; got {type(params).__name__}")
        order = jnp.array(LSTM_TORCH_ORDER)
        values = [params.U[order].reshape(-1, params.U.shape[-1]), params.W[order].reshape(-1, params.W.shape[-1])]
        names = ["weight_ih", "weight_hh"]
        if like.bias is not None:
            values.append(params.b[order].reshape(-1))
            names.append("bias")
    else:
        if not isinstance(params, gru.GRUResetAfterParams):
            raise TypeError(f"an equinox GRUCell takes GRUResetAfterParams (the reset-after form); got "
                            f"{type(params).__name__}")
        values = [(params.U * _SIGN[..., None]).reshape(-1, params.U.shape[-1]),
                  (params.W * _SIGN[..., None]).reshape(-1, params.W.shape[-1])]
        names = ["weight_ih", "weight_hh"]
        if like.bias is not None:
            values += [(params.b * _SIGN).reshape(-1), params.b_rg]
            names += ["bias", "bias_n"]
    for name, value in zip(names, values):
        if getattr(like, name).shape != value.shape:
            raise ValueError(f"{name}: the Equinox cell has shape {getattr(like, name).shape}, the parameters give "
                             f"{value.shape}; build the cell with matching sizes")
    return eqx.tree_at(lambda c: [getattr(c, n) for n in names], like, values)
