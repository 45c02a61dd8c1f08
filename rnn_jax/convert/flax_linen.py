"""Exact conversion between rnn_jax parameters and Flax Linen's `LSTMCell`, `OptimizedLSTMCell`, `GRUCell`.

Flax stores one `Dense` per gate and side, kernels as (in, out) matrices (rnn_jax's U and W transposed):

- LSTM (`LSTMCell` and `OptimizedLSTMCell` share the layout): `i{g}` (input side, no bias) and `h{g}`
  (recurrent side, with bias) for g in i, f, g, o; U_g = i{g}.kernel.T, W_g = h{g}.kernel.T, b_g = h{g}.bias.
- GRU (reset after the recurrent product, like PyTorch): `ir`, `iz`, `in` (input side, with bias), `hr`, `hz`
  (no bias), `hn` (with bias); Flax's z is 1 − u, so u's U, W and b are −z's; b_rg = hn.bias.

Functions take and return the cell's parameter dict (`variables["params"]`).

Examples:
    >>> from flax import linen as nn
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.convert import flax_linen
    >>> cell = nn.LSTMCell(features=8)
    >>> variables = cell.init(jax.random.key(0), cell.initialize_carry(jax.random.key(1), (2, 4)), jnp.ones((2, 4)))
    >>> params = flax_linen.from_linen_lstm(variables["params"])          # LSTMParams
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from rnn_jax.cells import gru, lstm


def _params(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    return tree["params"] if "params" in tree and isinstance(tree["params"], Mapping) else tree


def _need(tree, names, what):
    missing = [n for n in names if n not in tree]
    if missing:
        raise KeyError(f"not the parameters of a Flax {what}: missing {missing}; found {sorted(tree)}")


def from_linen_lstm(tree: Mapping[str, Any]) -> lstm.LSTMParams:
    """Flax `LSTMCell` / `OptimizedLSTMCell` parameters -> `LSTMParams` (gates i, f, o, g)."""
    p = _params(tree)
    _need(p, [side + g for side in "ih" for g in lstm.GATES], "LSTMCell")
    return lstm.LSTMParams(W=jnp.stack([jnp.asarray(p["h" + g]["kernel"]).T for g in lstm.GATES]),
                           U=jnp.stack([jnp.asarray(p["i" + g]["kernel"]).T for g in lstm.GATES]),
                           b=jnp.stack([jnp.asarray(p["h" + g]["bias"]) for g in lstm.GATES]))


def to_linen_lstm(params: lstm.LSTMParams) -> dict:
    """`LSTMParams` -> Flax `LSTMCell` / `OptimizedLSTMCell` parameter dict (a missing b becomes zeros)."""
    if not isinstance(params, lstm.LSTMParams):
        raise TypeError(f"expected LSTMParams; got {type(params).__name__}")
    b = jnp.zeros(params.W.shape[:2], params.W.dtype) if params.b is None else params.b
    out = {}
    for k, g in enumerate(lstm.GATES):
        out["i" + g] = {"kernel": params.U[k].T}
        out["h" + g] = {"kernel": params.W[k].T, "bias": b[k]}
    return out


def from_linen_gru(tree: Mapping[str, Any]) -> gru.GRUResetAfterParams:
    """Flax `GRUCell` parameters -> `GRUResetAfterParams` (u = 1 − z)."""
    p = _params(tree)
    _need(p, ["ir", "iz", "in", "hr", "hz", "hn"], "GRUCell")
    k = lambda name: jnp.asarray(p[name]["kernel"]).T
    bias = lambda name: jnp.asarray(p[name]["bias"])
    return gru.GRUResetAfterParams(W=jnp.stack([k("hr"), -k("hz"), k("hn")]), U=jnp.stack([k("ir"), -k("iz"), k("in")]),
                                   b=jnp.stack([bias("ir"), -bias("iz"), bias("in")]), b_rg=bias("hn"))


def to_linen_gru(params: gru.GRUResetAfterParams) -> dict:
    """`GRUResetAfterParams` -> Flax `GRUCell` parameter dict (the notes' GRU form has no Flax equivalent)."""
    if isinstance(params, gru.GRUParams):
        raise TypeError("the notes' GRU (reset before the recurrent product) has no Flax equivalent; Flax's GRUCell "
                        "is the reset-after form: use gru.init(..., reset_after=True)")
    if not isinstance(params, gru.GRUResetAfterParams):
        raise TypeError(f"expected GRUResetAfterParams; got {type(params).__name__}")
    H = params.W.shape[-1]
    b = jnp.zeros((3, H), params.W.dtype) if params.b is None else params.b
    b_rg = jnp.zeros((H,), params.W.dtype) if params.b_rg is None else params.b_rg
    return {"ir": {"kernel": params.U[0].T, "bias": b[0]}, "iz": {"kernel": -params.U[1].T, "bias": -b[1]},
            "in": {"kernel": params.U[2].T, "bias": b[2]}, "hr": {"kernel": params.W[0].T},
            "hz": {"kernel": -params.W[1].T}, "hn": {"kernel": params.W[2].T, "bias": b_rg}}
