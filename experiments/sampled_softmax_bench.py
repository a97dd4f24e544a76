"""Train-step time of the next-item loss: full-catalogue softmax vs sampled softmax
(``task.sampled_softmax.negatives``), at The Complete Journey's catalogue size, on
synthetic inputs, steps interleaved round-robin so machine-load drift hits both alike.

    python experiments/sampled_softmax_bench.py [--positions 8] [--negatives 1024] [--head copy] [--steps 7]
    FLOOR=1 python experiments/sampled_softmax_bench.py   # + the same model with no catalogue scoring at all
"""
import argparse
import functools
import os
import statistics
import time

import jax
import numpy as np
from flax import nnx

from attnlab.models import build_model
from attnlab.train.loop import _train_step, make_optimizer
from attnlab.train.tasks import NegativeSampler, NextItemTask

ap = argparse.ArgumentParser()
ap.add_argument("--items", type=int, default=68_509)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--length", type=int, default=200)
ap.add_argument("--positions", type=int, default=8)
ap.add_argument("--negatives", type=int, default=1024)
ap.add_argument("--head", default="copy")
ap.add_argument("--steps", type=int, default=7)
a = ap.parse_args()

rng = np.random.default_rng(0)
B, L, V = a.batch, a.length, a.items
counts = np.concatenate([[0], rng.zipf(1.3, V).clip(max=10_000)])
x = {"item": rng.integers(1, V + 1, (B, L)).astype(np.int32), "event_type": np.ones((B, L), np.int32),
     "time": -np.sort(rng.random((B, L)) * 300, axis=1)[:, ::-1].astype(np.float32),
     **{k: rng.random((B, L)).astype(np.float32) for k in ("gap", "age", "value", "quantity")},
     "weekday": rng.integers(0, 7, (B, L)).astype(np.int32), "hour": rng.integers(0, 24, (B, L)).astype(np.int32),
     "lengths": np.full(B, L, np.int32)}
full_t = {"index": np.sort(rng.integers(0, L, (B, a.positions)), 1).astype(np.int32),
          "item": rng.integers(1, V + 1, (B, a.positions)).astype(np.int32)}
sampler = NegativeSampler(counts, proposal="popularity")
neg, logc = sampler.draw(rng, a.negatives)
samp_t = {**full_t, "neg_item": neg, "neg_log_count": logc}

cfg = {"name": "vanilla", "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 64, "n_layers": 2, "n_heads": 2, "max_len": L, "dropout": 0.2,
       "item_head": a.head}
runs = {}
for name, t in [("full", full_t), (f"sampled{a.negatives}", samp_t)]:
    m = build_model(cfg, n_items=V, seed=0)
    opt = nnx.Optimizer(m, make_optimizer({"lr": 1e-3, "weight_decay": 0.01, "warmup": 0.0, "schedule": "constant"}), wrt=nnx.Param)
    step = nnx.jit(functools.partial(_train_step, loss=NextItemTask.loss))
    t0 = time.perf_counter()
    for i in range(2):
        jax.block_until_ready(step(m, opt, x, t, jax.random.key(i)))
    print(f"{name}: compile + 2 warm-up steps {time.perf_counter() - t0:.1f}s", flush=True)
    runs[name] = (m, opt, step, t, [])
for i in range(a.steps):  # round robin, so machine-load drift hits both alike
    for name, (m, opt, step, t, times) in runs.items():
        t0 = time.perf_counter()
        jax.block_until_ready(step(m, opt, x, t, jax.random.key(100 + i)))
        times.append(time.perf_counter() - t0)
med = {k: statistics.median(v[4]) for k, v in runs.items()}
print(f"items {V}, d_model 64, 2 layers, batch {B}, length {L}, {a.positions} loss positions/row, head {a.head}, "
      f"jax {jax.__version__} {jax.default_backend()}")
for k, v in med.items():
    print(f"  {k:>14}: median step {v * 1000:.0f} ms  (all: {', '.join(f'{s*1000:.0f}' for s in runs[k][4])})")
names = list(med)
print(f"  speed-up full/sampled: {med[names[0]] / med[names[1]]:.2f}x")

if a.steps and os.environ.get("FLOOR"):
    # floor: same model and optimizer, churn loss (no catalogue scoring at all)
    from attnlab.train.tasks import ChurnTask
    m = build_model(cfg, n_items=V, seed=0)
    opt = nnx.Optimizer(m, make_optimizer({"lr": 1e-3, "weight_decay": 0.01, "warmup": 0.0, "schedule": "constant"}), wrt=nnx.Param)
    step = nnx.jit(functools.partial(_train_step, loss=ChurnTask.loss))
    y = np.zeros(B, np.float32)
    for i in range(2):
        jax.block_until_ready(step(m, opt, x, y, jax.random.key(i)))
    ts = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(m, opt, x, y, jax.random.key(100 + i)))
        ts.append(time.perf_counter() - t0)
    print(f"  floor (churn loss, no catalogue): median step {statistics.median(ts) * 1000:.0f} ms")
