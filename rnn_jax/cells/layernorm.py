"""Layer-normalised LSTM and GRU (Ba, Kiros & Hinton 2016, "Layer Normalization", section 3.1).

Each gate's input product and recurrent product are normalised separately (per gate, over its H units, with
gains γ), before the bias is added; the LSTM also normalises the cell state before its output tanh::

    LN-LSTM:  a_k = LN(U_k x_t; γx_k) + LN(W_k h_{t-1}; γh_k) + b_k          for k in i, f, o, g
              i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
              c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(LN(c_t; γc, βc))

    LN-GRU:   r, u = σ(LN(U_k x_t; γx_k) + LN(W_k h_{t-1}; γh_k) + b_k)      for k in r, u
              g = tanh(LN(U_g x_t; γx_g) + LN(W_g (r ⊙ h_{t-1}); γh_g) + b_g)
              h_t = u ⊙ g + (1 − u) ⊙ h_{t-1}

LN(z; γ, β) = γ ⊙ (z − mean(z)) / sqrt(var(z) + 1e-5) + β. The input-side normalisation depends on x_t alone,
so the hoisted fast path still computes it for all time steps before the loop. Gains start at 1, βc at 0.

Cells: `ln_lstm` and `ln_gru` (module-level objects with `init`, `initial_state`, `step`, ...).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax.cells import _common, gru, lstm
from rnn_jax.cells._common import HiddenState
from rnn_jax.cells.lstm import LSTMState
from rnn_jax.initializers import InitScheme


class LNLSTMParams(NamedTuple):
    """W (4, H, H), U (4, H, E), b (4, H) or None, gains gamma_x and gamma_h (4, H), gamma_c and beta_c (H,)."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]
    gamma_x: jax.Array
    gamma_h: jax.Array
    gamma_c: jax.Array
    beta_c: jax.Array


class LNGRUParams(NamedTuple):
    """W (3, H, H), U (3, H, E), b (3, H) or None, gains gamma_x and gamma_h (3, H); gates r, u, g."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]
    gamma_x: jax.Array
    gamma_h: jax.Array


def _normalised_inputs(params, x):
    out = _common.layer_norm(_common.project(params.U, None, x), params.gamma_x)
    return out if params.b is None else out + params.b


def _check_gains(cell: str, params, num_gates: int, H: int) -> None:
    for name in ("gamma_x", "gamma_h"):
        _checks.check_shape(f"{cell} {name}", getattr(params, name), (num_gates, H), f"({num_gates}, H={H})",
                            "Create parameters with the cell's init.")


# ------------------------------------------------------------------------------------------------- LN-LSTM


def _lstm_init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
               initializer: str | InitScheme = "pytorch", init_scale: float | None = None,
               forget_bias: float = 0.0) -> LNLSTMParams:
    """Creates LN-LSTM parameters (options as `rnn_jax.lstm.init`); gains 1, beta_c 0."""
    base = lstm.init(key, input_size, hidden_size, use_bias=use_bias, dtype=dtype, initializer=initializer,
                     init_scale=init_scale, forget_bias=forget_bias)
    ones = jnp.ones((lstm.NUM_GATES, hidden_size), dtype)
    return LNLSTMParams(W=base.W, U=base.U, b=base.b, gamma_x=ones, gamma_h=ones + 0,
                        gamma_c=jnp.ones((hidden_size,), dtype), beta_c=jnp.zeros((hidden_size,), dtype))


def _lstm_check(params: LNLSTMParams) -> tuple[int, int]:
    E, H = _common.check_weights("LN-LSTM", params.W, params.U, params.b, lstm.NUM_GATES, "i, f, o, g")
    _check_gains("LN-LSTM", params, lstm.NUM_GATES, H)
    for name in ("gamma_c", "beta_c"):
        _checks.check_shape(f"LN-LSTM {name}", getattr(params, name), (H,), f"(H={H},)", "Use ln_lstm.init.")
    return E, H


def _lstm_update(params: LNLSTMParams, carry: LSTMState, projected):
    pre = projected + _common.layer_norm(_common.recurrent(params.W, carry.h), params.gamma_h)
    index = lstm.GATE_INDEX
    i, f, o = (jax.nn.sigmoid(pre[..., index[n], :]) for n in ("i", "f", "o"))
    g = jnp.tanh(pre[..., index["g"], :])
    c = f * carry.c + i * g
    h = o * jnp.tanh(_common.layer_norm(c, params.gamma_c, params.beta_c))
    return LSTMState(h=h, c=c), h


_lstm = _common.cell_functions(
    name="LN-LSTM", module="layernorm", params_types=LNLSTMParams, carry_type=LSTMState,
    projected_tail=lambda p: (lstm.NUM_GATES, p.W.shape[-1]), check_params=_lstm_check,
    carry_sizes=lambda p: {"h": p.W.shape[-1], "c": p.W.shape[-1]}, update=_lstm_update,
    input_projection=_normalised_inputs)

ln_lstm = _common.Cell(
    "ln_lstm", GATES=lstm.GATES, Params=LNLSTMParams, init=_lstm_init, initial_state=lstm.initial_state,
    recurrent_weights=("W",),
    project_inputs=_lstm.project_inputs, step_projected=_lstm.step_projected, step=_lstm.step)

# -------------------------------------------------------------------------------------------------- LN-GRU


def _gru_init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
              initializer: str | InitScheme = "pytorch", init_scale: float | None = None) -> LNGRUParams:
    """Creates LN-GRU parameters (options as `rnn_jax.gru.init`, notes' form); gains 1."""
    base = gru.init(key, input_size, hidden_size, use_bias=use_bias, dtype=dtype, initializer=initializer,
                    init_scale=init_scale)
    ones = jnp.ones((gru.NUM_GATES, hidden_size), dtype)
    return LNGRUParams(W=base.W, U=base.U, b=base.b, gamma_x=ones, gamma_h=ones + 0)


def _gru_check(params: LNGRUParams) -> tuple[int, int]:
    E, H = _common.check_weights("LN-GRU", params.W, params.U, params.b, gru.NUM_GATES, "r, u, g")
    _check_gains("LN-GRU", params, gru.NUM_GATES, H)
    return E, H


def _gru_update(params: LNGRUParams, carry: HiddenState, projected):
    R, U, G = gru.R, gru.UPD, gru.G
    rec_ru = _common.layer_norm(_common.recurrent(params.W[:G], carry.h), params.gamma_h[:G])
    r = jax.nn.sigmoid(projected[..., R, :] + rec_ru[..., R, :])
    u = jax.nn.sigmoid(projected[..., U, :] + rec_ru[..., U, :])
    rec_g = _common.layer_norm(_common.recurrent(params.W[G], r * carry.h), params.gamma_h[G])
    g = jnp.tanh(projected[..., G, :] + rec_g)
    h = u * g + (1 - u) * carry.h
    return HiddenState(h=h), h


_gru = _common.cell_functions(
    name="LN-GRU", module="layernorm", params_types=LNGRUParams, carry_type=HiddenState,
    projected_tail=lambda p: (gru.NUM_GATES, p.W.shape[-1]), check_params=_gru_check,
    carry_sizes=lambda p: {"h": p.W.shape[-1]}, update=_gru_update, input_projection=_normalised_inputs)

ln_gru = _common.Cell(
    "ln_gru", GATES=gru.GATES, Params=LNGRUParams, init=_gru_init, initial_state=gru.initial_state,
    recurrent_weights=("W",),
    project_inputs=_gru.project_inputs, step_projected=_gru.step_projected, step=_gru.step)
