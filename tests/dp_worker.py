"""Runs a short training in a fresh process with N forced CPU devices; used by test_parallel.py.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/dp_worker.py CORPUS RUN_DIR NUM_DEVICES [resume]
Prints one JSON line: the per-epoch valid NLLs and the devices used.
"""

import json
import sys

import jax

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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), resume=len(sys.argv) > 4 and sys.argv[4] == "resume",
         epochs=int(sys.argv[5]) if len(sys.argv) > 5 else 2)
