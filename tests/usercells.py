"""A cell defined outside the package, as a user would write it: only init, initial_state and step, parameters
without a field named W (a diagonal recurrence), and a carry that is not a NamedTuple with `h`."""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class DiagParams(NamedTuple):
    A: jax.Array      # (H, E) input weights
    d: jax.Array      # (H,) one recurrent weight per unit
    c: jax.Array      # (H,) bias


class DiagCell:
    """h_t = tanh(A x_t + d ⊙ h_{t-1} + c)."""

    def init(self, key, input_size, hidden_size, *, use_bias=True, dtype=jnp.float32, **unused):
        key_a, key_d = jax.random.split(key)
        return DiagParams(A=jax.random.normal(key_a, (hidden_size, input_size), dtype) / input_size ** 0.5,
                          d=jax.random.uniform(key_d, (hidden_size,), dtype, 0.0, 0.9),
                          c=jnp.full((hidden_size,), 0.1 if use_bias else 0.0, dtype))

    def initial_state(self, hidden_size, batch_shape=(), dtype=jnp.float32):
        return {"state": jnp.zeros(tuple(batch_shape) + (hidden_size,), dtype)}

    def step(self, params, carry, x):
        h = jnp.tanh(x @ params.A.T + params.d * carry["state"] + params.c)
        return {"state": h}, h


diag_cell = DiagCell()
