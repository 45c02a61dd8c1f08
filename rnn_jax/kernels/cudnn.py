"""The LSTM layer on CUDA GPUs through cuDNN (`jax.experimental.rnn`), the GPU counterpart of the native CPU loops.

On a GPU backend `fused_scan` hands an LSTM layer that cuDNN can run (float32 parameters, carry and inputs, one
batch axis; `fused_scan`'s own conditions already exclude masks, lengths and resets) to one cuDNN call instead of
XLA's loop; every other case keeps the XLA loop. The work here is the weight layout: cuDNN's packed vector holds
W_ih (4H, E), W_hh (4H, H), b_ih and b_hh (4H,) with the gates in PyTorch's order i, f, g, o, where `LSTMParams`
stacks U (4, H, E), W (4, H, H) and b (4, H) in the notes' order i, f, o, g. The conversion is a differentiable
gather, so gradients reach `LSTMParams` through it; cuDNN's second bias b_hh is zero.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax import lstm
    >>> from rnn_jax.kernels import cudnn
    >>> params = lstm.init(jax.random.key(0), 3, 4)
    >>> carry, hs = cudnn.lstm_layer(params, lstm.initial_state(4, (2,)), jnp.ones((2, 5, 3)),
    ...                              lstm_fn=cudnn.reference_lstm)  # cuDNN's signature, pure JAX
    >>> hs.shape
    (2, 5, 4)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

CUDNN_GATE_ORDER = (0, 1, 3, 2)  # the notes' (i, f, o, g) rows taken in cuDNN's order (i, f, g, o)


def packed_weights(params: Any) -> jax.Array:
    """cuDNN's flat weight vector (W_ih, W_hh, b_ih, b_hh) of one unidirectional LSTM layer's `LSTMParams`."""
    hidden, inputs = params.U.shape[-2:]
    order = jnp.asarray(CUDNN_GATE_ORDER)
    w_ih = params.U[order].reshape(4 * hidden, inputs)
    w_hh = params.W[order].reshape(4 * hidden, hidden)
    b_ih = jnp.zeros((4 * hidden,), params.W.dtype) if params.b is None else params.b[order].reshape(-1)
    return jnp.concatenate([w_ih.reshape(-1), w_hh.reshape(-1), b_ih, jnp.zeros_like(b_ih)])


def reference_lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional):
    """`jax.experimental.rnn.lstm`'s signature over its pure-JAX `lstm_ref` (any backend): the stand-in that tests
    the layout on a CPU."""
    from jax.experimental import rnn

    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return rnn.lstm_ref(x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size, hidden_size, num_layers,
                        dropout, bidirectional)


def lstm_layer(params: Any, carry: Any, xs: jax.Array, *, lstm_fn: Optional[Callable] = None):
    """One LSTM layer over xs (B, T, E) in cuDNN: `(final LSTMState, hs (B, T, H))`, as `fused_scan` returns them.

    Args:
        params: `LSTMParams` (W (4, H, H), U (4, H, E), b (4, H) or None).
        carry: `LSTMState` with h, c (B, H).
        xs: batch-first inputs.
        lstm_fn: a function with `jax.experimental.rnn.lstm`'s signature (None: that one, which needs cuDNN).
    """
    if lstm_fn is None:
        from jax.experimental import rnn

        lstm_fn = rnn.lstm
    batch, steps, inputs = xs.shape
    hidden = params.W.shape[-1]
    lengths = jnp.full((batch,), steps, jnp.int32)
    hs, h_n, c_n = lstm_fn(xs, carry.h[None], carry.c[None], packed_weights(params), lengths, inputs, hidden, 1, 0.0,
                           False)
    return carry._replace(h=h_n[0], c=c_n[0]), hs


def applies(params: Any, carry: Any, xs: jax.Array, backend: Optional[str] = None) -> bool:
    """Whether cuDNN runs this layer: a GPU backend, float32 everywhere, one batch axis."""
    arrays = jax.tree.leaves((params, carry, xs))
    return ((backend or jax.default_backend()) == "gpu" and xs.ndim == 3
            and all(jnp.dtype(a.dtype) == jnp.float32 for a in arrays))


def run(params: Any, carry: Any, xs: jax.Array, *, reverse: bool = False, time_major: bool = False,
        lstm_fn: Optional[Callable] = None):
    """`lstm_layer` with `fused_scan`'s layout options: xs (B, T, E) or (T, B, E), run forward or reversed."""
    batch_first = jnp.swapaxes(xs, 0, 1) if time_major else xs
    if reverse:
        batch_first = batch_first[:, ::-1]
    final, hs = lstm_layer(params, carry, batch_first, lstm_fn=lstm_fn)
    hs = hs[:, ::-1] if reverse else hs
    return final, (jnp.swapaxes(hs, 0, 1) if time_major else hs)


class LibraryLoop(NamedTuple):
    """A recurrent layer run by an accelerator library, in the shape `fused_scan` calls (`FusedSpec.library`).

    Attributes:
        applies: `f(params, carry, xs) -> bool`, whether the library runs this layer here.
        run: `f(params, carry, xs, *, reverse, time_major) -> (final carry, hs)`, as `fused_scan` returns them.
    """

    applies: Callable
    run: Callable


LSTM_CUDNN = LibraryLoop(applies=applies, run=run)
"""The LSTM (`rnn_jax.cells.lstm`) on cuDNN."""
