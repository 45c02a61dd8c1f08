"""The notes' language model: embedding -> L recurrent layers -> output layer softmax(V h_t + c).

    e_t = Embedding[token_t]                 (E), outside the recurrent network
    h^1_t, ..., h^L_t = the stacked cells     (H)
    ŷ_t = softmax(V h^L_t + c)               V of shape (vocab, H), c optional

Dropout (Zaremba et al. 2014) acts on the non-recurrent connections: the embedding output, between layers and
before the output layer, each site with its own rate if wanted (`input_dropout`, `hidden_dropout`, `dropout`).
Keys are explicit; with `train=False` (or rate 0) it is off. With `same_mask_over_time=True` one mask per
sequence is reused at every step. The regularisers of h_{t-1} -> h_t (weight drop, locked recurrent dropout,
zoneout) are in `rnn_jax.regularisers` and `rnn_jax.state_dropout`; layers may differ in size at the top
(`last_hidden_size`).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnn_jax.lm import LMConfig, LanguageModel
    >>> model = LanguageModel(LMConfig(vocab_size=100, embed_size=10, hidden_size=20))
    >>> params = model.init(jax.random.key(0))
    >>> logits, carry = model.apply(params, model.initial_state(4), jnp.zeros((4, 7), jnp.int32))
    >>> logits.shape
    (4, 7, 100)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.errors import ConfigError
from rnn_jax import _checks, cells, precision, regularisers, state_dropout
from rnn_jax.cells import get_cell, output_size
from rnn_jax.output import (REDUCTIONS, OutputParams, output_logits, output_nll, reduce_nll,  # noqa: F401
                            sequence_loss)
from rnn_jax.stack import Stacked, run_layers


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Architecture of the language model (sizes, cell, initialisation, dropout).

    Attributes:
        vocab_size: V.
        embed_size: E.
        hidden_size: H.
        num_layers: L.
        last_hidden_size: H of the top layer when it differs from the others (None: hidden_size); AWD-LSTM's
            1150-1150-400 stack ends at the embedding size so that tied weights fit.
        cell: a registered cell name (`rnn_jax.cells.names()`: "lstm", "gru", "elman", "indrnn", ...; "lstmp"
            with proj_size) or an import path "package.module:attribute" to a cell in the user's own code.
        proj_size: P for cell="lstmp" (the output layer then reads P features).
        use_bias: biases b_* in the recurrent cells.
        output_bias: the bias c of the output layer.
        tie_weights: share the embedding table with the output weights V (needs E == H).
        initializer: "uniform" (every parameter from uniform(±init_scale), Zaremba), "pytorch" or "orthogonal".
        init_scale: s for initializer="uniform".
        embed_init_scale: when set, the embedding (and an untied output V) start uniform(±s) and the output bias c at
            zero, whatever the cells' initializer (AWD-LSTM's init_weights, s = 0.1); None follows `initializer`.
        forget_bias: added to the forget-gate bias at init (cells whose init takes `forget_bias`).
        gru_reset_after: the cuDNN/PyTorch reset-after form (cells whose init takes `reset_after`, e.g. the GRU).
        dropout: rate on the non-recurrent connections (0 disables): the embedding output, between layers and
            before the output layer, unless `input_dropout` or `hidden_dropout` set their own.
        input_dropout: rate on the embedding output (None: dropout); AWD-LSTM's dropouti.
        hidden_dropout: rate between recurrent layers (None: dropout); AWD-LSTM's dropouth.
        same_mask_over_time: reuse one dropout mask at every time step (locked dropout).
        embed_dropout: rate of whole words dropped from the embedding (every occurrence of an id together).
        weight_drop: DropConnect rate on the cell's recurrent weight matrices, one mask per batch (cells that
            name `recurrent_weights`: LSTM, GRU and their variants).
        recurrent_dropout: rate of dropout on h_(t-1) where it enters the recurrent product, one mask per sequence
            (Gal & Ghahramani 2016; `rnn_jax.state_dropout.locked_dropout`; cells with a fused spec).
        zoneout: probability that a unit of the carry keeps its previous value at a training step (Krueger et al.
            2016; `rnn_jax.state_dropout.zoneout`); evaluation uses the expectation.
        ar_alpha: activation regularisation α · mean(h²) of the last layer's dropped outputs (0: off).
        tar_beta: temporal activation regularisation β · mean((h_t − h_{t−1})²) of its outputs (0: off).
        runner: "fused" (the fast path, `rnn_jax.fused_scan`), "hoisted" (input products before the loop), "scan",
            "unrolled" or "associative" (a parallel scan over time, for state-linear cells such as minGRU).
        unroll: `lax.scan` unroll factor.
        compute_dtype: the matrix products' operand dtype: "float32", or "bfloat16" (mixed precision: parameters,
            optimiser state and checkpoints stay float32; state, gates, softmax and loss float32; `rnn_jax.precision`).
    """

    vocab_size: int = 100
    embed_size: int = 10
    hidden_size: int = 20
    num_layers: int = 1
    last_hidden_size: Optional[int] = None
    cell: str = "lstm"
    proj_size: Optional[int] = None
    use_bias: bool = False
    output_bias: bool = False
    tie_weights: bool = False
    initializer: str = "uniform"
    init_scale: Optional[float] = 0.1
    embed_init_scale: Optional[float] = None
    forget_bias: float = 0.0
    gru_reset_after: bool = False
    dropout: float = 0.0
    input_dropout: Optional[float] = None
    hidden_dropout: Optional[float] = None
    same_mask_over_time: bool = False
    embed_dropout: float = 0.0
    weight_drop: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    ar_alpha: float = 0.0
    tar_beta: float = 0.0
    runner: str = "fused"
    unroll: int = 1
    compute_dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "embed_size", "hidden_size", "num_layers", "unroll"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"LMConfig.{name} must be a positive int; got {value!r}")
        if self.last_hidden_size is not None and (not isinstance(self.last_hidden_size, int)
                                                  or isinstance(self.last_hidden_size, bool) or self.last_hidden_size < 1):
            raise ConfigError(f"LMConfig.last_hidden_size must be a positive int or None; got {self.last_hidden_size!r}")
        for name in ("dropout", "embed_dropout", "weight_drop", "recurrent_dropout", "zoneout", "input_dropout",
                     "hidden_dropout"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"LMConfig.{name} must be in [0, 1); got {getattr(self, name)}")
        if not (self.ar_alpha >= 0 and self.tar_beta >= 0):
            raise ConfigError(f"LMConfig.ar_alpha and tar_beta must be >= 0; got {self.ar_alpha}, {self.tar_beta}")
        cell = get_cell(self.cell, proj_size=self.proj_size)
        regularisers.check_weight_drop(cell, self.weight_drop)
        if self.recurrent_dropout > 0:
            example = jax.eval_shape(lambda: cell.init(jax.random.key(0), 2, 2, **_cell_options(self, cell)))
            state_dropout.check_locked_dropout(cell, self.recurrent_dropout, example)
        top = output_size(cell, self.layer_sizes[-1])
        if self.tie_weights and self.embed_size != top:
            raise ConfigError(f"tie_weights needs embed_size == the top layer's output size; got E={self.embed_size}, "
                              f"output size {top}. Set last_hidden_size={self.embed_size} (AWD-LSTM's way) or "
                              "embed_size to match.")
        if self.embed_init_scale is not None and not self.embed_init_scale > 0:
            raise ConfigError(f"LMConfig.embed_init_scale must be > 0 or None; got {self.embed_init_scale}")
        if self.initializer == "uniform" and self.init_scale is None:
            raise ConfigError("initializer='uniform' needs init_scale")
        precision.get(self.compute_dtype)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Each layer's H: hidden_size, and last_hidden_size for the top layer when given."""
        top = self.hidden_size if self.last_hidden_size is None else self.last_hidden_size
        return (self.hidden_size,) * (self.num_layers - 1) + (top,)

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        """The accepted values of the fields that take names (for the command line's help)."""
        from rnn_jax.initializers import SCHEMES
        from rnn_jax.runners import RUNNERS

        return {"cell": cells.names(), "runner": sorted(RUNNERS), "initializer": list(SCHEMES),
                "compute_dtype": list(precision.COMPUTE_DTYPES)}


