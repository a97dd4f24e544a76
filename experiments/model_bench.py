"""Model-zoo train-step throughput: every family at two history lengths.

Regenerate the table in ``docs/models.md`` (on a quiet machine; prefix ``taskset -c 1``
to pin it to one core when other jobs share the box)::

    python experiments/model_bench.py --write docs/models.md

Quick smoke run (fewer timed steps, smaller batches; prints only)::

    python experiments/model_bench.py --quick

Each cell is one jitted training step exactly like the trainer's (``hidden`` ->
``target_log_prob`` at 8 sampled positions per row -> full-catalogue softmax CE ->
AdamW with clipping) for d_model 64, 2 layers, 2 heads, a 5,000-item catalogue, on
full-length synthetic histories. The batch is ``events_per_step // length`` rows so
every cell processes about the same number of events per step. Reported: the median
over timed steps (after warm-up) of events / second, and the ratio to vanilla at the
same length. Families are timed round-robin (one step of each per round), so load
from other jobs on a shared machine affects all of them alike. Dropout is 0 (it costs the same in every family).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.models import build_model

FAMILIES = {
    "vanilla": {},
    "time_decay": {},
    "sparse": {"attention": {"window": 256, "num_global": 0}},
    "linear": {"encoder": "event_local", "attention": {"chunk": 64}},
    "lstm": {},
}
N_ITEMS = 5000
LOSS_POSITIONS = 8


@dataclasses.dataclass(frozen=True)
class Cell:
    family: str
    length: int
    batch: int
    median_s: float
    events_per_s: float
    compile_s: float


def synthetic_batch(batch: int, length: int, seed: int = 0):
    """Full-length random histories ``[batch, length]`` and 8 target positions per row."""
    rng = np.random.default_rng(seed)
    shape = (batch, length)
    days = -np.sort(rng.random(shape) * 365.0, axis=1)[:, ::-1]
    inputs = {
        "item": rng.integers(1, N_ITEMS + 1, shape).astype(np.int32),
        "event_type": np.ones(shape, np.int32),
        "time": days.astype(np.float32),
        "gap": rng.random(shape).astype(np.float32), "age": rng.random(shape).astype(np.float32),
        "value": rng.random(shape).astype(np.float32), "quantity": rng.random(shape).astype(np.float32),
        "weekday": rng.integers(0, 7, shape).astype(np.int32),
        "hour": rng.integers(0, 24, shape).astype(np.int32),
        "lengths": np.full(batch, length, np.int32),
    }
    index = np.sort(rng.choice(length, (batch, LOSS_POSITIONS)), axis=1).astype(np.int32)
    targets = {"index": index, "item": rng.integers(1, N_ITEMS + 1, index.shape).astype(np.int32)}
    return jax.device_put(inputs), jax.device_put(targets)


def loss_fn(model, inputs, targets):
    h = model.hidden(inputs)
    logp = model.target_log_prob(h, inputs, targets["index"], targets["item"])
    mask = targets["item"] > 0
    return -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


@nnx.jit
def train_step(model, optimizer, inputs, targets):
    value, grads = nnx.value_and_grad(loss_fn)(model, inputs, targets)
    optimizer.update(model, grads)
    return value


class Runner:
    """One family at one length: model, optimiser, batch and its jitted step."""

    def __init__(self, family: str, length: int, *, events_per_step: int):
        self.family, self.length = family, length
        self.batch = max(1, events_per_step // length)
        cfg = {"name": family, "item_head": "softmax", "history_memory": 0, "churn_pool": "last", "d_model": 64, "n_layers": 2, "n_heads": 2, "max_len": length,
               "dropout": 0.0, "item_head": "softmax", **FAMILIES[family]}
        self.model = build_model(cfg, n_items=N_ITEMS, seed=0)
        self.opt = nnx.Optimizer(self.model, optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
                                 wrt=nnx.Param)
        self.inputs, self.targets = synthetic_batch(self.batch, length)
        self.times: list[float] = []
        t0 = time.perf_counter()
        self.step()
        self.compile_s = time.perf_counter() - t0

    def step(self) -> float:
        t0 = time.perf_counter()
        loss = train_step(self.model, self.opt, self.inputs, self.targets)
        loss.block_until_ready()
        if not np.isfinite(float(loss)):
            raise RuntimeError(f"{self.family} at length {self.length}: non-finite loss {float(loss)}")
        return time.perf_counter() - t0

    def cell(self) -> Cell:
        med = statistics.median(self.times)
        return Cell(self.family, self.length, self.batch, med, self.batch * self.length / med, self.compile_s)


def measure_length(families, length: int, *, events_per_step: int, warmup: int, steps: int) -> list[Cell]:
    """Round-robin: each round times one step of every family, so load changes on a
    shared machine hit all families alike."""
    runners = [Runner(f, length, events_per_step=events_per_step) for f in families]
    for _ in range(warmup - 1):
        for r in runners:
            r.step()
    for _ in range(steps):
        for r in runners:
            r.times.append(r.step())
    return [r.cell() for r in runners]


def table(cells: list[Cell]) -> str:
    base = {c.length: c.events_per_s for c in cells if c.family == "vanilla"}
    lines = ["| family | length | batch | median step (ms) | events/s | vs vanilla |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in cells:
        ratio = c.events_per_s / base[c.length] if c.length in base else float("nan")
        lines.append(f"| {c.family} | {c.length} | {c.batch} | {c.median_s * 1e3:.0f} | "
                     f"{c.events_per_s:,.0f} | {ratio:.2f}x |")
    return "\n".join(lines)


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.processor() or platform.machine()}, {cpus} usable core(s), "
            f"jax {jax.__version__} on {jax.default_backend()}")


def write_block(path: pathlib.Path, block: str) -> None:
    """Replace the text between the bench markers in ``path``."""
    text = path.read_text()
    start, end = "<!-- model_bench:start -->", "<!-- model_bench:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path}: add the markers {start} and {end} where the table goes.")
    new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{block}\n{end}",
                 text, flags=re.S)
    path.write_text(new)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, smaller batches (smoke run)")
    p.add_argument("--lengths", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--write", type=pathlib.Path, default=None, help="markdown file with bench markers")
    a = p.parse_args(argv)
    events, warmup, steps = (4000, 1, 3) if a.quick else (16000, 2, 7)
    cells = []
    t_start = time.perf_counter()
    for length in a.lengths:
        for cell in measure_length(a.families, length, events_per_step=events, warmup=warmup, steps=steps):
            print(f"{cell.family:>10} L={length:>5} batch={cell.batch:>3}: {cell.median_s * 1e3:8.1f} ms/step "
                  f"{cell.events_per_s:>10,.0f} events/s (compile {cell.compile_s:.1f} s)", flush=True)
            cells.append(cell)
    out = table(cells)
    cmd = " ".join(["python experiments/model_bench.py", *(argv if argv is not None else sys.argv[1:])])
    block = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; ~{events:,} events per step, "
             f"median of {steps} round-robin timed steps after {warmup} warm-up; total wall "
             f"{time.perf_counter() - t_start:.0f} s. Regenerate: `{cmd}`.\n\n{out}")
    print("\n" + block)
    if a.write is not None:
        write_block(a.write, block)


if __name__ == "__main__":
    main()
