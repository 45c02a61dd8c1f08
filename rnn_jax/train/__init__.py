"""Training language models: configs, optimisers, the jitted steps, the loop, sampling and progress.

| module | what |
|---|---|
| `config` | `TrainConfig`, `OptimConfig` (saved as config.json), their dict round trip |
| `optim` | `OPTIMIZERS` and `SCHEDULES` tables, `make_optimizer`, `learning_rate_schedule` |
| `step` | `TrainState`, `make_train_step` (with the non-finite guard), `make_eval_step`, `evaluate` |
| `sparse_embedding` | the SGD update of only the batch's embedding rows |
| `loop` | `train(config, run_dir, *, optimizer=None)`, `LoopPosition`, resume, signals |
| `run_dir` | the run directory's config, vocabulary and files |
| `sampling` | `generate`, `generate_many`, `filter_logits`, `load_run_for_sampling` |
| `progress` | the progress bar or line |

Examples:
    >>> from rnn_jax.configs import PRESETS
    >>> from rnn_jax.train import train
    >>> result = train(PRESETS["notes"].config, "runs/notes")          # doctest: +SKIP
"""

from rnn_jax.train.config import OptimConfig, TrainConfig, config_from_dict, config_to_dict
from rnn_jax.train.loop import LoopPosition, NonFiniteError, TrainingInterrupted, TrainResult, train
from rnn_jax.train.optim import OPTIMIZERS, SCHEDULES, learning_rate_schedule, make_optimizer
from rnn_jax.train.progress import LineProgress, progress_bar
from rnn_jax.train.sampling import filter_logits, generate, generate_many, load_run_for_sampling
from rnn_jax.train.sparse_embedding import sparse_embedding_pays, sum_rows_by_id
from rnn_jax.train.step import TrainState, evaluate, make_eval_step, make_train_step

__all__ = ["LineProgress", "LoopPosition", "NonFiniteError", "OPTIMIZERS", "OptimConfig", "SCHEDULES",
           "TrainConfig", "TrainResult", "TrainState", "TrainingInterrupted", "config_from_dict", "config_to_dict",
           "evaluate", "filter_logits", "generate", "generate_many", "learning_rate_schedule", "load_run_for_sampling", "make_eval_step",
           "make_optimizer", "make_train_step", "progress_bar", "sparse_embedding_pays", "sum_rows_by_id", "train"]
