"""Runs a short training in a fresh process with N forced CPU devices; used by test_parallel.py.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/dp_worker.py CORPUS RUN_DIR NUM_DEVICES [resume]
Prints one JSON line: the per-epoch valid NLLs and the devices used.
`python tests/dp_worker.py sharding CELL` instead prints what one sharded train step compiles to (see
`sharded_step`).
"""

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.training import OptimConfig, TrainConfig, train
from rnn_jax.data import DataConfig
from rnn_jax.lm import LMConfig


def main(corpus, run_dir, num_devices, resume=False, epochs=2):
    config = TrainConfig(
        model=LMConfig(vocab_size=10, embed_size=8, hidden_size=16, num_layers=2, dropout=0.0),
        data=DataConfig(source=corpus, level="char", max_vocab=None),
        optim=OptimConfig(name="adam", learning_rate=1e-2, clip_norm=1.0),
        batch_size=8, num_steps=10, epochs=epochs, max_windows_per_epoch=6, checkpoint_every=3,
        keep_checkpoints=10, sample_length=0, num_devices=num_devices)
    result = train(config, run_dir, resume=resume, progress=False, log=lambda _: None)
    print(json.dumps({"valid": [e["valid_nll"] for e in result.history], "test": result.test["nll"],
                      "devices": jax.device_count(), "used": num_devices}))


def sharded_step(cell):
    """One train step with the batch sharded over every device against the same step on one device: the compiled
    step's collectives, the row counts its native kernels run on, and the largest difference in the results."""
    from rnn_jax import kernels, parallel
    from rnn_jax.lm import LanguageModel
    from rnn_jax.training import TrainState, make_optimizer, make_train_step

    batch, steps = 8, 5
    model = LanguageModel(LMConfig(vocab_size=50, embed_size=8, hidden_size=16, num_layers=2, cell=cell,
                                   gru_reset_after=(cell == "gru")))
    optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=0.5, clip_norm=1.0), 10, 10)
    params = model.init(jax.random.PRNGKey(0))
    tokens = np.random.default_rng(0).integers(0, 50, (batch, steps + 1))
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(1))
    results, text = {}, None
    for devices in (1, jax.device_count()):
        mesh = parallel.make_mesh(devices)
        rows, replicated = parallel.rows_sharded(mesh), parallel.replicated(mesh)
        step = jax.jit(make_train_step(model, optimizer, "token_mean"),
                       in_shardings=(replicated, rows, rows, rows), out_shardings=(replicated, rows, replicated))
        args = (parallel.place(state, replicated), parallel.place(model.initial_state(batch), rows),
                parallel.global_batch(mesh, tokens[:, :-1]), parallel.global_batch(mesh, tokens[:, 1:]))
        results[devices] = parallel.under_mesh(mesh, step)(*args)
        if devices > 1:
            with jax.set_mesh(mesh):
                text = step.lower(*args).compile().as_text()
    kernel_rows = sorted({int(m.group(1)) for m in re.finditer(
        r"= \(f32\[\d+,(\d+),\d+\].*custom_call_target=\"rnn_jax_(?:lstm|gru)_forward", text)})
    xent_rows = sorted({int(m.group(1)) for m in re.finditer(
        r"= \(f32\[(\d+)\].*custom_call_target=\"rnn_jax_xent", text)})
    one, many = (jax.tree.map(np.asarray, results[n]) for n in (1, jax.device_count()))
    difference = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                     for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)))
    print(json.dumps({"devices": jax.device_count(), "native": kernels.available(), "kernel_rows": kernel_rows,
                      "xent_rows": xent_rows, "all_gathers": text.count("all-gather-start") + text.count(
                          " all-gather("), "all_reduces": text.count("all-reduce"), "difference": difference}))


if __name__ == "__main__" and sys.argv[1] == "sharding":
    sharded_step(sys.argv[2])
elif __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), resume=len(sys.argv) > 4 and sys.argv[4] == "resume",
         epochs=int(sys.argv[5]) if len(sys.argv) > 5 else 2)
