"""Regularisers that act inside the recurrence, as cell transforms: locked recurrent dropout and zoneout.

Each takes a cell and returns a cell (the contract of `rnn_jax.cells.base`), so every runner, `run_layers` and
the language model run it unchanged:

- `locked_dropout(cell)`: dropout on h_{t-1} where it enters the recurrent product, with one mask per sequence
  reused at every step (Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent
  Neural Networks", arXiv 1512.05287). For the LSTM::

      i_t = σ(W_i (m ⊙ h_{t-1}) + U_i x_t + b_i)   (likewise f, o, g);   c_t, h_t as in the notes

  with m ∈ {0, 1/(1 − p)}^H drawn once per sequence (`locked_mask`); c_{t-1} and the GRU's interpolation
  (1 − u) ⊙ h_{t-1} are not masked. The parameters become `LockedParams(params, mask)`. It needs the cell's fused
  spec (`rnn_jax.cells.base.FusedSpec`), which says where h_{t-1} enters the product, and keeps the fused runner
  (XLA's loop; the native kernels take no mask).
- `zoneout(cell, rate)`: each unit of every carry field keeps its previous value with probability `rate`, a fresh
  draw at every step (Krueger et al. 2016, "Zoneout", arXiv 1606.01305)::

      s_t = d_t ⊙ s_{t-1} + (1 − d_t) ⊙ s̃_t,   d_t ~ Bernoulli(rate)   (s̃_t the cell's own update)

  and at evaluation the expectation, s_t = rate · s_{t-1} + (1 − rate) · s̃_t. The carry becomes
  `ZoneoutCarry(carry, key)`: a PRNG key trains (`with_key`), None evaluates. The output is the zoned carry's h
  where the carry has an h of the output's shape (as in the paper), else the cell's output.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm, fused_scan
    >>> from rnn_jax.state_dropout import locked_dropout, locked_mask, LockedParams
    >>> params = lstm.init(jax.random.key(0), 3, 5)
    >>> carry = lstm.initial_state(5, (2,))
    >>> mask = locked_mask(jax.random.key(1), carry, rate=0.25)
    >>> mask.shape
    (2, 5)
    >>> _, hs = fused_scan(locked_dropout(lstm), LockedParams(params, mask), carry, jnp.ones((2, 4, 3)))
    >>> hs.shape
    (2, 4, 5)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _checks, precision
from rnn_jax.cells import base
from rnn_jax.errors import ConfigError


def _name(cell: Any) -> str:
    return (getattr(cell, "__name__", None) or type(cell).__name__).rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------------ locked dropout (Gal)


class LockedParams(NamedTuple):
    """Parameters of a `locked_dropout` cell: the cell's own and the mask on h_{t-1}, (*batch, H) or (H,)."""

    params: Any
    mask: jax.Array


def locked_mask(key: jax.Array, carry: Any, rate: float) -> jax.Array:
    """One dropout mask per sequence for the carry's h: 0 or 1/(1 − rate), shaped like `carry.h` (*batch, H)."""
    h = carry.h
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(h.dtype)


def _masked_recurrence(inner: base.Recurrence) -> base.Recurrence:
    """`inner` applied to m ⊙ h: R becomes (R, m); the mask gets a zero gradient."""
    return base.Recurrence(
        prepare=lambda Rm: (inner.prepare(Rm[0]), Rm[1]),
        apply=lambda Rm, h: inner.apply(Rm[0], h * Rm[1]),
        transpose=lambda Rm, d_rec: inner.transpose(Rm[0], d_rec) * Rm[1],
        weight_grad=lambda Rm, h_prev, d_rec: (inner.weight_grad(Rm[0], h_prev * Rm[1], d_rec), jnp.zeros_like(Rm[1])),
        dense=False)


