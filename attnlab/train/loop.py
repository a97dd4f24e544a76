"""``train_and_evaluate(cfg) -> RunResult``: the one library function behind train.py.

It reads top to bottom as its stages, each a function of its own:

  :func:`load_data` -> :func:`reuse_completed` (a sweep relaunch skips finished runs) ->
  :func:`make_split` -> :func:`evaluate_baselines` -> :func:`fit` (AdamW, jit-compiled
  step, early stopping on the validation metric, Orbax checkpoints every pass,
  resumable) -> :func:`evaluate_model` (the best checkpoint on test) -> :func:`record`
  (one results JSON and the index entry, atomically) -> the tracker's final payload.

The run's progress is a typed :class:`TrainState` (saved with every checkpoint).

Sweeps: every finished run is also filed in a results index,
``<paths.results_dir>/<experiment>/<config_hash>.json`` (+ ``.npz`` per-example metrics),
keyed by the hash of the resolved config (seed included; paths, logging and resume
switches excluded). With ``trainer.skip_completed`` a run whose entry exists for the same
data fingerprint is not re-run: its stored result is returned. ``experiments/train.py``
turns this on under Hydra multirun, so a sweep killed half way and relaunched skips what
finished and resumes the interrupted job from its ``latest`` checkpoint (the multirun
directory is stable, see ``configs/config.yaml``). ``experiments/benchmark.py`` reads
the index to build tables.

Devices and processes (docs/scaling.md): :func:`fit` trains data-parallel on a mesh of
every device (``trainer.mesh``, :mod:`attnlab.train.mesh`): each batch split over the
``data`` axis, parameters and optimiser state replicated; ``trainer.batch_size`` is the
global batch. A multi-process job (``trainer.distributed``, :mod:`attnlab.train.distributed`)
runs this same function in every process; process 0 alone holds the run folder's lock and
writes the results JSON, the index entry and the W&B run. Neither key is part of the
config hash: the layout says where a run trains, not what it computes.

Determinism: the epoch's example order is drawn from ``(seed, epoch)`` and dropout keys
from ``(seed, step)``, so a run resumed from its ``latest`` checkpoint reproduces an
uninterrupted run exactly.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from attnlab import results as res
from attnlab.atomic import atomic_copy, atomic_write_npz
from attnlab.data.buckets import resolve_buckets
from attnlab.data.pipeline import load_sequences
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples, Split
from attnlab.models import build_model
from attnlab.models.config import model_config
from attnlab.train import distributed
from attnlab.train import mesh as meshes
from attnlab.train.checkpoint import RESUMABLE_KEYS, Checkpoints, TrainState, resume
from attnlab.train.checkpoint import check_directory as check_checkpoint_directory
from attnlab.train.optim import TrainerConfig, lr_schedule, make_optimizer
from attnlab.train.run_dir import RunLock
from attnlab.train.tasks import check_split, make_task
from attnlab.train.tracking import (
    EPOCH_AXIS, STEP_AXIS, attention_heatmap, define_axes, is_count, log_final, make_tracker,
)

log = logging.getLogger(__name__)
logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO


def _no_tpu_probe(record: logging.LogRecord) -> bool:
    """Drop JAX's INFO line "Unable to initialize backend 'tpu': ... libtpu.so ..." (every
    run on a machine without a TPU prints it). Other backends' failures (e.g. 'cuda')
    and every warning still show; which backend JAX picks is unchanged."""
    return not (record.levelno <= logging.INFO
                and str(record.msg).startswith("Unable to initialize backend 'tpu'"))


if _no_tpu_probe not in logging.getLogger("jax._src.xla_bridge").filters:
    logging.getLogger("jax._src.xla_bridge").addFilter(_no_tpu_probe)


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """One contender's test evaluation: metric means (plus timings) and per-example values."""

    metrics: dict[str, float]
    per_example: dict[str, np.ndarray]


def results_dir(c: dict[str, Any]) -> Path:
    """The results index root: ``paths.results_dir``, else ``<paths.root>/results``."""
    paths = c.get("paths") or {}
    return Path(paths.get("results_dir") or Path(paths.get("root", "outputs")) / "results").absolute()


