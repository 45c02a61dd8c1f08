"""Run checkpoints with orbax's `CheckpointManager`: the last N and the best on validation are kept.

A checkpoint holds the train state (parameters, optimiser state, step, PRNG key), the recurrent carry at the
saved data position, and a JSON record of the position (epoch, window, windows done), elapsed time, the best
validation NLL so far and a SHA-256 digest of every array. Saves are synchronous and atomic (orbax writes to a
temporary directory and renames it), so a run killed mid-save leaves the previous checkpoints intact.

Restoring verifies the digest, so flipped bytes are caught as surely as missing or truncated files: a damaged
checkpoint is never loaded. `restore_latest` falls back to the newest intact checkpoint and reports the damaged
ones; `quarantine` renames a damaged step folder aside (it is never deleted) so a resumed run can save that
step again.

Examples:
    >>> ckpt = Checkpointer("runs/x/checkpoints", keep=2)               # doctest: +SKIP
    >>> ckpt.save(120, {"state": state, "carry": carry}, {"epoch": 1}, valid_nll=4.2)  # doctest: +SKIP
    >>> tree, record, step = ckpt.restore_latest({"state": state, "carry": carry})     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import pathlib
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from rnn_jax.errors import ExpectedError


class CheckpointError(ExpectedError, RuntimeError):
    """No usable checkpoint (none saved, or every one damaged)."""


def tree_digest(tree: Any) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in tree order."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:  # sharded over several hosts
            from jax.experimental import multihost_utils

            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        array = np.asarray(jax.device_get(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_orbax():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_disk_full(error: BaseException) -> bool:
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or any(
                mark in str(error) for mark in ("RESOURCE_EXHAUSTED", "No space left on device")):
            return True
        error = error.__cause__ or error.__context__
    return False


class Checkpointer:
    """Saves and restores `(pytree, JSON record)` pairs under integer steps.

    Args:
        directory: where the step folders go (created if missing).
        keep: how many of the most recent checkpoints to keep; the one with the lowest validation NLL is
            kept as well.
    """

    def __init__(self, directory: str | pathlib.Path, keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=lambda m: m["valid_nll"], reverse=True, n=1,
                           keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=preservation, enable_async_checkpointing=False,
                                               create=True, cleanup_tmp_directories=True)
        with _quiet_orbax():  # it reads every step's metadata; damage is reported when a step is restored
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._closed = False

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, tree: Any, record: dict, *, valid_nll: float | None = None) -> bool:
        """Saves a checkpoint at `step` (skipped if one exists there); returns whether it saved."""
        if step in self.manager.all_steps():
            return False
        metrics = None if valid_nll is None else {"valid_nll": float(valid_nll)}
        record = dict(record, tree_sha256=tree_digest(tree))
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), record=ocp.args.JsonSave(record))
        try:
            saved = self.manager.save(step, args=args, metrics=metrics, force=True)
            self.manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 - tensorstore reports a full disk as a ValueError
            if not _is_disk_full(error):
                raise
            raise CheckpointError(f"the disk is full: checkpoint {step} could not be saved in {self.directory}. "
                                  "The checkpoints saved before it are intact; free some space, then continue "
                                  "the run with --resume") from error
        return bool(saved)

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """The tree (shaped like `template`) and record saved at `step`, verified against the saved digest.

        Raises:
            CheckpointError: the checkpoint is damaged (unreadable, or its arrays do not match the digest).
        """
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template), record=ocp.args.JsonRestore())
        try:
            with _quiet_orbax():  # a damaged file is reported once, below, not also by orbax's own log lines
                restored = self.manager.restore(step, args=args)
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CheckpointError(f"checkpoint {step} in {self.directory} is damaged: {type(e).__name__}: "
                                  f"{first_line[:300]}") from e
        record = dict(restored.record or {})
        expected = record.pop("tree_sha256", None)
        if expected is None or tree_digest(restored.state) != expected:
            raise CheckpointError(f"checkpoint {step} in {self.directory} is damaged: its arrays do not match the "
                                  "SHA-256 digest saved with them" if expected else
                                  f"checkpoint {step} in {self.directory} is damaged: its record has no digest")
        return restored.state, record

    def restore_latest(self, template: Any, report: Callable[[str], None] | None = None) -> tuple[Any, dict, int]:
        """The newest intact checkpoint; each damaged newer one is reported (and left on disk).

        Args:
            template: a tree shaped like the saved one.
            report: called with a message for each damaged checkpoint skipped.

        Returns:
            (tree, record, step).

        Raises:
            CheckpointError: if there is no checkpoint, or none is intact.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failures = []
        for step in reversed(steps):
            try:
                tree, record = self.restore(step, template)
            except CheckpointError as e:
                failures.append(str(e))
                if report is not None:
                    report(f"{e}; trying an older one")
                continue
            return tree, record, step
        raise CheckpointError(f"no intact checkpoint in {self.directory} ({len(steps)} tried, none deleted): "
                              + "; ".join(failures))

    def quarantine(self, step: int) -> pathlib.Path:
        """Renames a (damaged) step folder to `<step>.damaged[-k]` so the step can be saved again; never deletes."""
        source = self.directory / str(step)
        target = self.directory / f"{step}.damaged"
        k = 1
        while target.exists():
            target, k = self.directory / f"{step}.damaged-{k}", k + 1
        source.rename(target)
        self.manager.reload()
        return target

    def close(self) -> None:
        """Stops the manager's threads (safe to call more than once)."""
        if not self._closed:
            self._closed = True
            self.manager.close()
