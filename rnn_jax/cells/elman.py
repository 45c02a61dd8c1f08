"""Elman RNN cell, the simplest baseline.

Equation::

    h_t = tanh(W h_{t-1} + U x_t + b)

Parameters: W (H, H), U (H, E), b (H,) or None (no gate axis: there is one "gate").

Example:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import elman
    >>> params = elman.init(jax.random.key(0), 4, 8)
    >>> carry, h = elman.step(params, elman.initial_state(8), jnp.ones(4))
    >>> h.shape
    (8,)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax.cells import _common
from rnn_jax.cells._common import HiddenState
from rnn_jax.initializers import InitScheme


class ElmanParams(NamedTuple):
    """Elman parameters: W (H, H) recurrent, U (H, E) input, b (H,) or None."""

    W: jax.Array
    U: jax.Array
    b: Optional[jax.Array]


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    use_bias: bool = True,
    dtype=jnp.float32,
    initializer: str | InitScheme = "pytorch",
    init_scale: float | None = None,
) -> ElmanParams:
    """Creates Elman parameters W (H, H), U (H, E), b (H,) or None (see `rnn_jax.lstm.init` for the options)."""
    W, U, b, _ = _common.init_weights(key, None, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                                      initializer=initializer, init_scale=init_scale)
    return ElmanParams(W=W, U=U, b=b)


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> HiddenState:
    """Zero carry: h of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    return HiddenState(h=jnp.zeros(tuple(batch_shape) + (hidden_size,), dtype))


def _check(params, where: str) -> tuple[int, int]:
    _checks.check_params_type(params, ElmanParams, where)
    return _common.check_weights("Elman", params.W, params.U, params.b, None, "")


def _check_carry(carry, batch_shape, H, dtype) -> None:
    if not isinstance(carry, HiddenState):
        raise TypeError(f"elman carry must be a HiddenState(h); got {type(carry).__name__}. "
                        "Create it with elman.initial_state(H, batch_shape).")
    _common.check_state("Elman", "h", carry.h, batch_shape, H, dtype)


def project_inputs(params: ElmanParams, x: jax.Array) -> jax.Array:
    """Input product U x + b: (*lead, E) -> (*lead, H)."""
    E, _ = _check(params, "elman.project_inputs")
    _common.check_input("Elman", x, E)
    return _common.project(params.U, params.b, x.astype(params.W.dtype))


def step_projected(params: ElmanParams, carry: HiddenState, projected: jax.Array) -> tuple[HiddenState, jax.Array]:
    """One step from `project_inputs(params, x_t)` of shape (*batch, H); returns (carry, h_t)."""
    _, H = _check(params, "elman.step_projected")
    _common.check_projected("Elman", projected, (H,), f"(*batch, H={H})")
    _check_carry(carry, tuple(projected.shape[:-1]), H, params.W.dtype)
    return _cell_update(params, carry, projected)


def _cell_update(params: ElmanParams, carry: HiddenState, projected: jax.Array) -> tuple[HiddenState, jax.Array]:
    h = jnp.tanh(projected + _common.recurrent(params.W, carry.h))
    return HiddenState(h=h), h


def step(params: ElmanParams, carry: HiddenState, x: jax.Array) -> tuple[HiddenState, jax.Array]:
    """One Elman step: x of shape (*batch, E) -> (carry, h_t of shape (*batch, H))."""
    E, H = _check(params, "elman.step")
    _common.check_input("Elman", x, E)
    _check_carry(carry, tuple(x.shape[:-1]), H, params.W.dtype)
    return _cell_update(params, carry, _common.project(params.U, params.b, x.astype(params.W.dtype)))
