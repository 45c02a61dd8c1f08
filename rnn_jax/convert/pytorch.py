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

PyTorch's GRU applies the reset gate after the recurrent product, so it maps to
`rnn_jax.gru.GRUResetAfterParams`; the notes' form (`GRUParams`) is a different function and has no PyTorch
equivalent. Converting to PyTorch writes the summed biases into `bias_ih` and zeros into the r/u (LSTM: all)
parts of `bias_hh`: the function is reproduced exactly, the split between the two bias vectors is not.

Example:
    >>> import torch
    >>> from rnn_jax.convert import pytorch
    >>> torch_lstm = torch.nn.LSTM(10, 20, num_layers=2, batch_first=True)
    >>> layer_params = pytorch.from_torch(torch_lstm)      # tuple of 2 LSTMParams
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from rnn_jax.cells import gru, lstm

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
        state_dict: `module.state_dict()` of an `nn.LSTM` or `nn.GRU` (unidirectional, no projection).
        mode: "LSTM" or "GRU".
        dtype: dtype of the returned arrays.

    Returns:
        tuple of L `LSTMParams` (mode "LSTM") or `GRUResetAfterParams` (mode "GRU").
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    reverse_keys = [k for k in state_dict if k.endswith("_reverse") or "weight_hr" in k]
    if reverse_keys:
        raise ValueError(f"bidirectional and projected (proj_size) PyTorch RNNs are not supported; found {reverse_keys[0]!r}")
    num_layers = _layers_in(state_dict)
    if num_layers == 0:
        raise ValueError(f"no 'weight_ih_l0' in the state dict (keys: {sorted(state_dict)[:6]}); "
                         "pass the state_dict of a torch.nn.LSTM or torch.nn.GRU")
    num_gates = 4 if mode == "LSTM" else 3
    layers = []
    for k in range(num_layers):
        w_ih, w_hh = _numpy(state_dict[f"weight_ih_l{k}"]), _numpy(state_dict[f"weight_hh_l{k}"])
        hidden = w_hh.shape[-1]
        if w_ih.shape[0] != num_gates * hidden:
            raise ValueError(f"weight_ih_l{k} has {w_ih.shape[0]} rows; a {mode} with H={hidden} needs "
                             f"{num_gates * hidden} (is mode={mode!r} right?)")
        U = w_ih.reshape(num_gates, hidden, -1)
        W = w_hh.reshape(num_gates, hidden, hidden)
        has_bias = f"bias_ih_l{k}" in state_dict
        b_ih = _numpy(state_dict[f"bias_ih_l{k}"]).reshape(num_gates, hidden) if has_bias else None
        b_hh = _numpy(state_dict[f"bias_hh_l{k}"]).reshape(num_gates, hidden) if has_bias else None
        cast = lambda a: None if a is None else jnp.asarray(a, dtype)
        if mode == "LSTM":
            order = list(LSTM_TORCH_ORDER)
            b = None if b_ih is None else (b_ih + b_hh)[order]
            layers.append(lstm.LSTMParams(W=cast(W[order]), U=cast(U[order]), b=cast(b)))
        else:
            sign = np.array([1.0, -1.0, 1.0], dtype=U.dtype)[:, None]  # u = 1 - z
            b, b_rg = None, None
            if has_bias:
                b = np.stack([b_ih[0] + b_hh[0], -(b_ih[1] + b_hh[1]), b_ih[2]])
                b_rg = b_hh[2]
            layers.append(gru.GRUResetAfterParams(W=cast(W * sign[..., None]), U=cast(U * sign[..., None]),
                                                  b=cast(b), b_rg=cast(b_rg)))
    return tuple(layers)


def to_torch_state_dict(layer_params) -> dict[str, np.ndarray]:
    """Tuple of per-layer rnn_jax parameters (or one layer's) -> PyTorch state dict of NumPy float arrays.

    Raises:
        TypeError: for parameters with no PyTorch equivalent (the notes' GRU form, Elman is `nn.RNN`'s
            business and not covered here).
    """
    out: dict[str, np.ndarray] = {}
    for k, p in enumerate(_as_layers(layer_params)):
        W, U = np.asarray(p.W, np.float32), np.asarray(p.U, np.float32)
        hidden = W.shape[-1]
        if isinstance(p, lstm.LSTMParams):
            order = list(LSTM_TORCH_ORDER)
            W, U = W[order], U[order]
            b_ih = None if p.b is None else np.asarray(p.b, np.float32)[order]
            b_hh = None if p.b is None else np.zeros_like(b_ih)
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
            raise TypeError(f"no PyTorch mapping for {type(p).__name__}; expected LSTMParams or GRUResetAfterParams")
        out[f"weight_ih_l{k}"] = U.reshape(-1, U.shape[-1])
        out[f"weight_hh_l{k}"] = W.reshape(-1, hidden)
        if b_ih is not None:
            out[f"bias_ih_l{k}"] = b_ih.reshape(-1)
            out[f"bias_hh_l{k}"] = b_hh.reshape(-1)
    return out


def _check_module(module) -> str:
    mode = getattr(module, "mode", None)
    if mode not in _MODES:
        raise TypeError(f"expected a torch.nn.LSTM or torch.nn.GRU; got {type(module).__name__}")
    if getattr(module, "bidirectional", False) or getattr(module, "proj_size", 0):
        raise ValueError("bidirectional and proj_size PyTorch RNNs are not supported by this converter")
    return mode


def from_torch(module, *, dtype=jnp.float32) -> tuple:
    """`torch.nn.LSTM` / `torch.nn.GRU` -> tuple of per-layer rnn_jax parameters (see module docstring)."""
    return from_torch_state_dict(module.state_dict(), _check_module(module), dtype=dtype)


def to_torch(layer_params, module):
    """Loads rnn_jax parameters into an existing `torch.nn.LSTM` / `torch.nn.GRU` (in place) and returns it.

    The module must have matching sizes, layer count and `bias` setting; PyTorch's `load_state_dict`
    reports any mismatch.
    """
    import torch  # optional: only this function needs PyTorch

    mode = _check_module(module)
    first = _as_layers(layer_params)[0]
    expected = lstm.LSTMParams if mode == "LSTM" else gru.GRUResetAfterParams
    if not isinstance(first, expected):
        raise TypeError(f"a torch.nn.{mode} takes {expected.__name__}; got {type(first).__name__}")
    state = {k: torch.from_numpy(v).to(next(module.parameters()).dtype) for k, v in to_torch_state_dict(layer_params).items()}
    module.load_state_dict(state, strict=True)
    return module
