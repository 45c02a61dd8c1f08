"""The output layer's native kernels: softmax cross-entropy per row, and the training forward and backward passes.

`rnn_jax.output.output_nll` uses them for float32 on the CPU: one pass per row of the logits instead of XLA's eight
passes over all of them. On one device it trains with `output_layer_forward` (logits, loss and gradient in one
call, the gradient in row panels, `rows_to_panels`) and `output_layer_backward` (the output layer's three backward
products in one call); see `xent.cc`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.kernels import _build, _ffi


def _row_flattened(target: str, with_gradient: bool):
    """The cross-entropy kernel `target` on logits (..., K) and targets (...): the leading axes are flattened into
    the kernel's rows and restored on its outputs (per-row losses (...), and the gradient (..., K))."""
    def out_types(logits, bias, targets):
        rows = (int(np.prod(logits.shape[:-1])),)
        second = logits.shape if with_gradient else rows
        return jax.ShapeDtypeStruct(rows, jnp.float32), jax.ShapeDtypeStruct(second, jnp.float32)

    flat = _ffi.ffi(target, out_types, aliases={0: 1} if with_gradient else None)

    def kernel(logits, bias, targets):
        lead = logits.shape[:-1]
        first, second = flat(logits.reshape(-1, logits.shape[-1]), bias, targets.reshape(-1))
        return first.reshape(lead), second.reshape(lead + ((logits.shape[-1],) if with_gradient else ()))

    return kernel


def _xent_call(target: str, with_gradient: bool, logits, bias, targets):
    rows = tuple(range(logits.ndim - 1))
    return _ffi.call(_row_flattened(target, with_gradient), (rows, (), rows), (rows, rows),
                 (logits, bias, targets.astype(jnp.int32)))


def softmax_xent_forward(logits: jax.Array, bias: jax.Array, targets: jax.Array):
    """Softmax cross-entropy of the rows of `logits + bias` against integer targets: `(lse, nll)`, each (...).

    Args:
        logits: (..., K) float32 (rows along any leading axes), typically the product h V^T without its bias.
        bias: (K,) float32 (zeros for none).
        targets: (...) int32 in [0, K); one outside gives a NaN loss.

    Returns:
        lse (...), the log of each row's normaliser, and nll (...) = lse - (logits + bias)[..., targets].
    """
    _build.require()
    return _xent_call("rnn_jax_xent_forward", False, logits, bias, targets)


def softmax_xent_value_and_grad(logits: jax.Array, bias: jax.Array, targets: jax.Array):
    """`(nll (...), d_logits (..., K))` in one pass per row: the loss of `softmax_xent_forward` and its gradient for
    a unit cotangent, d_logits = softmax(logits + bias) - onehot(targets), row by row.

    For training: a cotangent g (...) of nll gives the logits' gradient g[..., None] * d_logits, and since that row
    scale commutes with the products that read it, no backward pass over the (..., K) logits is needed. The result
    is written over `logits` when XLA can donate it (it can inside a jitted step where nothing else reads them).
    A target outside [0, K) gives NaN for that row's loss and gradient.
    """
    _build.require()
    return _xent_call("rnn_jax_xent_value_and_grad", True, logits, bias, targets)


PANEL_ROWS = 16


def rows_to_panels(x: jax.Array) -> jax.Array:
    """(N, K) row-major -> the same entries in row panels, still shaped (N, K): the layout in which
    `output_layer_forward` writes the loss's gradient and `output_layer_backward` reads it.

    Rows go in groups of 16 (the last one N mod 16 rows wide), each group stored class-major: entry (n, k) lands at
    flat offset 16 p K + k w + (n - 16 p), p = n // 16 and w its group's width. Both products of the output
    layer's backward pass then read D contiguously (see `xent.cc`).
    """
    rows, classes = x.shape
    full = rows - rows % PANEL_ROWS
    head = x[:full].reshape(-1, PANEL_ROWS, classes).transpose(0, 2, 1).reshape(full, classes)
    return jnp.concatenate([head, x[full:].T.reshape(rows - full, classes)])


def panels_to_rows(x: jax.Array) -> jax.Array:
    """The inverse of `rows_to_panels`: (N, K) in row panels -> (N, K) row-major."""
    rows, classes = x.shape
    full = rows - rows % PANEL_ROWS
    head = x[:full].reshape(-1, classes, PANEL_ROWS).transpose(0, 2, 1).reshape(full, classes)
    return jnp.concatenate([head, x[full:].reshape(classes, rows - full).T])