class LMParams(NamedTuple):
    """Language-model parameters: embedding (vocab, E), per-layer cell parameters, output layer."""

    embedding: jax.Array
    rnn: tuple
    output: OutputParams


_CELL_OPTION_DEFAULTS = {"forget_bias": 0.0, "reset_after": False}


def _cell_options(config: LMConfig, cell: Any) -> dict[str, Any]:
    """The config's options for the cell's `init`; the registry keeps those the cell takes (`cells.init_options`)."""
    offered: dict[str, Any] = {
        "use_bias": config.use_bias,
        "initializer": config.initializer,
        "init_scale": config.init_scale if config.initializer == "uniform" else None,
        "forget_bias": config.forget_bias,
        "reset_after": config.gru_reset_after,
    }
    return cells.init_options(cell, offered, defaults=_CELL_OPTION_DEFAULTS)


def _outer_inits(config: LMConfig):
    """(embedding init, output weight init, output bias init) matching the cell scheme or `embed_init_scale`."""
    uniform = lambda scale: (lambda k, shape: jax.random.uniform(k, shape, jnp.float32, -scale, scale))
    if config.embed_init_scale is not None:
        u = uniform(config.embed_init_scale)
        return u, u, lambda k, shape: jnp.zeros(shape, jnp.float32)
    if config.initializer == "uniform":
        u = uniform(config.init_scale)
        return u, u, u
    # PyTorch's defaults: nn.Embedding N(0, 1); nn.Linear uniform(±1/sqrt(fan_in)) for weight and bias.
    u = uniform(1.0 / math.sqrt(config.layer_sizes[-1]))
    return (lambda k, shape: jax.random.normal(k, shape, jnp.float32)), u, u


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """The language model for one config; `cell` overrides `config.cell` with any cell object."""

    config: LMConfig
    cell: Any = None

    @property
    def layer_cell(self):
        return self.cell if self.cell is not None else get_cell(self.config.cell, proj_size=self.config.proj_size)

    @property
    def stack(self) -> Stacked:
        return Stacked(self.layer_cell, self.config.num_layers)

    @property
    def policy(self) -> precision.Policy:
        """The precision policy of `config.compute_dtype` (float32 parameters)."""
        return precision.get(self.config.compute_dtype)

    def output_params(self, params: LMParams) -> LMParams:
        """`params` with the output layer's weights (the embedding too, when tied) as the output product takes
        them under the policy; read by the output layer only."""
        cast = self.policy.cast_to_compute
        embedding = cast(params.embedding) if self.config.tie_weights else params.embedding
        return params._replace(embedding=embedding, output=cast(params.output))

    def output_nll(self, params: LMParams, hs: jax.Array, targets: jax.Array, *, native: bool | None = None):
        """Per-token NLL (float32) of the output layer on features hs (..., H): `rnn_jax.output.output_nll` with
        the policy's operands."""
        return output_nll(self.output_params(params), hs, targets, native=native)

    def init(self, key: jax.Array, dtype=jnp.float32) -> LMParams:
        """Creates parameters: embedding (V, E), L cell layers, output V (vocab, H) and c (vocab,)."""
        cfg = self.config
        k_emb, k_rnn, k_out, k_bias = jax.random.split(key, 4)
        emb_init, out_init, bias_init = _outer_inits(cfg)
        options = _cell_options(cfg, self.layer_cell) if self.cell is None else {"use_bias": cfg.use_bias}
        rnn = self.stack.init(k_rnn, cfg.embed_size, cfg.layer_sizes, dtype=dtype, **options)
        features = output_size(self.layer_cell, cfg.layer_sizes[-1])
        V = None if cfg.tie_weights else out_init(k_out, (cfg.vocab_size, features)).astype(dtype)
        c = bias_init(k_bias, (cfg.vocab_size,)).astype(dtype) if cfg.output_bias else None
        return LMParams(embedding=emb_init(k_emb, (cfg.vocab_size, cfg.embed_size)).astype(dtype), rnn=rnn,
                        output=OutputParams(V=V, c=c))

    def initial_state(self, batch_size: int, dtype=jnp.float32) -> tuple:
        """Zero carries, one per layer, each with batch shape (B,)."""
        return self.stack.initial_state(self.config.layer_sizes, (batch_size,), dtype)

    def apply(self, params: LMParams, carry: tuple, tokens: jax.Array, *, key: jax.Array | None = None,
              train: bool = False) -> tuple[jax.Array, tuple]:
        """Logits for every position.

        Args:
            params: `LMParams`.
            carry: per-layer carries with batch shape (B,) (from `initial_state` or the previous window).
            tokens: (B, T) int token ids in [0, vocab).
            key: PRNG key for dropout; needed when train=True and dropout > 0.
            train: enables dropout.

        Returns:
            (logits (B, T, vocab), float32 for float32 or mixed precision, final per-layer carries).
        """
        hs, carry = self.hidden_states(params, carry, tokens, key=key, train=train)
        return output_logits(self.output_params(params), hs), carry

    def hidden_states(self, params: LMParams, carry: tuple, tokens: jax.Array, *, key: jax.Array | None = None,
                      train: bool = False, time_major: bool = False) -> tuple[jax.Array, tuple]:
        """The output layer's inputs (after dropout): `apply` without its last product, for `output_nll`.

        With time_major, the features come as (T, B, H): the layers then run without transposing their inputs
        and outputs (1-2% of a `long` train step), the same values otherwise.

        Returns:
            (features (B, T, H) ((T, B, H) with time_major; P in place of H for lstmp), final per-layer carries).
        """
        return self._features(params, carry, self.embed(params, tokens, time_major=time_major), key, train,
                              time_major)

    def embed(self, params: LMParams, tokens: jax.Array, *, time_major: bool = False) -> jax.Array:
        """The embedding rows of token ids (B, T): (B, T, E), or (T, B, E) with time_major.

        An id outside [0, vocab) is an error when the ids are concrete and a row of NaN under jit (the trainer then
        skips the step), never a silently clamped row.
        """
        check_tokens(tokens, self.config.vocab_size)
        _check_lm_params(params)
        return jnp.take(params.embedding, tokens.T if time_major else tokens, axis=0, mode="fill", fill_value=jnp.nan)

    def hidden_states_from_embeddings(self, params: LMParams, carry: tuple, xs: jax.Array, *,
                                      key: jax.Array | None = None, train: bool = False,
                                      time_major: bool = False) -> tuple[jax.Array, tuple]:
        """`hidden_states` from embedded inputs xs (B, T, E) ((T, B, E) with time_major), as `embed` gives them.

        `params.embedding` is not read (it may be None): differentiating with respect to xs gives one gradient
        row per token instead of a (vocab, E) table (`rnn_jax.training`'s sparse embedding update).
        """
        _check_lm_params(params)
        _checks.check_floating("xs", xs, "Embedded inputs are float rows; token ids go to hidden_states.")
        _checks.check_shape("xs", xs, (None, None, self.config.embed_size), "(T, B, E)" if time_major else "(B, T, E)",
                            f"The model's embedding size is E={self.config.embed_size}; embed the ids with embed().")
        return self._features(params, carry, xs, key, train, time_major)

    def apply_embeddings(self, params: LMParams, carry: tuple, xs: jax.Array, *, key: jax.Array | None = None,
                         train: bool = False) -> tuple[jax.Array, tuple]:
        """`apply` from embedded inputs xs (B, T, E) instead of token ids (for probes such as causality)."""
        hs, carry = self.hidden_states_from_embeddings(params, carry, xs, key=key, train=train)
        return output_logits(self.output_params(params), hs), carry

    def training_features(self, params: LMParams, carry: tuple, xs: jax.Array, tokens: jax.Array, key: jax.Array,
                          *, time_major: bool = False) -> tuple[jax.Array, tuple, jax.Array]:
        """`hidden_states_from_embeddings` in training, with every regulariser of the config applied.

        Embedding dropout scales the rows xs by `regularisers.embedding_dropout_scale` of their ids `tokens`
        ((B, T), or (T, B) with time_major), weight drop masks the recurrent weights, and the AR/TAR penalty
        comes back beside the features. Each draws from its own key folded out of `key`, so the dropout masks are
        those of `hidden_states(..., train=True)` whatever else is on.

        Returns:
            (features as `hidden_states` gives them, final per-layer carries, the AR + TAR penalty (a scalar)).
        """
        cfg = self.config
        if cfg.embed_dropout > 0.0:
            scale = regularisers.embedding_dropout_scale(jax.random.fold_in(key, 1), tokens, cfg.vocab_size,
                                                         cfg.embed_dropout)
            xs = xs * scale[..., None].astype(xs.dtype)
        hs, carry, raw = self._features(params, carry, xs, key, True, time_major, keep_raw=True)
        penalty = regularisers.activation_penalty(hs, raw, cfg.ar_alpha, cfg.tar_beta, time_axis=0 if time_major else 1)
        return hs, carry, penalty

    def _features(self, params: LMParams, carry: tuple, xs: jax.Array, key: jax.Array | None, train: bool,
                  time_major: bool = False, keep_raw: bool = False):
        cfg = self.config
        rates = (cfg.dropout if cfg.input_dropout is None else cfg.input_dropout,
                 cfg.dropout if cfg.hidden_dropout is None else cfg.hidden_dropout, cfg.dropout)
        dropout_on = train and max(rates) > 0.0
        if train and key is None and max(*rates, cfg.weight_drop, cfg.recurrent_dropout, cfg.zoneout) > 0.0:
            raise ValueError(f"train=True with dropout rates {rates} (input, hidden, output), weight_drop="
                             f"{cfg.weight_drop}, recurrent_dropout={cfg.recurrent_dropout}, zoneout={cfg.zoneout} "
                             "needs a PRNG key: apply(..., key=key)")
        keys = iter(jax.random.split(key, cfg.num_layers + 1)) if dropout_on else None
        drops = [(lambda x, rate=rate: dropout(next(keys), x, rate, cfg.same_mask_over_time, time_major))
                 if dropout_on else (lambda x: x) for rate in rates]
        drop_input, drop_hidden, drop = drops
        layers = self.policy.cast_to_compute(params.rnn)
        cell, layers, carry_in = self._regularised_layers(layers, carry, key, train)
        finals, hs = run_layers(cell, layers, carry_in, drop_input(xs), runner=cfg.runner, unroll=cfg.unroll,
                                time_major=time_major, between_layers=lambda _, h: drop_hidden(h))
        carry = tuple(final.carry for final in finals) if cfg.zoneout > 0.0 else finals
        return (drop(hs), carry, hs) if keep_raw else (drop(hs), carry)

    def _regularised_layers(self, layers: tuple, carry: tuple, key: jax.Array | None, train: bool):
        """(cell, per-layer params, per-layer carries) with the recurrent regularisers of the config applied."""
        cfg, cell = self.config, self.layer_cell
        if train and cfg.weight_drop > 0.0:
            layers = regularisers.weight_drop(jax.random.fold_in(key, 2), layers, cell, cfg.weight_drop)
        if train and cfg.recurrent_dropout > 0.0:
            masks = [state_dropout.locked_mask(k, layer_carry, cfg.recurrent_dropout)
                     for k, layer_carry in zip(jax.random.split(jax.random.fold_in(key, 3), len(layers)), carry)]
            cell = state_dropout.locked_dropout(cell)
            layers = tuple(state_dropout.LockedParams(layer, mask) for layer, mask in zip(layers, masks))
        if cfg.zoneout > 0.0:
            layer_keys = (jax.random.split(jax.random.fold_in(key, 4), len(layers)) if train
                          else [None] * len(layers))
            cell = state_dropout.zoneout(cell, cfg.zoneout)
            carry = tuple(state_dropout.with_key(layer_carry, k) for layer_carry, k in zip(carry, layer_keys))
        return cell, layers, carry


