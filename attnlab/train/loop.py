"""``train_and_evaluate(cfg) -> RunResult``: the one library function behind train.py.

Steps: load the cached sequence store -> apply the task's protocol -> score the simple
baselines on the same split -> train the model with AdamW (jit-compiled step, early
stopping on the validation metric, Orbax checkpoints every epoch, resumable) ->
evaluate the best checkpoint on test -> write one results JSON atomically.

Determinism: the epoch's example order is drawn from ``(seed, epoch)`` and dropout keys
from ``(seed, step)``, so a run resumed from its ``latest`` checkpoint reproduces an
uninterrupted run exactly.
"""

from __future__ import annotations

import functools
import itertools
import logging
import resource
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from attnlab.data.pipeline import load_sequences
from attnlab.models import build_model
from attnlab.train import results as res
from attnlab.train.checkpoint import Checkpoints
from attnlab.train.tasks import make_task
from attnlab.train.tracking import make_tracker

log = logging.getLogger(__name__)
logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO


def _peak_rss_mb() -> float:
    """Process peak resident memory so far (MB). Contenders run in sequence in one
    process, so a row's value is the peak up to and including that contender."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _as_dict(cfg) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def make_optimizer(trainer_cfg: dict[str, Any]) -> optax.GradientTransformation:
    """AdamW with linear warm-up (by steps, independent of epoch count) and clipping."""
    lr = float(trainer_cfg["lr"])
    warmup = int(trainer_cfg.get("warmup_steps", 0))
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup else lr
    if warmup:
        schedule = optax.join_schedules([schedule, optax.constant_schedule(lr)], [warmup])
    return optax.chain(
        optax.clip_by_global_norm(float(trainer_cfg.get("grad_clip", 1.0))),
        optax.adamw(schedule, weight_decay=float(trainer_cfg.get("weight_decay", 0.0))),
    )


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
    out_dir.mkdir(parents=True, exist_ok=True)
    tr = c["trainer"]

    # -- data and protocol ----------------------------------------------------------
    store = load_sequences(
        c["data"]["name"], dict(c["data"].get("options") or {}),
        cache_dir=c["paths"]["cache_dir"], progress=progress,
    )
    task = make_task(c["task"])
    split = task.split(store, seed=seed)
    log.info("split %s: %d train customers, %d valid, %d test", task.name,
             int((split.train_end > np.asarray(store.offsets)[:-1]).sum()), len(split.valid), len(split.test))

    provenance = {
        "experiment": c.get("experiment_name") or "default",
        "model": c["model"]["name"],
        "task": task.name,
        "data": c["data"]["name"],
        "seed": seed,
        "config_hash": res.config_hash(c),
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
    for name, fn in task.baselines(store, split).items():
        t0 = time.perf_counter()
        ev = task.evaluate(fn, store, split.test, progress=progress)
        metrics[name] = {**ev.metrics, "wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}
        per_example[name] = ev.per_example

    # -- model ------------------------------------------------------------------------
    mcfg = c["model"]
    max_len = int(mcfg["max_len"])
    batch_size = int(tr["batch_size"])
    model = build_model(mcfg, n_items=store.n_items, seed=seed)
    optimizer = nnx.Optimizer(model, make_optimizer(tr), wrt=nnx.Param)
    task.prepare(store, split)
    step_fn = nnx.jit(functools.partial(_train_step, loss=task.loss))
    score_fn = task.model_scores(model, max_len=max_len, batch_size=int(tr.get("eval_batch_size", 256)))
    ckpts = Checkpoints(out_dir / "checkpoints")
    base_key = jax.random.key(seed)

    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": -1, "bad_epochs": 0,
             "history": [], "train_events": 0, "train_seconds": 0.0}
    if tr.get("resume", True) and ckpts.latest_step() is not None:
        state = ckpts.restore("latest", (model, optimizer))
        log.info("resumed from %s at epoch %d", ckpts.directory, state["epoch"])

    max_epochs = int(tr["max_epochs"])
    patience = int(tr.get("patience", 3))
    monitor = task.monitor
    while state["epoch"] < max_epochs and state["bad_epochs"] < patience:
        epoch = state["epoch"]
        t0 = time.perf_counter()
        losses, events = [], 0
        batches = task.train_batches(store, split, max_len=max_len, batch_size=batch_size, epoch=epoch, seed=seed)
        if tr.get("limit_train_batches"):
            batches = itertools.islice(batches, int(tr["limit_train_batches"]))
        for inputs, targets in tqdm(batches, desc=f"epoch {epoch + 1}/{max_epochs}", disable=not progress,
                                    leave=False, unit="batch"):
            key = jax.random.fold_in(base_key, state["step"])
            losses.append(step_fn(model, optimizer, inputs, targets, key))
            events += int(inputs["lengths"].sum())
            state["step"] += 1
        train_loss = float(np.mean(jax.device_get(losses))) if losses else float("nan")
        train_s = time.perf_counter() - t0
        valid = task.evaluate(score_fn, store, split.valid, progress=False).metrics
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_s": train_s,
                  "events_per_s": events / max(train_s, 1e-9), **{f"valid/{k}": v for k, v in valid.items()}}
        state["history"].append(record)
        state["train_events"] += events
        state["train_seconds"] += train_s
        tracker.log({"train/loss": train_loss, "train/events_per_s": record["events_per_s"],
                     **{f"valid/{k}": v for k, v in valid.items()}}, step=epoch + 1)
        log.info("epoch %d loss %.4f valid %s %.4f (%.1fs)", epoch + 1, train_loss, monitor, valid[monitor], train_s)
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
        best_epoch=state["best_epoch"],
        n_test=len(split.test),
    )
    result = res.RunResult(metrics=metrics, valid=dict(state.get("best_valid", {})),
                           history=state["history"], provenance=provenance)
    res.write_result(result, out_dir / "result.json")
    np.savez_compressed(out_dir / "per_example.npz",
                        **{f"{m}/{k}": v for m, d in per_example.items() for k, v in d.items()})
    tracker.set_summary({f"test/{m}/{k}": v for m, d in metrics.items() for k, v in d.items()})
    tracker.finish()
    return result