def _peak_rss_mb() -> float:
    """Process peak resident memory so far (MB). Contenders run in sequence in one
    process, so a row's value is the peak up to and including that contender."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _as_dict(cfg) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


# -- the entry point -----------------------------------------------------------------


def train_and_evaluate(cfg: DictConfig | dict[str, Any]) -> res.RunResult:
    """Run one experiment end to end. See the module docstring and ``configs/``."""
    t_start = time.perf_counter()
    c = _as_dict(cfg)
    seed = int(c["seed"])
    progress = bool(c.get("progress", True))
    out_dir = Path(c["paths"]["output_dir"]).absolute()
    # config mistakes fail before any work: unknown keys, out-of-range values
    tr = TrainerConfig.from_dict(c["trainer"])
    task = make_task(c["task"])
    model_cfg = model_config(c["model"])
    if hasattr(task, "check_model"):
        task.check_model(model_cfg)   # task x model choices that cannot train together
    distributed.initialize(tr.distributed)  # a no-op for one process (and when train.py did it)
    mesh = meshes.make_mesh(tr.mesh, batch_size=int(tr.batch_size))  # devices vs batch size: checked now
    meshes.check_item_split(mesh, d_model=model_cfg.d_model)
    check_checkpoint_directory(out_dir / "checkpoints")
    # one live run per folder: a second launch into it is refused, a dead owner's lock taken over
    # (process 0 holds it for the job); checkpoint managers and the tracker are closed on the way
    # out, also when the run fails
    lock = RunLock(out_dir) if distributed.is_main() else contextlib.nullcontext()
    with lock, contextlib.ExitStack() as cleanup:
        store = load_data(c, progress=progress)
        index_path = res.completed_path(results_dir(c), c)
        if tr.skip_completed and (done := reuse_completed(c, store, index_path, out_dir)) is not None:
            return done
        split = make_split(task, store, seed=seed)
        provenance = {**describe_run(c, task, store, split, out_dir), "layout": meshes.describe(mesh)}
        # one W&B run per job: process 0's (the others' tracker is a no-op)
        tracker = make_tracker(c.get("logger") if distributed.is_main() else None,
                               config={**c, "provenance": provenance}, directory=str(out_dir))
        cleanup.callback(tracker.finish)
        evaluated, reused = evaluate_baselines(task, store, split, progress=progress)  # before the model: their peak_mb
        provenance["baselines_reused"] = reused   # filed with the result (the tracker's config predates it)
        model = build_model(model_cfg, n_items=store.n_items, seed=seed)
        layout = batch_layout(tr, mesh, max_len=model.max_len)
        steps_per_epoch = training_passes(task, store, split, tr, max_len=model.max_len, seed=seed,
                                          buckets=layout["buckets"])
        provenance["length_buckets"] = task.plans.describe(max_len=model.max_len, batch_size=int(tr.batch_size),
                                                           seed=seed, buckets=layout["buckets"])
        ckpts = Checkpoints(out_dir / "checkpoints")
        cleanup.callback(ckpts.close)
        score_fn = task.model_scores(model, max_len=model.max_len, batch_size=int(tr.eval_batch_size),
                                     buckets=layout["buckets"])
        state = fit(model, task, store, split, tr, mesh=mesh, ckpts=ckpts, score_fn=score_fn, tracker=tracker,
                    steps_per_epoch=steps_per_epoch, seed=seed, progress=progress,
                    resume_key=res.config_hash(c, ignore=res.NOT_RESULTS + RESUMABLE_KEYS),
                    log_every=max(int((c.get("logger") or {}).get("log_every_steps") or 10), 1))
        nnx.update(model, meshes.first_copy(nnx.state(model)))  # from here on each process scores on one device
        evaluated["model"] = evaluate_model(model, task, store, split.test, state, ckpts=ckpts, score_fn=score_fn,
                                            progress=progress)
        ckpts.close()
        provenance.update(wall_s=time.perf_counter() - t_start, **run_summary(model, task, state, tr, split))
        result = record(c, provenance, evaluated, state, out_dir=out_dir, index_path=index_path)
        track_result(tracker, result, model=model, store=store, examples=split.test, task=task)
        return result


# -- stages, in the order they run ----------------------------------------------------


def load_data(c: dict[str, Any], *, progress: bool) -> SequenceStore:
    """The cached sequence store of the ``data`` group. In a multi-process job process 0
    builds (or verifies) the cache first and the others then read it, so processes sharing
    a cache folder never build it at the same time."""
    if not distributed.is_main():
        distributed.barrier("attnlab-data-cache")
    store = load_sequences(c["data"]["name"], dict(c["data"].get("options") or {}),
                           cache_dir=c["paths"]["cache_dir"], progress=progress)
    if distributed.is_main():
        distributed.barrier("attnlab-data-cache")
    return store


def reuse_completed(c: dict[str, Any], store: SequenceStore, index_path: Path,
                    out_dir: Path) -> res.RunResult | None:
    """The indexed result of this exact run on this exact data, copied into the run
    folder (so tools that read run folders see every run of a relaunched sweep); None
    when there is none (or it was computed on other data: then the run goes ahead)."""
    done = res.try_read_result(index_path) if index_path.exists() else None
    if done is None:
        return None
    if done.provenance.get("data_fingerprint") != store.fingerprint:
        log.warning("re-running %s: it was computed on different data (fingerprint %s, now %s)",
                    index_path, done.provenance.get("data_fingerprint"), store.fingerprint)
        return None
    log.info("skipping: this exact run (config %s, seed %d) is already complete: %s",
             res.config_hash(c), int(c["seed"]), index_path)
    npz = index_path.with_suffix(".npz")
    if distributed.is_main():  # one writer per job
        if npz.exists():
            atomic_copy(npz, out_dir / "per_example.npz")
        res.write_result(dataclasses.replace(done), out_dir / "result.json")
    done.provenance["skipped"] = True
    return done


def make_split(task, store: SequenceStore, *, seed: int) -> Split:
    """The task's protocol on the store; a split without training, validation or test
    examples is an error here (never an ``n = 0`` result)."""
    split = task.split(store, seed=seed)
    log.info("split %s: %d train customers, %d valid, %d test", task.name,
             int((split.train_end > np.asarray(store.offsets)[:-1]).sum()), len(split.valid), len(split.test))
    check_split(task, store, split)
    task.prepare(store, split)
    return split


def batch_layout(tr: TrainerConfig, mesh: meshes.Mesh, *, max_len: int) -> dict[str, int]:
    """How training batches are shaped: ``buckets`` static lengths
    (``trainer.length_buckets``, :func:`attnlab.data.buckets.resolve_buckets`), rows padded
    to a multiple of ``row_multiple``, the devices of the mesh's data axis."""
    return {"buckets": resolve_buckets(tr.length_buckets, max_len), "row_multiple": int(mesh.shape["data"])}


