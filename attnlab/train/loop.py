"""``train_and_evaluate(cfg) -> RunResult``: the one library function behind train.py.

Steps: load the cached sequence store -> apply the task's protocol -> score the simple
baselines on the same split -> train the model with AdamW (jit-compiled step, early
stopping on the validation metric, Orbax checkpoints every epoch, resumable) ->
evaluate the best checkpoint on test -> write one results JSON atomically.

Sweeps: every finished run is also filed in a results index,
``<paths.results_dir>/<experiment>/<config_hash>.json`` (+ ``.npz`` per-example metrics),
keyed by the hash of the resolved config (seed included; paths, logging and resume
switches excluded). With ``trainer.skip_completed`` a run whose entry exists for the same
data fingerprint is not re-run: its stored result is returned. ``experiments/train.py``
turns this on under Hydra multirun, so a sweep killed half way and relaunched skips what
finished and resumes the interrupted job from its ``latest`` checkpoint (the multirun
directory is stable, see ``configs/config.yaml``). ``experiments/benchmark.py`` reads
the index to build tables.

Determinism: the epoch's example order is drawn from ``(seed, epoch)`` and dropout keys
from ``(seed, step)``, so a run resumed from its ``latest`` checkpoint reproduces an
uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import resource
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from attnlab.data.pipeline import load_sequences
from attnlab.models import build_model
from attnlab.train import results as res
from attnlab.train.checkpoint import Checkpoints
from attnlab.train.config_check import check_config
from attnlab.train.optim import TrainerConfig, lr_schedule, make_optimizer
from attnlab.train.run_dir import RunLock
from attnlab.train.tasks import check_split, make_task
from attnlab.train.tracking import EPOCH_AXIS, STEP_AXIS, define_axes, is_count, make_tracker

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


def results_dir(c: dict[str, Any]) -> Path:
    """The results index root: ``paths.results_dir``, else ``<paths.root>/results``."""
    paths = c.get("paths") or {}
    return Path(paths.get("results_dir") or Path(paths.get("root", "outputs")) / "results").absolute()


def log_run_artifacts(tracker, result: res.RunResult, *, task_monitor: str) -> None:
    """The end-of-run W&B payload: the test metrics as a table (one row per contender) and
    the learning curves as an image."""
    names = list(result.metrics)
    cols = sorted({k for d in result.metrics.values() for k in d})
    tracker.log_table("test/metrics", ["contender", *cols],
                      [[n, *[result.metrics[n].get(k) for k in cols]] for n in names])
    if result.history:
        from attnlab.report.plots import learning_curves

        p = result.provenance
        fig = learning_curves(result.history, monitor=task_monitor,
                              title=f"{p['model']} on {p['data']}/{p['task']}, seed {p['seed']}")
        tracker.log_figure("plots/learning_curves", fig)


def log_attention_heatmap(tracker, model, store, examples, *, task: str, row: int = 0) -> None:
    """The attention heatmap of one test customer (recomputed through the reference op),
    as the image ``plots/attention``; families without softmax weights log nothing."""
    from attnlab.explain import NoAttentionWeightsError, TimeReference, explain_example, plot_attention_heatmap

    if len(examples) == 0:
        return
    ref = TimeReference.CUTOFF if task == "churn" else TimeReference.LATEST_EVENT
    try:
        explanation = explain_example(model, store, examples, row, time_reference=ref)
    except NoAttentionWeightsError as e:
        log.info("no attention heatmap: %s", e)
        return
    fig = plot_attention_heatmap(explanation)
    tracker.log_figure("plots/attention", fig)


def _peak_rss_mb() -> float:
    """Process peak resident memory so far (MB). Contenders run in sequence in one
    process, so a row's value is the peak up to and including that contender."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _as_dict(cfg) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def training_signal(model, task, state: dict[str, Any], *, init_bias: str = "log_popularity") -> dict[str, float]:
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

    steps = int(state["step"])
    out = {"steps": steps, "targets": int(state["train_targets"]),
           "targets_per_step": float(state["train_targets"]) / max(steps, 1)}
    if task.target_counts is not None:
        out["bias_popularity_spearman"] = bias_popularity_correlation(model, task.target_counts)
        seen = np.asarray(task.target_counts)[1:] > 0
        start = (np.asarray(log_popularity_bias(task.target_counts)) if init_bias == "log_popularity"
                 else np.zeros(len(task.target_counts)))
        moved = (np.asarray(model.catalogue.bias[...]) - start)[1:]
        out["bias_moved_rms"] = float(np.sqrt(np.mean(moved[seen] ** 2))) if seen.any() else float("nan")
    return out