def check_locked_dropout(cell: Any, rate: float, params: Any = None) -> None:
    """A ConfigError when locked recurrent dropout is asked of a cell without a fused spec (for `params`, when
    given: e.g. the GRU fuses only in its reset-after form)."""
    if rate <= 0:
        return
    spec = getattr(cell, "fused", None)
    if spec is None or (params is not None and not spec.supports(params)):
        from rnn_jax import cells

        able = [name for name, able_cell in cells.CELLS.items() if getattr(able_cell, "fused", None) is not None]
        what = "has none" if spec is None else f"has none for {type(params).__name__}"
        raise ConfigError(f"recurrent_dropout={rate} needs a cell whose fused spec says where h_(t-1) enters its "
                          f"recurrent product, and the {_name(cell)} cell {what}; use one of {able} (the GRU with "
                          "reset_after), or zoneout / weight_drop")


class LockedDropout:
    """`cell` with its h_{t-1} masked before the recurrent product (see the module docstring); make it with
    `locked_dropout(cell)`."""

    def __init__(self, cell: Any):
        check_locked_dropout(cell, 1.0)
        self.cell = cell
        self.__name__ = f"locked_dropout({_name(cell)})"
        inner = cell.fused
        self.fused = inner._replace(
            supports=lambda p: isinstance(p, LockedParams) and inner.supports(p.params),
            operands=lambda p: self._operands(p), recurrence=_masked_recurrence(inner.recurrence), native=None,
            library=None)
        if hasattr(cell, "output_size"):
            self.output_size = cell.output_size

    def __repr__(self) -> str:
        return f"<cell {self.__name__}>"

    def init(self, key: jax.Array, input_size: int, hidden_size: int, **options) -> LockedParams:
        """The cell's parameters with an all-ones mask (no dropout) of the carry's h size."""
        params = self.cell.init(key, input_size, hidden_size, **options)
        h = self.cell.initial_state(hidden_size, (), base.param_dtype(params)).h
        return LockedParams(params, jnp.ones(h.shape, h.dtype))

    def initial_state(self, hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        return self.cell.initial_state(hidden_size, batch_shape, dtype)

    def _operands(self, params: LockedParams) -> base.FusedOperands:
        check_locked_dropout(self.cell, 1.0, params.params)
        operands = self.cell.fused.operands(params.params)
        return operands._replace(R=(operands.R, params.mask))

    def project_inputs(self, params: LockedParams, xs: jax.Array) -> jax.Array:
        """U x + b for all gates, shaped as the fused spec's projected inputs: (*lead, G, K // G) or (*lead, K)."""
        jax.eval_shape(self.cell.project_inputs, params.params, xs)  # the cell's own boundary checks
        operands = self._operands(params)
        projected = precision.matmul(xs.astype(operands.U.dtype), operands.U.T)
        projected = projected if operands.b is None else projected + operands.b
        return projected.reshape(xs.shape[:-1] + self.fused.gate_shape(operands.U.shape[0]))

    def step_projected(self, params: LockedParams, carry: Any, projected: jax.Array):
        if tuple(params.mask.shape) not in (tuple(carry.h.shape), tuple(carry.h.shape[-1:])):
            raise _checks.ShapeError(f"the locked dropout mask must have the carry's h shape (*batch, H) = "
                                     f"{tuple(carry.h.shape)} or (H,) = {tuple(carry.h.shape[-1:])}; got "
                                     f"{tuple(params.mask.shape)}. Draw it with locked_mask(key, carry, rate).")
        spec, operands = self.fused, self._operands(params)
        rec = spec.recurrence.apply(spec.recurrence.prepare(operands.R), carry.h)
        carry, h, _ = spec.forward(operands.elementwise, carry, projected, rec.reshape(projected.shape))
        return carry, h

    def step(self, params: LockedParams, carry: Any, x: jax.Array):
        """One step of the cell with h_{t-1} masked in the recurrent product: (new carry, h_t)."""
        _checks.check_params_type(params, LockedParams, f"{self.__name__}.step")
        jax.eval_shape(self.cell.step, params.params, carry, x)  # the cell's own checks of carry and x
        return self.step_projected(params, carry, self.project_inputs(params, x))


@functools.lru_cache(maxsize=None)
def locked_dropout(cell: Any) -> LockedDropout:
    """The `LockedDropout` transform of `cell` (one object per cell, so compiled runners are reused)."""
    return LockedDropout(cell)


# ------------------------------------------------------------------------------------------------- zoneout


class ZoneoutCarry(NamedTuple):
    """Carry of a `zoneout` cell: the cell's own carry and a PRNG key (training) or None (evaluation)."""

    carry: Any
    key: Optional[jax.Array]


def with_key(carry: Any, key: jax.Array | None) -> ZoneoutCarry:
    """A cell's carry as a zoneout carry: random zoneout with a key, its expectation with None."""
    return ZoneoutCarry(carry, key)


class Zoneout:
    """`cell` whose carry units keep their previous values at random (see the module docstring); make it with
    `zoneout(cell, rate)`."""

    def __init__(self, cell: Any, rate: float):
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"zoneout rate must be in [0, 1]; got {rate}")
        self.cell, self.rate = cell, float(rate)
        self.__name__ = f"zoneout({_name(cell)}, {rate:g})"
        if hasattr(cell, "output_size"):
            self.output_size = cell.output_size

    def __repr__(self) -> str:
        return f"<cell {self.__name__}>"

    def init(self, key: jax.Array, input_size: int, hidden_size: int, **options) -> Any:
        return self.cell.init(key, input_size, hidden_size, **options)

    def initial_state(self, hidden_size: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> ZoneoutCarry:
        """The cell's zero carry in evaluation mode (key None); `with_key` turns it to training."""
        return ZoneoutCarry(self.cell.initial_state(hidden_size, batch_shape, dtype), None)

    def _zone(self, previous: ZoneoutCarry, updated: tuple):
        new_carry, h = updated
        old, treedef = jax.tree.flatten(previous.carry)
        new = jax.tree.leaves(new_carry)
        key = previous.key
        if key is None:
            zoned = [self.rate * o + (1.0 - self.rate) * n for o, n in zip(old, new)]
        else:
            key, *keys = jax.random.split(key, len(new) + 1)
            zoned = [jnp.where(jax.random.bernoulli(k, self.rate, n.shape), o, n) for k, o, n in zip(keys, old, new)]
        carry = jax.tree.unflatten(treedef, zoned)
        state_h = getattr(carry, "h", None)
        out = state_h if state_h is not None and state_h.shape == h.shape else h
        return ZoneoutCarry(carry, key), out

    def _check_carry(self, carry: Any, where: str) -> None:
        if not isinstance(carry, ZoneoutCarry):
            raise TypeError(f"{self.__name__}.{where} needs a ZoneoutCarry(carry, key); got {type(carry).__name__}. "
                            "Wrap the cell's carry with rnn_jax.state_dropout.with_key(carry, key or None).")

    def step(self, params: Any, carry: ZoneoutCarry, x: jax.Array):
        """The cell's step, then zoneout of every carry field: (new `ZoneoutCarry`, h_t)."""
        self._check_carry(carry, "step")
        return self._zone(carry, self.cell.step(params, carry.carry, x))

    @property
    def project_inputs(self):
        """The cell's own input products (present when the cell has the hoisting hooks)."""
        if not base.can_hoist(self.cell):
            raise AttributeError(f"{self.cell!r} has no hoisting hooks, so neither has its zoneout")
        return self.cell.project_inputs

    @property
    def step_projected(self):
        if not base.can_hoist(self.cell):
            raise AttributeError(f"{self.cell!r} has no hoisting hooks, so neither has its zoneout")
        return self._step_projected

    def _step_projected(self, params: Any, carry: ZoneoutCarry, projected: jax.Array):
        self._check_carry(carry, "step_projected")
        return self._zone(carry, self.cell.step_projected(params, carry.carry, projected))


@functools.lru_cache(maxsize=None)
def zoneout(cell: Any, rate: float) -> Zoneout:
    """The `Zoneout` transform of `cell` at `rate` (one object per pair, so compiled runners are reused)."""
    return Zoneout(cell, rate)
