"""Exact conversion between rnn_jax parameters and PyTorch's `nn.LSTM` / `nn.GRU`.

PyTorch is not a dependency of rnn_jax: the state-dict functions take and return arrays (NumPy arrays or
anything `np.asarray` accepts, torch tensors included), and only `from_torch` / `to_torch` touch a module.

| rnn_jax (notes)           | PyTorch, layer k                                  |
|---------------------------|---------------------------------------------------|
| U (input weights)         | `weight_ih_lk`, gates stacked as rows              |
| W (recurrent weights)     | `weight_hh_lk`                                     |
| b                         | `bias_ih_lk + bias_hh_lk` (LSTM; GRU r and u gates) |
| LSTM gate order i, f, o, g | i, f, g, o                                         |
| GRU gate order r, u, g    | r, z, n with z = 1 − u: u's U, W, b are −z's       |
| GRU b_rg (reset-after)    | the n-gate part of `bias_hh_lk` (`b_hn`)            |
| LSTMP W_p (`proj_size`)   | `weight_hr_lk`; W is then `weight_hh_lk` (4H x P)    |
| `BidirectionalParams`     | forward: the keys above; backward: the same with `_reverse` |

PyTorch's GRU applies the reset gate after the recurrent product, so it maps to
`rnn_jax.gru.GRUResetAfterParams`; the notes' form (`GRUParams`) is a different function and has no PyTorch
equivalent. Converting to PyTorch writes the summed biases into `bias_ih` and zeros into the r/u (LSTM: all)
parts of `bias_hh`: the function is reproduced exactly, the split between the two bias vectors is not.

Examples:
    >>> import torch
    >>> from rnn_jax.convert import pytorch
    >>> torch_lstm = torch.nn.LSTM(10, 20, num_layers=2, batch_first=True)
    >>> layer_params = pytorch.from_torch(torch_lstm)      # tuple of 2 LSTMParams

A layer of a `proj_size` LSTM is `rnn_jax.cells.lstmp.LSTMPParams` (run it with `LSTMPCell(proj_size=P)`); a layer
of a bidirectional RNN is `rnn_jax.bidirectional.BidirectionalParams(forward, backward)` (run it with
`Bidirectional(cell, merge="concat")`; the next layer's input is the 2H (2P) concatenation, as in PyTorch).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from rnn_jax.bidirectional import BidirectionalParams
from rnn_jax.cells import gru, lstm
from rnn_jax.cells.lstmp import LSTMPParams

LSTM_TORCH_ORDER = (0, 1, 3, 2)  # rnn_jax gate k is PyTorch gate LSTM_TORCH_ORDER[k] (its own inverse)
_MODES = ("LSTM", "GRU")


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bf16 has no NumPy type, so go through float32
        value = value.detach().cpu()
        if not value.dtype.is_floating_point or value.dtype.itemsize < 4:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _as_layers(layer_params) -> tuple:
    """One layer's parameters (a NamedTuple) or a sequence of them -> a tuple of layers."""
    if hasattr(layer_params, "_fields") or not isinstance(layer_params, (tuple, list)):
        return (layer_params,)
    return tuple(layer_params)


def _layers_in(state_dict: Mapping[str, Any]) -> int:
    layers = 0
    while f"weight_ih_l{layers}" in state_dict:
        layers += 1
    return layers


