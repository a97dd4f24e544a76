"""Million-item catalogues: chunked full-ranking evaluation and a sampled-softmax training step.

    python experiments/eval_bench.py [--items 1000000] [--customers 1024] [--chunk 16384] [--out docs/scaling.md]

Every configuration runs in a fresh subprocess, so peaks are not shared: "peak RSS" is
that process's ``ru_maxrss`` (model build, compilation and evaluation together), "added
by eval" the largest current RSS sampled every 2 ms during the timed evaluation minus
the RSS just before it. On synthetic random histories (no data files): each customer
has ``max_len + 10`` purchases in baskets of 5, half from a personal pool of 30 items
(repeats, what the copy head points at), half Zipf-popular items of the whole catalogue;
the target is the last purchase. Model: vanilla, d_model 64, 2 layers, max_len 50,
``history_memory: 0``, random init (scores are not meant to be good, only computed).

Rows:
* ``check``: at ``--check-items`` (both fit) the chunked evaluation (chunk
  ``--check-chunk``, not dividing the catalogue) against (a) the unchunked evaluator on
  the same scorer's full matrix: ranks must be identical (asserted), and (b) today's
  unchunked model path (``next_item_scores``): identical ranks or, where not, a
  difference explained by fp32 near-ties (items within the largest score difference of
  the target; asserted), with the largest score difference.
* ``eval``: ``--customers`` customers at ``--items`` (after one untimed warm-up batch of
  256 that compiles), chunked (``--chunk``, then the ``--chunk-sweep`` sizes for the first
  head), and unchunked for contrast (one batch).
* ``train``: one sampled-softmax training step (``task.sampled_softmax.negatives`` shared
  negatives, popularity proposal, logQ correction; trainer defaults: batch 64) at
  ``--items``, through the task's own ``train_batches`` (NegativeSampler over the whole
  catalogue): first step (compile) and the median of 3 more; "added" includes the
  compilation and the optimizer's dense Adam update of the ``[n_items + 1, d]`` table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

MAX_LEN = 50
EVAL_BATCH = 256


def model_cfg(head: str) -> dict:
    return {"name": "vanilla", "d_model": 64, "n_layers": 2, "n_heads": 2, "max_len": MAX_LEN, "dropout": 0.0,
            "item_head": head, "history_memory": 0, "churn_pool": "last", "encoder": "causal"}


def synthetic_store(n_items: int, n_customers: int, seed: int = 0):
    """Random purchase histories over ``n_items`` items (see the module docstring)."""
    from attnlab.data.schema import EventType
    from attnlab.data.sequences import SequenceStore

    rng = np.random.default_rng(seed)
    per = MAX_LEN + 10
    n = n_customers * per
    perm = rng.permutation(n_items) + 1
    popular = perm[np.minimum(rng.zipf(1.2, n) - 1, n_items - 1)]
    pools = perm[np.minimum(rng.zipf(1.2, (n_customers, 30)) - 1, n_items - 1)]
    own = pools[np.repeat(np.arange(n_customers), per), rng.integers(0, 30, n)]
    item = np.where(rng.random(n) < 0.5, own, popular).astype(np.int32)
    pos = np.tile(np.arange(per), n_customers)
    basket = np.repeat(np.arange(n_customers), per) * per + pos // 5
    time_s = 1_600_000_000 + (pos // 5) * 3 * 86_400 + pos % 5
    return SequenceStore(
        offsets=np.arange(n_customers + 1, dtype=np.int64) * per,
        customer_ids=np.arange(n_customers, dtype=np.int64), item=item, time=time_s.astype(np.int64),
        event_type=np.full(n, int(EventType.PURCHASE), np.int8), basket=basket.astype(np.int64),
        quantity=np.ones(n, np.float32), value=np.ones(n, np.float32),
        item_vocab=np.arange(-1, n_items, dtype=np.int64), meta={"source": "eval_bench"})


def last_item_examples(store, customers: np.ndarray):
    """Target = each customer's last purchase, history = everything before it."""
    from attnlab.data.splits import Examples

    end = store.offsets[customers + 1] - 1
    return Examples(customer=customers, end=end, cutoff=store.time[end],
                    target_offsets=np.arange(len(customers) + 1, dtype=np.int64),
                    target_items=store.item[end].astype(np.int32))


