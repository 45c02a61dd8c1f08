"""LRU, the linear recurrent unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences", arXiv 2303.06349).

A complex diagonal linear recurrence with an exponential parameterisation, and a real readout::

    λ = exp(−exp(ν) + i exp(θ))                   |λ| < 1 for every real ν, θ
    s_t = λ ⊙ s_{t-1} + γ ⊙ (B x_t),   γ = exp(γ_log), γ_log = log sqrt(1 − |λ|²) at init
    h_t = Re(C s_t) + D x_t (+ d)

The state s (complex, H) is carried as its real and imaginary parts, `LRUState(re, im)`. Ring initialisation: λ
uniform on the ring r_min ≤ |λ| ≤ r_max with phase in [0, max_phase]; B (complex, H x E) normal with variance
1/(2E) per part, C (complex, H x H) variance 1/H per part, D (H, E) variance 1/E: the paper's skip D ⊙ x written
as a matrix, so E may differ from H. A named `initializer` (`rnn_jax.initializers`) replaces the normal draws of
B, C and D. Parameters `LRUParams`: nu_log, theta_log, gamma_log (H,), B (2, H, E) and C (2, H, H) as (real,
imaginary), D (H, E), and a readout bias d (H,) with `use_bias=True` (zero at init; the paper's layer has none). The products run in complex64 (complex128 for float64 parameters).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.cells import lru
    >>> params = lru.init(jax.random.key(0), input_size=3, hidden_size=5)
    >>> carry, h = lru.step(params, lru.initial_state(5, (2,)), jnp.ones((2, 3)))
    >>> h.shape, carry.im.shape
    ((2, 5), (2, 5))
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks
from rnn_jax import initializers as inits
from rnn_jax.cells import _common, _linear, base
from rnn_jax.initializers import InitScheme


class LRUParams(NamedTuple):
    """nu_log, theta_log, gamma_log (H,); B (2, H, E) and C (2, H, H) as (real, imaginary); D (H, E); d (H,) or None."""

    nu_log: jax.Array
    theta_log: jax.Array
    gamma_log: jax.Array
    B: jax.Array
    C: jax.Array
    D: jax.Array
    d: Optional[jax.Array]


class LRUState(NamedTuple):
    """The complex state s = re + i·im, each (*batch, H)."""

    re: jax.Array
    im: jax.Array


def init(key, input_size: int, hidden_size: int, *, use_bias: bool = False, dtype=jnp.float32,
         initializer: str | InitScheme | None = None, init_scale: float | None = None, r_min: float = 0.0,
         r_max: float = 0.99, max_phase: float = 2 * math.pi) -> LRUParams:
    """Creates LRU parameters with the paper's ring initialisation (see the module docstring)."""
    _common.check_sizes(input_size, hidden_size)
    if not 0.0 <= r_min < r_max < 1.0:
        raise ValueError(f"the LRU ring needs 0 <= r_min < r_max < 1; got r_min={r_min}, r_max={r_max}")
    E, H = input_size, hidden_size
    key_nu, key_theta, key_b, key_c, key_d = jax.random.split(key, 5)
    u = jax.random.uniform(key_nu, (H,), jnp.float32)
    nu_log = jnp.log(-0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2))
    theta_log = jnp.log(max_phase * jax.random.uniform(key_theta, (H,), jnp.float32, 1e-6, 1.0))
    gamma_log = 0.5 * jnp.log(-jnp.expm1(-2 * jnp.exp(nu_log)))  # log sqrt(1 − |λ|²)
    if initializer is None:
        normal = lambda k, shape, var: jax.random.normal(k, shape, jnp.float32) * math.sqrt(var)
        B, C, D = normal(key_b, (2, H, E), 0.5 / E), normal(key_c, (2, H, H), 1.0 / H), normal(key_d, (H, E), 1.0 / E)
    else:
        draw = inits.resolve(initializer, hidden_size, init_scale).input
        B, C, D = draw(key_b, (2, H, E), jnp.float32), draw(key_c, (2, H, H), jnp.float32), draw(key_d, (H, E), jnp.float32)
    d = jnp.zeros((H,), dtype) if use_bias else None
    return LRUParams(*(a.astype(dtype) for a in (nu_log, theta_log, gamma_log, B, C, D)), d=d)


def initial_state(hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LRUState:
    """Zero state: re and im of shape (*batch_shape, H)."""
    _common.check_sizes(1, hidden_size)
    shape = tuple(batch_shape) + (hidden_size,)
    return LRUState(re=jnp.zeros(shape, dtype), im=jnp.zeros(shape, dtype))


def _check_params(params: LRUParams) -> tuple[int, int]:
    fix = "Create parameters with lru.init."
    _checks.check_rank_at_least("LRU D (skip weights)", params.D, 2, "(H, E)", fix)
    H, E = params.D.shape
    for name in ("nu_log", "theta_log", "gamma_log"):
        _checks.check_shape(f"LRU {name}", getattr(params, name), (H,), f"(H={H},)", fix)
    _checks.check_shape("LRU B (input weights, real and imaginary)", params.B, (2, H, E), f"(2, H={H}, E={E})", fix)
    _checks.check_shape("LRU C (readout, real and imaginary)", params.C, (2, H, H), f"(2, H={H}, H={H})", fix)
    _checks.check_floating("LRU D", params.D, "Parameters must be floating point.")
    if params.d is not None:
        _checks.check_shape("LRU d (readout bias)", params.d, (H,), f"(H={H},)", fix)
    for leaf in jax.tree.leaves(params):
        _checks.check_same_dtype("LRU parameters", leaf, params.D.dtype, "Cast every parameter to one dtype.")
    return E, H


def _real_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _project(params: LRUParams, x):
    """(Re B x, Im B x, D x + d): (*lead, E) -> (*lead, 3, H)."""
    bias = None if params.d is None else jnp.concatenate([jnp.zeros_like(params.B[:, :, 0]), params.d[None]])
    return _common.project(jnp.concatenate([params.B, params.D[None]]), bias, x)


def _coefficients(params, projected):
    real = _real_dtype(projected.dtype)
    nu, theta, gamma = (jnp.exp(p.astype(real)) for p in (params.nu_log, params.theta_log, params.gamma_log))
    lam = jnp.exp(jax.lax.complex(-nu, theta))
    b = gamma * jax.lax.complex(projected[..., 0, :].astype(real), projected[..., 1, :].astype(real))
    return jnp.broadcast_to(lam, b.shape), b


def _output(params, state, projected):
    C = params.C.astype(state.real.dtype)
    readout = state.real @ C[0].T - state.imag @ C[1].T  # Re(C s)
    return (readout + projected[..., 2, :].astype(readout.dtype)).astype(projected.dtype)


def _state(carry: LRUState):
    real = _real_dtype(carry.re.dtype)
    return jax.lax.complex(carry.re.astype(real), carry.im.astype(real))


def _carry(state, dtype) -> LRUState:
    return LRUState(re=state.real.astype(dtype), im=state.imag.astype(dtype))


linear = base.StateLinear(coefficients=_coefficients, output=_output, state=_state, carry=_carry)


project_inputs, step_projected, step = _common.cell_functions(
    name="LRU", module="lru", params_types=LRUParams, carry_type=LRUState,
    projected_tail=lambda p: (3, p.D.shape[0]), check_params=_check_params,
    carry_sizes=lambda p: {"re": p.D.shape[0], "im": p.D.shape[0]}, update=_linear.update(linear), input_projection=_project)

__all__ = ["LRUParams", "LRUState", "init", "initial_state", "linear", "project_inputs", "step", "step_projected"]
