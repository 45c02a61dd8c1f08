"""Checkpointer: round trip, keep the last N plus the best, skip damaged checkpoints without deleting them."""

import chex
import jax.numpy as jnp
import pytest

from rnn_jax.checkpoints import CheckpointError, Checkpointer
from rnn_jax.lm import OutputParams


def tree(value):
    return {"params": OutputParams(V=jnp.full((3, 2), value), c=None), "step": jnp.asarray(int(value), jnp.int32)}


def test_roundtrip_and_retention(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    losses = {10: 3.0, 20: 1.5, 30: None, 40: 2.5, 50: None}  # None: a mid-epoch checkpoint without metrics
    for step, loss in losses.items():
        assert ckpt.save(step, tree(step), {"epoch": step // 10}, valid_nll=loss)
    assert not ckpt.save(50, tree(50), {})  # an existing step is never overwritten
    assert ckpt.steps() == [20, 40, 50]  # the last two, and the best on validation (step 20)
    restored, record, step = ckpt.restore_latest(tree(0))
    assert step == 50 and record == {"epoch": 5}
    chex.assert_trees_all_equal(restored, tree(50))
    best, _ = ckpt.restore(20, tree(0))
    chex.assert_trees_all_equal(best, tree(20))
    ckpt.close()


def test_damaged_latest_falls_back_to_an_intact_one(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=5)
    for step in (1, 2):
        ckpt.save(step, tree(step), {"epoch": step})
    for path in (tmp_path / "ckpt" / "2").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "record" not in str(path):
            path.write_bytes(b"\x00garbage")
    restored, record, step = ckpt.restore_latest(tree(0))
    assert step == 1 and record == {"epoch": 1}
    assert (tmp_path / "ckpt" / "2").exists()  # the damaged one is reported, not deleted
    ckpt.close()


def test_no_checkpoint_is_a_clear_error(tmp_path):
    ckpt = Checkpointer(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        ckpt.restore_latest(tree(0))
    ckpt.close()