def peak_rss_gib() -> float:
    """The process's peak RSS so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class RssSampler:
    """Largest current RSS (``/proc/self/statm``) seen every 2 ms while the block runs: the
    peak of one stage, which ``ru_maxrss`` hides when an earlier stage peaked higher."""

    def __enter__(self):
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page / 2**30

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


# --------------------------------------------------------------------------- children


def child_eval(a: dict) -> dict:
    from attnlab.eval import evaluate_next_item
    from attnlab.models import build_model
    from attnlab.train.tasks import NextItemTask

    store = synthetic_store(a["items"], EVAL_BATCH + a["customers"])
    model = build_model(model_cfg(a["head"]), n_items=a["items"], seed=0)
    scorer = NextItemTask({}).model_scores(model, max_len=MAX_LEN, batch_size=EVAL_BATCH, item_chunk=a["chunk"])
    warm = last_item_examples(store, np.arange(EVAL_BATCH))
    evaluate_next_item(scorer, store, warm, progress=False)  # compiles
    ex = last_item_examples(store, np.arange(EVAL_BATCH, EVAL_BATCH + a["customers"]))
    with RssSampler() as rss:
        t0 = time.perf_counter()
        res = evaluate_next_item(scorer, store, ex, batch_size=EVAL_BATCH, progress=False)
        sec = time.perf_counter() - t0
    return {"s_per_1000": sec / a["customers"] * 1000, "peak_gib": peak_rss_gib(), "eval_rss_gib": rss.peak,
            "eval_added_gib": rss.peak - rss.start, "hr@10": res.metrics["hr@10"], "seconds": sec}


def child_check(a: dict) -> dict:
    from attnlab.eval import evaluate_next_item
    from attnlab.models import build_model
    from attnlab.train.tasks import NextItemTask

    store = synthetic_store(a["items"], a["customers"])
    model = build_model(model_cfg(a["head"]), n_items=a["items"], seed=0)
    task = NextItemTask({})
    full = task.model_scores(model, max_len=MAX_LEN, batch_size=EVAL_BATCH, item_chunk=0)
    chunked = task.model_scores(model, max_len=MAX_LEN, batch_size=EVAL_BATCH, item_chunk=a["chunk"])
    ex = last_item_examples(store, np.arange(a["customers"]))
    r_full = evaluate_next_item(full, store, ex, progress=False).per_example["rank"]
    r_chunk = evaluate_next_item(chunked, store, ex, progress=False).per_example["rank"]
    r_same = evaluate_next_item(lambda st, e: chunked(st, e), store, ex, progress=False).per_example["rank"]
    if not np.array_equal(r_same, r_chunk):
        raise AssertionError("chunked evaluator != unchunked evaluator on the same scores")
    s_full, s_chunk = full(store, ex)[:, 1:], chunked(store, ex)[:, 1:]
    tol = float(np.abs(s_full - s_chunk).max())
    rows = np.flatnonzero(r_full != r_chunk)
    t = ex.target_items.astype(np.int64) - 1
    near = [int((np.abs(s_full[r] - s_full[r, t[r]]) <= tol).sum() - 1) for r in rows]
    unexplained = [int(r) for r, k in zip(rows, near) if abs(r_full[r] - r_chunk[r]) > k]
    if unexplained:
        raise AssertionError(f"rank differences beyond fp32 near-ties in rows {unexplained}")
    return {"same_scores_identical": True, "rows_identical": int((r_full == r_chunk).sum()), "rows": len(ex),
            "max_abs_score_diff": tol, "max_rank_diff": int(np.abs(r_full - r_chunk).max()),
            "hr@10": float((r_chunk <= 10).mean())}


def child_train(a: dict) -> dict:
    import functools

    import jax
    from flax import nnx

    from attnlab.models import build_model
    from attnlab.train.loop import _train_step
    from attnlab.train.optim import TrainerConfig, make_optimizer
    from attnlab.train.tasks import NextItemTask

    store = synthetic_store(a["items"], 2_000)
    task = NextItemTask({})
    split = task.split(store, seed=0)
    task.prepare(store, split)
    assert task.sampler is not None, "sampled softmax is off"
    model = build_model(model_cfg(a["head"]), n_items=a["items"], seed=0)
    model.init_catalogue_bias(task.target_counts)
    tr = TrainerConfig()
    opt = nnx.Optimizer(model, make_optimizer(tr, total_steps=100), wrt=nnx.Param)
    step = nnx.jit(functools.partial(_train_step, loss=NextItemTask.loss))
    batches = task.train_batches(store, split, max_len=MAX_LEN, batch_size=tr.batch_size, epoch=0, seed=0)
    times = []
    with RssSampler() as rss:
        for i in range(4):
            inputs, targets = next(batches)
            t0 = time.perf_counter()
            jax.block_until_ready(step(model, opt, inputs, targets, jax.random.key(i)))
            times.append(time.perf_counter() - t0)
    return {"first_step_s": times[0], "step_s": statistics.median(times[1:]), "peak_gib": peak_rss_gib(),
            "step_added_gib": rss.peak - rss.start, "batch": tr.batch_size, "negatives": len(targets["neg_item"])}


CHILDREN = {"eval": child_eval, "check": child_check, "train": child_train}

# --------------------------------------------------------------------------- parent


def run_child(kind: str, **a) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps({"kind": kind, **a})],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{kind} {a} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    print(f"  {kind} {a}: {res}", flush=True)
    return res


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def table(rows: list[list[str]]) -> str:
    head = ["configuration", "items", "head", "chunk", "peak RSS GiB", "added by eval GiB", "time", "check"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=16_384)
    ap.add_argument("--check-items", type=int, default=50_000)
    ap.add_argument("--check-chunk", type=int, default=8_192)
    ap.add_argument("--heads", default="softmax,copy")
    ap.add_argument("--chunk-sweep", default="4096,65536,262144",
                    help="other chunk sizes timed for the first head ('' = none)")
    ap.add_argument("--no-unchunked", action="store_true", help="skip the unchunked contrast row")
    ap.add_argument("--out", default=None, help="write the table into this markdown file (between markers)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        spec = json.loads(a.child)
        print(json.dumps(CHILDREN[spec.pop("kind")](spec)))
        return

    import jax

    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    heads = a.heads.split(",")
    rows = []

    def eval_row(what: str, head: str, chunk: int, customers: int, check: str) -> None:
        r = run_child("eval", items=a.items, customers=customers, head=head, chunk=chunk)
        if check == "bound":
            check = "peak <= 2 GiB" if r["peak_gib"] <= 2.0 else "**peak > 2 GiB**"
        rows.append([f"{what}, {customers:,} customers (batch {EVAL_BATCH})", f"{a.items:,}", head,
                     f"{chunk:,}" if chunk else "-", f"{r['peak_gib']:.2f}", f"{r['eval_added_gib']:.2f}",
                     f"{r['s_per_1000']:.1f} s / 1,000 customers", check])

    for head in heads:
        r = run_child("check", items=a.check_items, customers=EVAL_BATCH, head=head, chunk=a.check_chunk)
        same = "ranks identical to the unchunked evaluator on the same scores (asserted)"
        model = (f"and to the unchunked model path in {r['rows_identical']}/{r['rows']} rows"
                 + ("" if r["rows_identical"] == r["rows"] else
                    f" (max rank difference {r['max_rank_diff']}, explained by fp32 near-ties)")
                 + f"; max score difference {r['max_abs_score_diff']:.1e}")
        rows.append([f"check, {EVAL_BATCH} customers", f"{a.check_items:,}", head, f"{a.check_chunk:,}", "", "", "",
                     f"{same} {model}"])
    for head in heads:
        eval_row("eval chunked", head, a.chunk, a.customers, "bound")
    for chunk in [int(c) for c in a.chunk_sweep.split(",") if c]:
        eval_row("eval chunked", heads[0], chunk, a.customers, "chunk sweep")
    for head in ([] if a.no_unchunked else heads):
        eval_row("eval unchunked (the full-matrix path)", head, 0, EVAL_BATCH, "contrast")
    for head in heads:
        r = run_child("train", items=a.items, head=head)
        rows.append([f"train step, sampled softmax ({r['negatives']} negatives, batch {r['batch']})",
                     f"{a.items:,}", head, "-", f"{r['peak_gib']:.2f}", f"{r['step_added_gib']:.2f}",
                     f"{r['step_s']:.2f} s / step (first, with compile: {r['first_step_s']:.1f} s)", ""])
    hw = (f"{cpu_name()}, {os.cpu_count()} cores (shared); jax {jax.__version__} {jax.default_backend()}; "
          f"load average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}; "
          f"bench wall time {time.perf_counter() - t_start:.0f} s")
    cmd = "python experiments/eval_bench.py " + " ".join(sys.argv[1:])
    md = f"Command: `{cmd.strip()}`\n\nHardware: {hw}\n\n{table(rows)}\n"
    print("\n" + md)
    if a.out:
        write_between_markers(a.out, md)


BEGIN, END = "<!-- eval_bench:begin -->", "<!-- eval_bench:end -->"


def write_between_markers(path: str, md: str) -> None:
    """Replace the text between the bench markers of ``path`` (append them if absent)."""
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{BEGIN}\n{md}{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
