"""Orbax checkpoints of (model, optimizer) state + the typed :class:`TrainState`, with resume.

Two managers under ``directory``: ``latest/`` (resume point, written every epoch) and
``best/`` (best validation epoch, used for the final test evaluation). Orbax writes
each step to a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint that looks valid.

Layouts: the state is saved from whatever devices hold it (replicated parameters are
written once) and restored into the layout of the nodes given to :meth:`Checkpoints.restore`
(each array takes its target's sharding), so a run checkpointed on 4 devices resumes on 1
and the other way round. In a multi-process job every process calls save/restore on the
same (shared) folder; Orbax writes each array's shards from the process that holds them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from attnlab.train import distributed
from attnlab.train.run_dir import GLOB_CHARS

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back (corrupt or truncated files); the message
    names the folder to delete and the option that starts afresh."""


def check_directory(directory: str | Path) -> Path:
    """``directory`` as an absolute path, or a :class:`ConfigError` naming the character when
    Orbax could not restore checkpoints saved there (:data:`GLOB_CHARS`). Called before any
    work: the run would otherwise train to the end and fail at its first restore."""
    from attnlab.typed_config import ConfigError

    path = Path(directory).absolute()
    bad = sorted({ch for ch in str(path) if ch in GLOB_CHARS})
    if bad:
        raise ConfigError(
            f"checkpoints would go to {path}, whose path holds {' '.join(repr(c) for c in bad)}: Orbax reads "
            "these as a glob pattern and cannot restore what it saved there. Choose paths.root / "
            "paths.output_dir without [ ] * ? (sweep folders are named with them replaced: "
            "configs/config.yaml, hydra.sweep.subdir).")
    return path


class Checkpoints:
    def __init__(self, directory: str | Path):
        self.directory = check_directory(directory)
        self._open()

    def _open(self) -> None:
        self._closed = False
        opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        self._latest = ocp.CheckpointManager(self.directory / "latest", options=opts)
        self._best = ocp.CheckpointManager(self.directory / "best", options=opts)

    def discard(self) -> Path | None:
        """Start afresh (``trainer.resume=false``): move every checkpoint already in the
        folder aside, to ``<directory>.discarded-<time>`` (nothing is deleted), so this run
        neither resumes from them nor restores an older ``best`` at the end. Returns where
        they went (None when there were none). In a multi-process job every process calls
        it; process 0 moves the folder while the others wait."""
        distributed.barrier("attnlab-discard-look")  # all look before any moves
        if not any(p.is_dir() and any(p.iterdir()) for p in (self.directory / "latest", self.directory / "best")):
            return None
        self.close()
        dst = self.directory.with_name(f"{self.directory.name}.discarded-{time.strftime('%Y%m%d-%H%M%S')}")
        if distributed.is_main():
            n = 0
            while dst.exists():
                n += 1
                dst = dst.with_name(f"{dst.name.split('~')[0]}~{n}")
            shutil.move(str(self.directory), str(dst))
            log.warning("trainer.resume=false: moved the earlier checkpoints in %s aside to %s; training from "
                        "scratch", self.directory, dst)
        distributed.barrier("attnlab-discard-moved")
        self._open()
        return dst

    @staticmethod
    def _args_save(state, meta):
        return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

    def save(self, which: str, step: int, nodes: Any, meta: dict[str, Any]) -> None:
        """Save ``nnx.state(nodes)`` and JSON ``meta`` as ``step`` in ``latest``/``best``."""
        mngr = self._manager(which)
        state = nnx.to_pure_dict(nnx.state(nodes))
        if step in mngr.all_steps():
            # a run killed after saving ``best`` and before ``latest`` of this epoch: resumed from
            # the ``latest`` before it, the relaunch redoes the epoch and replaces that copy
            # (Orbax refuses a step that exists: StepAlreadyExistsError)
            mngr.delete(step)
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
        folder = self.directory / which / str(step)
        try:
            restored = mngr.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
            )
            state = nnx.state(nodes)
            nnx.replace_by_pure_dict(state, restored["state"])
            meta = restored["meta"]
            if not isinstance(meta, dict):
                raise ValueError(f"its bookkeeping is a {type(meta).__name__}, not a mapping")
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types; all mean "unreadable"
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise CheckpointError(
                f"cannot restore the {which!r} checkpoint {folder} ({type(e).__name__}: {first}): its files are "
                f"corrupt, truncated or from an incompatible model. Delete {self.directory} to train from "
                "scratch, or rerun with trainer.resume=false (which moves it aside to "
                f"{self.directory.name}.discarded-<time>).") from None
        nnx.update(nodes, state)
        return dict(meta)

    def _manager(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"checkpoint kind must be 'latest' or 'best', got {which!r}")
        return self._latest if which == "latest" else self._best

    def close(self) -> None:
        """Close both managers (idempotent)."""
        if not self._closed:
            self._closed = True
            self._latest.close()
            self._best.close()


