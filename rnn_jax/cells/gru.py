"""GRU cell: the notes' form by default, the cuDNN/PyTorch form as an option.

Notes' form (Chung et al. 2014, Haiku's GRU), parameters `GRUParams`::

    r_t = σ(W_r h_{t-1} + U_r x_t + b_r)               reset gate
    u_t = σ(W_u h_{t-1} + U_u x_t + b_u)               update gate
    g_t = tanh(W_g (r_t ⊙ h_{t-1}) + U_g x_t + b_g)    candidate: reset before the recurrent product
    h_t = u_t ⊙ g_t + (1 − u_t) ⊙ h_{t-1}

Reset-after form (cuDNN, PyTorch, Flax's GRUCell), parameters `GRUResetAfterParams`, selected with
`init(..., reset_after=True)`; it has an extra recurrent candidate bias b_rg::

    g_t = tanh(U_g x_t + b_g + r_t ⊙ (W_g h_{t-1} + b_rg))

The update gate keeps the notes' polarity in both forms (u weights the new candidate); PyTorch's z is 1 − u,
which `rnn_jax.convert.pytorch` maps exactly by negating the z weights. The parameters' type selects the
form, so `step` needs no flag.

Parameter layout: gates stacked along a leading axis in the order `GATES = ("r", "u", "g")`: U (3, H, E),
W (3, H, H), b (3, H) or None.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import gru
    >>> params = gru.init(jax.random.key(0), 10, 20)
    >>> carry, h = gru.step(params, gru.initial_state(20, (2,)), jnp.ones((2, 10)))
    >>> h.shape
    (2, 20)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax.cells import _common, base
from rnn_jax.kernels import recurrent as recurrent_kernels
from rnn_jax.cells._common import HiddenState
from rnn_jax.initializers import InitScheme

GATES = ("r", "u", "g")
GATE_INDEX = {name: k for k, name in enumerate(GATES)}
NUM_GATES = len(GATES)
R, UPD, G = GATE_INDEX["r"], GATE_INDEX["u"], GATE_INDEX["g"]


class GRUParams(NamedTuple):
    """GRU parameters, notes' form (reset before the recurrent product); gates in `GATES` order.

    Attributes:
        W: recurrent weights, (3, H, H).
        U: input weights, (3, H, E).
        b: biases, (3, H), or None.
    """

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


class GRUResetAfterParams(NamedTuple):
    """GRU parameters, cuDNN/PyTorch form (reset after the recurrent product).

    Attributes:
        W: recurrent weights, (3, H, H).
        U: input weights, (3, H, E).
        b: input-side biases, (3, H), or None.
        b_rg: recurrent candidate bias b_rg, (H,), or None (present exactly when b is).
    """

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]
    b_rg: Optional[jax.Array]


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    use_bias: bool = True,
    dtype=jnp.float32,
    initializer: str | InitScheme = "pytorch",
    init_scale: float | None = None,
    reset_after: bool = False,
) -> GRUParams | GRUResetAfterParams:
    """Creates GRU parameters.

    Args:
        key: PRNG key.
        input_size: E.
        hidden_size: H.
        use_bias: whether the gates have biases.
        dtype: parameter dtype; products take their operands in it (bfloat16: float32 sums, state and outputs).
        initializer: scheme name ("pytorch", "uniform", "orthogonal") or an `InitScheme`.
        init_scale: s for initializer="uniform".
        reset_after: False for the notes' form (`GRUParams`), True for the cuDNN/PyTorch form
            (`GRUResetAfterParams`).

    Returns:
        `GRUParams` or `GRUResetAfterParams` with W (3, H, H), U (3, H, E), b (3, H) or None.
    """
    key, key_rg = jax.random.split(key)
    W, U, b, scheme = _common.init_weights(key, NUM_GATES, input_size, hidden_size, use_bias=use_bias,
                                           dtype=dtype, initializer=initializer, init_scale=init_scale)
    if not reset_after:
        return GRUParams(W=W, U=U, b=b)
    b_rg = scheme.bias(key_rg, (hidden_size,), dtype) if use_bias else None
    return GRUResetAfterParams(W=W, U=U, b=b, b_rg=b_rg)


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> HiddenState:
    """Zero carry: h of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    return HiddenState(h=jnp.zeros(tuple(batch_shape) + (hidden_size,), dtype))


