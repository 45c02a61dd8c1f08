"""IndRNN cell (Li et al. 2018, "Independently Recurrent Neural Network (IndRNN)", arXiv 1803.04831).

Each hidden unit has one recurrent weight of its own (a diagonal recurrence, no (H, H) matrix)::

    h_t = relu(U x_t + w ⊙ h_{t-1} + b)

U (H, E) are the input weights (the paper's W), w (H,) the recurrent weights (the paper's u), b (H,) the bias.
The paper keeps |w| ≤ 2^(1/T) for long memories and starts w uniform in [0, 1] (its default here) or in
[2^(-1/T) ... 1) for long sequences (`recurrent_range`). Its fused path (`rnn_jax.fused_scan`) uses the
`DIAGONAL` recurrence: the loop multiplies elementwise, the weight gradient is a sum over time and batch.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import indrnn
    >>> params = indrnn.init(jax.random.key(0), input_size=3, hidden_size=5)
    >>> carry, h = indrnn.step(params, indrnn.initial_state(5, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((h >= 0).all())
    ((2, 5), True)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax import initializers as inits
from rnn_jax.cells import _common, base
from rnn_jax.cells._common import HiddenState
from rnn_jax.initializers import InitScheme


class IndRNNParams(NamedTuple):
    """IndRNN parameters.

    Attributes:
        U: input weights, (H, E).
        w: recurrent weights, one per unit, (H,).
        b: bias, (H,), or None.
    """

    U: jax.Array
    w: jax.Array
    b: Optional[jax.Array]


def init(key: jax.Array, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None,
         recurrent_range: tuple[float, float] = (0.0, 1.0)) -> IndRNNParams:
    """Creates IndRNN parameters U (H, E), w (H,) uniform in `recurrent_range`, b (H,) or None.

    Args:
        key: PRNG key.
        input_size: E.
        hidden_size: H.
        use_bias: whether there is a bias b.
        dtype: parameter dtype.
        initializer, init_scale: the scheme for U and b (see `rnn_jax.initializers`).
        recurrent_range: (low, high) of w's uniform initialisation.
    """
    _common.check_sizes(input_size, hidden_size)
    scheme = inits.resolve(initializer, hidden_size, init_scale)
    key_u, key_w, key_b = jax.random.split(key, 3)
    low, high = recurrent_range
    w = jax.random.uniform(key_w, (hidden_size,), dtype, low, high)
    b = scheme.bias(key_b, (hidden_size,), dtype) if use_bias else None
    return IndRNNParams(U=scheme.input(key_u, (hidden_size, input_size), dtype), w=w, b=b)


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> HiddenState:
    """Zero carry: h of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    return HiddenState(h=jnp.zeros(tuple(batch_shape) + (hidden_size,), dtype))


def _check_params(params: IndRNNParams) -> tuple[int, int]:
    fix = "Create parameters with indrnn.init."
    _checks.check_rank_at_least("IndRNN U (input weights)", params.U, 2, "(H, E)", fix)
    H, E = params.U.shape[-2:]
    _checks.check_shape("IndRNN U (input weights)", params.U, (H, E), "(H, E)", fix)
    _checks.check_shape("IndRNN w (recurrent weights, one per unit)", params.w, (H,), f"(H={H},)", fix)
    if params.b is not None:
        _checks.check_shape("IndRNN b (bias)", params.b, (H,), f"(H={H},)", fix)
    _checks.check_floating("IndRNN U", params.U, "Parameters must be floating point.")
    _checks.check_same_dtype("IndRNN w", params.w, params.U.dtype, "Cast every parameter to one dtype.")
    return E, H


def _forward(_, carry: HiddenState, projected: jax.Array, rec: jax.Array):
    h = jax.nn.relu(projected + rec)
    return HiddenState(h=h), h, h


def _backward(_, carry: HiddenState, h, d_carry: HiddenState, d_h: jax.Array):
    d_pre = jnp.where(h > 0, d_h + d_carry.h, jnp.zeros((), d_h.dtype))
    return None, HiddenState(h=None), d_pre, d_pre


def _cell_update(params: IndRNNParams, carry: HiddenState, projected: jax.Array):
    new_carry, h, _ = _forward(None, carry, projected, params.w * carry.h)
    return new_carry, h


fused = base.FusedSpec(
    supports=lambda params: isinstance(params, IndRNNParams),
    operands=lambda params: base.FusedOperands(U=params.U, b=params.b, R=params.w, elementwise=None),
    num_gates=None, forward=_forward, backward=_backward, recurrence=base.DIAGONAL)

project_inputs, step_projected, step = _common.cell_functions(
    name="IndRNN", module="indrnn", params_types=IndRNNParams, carry_type=HiddenState,
    projected_tail=lambda p: (p.U.shape[-2],), check_params=_check_params,
    carry_sizes=lambda p: {"h": p.U.shape[-2]}, update=_cell_update)