@dataclasses.dataclass
class TrainState:
    """Where a run's training stands; saved as the metadata of every checkpoint, so a
    resumed run continues exactly (also its early stopping and its history)."""

    epoch: int = 0              # passes done
    step: int = 0               # optimisation steps done
    total_steps: int = 0        # the schedule's length (the step budget)
    best: float | None = None   # best validation monitor so far
    best_epoch: int = -1
    best_valid: dict[str, float] = dataclasses.field(default_factory=dict)
    bad_epochs: int = 0         # passes since the best (early stopping)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_events: int = 0
    train_targets: int = 0
    train_seconds: float = 0.0
    resume_key: str = ""        # hash of the config minus what may change on resume
    data_fingerprint: str = ""

    @classmethod
    def from_meta(cls, meta: dict[str, Any], *, fresh: "TrainState") -> "TrainState":
        """A restored state; keys an older checkpoint lacks keep ``fresh``'s values."""
        known = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(fresh, **{k: v for k, v in meta.items() if k in known})


#: Config keys that say when to stop, not what a step computes: left out of the resume key,
#: so a run may be resumed with other values (e.g. a longer ``max_epochs``).
RESUMABLE_KEYS = ("trainer.max_epochs", "trainer.patience", "trainer.stop_at")


def resume(ckpts: Checkpoints, nodes, *, fresh: TrainState, max_epochs: int) -> TrainState:
    """The ``latest`` checkpoint restored into ``nodes``, refused (naming the folder and
    the fix) when it belongs to another config, other data or another schedule, or has
    trained more passes than ``max_epochs``."""
    state = TrainState.from_meta(ckpts.restore("latest", nodes), fresh=fresh)
    where = ckpts.directory
    if state.resume_key != fresh.resume_key:
        raise RuntimeError(
            f"the checkpoint in {where} was written by a different config (key {state.resume_key}, this "
            f"run {fresh.resume_key}); only {', '.join(RESUMABLE_KEYS)} may change on resume. "
            "Use a new output dir or delete it.")
    if state.data_fingerprint != fresh.data_fingerprint:
        raise RuntimeError(
            f"the checkpoint in {where} was trained on different data (fingerprint {state.data_fingerprint}, "
            f"now {fresh.data_fingerprint}); delete {where} to train afresh on the current data.")
    if state.total_steps != fresh.total_steps:
        raise RuntimeError(
            f"the checkpoint in {where} follows a learning-rate schedule of {state.total_steps} steps, this "
            f"config one of {fresh.total_steps} (with trainer.max_steps=null the schedule length is "
            f"max_epochs passes); resume with the same budget (trainer.max_steps={state.total_steps}) or "
            f"delete {where}.")
    if state.epoch > max_epochs:
        raise RuntimeError(
            f"the checkpoint in {where} has trained {state.epoch} epochs, more than trainer.max_epochs="
            f"{max_epochs}; it cannot be resumed as a shorter run. Delete {where} (or use a new output "
            f"dir) to train {max_epochs} epochs.")
    log.info("resumed from %s at epoch %d (step %d)", where, state.epoch, state.step)
    return state