def _check_params(params) -> tuple[int, int]:
    E, H = _common.check_weights("GRU", params.W, params.U, params.b, NUM_GATES, "r, u, g")
    if isinstance(params, GRUResetAfterParams):
        if (params.b is None) != (params.b_rg is None):
            raise ValueError("GRUResetAfterParams needs b and b_rg both present or both None; got "
                             f"b={'None' if params.b is None else 'array'}, b_rg={'None' if params.b_rg is None else 'array'}")
        if params.b_rg is not None:
            _checks.check_shape("GRU b_rg (recurrent candidate bias)", params.b_rg, (H,), f"(H={H},)",
                                "Create parameters with gru.init(..., reset_after=True).")
    return E, H


def _reset_after_forward(b_rg, carry: HiddenState, projected: jax.Array, rec: jax.Array):
    """The reset-after equations given U x_t + b (projected) and W h_{t-1} (rec), both (*batch, 3, H)."""
    r = jax.nn.sigmoid(projected[..., R, :] + rec[..., R, :])
    u = jax.nn.sigmoid(projected[..., UPD, :] + rec[..., UPD, :])
    rec_g = rec[..., G, :] if b_rg is None else rec[..., G, :] + b_rg
    g = jnp.tanh(projected[..., G, :] + r * rec_g)
    h = u * g + (1 - u) * carry.h
    return HiddenState(h=h), h, (r, u, g, rec_g)


def _reset_after_backward(b_rg, carry: HiddenState, residuals, d_carry: HiddenState, d_h: jax.Array):
    """Derivative of `_reset_after_forward` (d_projected and d_rec differ only in the candidate slot)."""
    r, u, g, rec_g = residuals
    d_h = d_h + d_carry.h
    d_pre_g = d_h * u * (1 - g * g)
    d_rec_g = d_pre_g * r
    d_pre_r = d_pre_g * rec_g * r * (1 - r)
    d_pre_u = d_h * (g - carry.h) * u * (1 - u)
    d_projected = jnp.stack([d_pre_r, d_pre_u, d_pre_g], axis=-2)
    d_rec = jnp.stack([d_pre_r, d_pre_u, d_rec_g], axis=-2)
    d_b_rg = None if b_rg is None else d_rec_g.reshape(-1, d_rec_g.shape[-1]).sum(0)
    return d_b_rg, HiddenState(h=d_h * (1 - u)), d_projected, d_rec


def _cell_update(params, carry: HiddenState, projected: jax.Array) -> tuple[HiddenState, jax.Array]:
    h_prev = carry.h
    if isinstance(params, GRUResetAfterParams):
        new_carry, h, _ = _reset_after_forward(params.b_rg, carry, projected, _common.recurrent(params.W, h_prev))
        return new_carry, h
    rec_ru = _common.recurrent(params.W[:G], h_prev)
    r = jax.nn.sigmoid(projected[..., R, :] + rec_ru[..., R, :])
    u = jax.nn.sigmoid(projected[..., UPD, :] + rec_ru[..., UPD, :])
    g = jnp.tanh(projected[..., G, :] + _common.recurrent(params.W[G], r * h_prev))
    h = u * g + (1 - u) * h_prev
    return HiddenState(h=h), h


# Only the reset-after form fuses: the notes' form needs r_t before its candidate's recurrent product.
fused = base.FusedSpec(supports=lambda params: isinstance(params, GRUResetAfterParams),
                       operands=lambda params: base.stacked_operands(params, elementwise=params.b_rg),
                       num_gates=NUM_GATES, forward=_reset_after_forward, backward=_reset_after_backward,
                       native=recurrent_kernels.GRU_LOOP)


project_inputs, step_projected, step = _common.cell_functions(
    name="GRU", module="gru", params_types=(GRUParams, GRUResetAfterParams), carry_type=HiddenState,
    projected_tail=lambda p: (NUM_GATES, p.W.shape[-1]), check_params=_check_params,
    carry_sizes=lambda p: {"h": p.W.shape[-1]}, update=_cell_update)

recurrent_weights = ("W",)  # the recurrent matrices (weight drop: `rnn_jax.regularisers.weight_drop`)
