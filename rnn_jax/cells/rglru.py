"""RG-LRU, the real-gated linear recurrent unit of Griffin (De et al. 2024, "Griffin: Mixing Gated Linear
Recurrences with Local Attention for Efficient Language Models", arXiv 2402.19427).

A diagonal recurrence whose decay is gated by the input; linear in h, so it runs as a parallel scan::

    r_t = σ(U_r x_t + b_r)                       recurrence gate
    i_t = σ(U_i x_t + b_i)                       input gate
    v_t = U_v x_t + b_v                          the value (Griffin's block feeds x_t itself when E = H)
    a_t = a^(c r_t),  a = σ(Λ),  c = 8           so log a_t = −c r_t softplus(−Λ)
    h_t = a_t ⊙ h_{t-1} + sqrt(1 − a_t²) ⊙ (i_t ⊙ v_t)

Λ starts so that a^c is uniform in [0.9, 0.999], as in the paper. Parameters: U (3, H, E), b (3, H) or None (gates
`GATES = ("r", "i", "v")`), Lambda (H,); carry `HiddenState(h)`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import rglru
    >>> params = rglru.init(jax.random.key(0), input_size=3, hidden_size=5)
    >>> carry, h = rglru.step(params, rglru.initial_state(5, (2,)), jnp.ones((2, 3)))
    >>> h.shape
    (2, 5)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax.cells import _linear
from rnn_jax.cells.gru import initial_state
from rnn_jax.initializers import InitScheme

GATES = ("r", "i", "v")
NUM_GATES = 3
C = 8.0
"""The paper's fixed scale c of the gated decay exponent."""


class RGLRUParams(NamedTuple):
    """U (3, H, E), b (3, H) or None (gates r, i, v) and Lambda (H,), the decay a = σ(Λ)."""

    U: jax.Array
    b: Optional[jax.Array]
    Lambda: jax.Array


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = True, dtype=jnp.float32,
         initializer: str | InitScheme = "pytorch", init_scale: float | None = None,
         decay_range: tuple[float, float] = (0.9, 0.999)) -> RGLRUParams:
    """Creates RG-LRU parameters: U, b with the named scheme; Λ with a^c uniform in `decay_range`."""
    key_gates, key_decay = jax.random.split(key)
    U, b = _linear.init_gates(key_gates, NUM_GATES, input_size, hidden_size, use_bias=use_bias, dtype=dtype,
                              initializer=initializer, init_scale=init_scale)
    low, high = decay_range
    a = jax.random.uniform(key_decay, (hidden_size,), jnp.float32, low, high) ** (1.0 / C)
    return RGLRUParams(U=U, b=b, Lambda=(jnp.log(a) - jnp.log1p(-a)).astype(dtype))


def _check_params(params: RGLRUParams) -> tuple[int, int]:
    E, H = _linear.check_gates("RG-LRU", params.U, params.b, NUM_GATES, "r, i, v")
    _checks.check_shape("RG-LRU Lambda (decay logits)", params.Lambda, (H,), f"(H={H},)",
                        "Create parameters with rglru.init.")
    _checks.check_same_dtype("RG-LRU Lambda", params.Lambda, params.U.dtype, "Cast every parameter to one dtype.")
    return E, H


def _coefficients(params, projected):
    r, i = jax.nn.sigmoid(projected[..., 0, :]), jax.nn.sigmoid(projected[..., 1, :])
    log_a = -C * r * jax.nn.softplus(-params.Lambda)
    # sqrt(1 − a²) as sqrt(−expm1(2 log a)): exact where a is close to 1.
    return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2 * log_a)) * (i * projected[..., 2, :])


linear, project_inputs, step_projected, step = _linear.hidden_state_cell(
    name="RG-LRU", module="rglru", params_type=RGLRUParams, gates=GATES, coefficients=_coefficients,
    check_params=_check_params)

__all__ = ["C", "GATES", "RGLRUParams", "init", "initial_state", "linear", "project_inputs", "step", "step_projected"]
