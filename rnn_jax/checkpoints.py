"""Run checkpoints with orbax's `CheckpointManager`: the last N and the best on validation are kept.

A checkpoint holds the train state (parameters, optimiser state, step, PRNG key), the recurrent carry at the
saved data position, and a JSON record of the position (epoch, window, windows done), elapsed time and the
best validation NLL so far. Saves are synchronous and atomic (orbax writes to a temporary directory and
renames it), so a run killed mid-save leaves the previous checkpoints intact.

Example:
    >>> ckpt = Checkpointer("runs/x/checkpoints", keep=2)               # doctest: +SKIP
    >>> ckpt.save(120, {"state": state, "carry": carry}, {"epoch": 1}, valid_nll=4.2)  # doctest: +SKIP
    >>> tree, record, step = ckpt.restore_latest({"state": state, "carry": carry})     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies


class CheckpointError(RuntimeError):
    """No usable checkpoint (none saved, or every one damaged)."""


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
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, tree: Any, record: dict, *, valid_nll: float | None = None) -> bool:
        """Saves a checkpoint at `step` (skipped if one exists there); returns whether it saved."""
        if step in self.manager.all_steps():
            return False
        metrics = None if valid_nll is None else {"valid_nll": float(valid_nll)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), record=ocp.args.JsonSave(record))
        saved = self.manager.save(step, args=args, metrics=metrics, force=True)
        self.manager.wait_until_finished()
        return bool(saved)

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """The tree (shaped like `template`) and record saved at `step`."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template), record=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored.state, dict(restored.record)

    def restore_latest(self, template: Any) -> tuple[Any, dict, int]:
        """The newest checkpoint that restores; damaged newer ones are reported and skipped (never deleted).

        Raises:
            CheckpointError: if there is no checkpoint, or none restores.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failures = []
        for step in reversed(steps):
            try:
                tree, record = self.restore(step, template)
                for reason in failures:
                    logging.warning("skipped damaged checkpoint: %s", reason)
                return tree, record, step
            except Exception as e:  # orbax raises many types for damaged files; each is reported
                failures.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise CheckpointError(f"no intact checkpoint in {self.directory}; tried " + "; ".join(failures))

    def close(self) -> None:
        self.manager.close()