def training_passes(task, store: SequenceStore, split: Split, tr: TrainerConfig, *, max_len: int, seed: int = 0,
                    buckets: int = 1) -> int:
    """Optimisation steps in one pass over the training windows (``limit_train_batches`` caps it;
    with length buckets, the first pass's)."""
    steps = task.steps_per_epoch(store, split, max_len=max_len, batch_size=int(tr.batch_size), buckets=buckets,
                                 seed=seed)
    if tr.limit_train_batches:
        steps = min(steps, int(tr.limit_train_batches))
    if steps == 0:
        raise ValueError(f"task={task.name}: the split has no training windows (split report: "
                         f"{split.report}); use more data or an earlier cut-off.")
    return steps


def describe_run(c: dict[str, Any], task, store: SequenceStore, split: Split, out_dir: Path) -> dict[str, Any]:
    """The provenance filed with the result (and given to the tracker)."""
    return {
        "experiment": c.get("experiment_name") or "default",
        "model": c["model"]["name"],
        "task": task.name,
        "data": c["data"]["name"],
        "seed": int(c["seed"]),
        "monitor": task.monitor,
        "report": c.get("report") or {},  # how benchmark.py tabulates this experiment (not hashed)
        "config_hash": res.config_hash(c),
        "cell_hash": res.cell_hash(c),
        "run_dir": str(out_dir),
        "data_fingerprint": store.fingerprint,
        "git_sha": res.git_sha(),
        "versions": res.package_versions(),
        "hardware": res.hardware(),
        "split_report": split.report,
    }