def output_layer_forward(h: jax.Array, V: jax.Array, bias: jax.Array, targets: jax.Array):
    """The output layer and its loss for training in one native call: `(nll (N,), d_panels (N, K))`, the loss of
    `softmax_xent_value_and_grad(h @ V.T, bias, targets)` and its gradient in row panels (`rows_to_panels`).

    The product writes the logits straight into row panels (its tiles are one panel's layout) and the softmax
    then runs across each panel's 16 rows at once, so the (N, K) logits are never stored row-major.

    Args:
        h: (N, H) float32, the output layer's inputs.
        V: (K, H) float32, the output weights.
        bias: (K,) float32 (zeros for none).
        targets: (N,) int in [0, K); one outside gives a NaN loss and gradient row.

    Returns:
        nll (N,) and d_panels = rows_to_panels(softmax(h V^T + bias) - onehot(targets)), (N, K).

    Examples:
        >>> import jax.numpy as jnp
        >>> from rnn_jax import kernels
        >>> nll, d = kernels.output_layer_forward(jnp.zeros((20, 3)), jnp.zeros((5, 3)), jnp.zeros(5),
        ...                                       jnp.zeros(20, jnp.int32))  # doctest: +SKIP
        >>> kernels.panels_to_rows(d)[0]  # doctest: +SKIP
        Array([-0.8,  0.2,  0.2,  0.2,  0.2], dtype=float32)
    """
    _build.require()
    targets = jnp.asarray(targets)
    _ffi.check_operands("output_layer_forward", "h (N, H), V (K, H), bias (K,) float32 and targets (N,) integer",
                    {"h": h, "V": V, "bias": bias, "targets": targets},
                    h.ndim == 2 and V.ndim == 2 and V.shape[1:] == h.shape[1:] and bias.shape == V.shape[:1]
                    and targets.shape == h.shape[:1] and h.dtype == V.dtype == bias.dtype == jnp.float32
                    and jnp.issubdtype(targets.dtype, jnp.integer))

    def out_types(h, V, bias, targets):
        return (jax.ShapeDtypeStruct(h.shape[:1], jnp.float32),
                jax.ShapeDtypeStruct((h.shape[0], V.shape[0]), jnp.float32))

    def reference(h, V, bias, targets):
        nll, d_logits = softmax_xent_value_and_grad(h @ V.T, bias, targets)
        return nll, rows_to_panels(d_logits)

    return _ffi.native_or_reference(_ffi.ffi("rnn_jax_output_forward", out_types), reference)(
        h, V, bias, targets.astype(jnp.int32))


def output_layer_backward(d_panels: jax.Array, h: jax.Array, g: jax.Array, V: jax.Array):
    """The output layer's backward pass from the loss gradient in row panels: `(dh, dV, dc)`.

    For logits z = h V^T + c, losses with gradient D = d loss / dz for a unit cotangent (from
    `output_layer_forward`) and a cotangent g of the losses:
        dh = g ⊙ (D V),   dV = D^T (g ⊙ h),   dc = D^T g.
    One native call reads D once per product, in a layout where both run near the machine's matrix-product peak.

    Args:
        d_panels: (N, K) float32, D in row panels.
        h: (N, H) float32, the output layer's inputs.
        g: (N,) float32, the cotangent of each row's loss.
        V: (K, H) float32, the output weights.

    Returns:
        dh (N, H), dV (K, H), dc (K,), float32.
    """
    _build.require()
    _ffi.check_operands("output_layer_backward", "d_panels (N, K), h (N, H), g (N,), V (K, H), all float32",
                    {"d_panels": d_panels, "h": h, "g": g, "V": V},
                    d_panels.ndim == 2 and h.ndim == 2 and V.ndim == 2 and h.shape[0] == d_panels.shape[0]
                    and g.shape == d_panels.shape[:1] and V.shape == (d_panels.shape[1], h.shape[1])
                    and d_panels.dtype == h.dtype == g.dtype == V.dtype == jnp.float32)

    def out_types(d_panels, h, g, V):
        return (jax.ShapeDtypeStruct(h.shape, jnp.float32), jax.ShapeDtypeStruct(V.shape, jnp.float32),
                jax.ShapeDtypeStruct(V.shape[:1], jnp.float32))

    def reference(d_panels, h, g, V):
        d = panels_to_rows(d_panels)
        return g[:, None] * (d @ V), d.T @ (g[:, None] * h), g @ d

    return _ffi.native_or_reference(_ffi.ffi("rnn_jax_output_backward", out_types), reference)(d_panels, h, g, V)
