"""The language model's output layer and loss: softmax(V h + c), its cross-entropy, and the native loss kernels' VJP.

`output_nll` is the per-token loss the trainer uses: for float32 features on the CPU, under the native policy
(`rnn_jax.kernels.policy`), the logits' softmax and loss run in native kernels (`rnn_jax.kernels.xent`) instead of
XLA's eight passes over the (tokens x vocab) logits; everywhere else, XLA's form. Both give the same values and
gradients (tested).

Examples:
    >>> import jax.numpy as jnp
    >>> from rnn_jax.output import sequence_loss
    >>> float(sequence_loss(jnp.zeros((1, 2, 4)), jnp.zeros((1, 2), jnp.int32)))  # log 4
    1.386294...
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import _checks, kernels, parallel, precision


class OutputParams(NamedTuple):
    """Output layer softmax(V h + c): V (vocab, H) (None when tied to the embedding), c (vocab,) or None."""

    V: Optional[jax.Array]
    c: Optional[jax.Array]


def output_logits(params: Any, hs: jax.Array) -> jax.Array:
    """V h + c for hs of shape (..., H) -> (..., vocab); uses the embedding table when weights are tied."""
    V = params.embedding if params.output.V is None else params.output.V
    logits = precision.matmul(hs, V.T)  # bf16 weights: bf16 operands, float32 logits
    return logits if params.output.c is None else logits + params.output.c


def output_nll(params: Any, hs: jax.Array, targets: jax.Array, *, native: bool | None = None) -> jax.Array:
    """Per-token cross-entropy of the output layer: -log softmax(V h + c)[target], without returning logits.

    Equals `optax.softmax_cross_entropy_with_integer_labels(output_logits(params, hs), targets)` (tested to
    float32 rounding, values and gradients). For float32 on the CPU it computes the product h V^T in XLA and the
    bias, log-normaliser and loss in one native pass per row (`rnn_jax.kernels.softmax_xent_forward`). Under
    differentiation on one device the forward is one native call for the logits, the loss and its gradient
    (`rnn_jax.kernels.output_layer_forward`, the gradient in row panels) and the backward pass one more for dh, dV
    and dc (`rnn_jax.kernels.output_layer_backward`); under a mesh of several devices the row-wise kernel writes
    the gradient (`rnn_jax.kernels.softmax_xent_value_and_grad`) and XLA multiplies, each device on its own rows.
    XLA's own form makes about eight passes over the (tokens x vocab) logits. With bfloat16 weights (mixed
    precision, `rnn_jax.precision`) the products take bf16 operands and sum in float32 around the same row-wise
    loss kernel.

    Args:
        params: `LMParams` (its embedding is V when the weights are tied).
        hs: (..., H) output-layer inputs, e.g. (B, T, H) from `LanguageModel.hidden_states`.
        targets: (...) int next-token ids in [0, vocab); an id outside gives a NaN loss.
        native: False always takes XLA's form; None or True lets the native policy decide.

    Returns:
        (...) float32 negative log-likelihoods in nats.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from rnn_jax.lm import LMConfig, LanguageModel
        >>> from rnn_jax.output import output_nll
        >>> model = LanguageModel(LMConfig(vocab_size=100, embed_size=10, hidden_size=20))
        >>> params = model.init(jax.random.key(0))
        >>> hs, _ = model.hidden_states(params, model.initial_state(4), jnp.zeros((4, 7), jnp.int32))
        >>> output_nll(params, hs, jnp.ones((4, 7), jnp.int32)).shape
        (4, 7)
    """
    V = params.embedding if params.output.V is None else params.output.V
    c = params.output.c
    _checks.check_integer("output_nll targets", targets, "Pass next-token ids, e.g. tokens[:, 1:].")
    if hs.shape[-1] != V.shape[-1] or targets.shape != hs.shape[:-1]:
        raise _checks.ShapeError(f"output_nll: hs (..., H) must match V {tuple(V.shape)} in H and targets in (...); "
                                 f"got hs {tuple(hs.shape)}, targets {tuple(targets.shape)}")
    dtypes = {hs.dtype} | {precision.state_dtype(a.dtype) for a in (V, c) if a is not None}
    if not (dtypes == {jnp.dtype(jnp.float32)} and kernels.available(jnp.float32, native)):
        return optax.softmax_cross_entropy_with_integer_labels(output_logits(params, hs).astype(jnp.float32), targets)
    # Three dimensions, the leading ones never merged: rows sharded over devices along either of them (batch-major
    # or time-major features) stay where they are, each device taking its own rows (see rnn_jax.parallel).
    rows = hs.reshape((-1,) + hs.shape[-2:]) if hs.ndim >= 2 else hs[None, None]
    bias = jnp.zeros(V.shape[:1], jnp.float32) if c is None else c.astype(jnp.float32)
    nll = _native_nll(rows, V, bias, targets.reshape(rows.shape[:-1]).astype(jnp.int32))
    return nll.reshape(targets.shape)


@jax.custom_vjp
def _native_nll(rows, V, bias, targets):
    return kernels.softmax_xent_forward(precision.matmul(rows, V.T), bias, targets)[1]


def _native_nll_forward(rows, V, bias, targets):
    # Several devices, or 16-bit V (the single-call kernels multiply in float32): XLA's products around the
    # row-wise loss kernel.
    if parallel.several_devices() or precision.is_reduced(V.dtype):
        nll, d_unit = kernels.softmax_xent_value_and_grad(precision.matmul(rows, V.T), bias, targets)
        return nll, (rows, V, targets, d_unit)
    # One device: the gradient in row panels, for the native backward pass over all (A x R) rows at once.
    flat = rows.reshape(-1, rows.shape[-1])
    nll, d_panels = kernels.output_layer_forward(flat, V, bias, targets.reshape(-1))
    return nll.reshape(targets.shape), (rows, V, targets, d_panels)


def _native_nll_backward(residuals, d_nll):
    # d_logits = d_nll[..., None] * d_unit, with the row scale moved onto the (A, R, H) operands and results: the
    # logits' gradient is read only by the products, never rewritten (the whole train step measured 1-3% faster at
    # zaremba_small than a backward kernel pass over it).
    rows, V, targets, d_unit = residuals
    zero_targets = np.zeros(targets.shape, jax.dtypes.float0)
    if d_unit.ndim == 2:  # row panels (one device): dh, dV and dc in one native call, 1.2-1.3x XLA's three products
        d_rows, dV, dc = kernels.output_layer_backward(d_unit, rows.reshape(-1, rows.shape[-1]), d_nll.reshape(-1), V)
        return d_rows.reshape(rows.shape), dV, dc, zero_targets
    scale = d_nll[..., None]
    d_V = parallel.rows_product(*precision.like(V, d_unit, scale * rows)).astype(V.dtype)
    return scale * precision.matmul(d_unit, V), d_V, parallel.rows_product(d_nll, d_unit), zero_targets


_native_nll.defvjp(_native_nll_forward, _native_nll_backward)


REDUCTIONS = ("token_mean", "sum_time_mean_batch", "sum")


def sequence_loss(logits: jax.Array, targets: jax.Array, reduction: str = "token_mean") -> jax.Array:
    """Cross-entropy of next-token predictions.

    Args:
        logits: (B, T, vocab).
        targets: (B, T) int.
        reduction: "token_mean" (mean over B and T), "sum_time_mean_batch" (the papers' loss: sum over time of
            the batch mean = T x token_mean; needed to reproduce their learning rates), or "sum".

    Returns:
        Scalar loss (float32).
    """
    return reduce_nll(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets), reduction)


def reduce_nll(nll: jax.Array, reduction: str = "token_mean") -> jax.Array:
    """Reduces per-token NLL (B, T) to the scalar loss of `sequence_loss` (same `reduction` names)."""
    if reduction == "token_mean":
        return nll.mean()
    if reduction == "sum_time_mean_batch":
        return nll.mean(axis=0).sum()
    if reduction == "sum":
        return nll.sum()
    raise ValueError(f"unknown loss reduction {reduction!r}; expected one of {REDUCTIONS}")