class BaselineMemo:
    """Baseline evaluations reused by the later runs of one process (a sweep's jobs).

    A baseline depends on the data, the split and the task config, never on the model,
    the trainer or the seed beyond the split, so the jobs of a sweep that share a split
    (every job of a next_basket or temporal churn sweep; a next_item sweep's jobs of one
    seed) would fit and score identical baselines again: ~1 min a next-basket run, ~2
    min a next-item run on The Complete Journey. The key is content, not names: a
    SHA-256 of every array and the metadata of the store (not how it was loaded: cache
    hit, seconds), every array of the split and the typed task config (which lists the
    baselines), so a hit is the same computation
    on the same inputs in the same code. A reused evaluation keeps its first run's fit
    and wall seconds and peak memory, and the run files ``provenance.baselines_reused``.

    Off until :meth:`enable` (``experiments/train.py`` turns it on); library callers and
    tests fit their baselines every time. Holds the last ``size`` keys.
    """

    def __init__(self, size: int = 4):
        self.enabled = False
        self.size = size
        self._memo: collections.OrderedDict[str, dict[str, Evaluated]] = collections.OrderedDict()

    def enable(self, on: bool = True) -> None:
        self.enabled = bool(on)
        if not on:
            self._memo.clear()

    @staticmethod
    def key(task, store: SequenceStore, split: Split) -> str:
        h = hashlib.sha256()

        def add(name: str, value) -> None:
            h.update(name.encode())
            if isinstance(value, np.ndarray) and value.dtype == object:
                h.update(json.dumps(value.tolist(), default=str).encode())
            elif isinstance(value, np.ndarray):
                a = np.ascontiguousarray(value)
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(memoryview(a).cast("B"))
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                for f in dataclasses.fields(value):
                    v = getattr(value, f.name)
                    if name == "store" and f.name == "meta":   # how it was loaded is not what it holds
                        v = {k: x for k, x in v.items() if k not in ("cache", "build_seconds")}
                    add(f"{name}.{f.name}", v)
            elif isinstance(value, dict):   # side-information columns: each array byte by byte
                h.update(b"{")
                for k in sorted(value, key=str):
                    add(f"{name}[{k!s}]", value[k])
                h.update(b"}")
            elif isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, dict)) for v in value):
                for i, v in enumerate(value):
                    add(f"{name}[{i}]", v)
            else:
                h.update(json.dumps(value, sort_keys=True, default=str).encode())

        add("task", [type(task).__name__, dataclasses.asdict(task.cfg)])
        add("store", store)
        add("split", split)
        return h.hexdigest()

    def get(self, key: str) -> dict[str, Evaluated] | None:
        if not self.enabled or key not in self._memo:
            return None
        self._memo.move_to_end(key)
        return {n: Evaluated(dict(e.metrics), dict(e.per_example)) for n, e in self._memo[key].items()}

    def put(self, key: str, evaluated: dict[str, Evaluated]) -> None:
        if not self.enabled:
            return
        self._memo[key] = {n: Evaluated(dict(e.metrics), dict(e.per_example)) for n, e in evaluated.items()}
        while len(self._memo) > self.size:
            self._memo.popitem(last=False)


#: the process's baseline memo (:class:`BaselineMemo`; off unless enabled)
BASELINE_MEMO = BaselineMemo()


def evaluate_baselines(task, store: SequenceStore, split: Split, *, progress: bool,
                       memo: BaselineMemo | None = None) -> tuple[dict[str, Evaluated], bool]:
    """The task's baselines fitted on the split's training data and scored on its test
    rows, and whether they were reused from ``memo`` (:data:`BASELINE_MEMO` by default)."""
    memo = BASELINE_MEMO if memo is None else memo
    key = memo.key(task, store, split) if memo.enabled else ""
    if (hit := memo.get(key)) is not None:
        return hit, True
    out = {}
    for name, fitted in task.baselines(store, split).items():
        t0 = time.perf_counter()
        ev = task.evaluate(fitted.predict, store, split.test, progress=progress)
        out[name] = Evaluated({**ev.metrics, "fit_s": fitted.fit_s, "wall_s": time.perf_counter() - t0,
                               "peak_rss_mb": _peak_rss_mb()}, ev.per_example)
    memo.put(key, out)
    return out, False