def _check_lm_params(params: Any) -> None:
    if not isinstance(params, LMParams):
        raise TypeError(f"LanguageModel expects LMParams; got {type(params).__name__}")


def dropout(key: jax.Array, x: jax.Array, rate: float, same_mask_over_time: bool = False,
            time_major: bool = False) -> jax.Array:
    """Inverted dropout of x (B, T, D): zeroes a fraction `rate` and scales the rest by 1/(1 - rate).

    With same_mask_over_time, one (B, 1, D) mask is used at every time step. With time_major, x is (T, B, D)
    and gets the transpose of the mask the same key gives in batch-major order.
    """
    if rate == 0.0:
        return x
    batch, steps = (x.shape[1], x.shape[0]) if time_major else x.shape[:2]
    shape = (batch, 1 if same_mask_over_time else steps, x.shape[2])
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    keep = keep.transpose(1, 0, 2) if time_major else keep
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def check_tokens(tokens: Any, vocab_size: int) -> None:
    """Raises a clear error for non-integer, wrongly ranked or (when concrete) out-of-range token ids."""
    _checks.check_integer("tokens", tokens, "Token ids must be ints of shape (B, T); float inputs go to a cell directly.")
    if getattr(tokens, "ndim", None) != 2:
        raise _checks.ShapeError(f"tokens must have shape (B, T); got {tuple(np.shape(tokens))}. "
                                 "Add a batch axis with tokens[None] for a single sequence.")
    _checks.check_in_range("token ids", tokens, 0, vocab_size - 1,
                           f"The vocabulary has {vocab_size} entries; encode the text with the run's vocabulary.")
