"""Orbax checkpoints of (model, optimizer) state + trainer bookkeeping, with resume.

Two managers under ``directory``: ``latest/`` (resume point, written every epoch) and
``best/`` (best validation epoch, used for the final test evaluation). Orbax writes
each step to a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint that looks valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx


class Checkpoints:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory).absolute()
        opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        self._latest = ocp.CheckpointManager(self.directory / "latest", options=opts)
        self._best = ocp.CheckpointManager(self.directory / "best", options=opts)

    @staticmethod
    def _args_save(state, meta):
        return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

    def save(self, which: str, step: int, nodes: Any, meta: dict[str, Any]) -> None:
        """Save ``nnx.state(nodes)`` and JSON ``meta`` as ``step`` in ``latest``/``best``."""
        mngr = self._manager(which)
        state = nnx.to_pure_dict(nnx.state(nodes))
        mngr.save(step, args=self._args_save(state, meta), force=True)
        mngr.wait_until_finished()

    def latest_step(self, which: str = "latest") -> int | None:
        return self._manager(which).latest_step()

    def restore(self, which: str, nodes: Any) -> dict[str, Any]:
        """Restore into ``nodes`` in place; returns the saved ``meta``."""
        mngr = self._manager(which)
        step = mngr.latest_step()
        if step is None:
            raise FileNotFoundError(f"no {which!r} checkpoint under {self.directory}")
        target = nnx.to_pure_dict(nnx.state(nodes))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        state = nnx.state(nodes)
        nnx.replace_by_pure_dict(state, restored["state"])
        nnx.update(nodes, state)
        return dict(restored["meta"])

    def _manager(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"checkpoint kind must be 'latest' or 'best', got {which!r}")
        return self._latest if which == "latest" else self._best

    def close(self) -> None:
        self._latest.close()
        self._best.close()