def fit(model, task, store: SequenceStore, split: Split, tr: TrainerConfig, *, mesh: meshes.Mesh,
        ckpts: Checkpoints, score_fn, tracker, steps_per_epoch: int, seed: int, progress: bool, resume_key: str,
        log_every: int) -> TrainState:
    """Train ``model`` in place: passes over the training windows until the step budget,
    ``max_epochs`` or early stopping; validation after every pass; ``best`` and ``latest``
    checkpoints. Resumes from ``latest`` when the folder has one (``trainer.resume``).
    A task whose validation rows are in-sample (``task.selects_on_valid`` false: a churn
    refit) trains ``trainer.max_epochs`` passes without validation and keeps the last weights.

    Data-parallel on ``mesh`` (:func:`attnlab.train.mesh.make_mesh`): model and optimiser
    state replicated on its devices before the first step (a checkpoint is restored into
    that layout, whatever layout wrote it), each batch split over the ``data`` axis."""
    if tr.init_bias == "log_popularity" and task.target_counts is not None:
        model.init_catalogue_bias(task.target_counts)
    # the schedule's length: the step budget, else max_epochs whole passes
    total_steps = int(tr.max_steps) if tr.max_steps else int(tr.max_epochs) * steps_per_epoch
    max_epochs = int(tr.max_epochs) if tr.max_epochs else -(-total_steps // steps_per_epoch)
    layout = batch_layout(tr, mesh, max_len=model.max_len)
    # length-bucketed passes differ by a batch or two from the first one: they run whole, and
    # without trainer.max_epochs the passes go on until the step budget is spent
    bucketed = layout["buckets"] > 1
    per_pass = None if bucketed and not tr.limit_train_batches else steps_per_epoch
    pass_cap = int(tr.max_epochs) if tr.max_epochs else (None if bucketed else max_epochs)
    selects = bool(getattr(task, "selects_on_valid", True))
    if not selects and not tr.max_epochs:
        raise ValueError(f"task={task.name} refits on its validation labels, so nothing can stop or choose a "
                         "checkpoint on them: set trainer.max_epochs to the validated run's best epoch (its "
                         "result's provenance.best_epoch) and trainer.max_steps to that run's budget.")
    optimizer = nnx.Optimizer(model, make_optimizer(tr, total_steps=total_steps), wrt=nnx.Param)
    nnx.update((model, optimizer), meshes.place_state(nnx.state((model, optimizer)), mesh,
                                                      catalogue_rows=model.n_items + 1))
    log.info("training budget: %d steps (%d per pass over the training windows, at most %d passes), "
             "batch %d over %d device(s) (mesh %s)", total_steps, steps_per_epoch, max_epochs, tr.batch_size,
             mesh.size, dict(mesh.shape))
    state = TrainState(total_steps=total_steps, resume_key=resume_key, data_fingerprint=store.fingerprint)
    if not tr.resume:
        ckpts.discard()  # start fresh: earlier checkpoints in this folder are moved aside
    elif ckpts.latest_step() is not None:
        state = resume(ckpts, (model, optimizer), fresh=state, max_epochs=pass_cap if pass_cap else 2**31 - 1)
    define_axes(tracker, monitor=task.monitor)
    # a split item table keeps its layout through the update (else XLA may re-lay out any parameter)
    state_layout = (jax.tree.map(lambda x: x.sharding, nnx.state((model, optimizer)))
                    if meshes.ITEM in mesh.axis_names else None)
    step_fn = nnx.jit(functools.partial(_train_step, loss=task.loss, layout=state_layout))
    steps = _StepLog(tracker, lr_schedule(tr, total_steps), every=log_every)
    base_key = meshes.replicate(jax.random.key(seed), mesh)  # a step's dropout key: fold_in(seed, step)
    while ((pass_cap is None or state.epoch < pass_cap) and state.step < total_steps
           and not early_stop(state.bad_epochs, state.best, patience=tr.patience, stop_at=tr.stop_at)):
        epoch = state.epoch
        t0 = time.perf_counter()
        batches = task.train_batches(store, split, max_len=model.max_len, batch_size=int(tr.batch_size),
                                     epoch=epoch, seed=seed, memory=model.history_memory, **layout)
        n_steps = total_steps - state.step if per_pass is None else min(per_pass, total_steps - state.step)
        losses, events = [], 0
        for inputs, targets in tqdm(itertools.islice(batches, n_steps), desc=f"epoch {epoch + 1}/{max_epochs}",
                                    disable=not progress, leave=False, unit="batch",
                                    total=min(n_steps, steps_per_epoch)):
            on_mesh = meshes.shard_batch((inputs, targets), mesh, batch_size=len(inputs["lengths"]))
            losses.append(step_fn(model, optimizer, *on_mesh, jax.random.fold_in(base_key, state.step)))
            events += int(inputs["lengths"].sum())
            state.train_targets += task.n_targets(targets)
            state.step += 1
            steps.add(state.step, losses[-1])
        if not losses:
            raise RuntimeError(f"task={task.name}: training pass {epoch + 1} yielded no batch; the split "
                               f"report: {split.report}")
        train_loss = float(np.mean(jax.device_get(losses)))
        train_s = time.perf_counter() - t0
        # a refit (validation rows in-sample) trains max_epochs passes and keeps the last weights
        valid = validate(task, score_fn, store, split.valid, epoch=epoch) if selects else {}
        end_of_pass(state, tracker, valid, monitor=task.monitor, train_loss=train_loss, train_s=train_s, events=events)
        if state.best_epoch == state.epoch:
            ckpts.save("best", state.epoch, (model, optimizer), dataclasses.asdict(state))
        ckpts.save("latest", state.epoch, (model, optimizer), dataclasses.asdict(state))
    if ckpts.latest_step("best") is not None:
        ckpts.restore("best", (model, optimizer))
    return state


def reached(best: float | None, stop_at: float | None) -> bool:
    """Whether the best validation monitor so far is at ``trainer.stop_at``. A later pass
    replaces the chosen checkpoint only when it scores strictly higher, so when ``stop_at``
    is the monitor's maximum (1.0 for a hit rate) stopping here chooses the checkpoint the
    full budget would choose: the same test numbers, sooner."""
    return stop_at is not None and best is not None and best >= stop_at


def early_stop(bad_passes: int, best: float | None, *, patience: int, stop_at: float | None) -> bool:
    """Whether training stops after a validated pass: ``patience`` passes in a row without
    improvement, or the best monitor at ``stop_at`` (:func:`reached`)."""
    return bad_passes >= int(patience) or reached(best, stop_at)


def improves(best: float | None, value: float) -> bool:
    """Whether a pass's validation monitor replaces the chosen checkpoint: only a strictly
    higher value does (a tie keeps the earlier, cheaper pass)."""
    return best is None or value > best


def replay_stopping(curve: Sequence[float], *, patience: int, stop_at: float | None = None) -> tuple[int, int]:
    """``(chosen pass, passes run)``, 1-based, that early stopping with ``patience`` (and
    ``stop_at``) would give on a recorded validation curve: the monitor after each pass of
    a run with the same budget, e.g. a result's ``history``.

    Exact, not an estimate: the schedule is sized by ``trainer.max_steps``, so a run that
    stops sooner is the recorded run cut short, and the rule is :func:`fit`'s own
    (:func:`improves`, :func:`early_stop`). Only a replay that stops no later than the
    recorded run can be read off its curve; when the curve ends before this rule stops,
    ``passes run`` is ``len(curve)``, which is right only if the recorded run did not end
    by its own patience (it ended on its step budget, ``max_epochs`` or ``stop_at``).
    """
    if patience < 1:
        raise ValueError(f"patience={patience}: at least one pass without improvement must be allowed.")
    best, chosen, bad = None, 0, 0
    for i, value in enumerate(curve, start=1):
        if improves(best, value):
            best, chosen, bad = float(value), i, 0
        else:
            bad += 1
        if early_stop(bad, best, patience=patience, stop_at=stop_at):
            return chosen, i
    return chosen, len(curve)


def validate(task, score_fn, store: SequenceStore, examples: Examples, *, epoch: int) -> dict[str, float]:
    """Validation metrics after a pass; the monitor must exist and be finite (a checkpoint
    is chosen on it)."""
    valid = task.evaluate(score_fn, store, examples, progress=False).metrics
    monitor = task.monitor
    if monitor not in valid:
        raise KeyError(f"task.monitor={monitor!r} is not a validation metric of task={task.name}; "
                       f"available: {sorted(valid)}.")
    if not np.isfinite(valid[monitor]):
        raise ValueError(f"validation {monitor} is {valid[monitor]} after epoch {epoch + 1}: no checkpoint "
                         "can be chosen on it (e.g. no validation rows it is defined on); pick another "
                         "task.monitor or check the split report.")
    return valid


def end_of_pass(state: TrainState, tracker, valid: dict[str, float], *, monitor: str, train_loss: float,
                train_s: float, events: int) -> None:
    """Files one pass in ``state`` (history, best, early-stopping count) and the tracker."""
    epoch = state.epoch + 1
    record = {"epoch": epoch, "step": state.step, "train_loss": train_loss, "train_s": train_s,
              "events_per_s": events / max(train_s, 1e-9), **{f"valid/{k}": v for k, v in valid.items()}}
    state.history.append(record)
    state.train_events += events
    state.train_seconds += train_s
    tracker.log({EPOCH_AXIS: epoch, "epoch/train_loss": train_loss,
                 "perf/train_events_per_s": record["events_per_s"], "perf/peak_rss_mb": _peak_rss_mb(),
                 **{f"valid/{k}": v for k, v in valid.items() if not is_count(k)}})
    # counts (valid/n, ...) do not change from epoch to epoch: summary values, not curves
    tracker.set_summary({f"valid/{k}": v for k, v in valid.items() if is_count(k)})
    state.epoch = epoch
    if not valid:   # a refit: no validation, nothing chosen
        log.info("epoch %d (step %d/%d) loss %.4f, no validation (refit) (%.1fs)", epoch, state.step,
                 state.total_steps, train_loss, train_s)
        return
    log.info("epoch %d (step %d/%d) loss %.4f valid %s %.4f (%.1fs)", epoch, state.step, state.total_steps,
             train_loss, monitor, valid[monitor], train_s)
    if improves(state.best, valid[monitor]):
        state.best, state.best_epoch, state.bad_epochs, state.best_valid = float(valid[monitor]), epoch, 0, valid
    else:
        state.bad_epochs += 1


def evaluate_model(model, task, store: SequenceStore, examples: Examples, state: TrainState, *,
                   ckpts: Checkpoints, score_fn, progress: bool) -> Evaluated:
    """The trained model (its best checkpoint, restored by :func:`fit`) on the test rows."""
    t0 = time.perf_counter()
    ev = task.evaluate(score_fn, store, examples, progress=progress)
    return Evaluated({**ev.metrics, "wall_s": time.perf_counter() - t0, "train_s": state.train_seconds,
                      "peak_rss_mb": _peak_rss_mb()}, ev.per_example)


def run_summary(model, task, state: TrainState, tr: TrainerConfig, split: Split) -> dict[str, Any]:
    """What training did, for the provenance."""
    return {
        "train_events_per_s": state.train_events / max(state.train_seconds, 1e-9),
        "epochs_trained": state.epoch,
        "steps_trained": state.step,
        "total_steps": state.total_steps,
        "training_signal": training_signal(model, task, state, init_bias=tr.init_bias),
        "best_epoch": state.best_epoch,
        "stopped_by": stopped_by(state, tr),
        "n_test": len(split.test),
    }


def stopped_by(state: TrainState, tr: TrainerConfig) -> str:
    """Why training ended: ``budget`` (trainer.max_steps), ``max_epochs``, ``patience`` or
    ``stop_at`` (the monitor reached trainer.stop_at)."""
    if state.step >= state.total_steps:
        return "budget"
    if reached(state.best, tr.stop_at):
        return "stop_at"
    if state.bad_epochs >= int(tr.patience):
        return "patience"
    return "max_epochs"


def record(c: dict[str, Any], provenance: dict[str, Any], evaluated: dict[str, Evaluated], state: TrainState, *,
           out_dir: Path, index_path: Path) -> res.RunResult:
    """The result JSON and per-example arrays in the run folder, then the index entry (its
    JSON existing means the run is complete); every file written atomically. In a
    multi-process job only process 0 writes (the others return the same result, unfiled)."""
    result = res.RunResult(metrics={n: e.metrics for n, e in evaluated.items()}, valid=dict(state.best_valid),
                           history=state.history, provenance=provenance, config=res.result_config(c))
    if not distributed.is_main():
        return result
    arrays = {f"{m}/{k}": np.asarray(v) for m, e in evaluated.items() for k, v in e.per_example.items()}
    atomic_write_npz(out_dir / "per_example.npz", arrays)
    res.write_result(result, out_dir / "result.json")
    atomic_write_npz(index_path.with_suffix(".npz"), arrays)
    res.write_result(dataclasses.replace(result), index_path)
    return result


def track_result(tracker, result: res.RunResult, *, model, store: SequenceStore, examples: Examples, task) -> None:
    """The tracker's end-of-run payload (after the result is filed: a failure here is
    reported, never a lost run)."""
    try:
        log_final(tracker, result, monitor=task.monitor,
                  attention=lambda: attention_heatmap(model, store, examples, task=task.name))
    except Exception as e:  # noqa: BLE001 - the result is already written and indexed
        log.warning("tracking failed after the result was written (%s: %s); the result stands: %s",
                    type(e).__name__, e, result.path)


# -- pieces of the stages -----------------------------------------------------------------


class _StepLog:
    """Step-level ``train/loss`` (mean since the last log) and ``train/lr`` every ``every`` steps."""

    def __init__(self, tracker, lr_at, *, every: int):
        self.tracker, self.lr_at, self.every, self.pending = tracker, lr_at, every, []

    def add(self, step: int, loss) -> None:
        self.pending.append(loss)
        if step % self.every == 0:
            # the learning rate the step just taken used (optax counts from 0)
            self.tracker.log({STEP_AXIS: step, "train/loss": float(np.mean(jax.device_get(self.pending))),
                              "train/lr": float(self.lr_at(step - 1))})
            self.pending = []


def _train_step(model, optimizer, inputs, targets, key, *, loss, layout=None):
    """One AdamW step. ``layout``: the shardings of ``nnx.state((model, optimizer))`` that the
    updated state must keep (a split item table); None leaves them to XLA (replicated
    state stays replicated)."""
    def loss_fn(m):
        return loss(m, inputs, targets, nnx.Rngs(dropout=key))

    value, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    if layout is not None:
        nnx.update((model, optimizer), jax.lax.with_sharding_constraint(nnx.state((model, optimizer)), layout))
    return value


def training_signal(model, task, state: TrainState, *, init_bias: str = "log_popularity") -> dict[str, float]:
    """What the run's training saw and learnt, filed with every result: optimisation
    steps, training targets (in all and per step) and, with a catalogue, the rank
    correlation of the evaluated checkpoint's catalogue bias with training-target
    popularity and how far the bias moved from its start (``init_bias``; RMS, nats).

    With ``init_bias: zeros`` the correlation shows whether the softmax head learnt
    popularity at all (v0.1's recipe: 0.22); with ``log_popularity`` it starts at 1,
    so there it only shows the bias was not trained away from popularity, and
    ``bias_moved_rms`` shows whether it was trained at all."""
    from attnlab.models.heads import log_popularity_bias
    from attnlab.models.inspection import bias_popularity_correlation

    out = {"steps": state.step, "targets": state.train_targets,
           "targets_per_step": float(state.train_targets) / max(state.step, 1)}
    spec = getattr(task, "summary", None)
    if spec is not None and spec.bgnbd is not None:   # churn, task.summary_bgnbd: the columns' BG/NBD parameters
        out["summary_bgnbd_params"] = {k: float(v) for k, v in zip(("r", "alpha", "a", "b"), spec.bgnbd.as_tuple())}
    if getattr(task, "dropped_pairs", None) is not None:   # task.targets: basket, pairs over a row's width
        out["dropped_target_pairs"] = int(task.dropped_pairs)
    if task.target_counts is not None:
        out["bias_popularity_spearman"] = bias_popularity_correlation(model, task.target_counts)
        seen = np.asarray(task.target_counts)[1:] > 0
        start = (np.asarray(log_popularity_bias(task.target_counts)) if init_bias == "log_popularity"
                 else np.zeros(len(task.target_counts)))
        moved = (np.asarray(model.catalogue.bias[...]) - start)[1:]
        out["bias_moved_rms"] = float(np.sqrt(np.mean(moved[seen] ** 2))) if seen.any() else float("nan")
    return out
