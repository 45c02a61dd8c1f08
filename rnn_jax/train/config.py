"""The trainer's typed configs (saved as `config.json` in each run directory) and their dict round trip.

Examples:
    >>> from rnn_jax.train.config import OptimConfig, TrainConfig, config_from_dict, config_to_dict
    >>> config = TrainConfig(optim=OptimConfig(name="adam", learning_rate=2e-3))
    >>> config_from_dict(TrainConfig, config_to_dict(config)) == config
    True
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from rnn_jax.errors import ConfigError
from rnn_jax import data as data_lib
from rnn_jax.kernels import policy
from rnn_jax.lm import REDUCTIONS, LMConfig
from rnn_jax.train import optim


FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: a key of `rnn_jax.train.optim.OPTIMIZERS`: "sgd", "adam", "adamw" or "nt_asgd" (SGD that starts
            averaging the parameters when validation stalls, Merity et al. 2017; the average is what is evaluated).
        learning_rate: peak learning rate.
        clip_norm: global gradient-norm clip (None: no clipping).
        schedule: a key of `rnn_jax.train.optim.SCHEDULES`: "constant"; "zaremba" (full rate for `decay_after` epochs, then times `decay` each epoch);
            or "cosine" (cosine decay to `final_fraction` x the rate over the run, after `warmup_steps`).
        decay_after: epochs at the full rate ("zaremba").
        decay: per-epoch factor after that ("zaremba").
        warmup_steps: linear warm-up from 0 (adam/adamw, any schedule).
        final_fraction: end rate of the cosine schedule, as a fraction of the peak.
        weight_decay: AdamW's decoupled weight decay; for sgd and nt_asgd the L2 term wd · θ added to the gradient.
        nonmono: NT-ASGD's patience: averaging starts when a validation loss is worse than the best before the
            last `nonmono` validations.
        b1, b2: Adam's moment decays.
    """

    name: str = "sgd"
    learning_rate: float = 1.0
    clip_norm: Optional[float] = 5.0
    schedule: str = "constant"
    decay_after: int = 0
    decay: float = 1.0
    warmup_steps: int = 0
    final_fraction: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    nonmono: int = 5

    def __post_init__(self):
        if self.name not in optim.OPTIMIZERS:
            raise ConfigError(f"OptimConfig.name must be one of {sorted(optim.OPTIMIZERS)}; got {self.name!r}")
        if self.schedule not in optim.SCHEDULES:
            raise ConfigError(f"OptimConfig.schedule must be one of {sorted(optim.SCHEDULES)}; got {self.schedule!r}")
        if not 0 < self.learning_rate <= FLOAT32_MAX:
            raise ConfigError(f"OptimConfig.learning_rate must be > 0 and within float32's range (<= 3.4e38); got "
                              f"{self.learning_rate}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"OptimConfig.clip_norm must be > 0 or None; got {self.clip_norm}")
        if self.warmup_steps < 0 or self.decay_after < 0 or self.nonmono < 0 or not self.decay > 0:
            raise ConfigError("OptimConfig: warmup_steps, decay_after and nonmono must be >= 0 and decay > 0")

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        """The accepted values of the fields that take names (for the command line's help)."""
        return {"name": sorted(optim.OPTIMIZERS), "schedule": sorted(optim.SCHEDULES)}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as `config.json` in the run directory.

    Attributes:
        model: the language model's architecture.
        data: the corpus and its tokenisation.
        optim: optimiser and schedule.
        batch_size: B, rows of the token stream.
        num_steps: T, the BPTT window.
        sample_window_lengths: draw each training window's length around T as AWD-LSTM does
            (`rnn_jax.data.sampled_length`) and scale its step's learning rate by length / T; each new length
            compiles the train step once.
        epochs: passes over the training split.
        loss_reduction: "token_mean" or "sum_time_mean_batch" (the papers'), see `rnn_jax.lm.sequence_loss`.
        eval_batch_size: batch size for valid/test (default: batch_size).
        seed: PRNG seed (initialisation and dropout).
        max_windows_per_epoch: cap on training windows per epoch (None: the whole split); for smoke runs.
        log_every: windows between train-loss log lines in metrics.jsonl.
        checkpoint_every: windows between mid-epoch checkpoints (0: only at the end of each epoch).
        keep_checkpoints: how many recent checkpoints to keep (the best on validation is kept as well).
        max_bad_steps: consecutive non-finite steps (skipped, never applied) before the run stops.
        stop_on_divergence: stop (with an error, saving nothing more) when an epoch's validation loss is not finite,
            more than one nat above a uniform guess (log V), or more than twice the best so far.
        sample_length: tokens generated at the end of the run (0: none).
        sample_prompt: the prompt of that sample.
        sample_temperature: its temperature.
        num_devices: devices to shard each batch over (data parallel; None: every visible device). batch_size
            and eval_batch_size must divide by it.
        max_tokens: stop after this many training tokens (None: no limit); the schedule ends there.
        max_seconds: stop after this many seconds since the process started, compilation included (None: no
            limit); the schedule is fitted to the time left once the step time is measured (`rnn_jax.train.budget`).
            A run ends at the first of epochs, max_tokens and max_seconds: give a large --epochs to train by budget.
        tensorboard: also write the logged figures as TensorBoard scalars to <run dir>/tensorboard (needs
            tensorboardX: the `tensorboard` extra); metrics.jsonl stays the record.
        native: the native-kernel mode of the run, "auto", "off" or "require" (`rnn_jax.kernels.policy`); None
            follows RNN_JAX_NATIVE (default "auto").
    """

    model: LMConfig = LMConfig()
    data: data_lib.DataConfig = data_lib.DataConfig()
    optim: OptimConfig = OptimConfig()
    batch_size: int = 32
    num_steps: int = 20
    sample_window_lengths: bool = False
    epochs: int = 1
    loss_reduction: str = "token_mean"
    eval_batch_size: Optional[int] = None
    seed: int = 0
    max_windows_per_epoch: Optional[int] = None
    log_every: int = 50
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    max_bad_steps: int = 10
    stop_on_divergence: bool = True
    sample_length: int = 300
    sample_prompt: str = "The "
    sample_temperature: float = 0.8
    num_devices: Optional[int] = None
    max_tokens: Optional[int] = None
    max_seconds: Optional[float] = None
    tensorboard: bool = False
    native: Optional[str] = None

    def __post_init__(self):
        for name in ("batch_size", "num_steps", "epochs", "log_every", "keep_checkpoints", "max_bad_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be a positive int; got {value!r}")
        for name in ("eval_batch_size", "max_windows_per_epoch", "num_devices"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"TrainConfig.{name} must be a positive int or None; got {value!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise ConfigError(f"TrainConfig.max_tokens must be a positive int or None; got {self.max_tokens!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"TrainConfig.max_seconds must be > 0 or None; got {self.max_seconds!r}")
        if self.checkpoint_every < 0 or self.sample_length < 0:
            raise ConfigError("TrainConfig.checkpoint_every and sample_length must be >= 0")
        if self.loss_reduction not in REDUCTIONS[:2]:
            raise ConfigError(f"TrainConfig.loss_reduction must be one of {REDUCTIONS[:2]}; got {self.loss_reduction!r}")
        if self.native is not None:
            policy.check_mode(self.native, "TrainConfig.native")
        if not self.sample_temperature >= 0:
            raise ConfigError(f"TrainConfig.sample_temperature must be >= 0; got {self.sample_temperature}")

    @classmethod
    def field_choices(cls) -> dict[str, list[str]]:
        """The accepted values of the fields that take names (for the command line's help)."""
        return {"loss_reduction": list(REDUCTIONS[:2]), "native": list(policy.MODES)}


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict) -> Any:
    """Rebuilds a (nested) config dataclass from `config_to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = config_from_dict(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