def _train_step(model, optimizer, inputs, targets, key, *, loss):
    def loss_fn(m):
        return loss(m, inputs, targets, nnx.Rngs(dropout=key))

    value, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return value


def train_and_evaluate(cfg: DictConfig | dict[str, Any]) -> res.RunResult:
    """Run one experiment end to end. See the module docstring and ``configs/``."""
    t_start = time.perf_counter()
    c = _as_dict(cfg)
    seed = int(c["seed"])
    progress = bool(c.get("progress", True))
    out_dir = Path(c["paths"]["output_dir"]).absolute()
    # config mistakes fail before any work: unknown keys, out-of-range values
    tr = TrainerConfig.from_dict(c["trainer"])
    check_config(c)
    task = make_task(c["task"])
    # one live run per folder: a second launch into it is refused, a dead owner's lock taken over
    # (checkpoint managers are closed on the way out, also when the run fails)
    with RunLock(out_dir), contextlib.ExitStack() as cleanup:
        return _run(c, tr, task, seed=seed, progress=progress, out_dir=out_dir, t_start=t_start,
                    cleanup=cleanup)


def _run(c: dict[str, Any], tr: TrainerConfig, task, *, seed: int, progress: bool, out_dir: Path,
         t_start: float, cleanup: contextlib.ExitStack) -> res.RunResult:
    # -- data and protocol ----------------------------------------------------------
    store = load_sequences(
        c["data"]["name"], dict(c["data"].get("options") or {}),
        cache_dir=c["paths"]["cache_dir"], progress=progress,
    )
    index_path = res.completed_path(results_dir(c), c)
    done = res.try_read_result(index_path) if tr.skip_completed and index_path.exists() else None
    if done is not None:
        if done.provenance.get("data_fingerprint") == store.fingerprint:
            log.info("skipping: this exact run (config %s, seed %d) is already complete: %s",
                     res.config_hash(c), seed, index_path)
            # the run folder gets the stored result too, so tools that read run folders
            # (best_trial.py, the insight collectors) see every run of a relaunched sweep
            npz = index_path.with_suffix(".npz")
            if npz.exists():
                res.atomic_copy(npz, out_dir / "per_example.npz")
            res.write_result(dataclasses.replace(done), out_dir / "result.json")
            done.provenance["skipped"] = True
            return done
        log.warning("re-running %s: it was computed on different data (fingerprint %s, now %s)",
                    index_path, done.provenance.get("data_fingerprint"), store.fingerprint)
    split = task.split(store, seed=seed)
    log.info("split %s: %d train customers, %d valid, %d test", task.name,
             int((split.train_end > np.asarray(store.offsets)[:-1]).sum()), len(split.valid), len(split.test))
    check_split(task, store, split)  # no train / valid / test examples: an error, never an n = 0 result
    mcfg = c["model"]
    max_len = int(mcfg["max_len"])
    batch_size = int(tr.batch_size)
    task.prepare(store, split)
    steps_per_epoch = task.steps_per_epoch(store, split, max_len=max_len, batch_size=batch_size)
    if tr.limit_train_batches:
        steps_per_epoch = min(steps_per_epoch, int(tr.limit_train_batches))
    if steps_per_epoch == 0:
        raise ValueError(f"task={task.name}: the split has no training windows (split report: "
                         f"{split.report}); use more data or an earlier cut-off.")

    provenance = {
        "experiment": c.get("experiment_name") or "default",
        "model": c["model"]["name"],
        "task": task.name,
        "data": c["data"]["name"],
        "seed": seed,
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
    tracker = make_tracker(c.get("logger"), config={**c, "provenance": provenance}, directory=str(out_dir))

    # -- baselines on the same split ------------------------------------------------
    metrics: dict[str, dict[str, float]] = {}
    per_example: dict[str, dict[str, np.ndarray]] = {}
    for name, fitted in task.baselines(store, split).items():
        t0 = time.perf_counter()
        ev = task.evaluate(fitted.predict, store, split.test, progress=progress)
        metrics[name] = {**ev.metrics, "fit_s": fitted.fit_s,
                         "wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}
        per_example[name] = ev.per_example

    # -- model ------------------------------------------------------------------------
    model = build_model(mcfg, n_items=store.n_items, seed=seed)
    if tr.init_bias == "log_popularity" and task.target_counts is not None:
        model.init_catalogue_bias(task.target_counts)
    # the schedule's length: the step budget, else max_epochs whole passes
    total_steps = int(tr.max_steps) if tr.max_steps else int(tr.max_epochs) * steps_per_epoch
    max_epochs = int(tr.max_epochs) if tr.max_epochs else -(-total_steps // steps_per_epoch)
    optimizer = nnx.Optimizer(model, make_optimizer(tr, total_steps=total_steps), wrt=nnx.Param)
    step_fn = nnx.jit(functools.partial(_train_step, loss=task.loss))
    score_fn = task.model_scores(model, max_len=max_len, batch_size=int(tr.eval_batch_size))
    ckpts = Checkpoints(out_dir / "checkpoints")
    cleanup.callback(ckpts.close)
    base_key = jax.random.key(seed)
    log.info("training budget: %d steps (%d per pass over the training windows, at most %d passes), "
             "batch %d", total_steps, steps_per_epoch, max_epochs, batch_size)

    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": -1, "bad_epochs": 0,
             "history": [], "train_events": 0, "train_targets": 0, "train_seconds": 0.0, "total_steps": total_steps}
    resume_key = res.config_hash(c, ignore=res.NOT_RESULTS + ("trainer.max_epochs", "trainer.patience"))
    state["resume_key"] = resume_key
    state["data_fingerprint"] = store.fingerprint
    if not tr.resume:
        ckpts.discard()  # start fresh: earlier checkpoints in this folder are moved aside
    if tr.resume and ckpts.latest_step() is not None:
        state = ckpts.restore("latest", (model, optimizer))
        if state.get("resume_key", resume_key) != resume_key:
            raise RuntimeError(
                f"the checkpoint in {ckpts.directory} was written by a different config "
                f"(key {state['resume_key']}, this run {resume_key}); only trainer.max_epochs and "
                "trainer.patience may change on resume. Use a new output dir or delete it.")
        if state.get("data_fingerprint", store.fingerprint) != store.fingerprint:
            raise RuntimeError(
                f"the checkpoint in {ckpts.directory} was trained on different data (fingerprint "
                f"{state['data_fingerprint']}, now {store.fingerprint}); delete {ckpts.directory} "
                "to train afresh on the current data.")
        if state.get("total_steps", total_steps) != total_steps:
            raise RuntimeError(
                f"the checkpoint in {ckpts.directory} follows a learning-rate schedule of "
                f"{state['total_steps']} steps, this config one of {total_steps} (with "
                "trainer.max_steps=null the schedule length is max_epochs passes); resume with the "
                f"same budget (trainer.max_steps={state['total_steps']}) or delete {ckpts.directory}.")
        if state["epoch"] > max_epochs:
            raise RuntimeError(
                f"the checkpoint in {ckpts.directory} has trained {state['epoch']} epochs, more than "
                f"trainer.max_epochs={max_epochs}; it cannot be resumed as a shorter run. Delete "
                f"{ckpts.directory} (or use a new output dir) to train {max_epochs} epochs.")
        state.update(resume_key=resume_key, data_fingerprint=store.fingerprint, total_steps=total_steps)
        log.info("resumed from %s at epoch %d (step %d)", ckpts.directory, state["epoch"], state["step"])

    monitor = task.monitor
    define_axes(tracker, monitor=monitor)
    log_every = max(int((c.get("logger") or {}).get("log_every_steps") or 10), 1)
    lr_at = lr_schedule(tr, total_steps)
    pending: list = []  # step losses since the last step-level log
    while (state["epoch"] < max_epochs and state["step"] < total_steps
           and state["bad_epochs"] < int(tr.patience)):
        epoch = state["epoch"]
        t0 = time.perf_counter()
        losses, events = [], 0
        n_steps = min(steps_per_epoch, total_steps - state["step"])
        batches = task.train_batches(store, split, max_len=max_len, batch_size=batch_size, epoch=epoch, seed=seed,
                                     memory=model.history_memory)
        batches = itertools.islice(batches, n_steps)
        for inputs, targets in tqdm(batches, desc=f"epoch {epoch + 1}/{max_epochs}", disable=not progress,
                                    leave=False, unit="batch", total=n_steps):
            key = jax.random.fold_in(base_key, state["step"])
            losses.append(step_fn(model, optimizer, inputs, targets, key))
            events += int(inputs["lengths"].sum())
            state["train_targets"] += task.n_targets(targets)
            state["step"] += 1
            pending.append(losses[-1])
            if state["step"] % log_every == 0:
                # the learning rate the step just taken used (optax counts from 0)
                tracker.log({STEP_AXIS: state["step"], "train/loss": float(np.mean(jax.device_get(pending))),
                             "train/lr": float(lr_at(state["step"] - 1))})
                pending = []
        train_loss = float(np.mean(jax.device_get(losses))) if losses else float("nan")
        train_s = time.perf_counter() - t0
        valid = task.evaluate(score_fn, store, split.valid, progress=False).metrics
        if monitor not in valid:
            raise KeyError(f"task.monitor={monitor!r} is not a validation metric of task={task.name}; "
                           f"available: {sorted(valid)}.")
        if not np.isfinite(valid[monitor]):
            raise ValueError(f"validation {monitor} is {valid[monitor]} after epoch {epoch + 1}: no checkpoint "
                             "can be chosen on it (e.g. no validation rows it is defined on); pick another "
                             "task.monitor or check the split report.")
        record = {"epoch": epoch + 1, "step": state["step"], "train_loss": train_loss, "train_s": train_s,
                  "events_per_s": events / max(train_s, 1e-9), **{f"valid/{k}": v for k, v in valid.items()}}
        state["history"].append(record)
        state["train_events"] += events
        state["train_seconds"] += train_s
        tracker.log({EPOCH_AXIS: epoch + 1, "epoch/train_loss": train_loss,
                     "perf/train_events_per_s": record["events_per_s"], "perf/peak_rss_mb": _peak_rss_mb(),
                     **{f"valid/{k}": v for k, v in valid.items() if not is_count(k)}})
        # counts (valid/n, ...) do not change from epoch to epoch: summary values, not curves
        tracker.set_summary({f"valid/{k}": v for k, v in valid.items() if is_count(k)})
        log.info("epoch %d (step %d/%d) loss %.4f valid %s %.4f (%.1fs)", epoch + 1, state["step"],
                 total_steps, train_loss, monitor, valid[monitor], train_s)
        state["epoch"] = epoch + 1
        if state["best"] is None or valid[monitor] > state["best"]:
            state.update(best=float(valid[monitor]), best_epoch=epoch + 1, bad_epochs=0, best_valid=valid)
            ckpts.save("best", epoch + 1, (model, optimizer), state)
        else:
            state["bad_epochs"] += 1
        ckpts.save("latest", epoch + 1, (model, optimizer), state)

    # -- test with the best checkpoint --------------------------------------------------
    if ckpts.latest_step("best") is not None:
        ckpts.restore("best", (model, optimizer))
    t0 = time.perf_counter()
    ev = task.evaluate(score_fn, store, split.test, progress=progress)
    metrics["model"] = {**ev.metrics, "wall_s": time.perf_counter() - t0,
                        "train_s": state["train_seconds"], "peak_rss_mb": _peak_rss_mb()}
    per_example["model"] = ev.per_example
    ckpts.close()

    provenance.update(
        wall_s=time.perf_counter() - t_start,
        train_events_per_s=state["train_events"] / max(state["train_seconds"], 1e-9),
        epochs_trained=state["epoch"],
        steps_trained=state["step"],
        total_steps=total_steps,
        training_signal=training_signal(model, task, state, init_bias=tr.init_bias),
        best_epoch=state["best_epoch"],
        n_test=len(split.test),
    )
    result = res.RunResult(metrics=metrics, valid=dict(state.get("best_valid", {})),
                           history=state["history"], provenance=provenance, config=res.result_config(c))
    arrays = {f"{m}/{k}": np.asarray(v) for m, d in per_example.items() for k, v in d.items()}
    res.atomic_write_npz(out_dir / "per_example.npz", arrays)
    res.write_result(result, out_dir / "result.json")
    # the index entry last: its JSON existing means the run is complete
    res.atomic_write_npz(index_path.with_suffix(".npz"), arrays)
    res.write_result(dataclasses.replace(result), index_path)
    # Tracking after the result is filed: a failure here is reported, never a lost run.
    try:
        log_run_artifacts(tracker, result, task_monitor=monitor)
        if getattr(tracker, "wants_media", False):
            log_attention_heatmap(tracker, model, store, split.test, task=task.name)
        tracker.set_summary({f"test/{m}/{k}": v for m, d in metrics.items() for k, v in d.items()})
    except Exception as e:  # noqa: BLE001 - the result is already written and indexed
        log.warning("tracking failed after the result was written (%s: %s); the result stands: %s",
                    type(e).__name__, e, index_path)
    finally:
        tracker.finish()
    return result