def from_torch_state_dict(state_dict: Mapping[str, Any], mode: str, *, dtype=jnp.float32) -> tuple:
    """PyTorch RNN state dict -> tuple of per-layer rnn_jax parameters.

    Args:
        state_dict: `module.state_dict()` of an `nn.LSTM` (with or without `proj_size`) or `nn.GRU`, uni- or
            bidirectional.
        mode: "LSTM" or "GRU".
        dtype: dtype of the returned arrays.

    Returns:
        tuple of L `LSTMParams` (mode "LSTM"), `LSTMPParams` (an LSTM with `proj_size`) or `GRUResetAfterParams`
        (mode "GRU"); each wrapped as `BidirectionalParams(forward, backward)` for a bidirectional RNN.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    num_layers = _layers_in(state_dict)
    if num_layers == 0:
        raise ValueError(f"no 'weight_ih_l0' in the state dict (keys: {sorted(state_dict)[:6]}); "
                         "pass the state_dict of a torch.nn.LSTM or torch.nn.GRU")
    bidirectional = "weight_ih_l0_reverse" in state_dict
    layers = []
    for k in range(num_layers):
        forward = _direction_from_torch(state_dict, f"l{k}", mode, dtype)
        layers.append(BidirectionalParams(forward, _direction_from_torch(state_dict, f"l{k}_reverse", mode, dtype))
                      if bidirectional else forward)
    return tuple(layers)


def _direction_from_torch(state_dict: Mapping[str, Any], key: str, mode: str, dtype):
    """One layer and direction (keys ending in `key`, e.g. "l1_reverse") -> its rnn_jax parameters."""
    num_gates = 4 if mode == "LSTM" else 3
    w_ih, w_hh = _numpy(state_dict[f"weight_ih_{key}"]), _numpy(state_dict[f"weight_hh_{key}"])
    projection = state_dict.get(f"weight_hr_{key}")
    rows, fed_back = w_hh.shape
    hidden = rows // num_gates
    if rows % num_gates or w_ih.shape[0] != rows or (projection is None and hidden != fed_back):
        raise ValueError(f"weight_hh_{key} has shape {tuple(w_hh.shape)} and weight_ih_{key} {tuple(w_ih.shape)}; "
                         f"a {mode} with H={fed_back} needs ({num_gates * fed_back}, {fed_back}) and "
                         f"({num_gates * fed_back}, E) (is mode={mode!r} right?)")
    if projection is not None and mode != "LSTM":
        raise ValueError(f"weight_hr_{key} (a projection) belongs to an LSTM with proj_size; got mode={mode!r}")
    U = w_ih.reshape(num_gates, hidden, -1)
    W = w_hh.reshape(num_gates, hidden, fed_back)
    has_bias = f"bias_ih_{key}" in state_dict
    b_ih = _numpy(state_dict[f"bias_ih_{key}"]).reshape(num_gates, hidden) if has_bias else None
    b_hh = _numpy(state_dict[f"bias_hh_{key}"]).reshape(num_gates, hidden) if has_bias else None
    cast = lambda a: None if a is None else jnp.asarray(a, dtype)
    if mode == "LSTM":
        order = list(LSTM_TORCH_ORDER)
        b = None if b_ih is None else (b_ih + b_hh)[order]
        if projection is not None:
            return LSTMPParams(W=cast(W[order]), U=cast(U[order]), b=cast(b), W_p=cast(_numpy(projection)))
        return lstm.LSTMParams(W=cast(W[order]), U=cast(U[order]), b=cast(b))
    sign = np.array([1.0, -1.0, 1.0], dtype=U.dtype)[:, None]  # u = 1 - z
    b, b_rg = None, None
    if has_bias:
        b = np.stack([b_ih[0] + b_hh[0], -(b_ih[1] + b_hh[1]), b_ih[2]])
        b_rg = b_hh[2]
    return gru.GRUResetAfterParams(W=cast(W * sign[..., None]), U=cast(U * sign[..., None]), b=cast(b),
                                   b_rg=cast(b_rg))


def to_torch_state_dict(layer_params) -> dict[str, np.ndarray]:
    """Tuple of per-layer rnn_jax parameters (or one layer's) -> PyTorch state dict of NumPy float arrays.

    Layers are `LSTMParams`, `LSTMPParams` (`proj_size`), `GRUResetAfterParams`, or `BidirectionalParams` of one
    of those (the `_reverse` keys).

    Raises:
        TypeError: for parameters with no PyTorch equivalent (the notes' GRU form, Elman is `nn.RNN`'s
            business and not covered here).
    """
    out: dict[str, np.ndarray] = {}
    for k, p in enumerate(_as_layers(layer_params)):
        if isinstance(p, BidirectionalParams):
            directions = ((f"l{k}", p.forward), (f"l{k}_reverse", p.backward))
        else:
            directions = ((f"l{k}", p),)
        for key, params in directions:
            out.update({f"{name}_{key}": value for name, value in _direction_to_torch(params).items()})
    return out


def _direction_to_torch(p) -> dict[str, np.ndarray]:
    W, U = np.asarray(p.W, np.float32), np.asarray(p.U, np.float32)
    hidden, fed_back = W.shape[-2:]
    out = {}
    if isinstance(p, (lstm.LSTMParams, LSTMPParams)):
        order = list(LSTM_TORCH_ORDER)
        W, U = W[order], U[order]
        b_ih = None if p.b is None else np.asarray(p.b, np.float32)[order]
        b_hh = None if p.b is None else np.zeros_like(b_ih)
        if isinstance(p, LSTMPParams):
            out["weight_hr"] = np.asarray(p.W_p, np.float32)
    elif isinstance(p, gru.GRUResetAfterParams):
        sign = np.array([1.0, -1.0, 1.0], np.float32)[:, None, None]
        W, U = W * sign, U * sign
        b_ih = b_hh = None
        if p.b is not None:
            b = np.asarray(p.b, np.float32)
            b_ih = b * sign[..., 0]
            b_hh = np.stack([np.zeros(hidden, np.float32), np.zeros(hidden, np.float32),
                             np.asarray(p.b_rg, np.float32)])
    elif isinstance(p, gru.GRUParams):
        raise TypeError("the notes' GRU (reset before the recurrent product, GRUParams) has no PyTorch "
                        "equivalent; PyTorch's nn.GRU is the reset-after form: use gru.init(..., reset_after=True)")
    else:
        raise TypeError(f"no PyTorch mapping for {type(p).__name__}; expected LSTMParams, LSTMPParams, "
                        "GRUResetAfterParams or BidirectionalParams of one of them")
    out["weight_ih"] = U.reshape(-1, U.shape[-1])
    out["weight_hh"] = W.reshape(-1, fed_back)
    if b_ih is not None:
        out["bias_ih"] = b_ih.reshape(-1)
        out["bias_hh"] = b_hh.reshape(-1)
    return out


def _check_module(module) -> str:
    mode = getattr(module, "mode", None)
    if mode not in _MODES:
        raise TypeError(f"expected a torch.nn.LSTM or torch.nn.GRU; got {type(module).__name__}")
    return mode


def from_torch(module, *, dtype=jnp.float32) -> tuple:
    """`torch.nn.LSTM` / `torch.nn.GRU` -> tuple of per-layer rnn_jax parameters (see module docstring)."""
    return from_torch_state_dict(module.state_dict(), _check_module(module), dtype=dtype)


def to_torch(layer_params, module):
    """Loads rnn_jax parameters into an existing `torch.nn.LSTM` / `torch.nn.GRU` (in place) and returns it.

    The module must have matching sizes, layer count, `bias`, `proj_size` and `bidirectional` settings; the
    layer type is checked here, PyTorch's `load_state_dict` reports any other mismatch.
    """
    import torch  # optional: only this function needs PyTorch

    mode = _check_module(module)
    first = _as_layers(layer_params)[0]
    expected = (LSTMPParams if getattr(module, "proj_size", 0) else lstm.LSTMParams) if mode == "LSTM" \
        else gru.GRUResetAfterParams
    if getattr(module, "bidirectional", False):
        if not isinstance(first, BidirectionalParams):
            raise TypeError(f"a bidirectional torch.nn.{mode} takes BidirectionalParams of {expected.__name__}; "
                            f"got {type(first).__name__}")
        first = first.forward
    elif isinstance(first, BidirectionalParams):
        raise TypeError(f"BidirectionalParams need a torch.nn.{mode} with bidirectional=True")
    if not isinstance(first, expected):
        raise TypeError(f"this torch.nn.{mode} takes {expected.__name__}; got {type(first).__name__}")
    dtype = next(module.parameters()).dtype
    state = {k: torch.tensor(v, dtype=dtype) for k, v in to_torch_state_dict(layer_params).items()}
    module.load_state_dict(state, strict=True)
    return module
