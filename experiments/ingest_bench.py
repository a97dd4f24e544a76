"""Out-of-core ingest benchmark (issue 15, part 4): N synthetic events as Parquet ->
``parquet_stream`` -> a memory-mapped SequenceStore, twice, each build in a fresh
process (so ``ru_maxrss`` is that build's peak).

    python experiments/ingest_bench.py                      # 100M events (tens of minutes)
    python experiments/ingest_bench.py --events 10000000    # quicker

Writes the Parquet file (or reuses it when it exists with N rows) under ``--data-dir``
(default ``/tmp/attnlab_ingest``, never the repository), then runs ``load_sequences(
"parquet_stream", ..., refresh=True)`` into a separate cache directory per run and
reports: events, Parquet bytes on disk, write seconds, ingest seconds, rows/s and peak
RSS per run, and whether the fingerprints and every array's CRC-32 agree across the
runs. The Markdown table is printed and written to ``docs/ingest_bench.md``. Target:
peak RSS <= 4 GiB at 100M events.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RSS_GIB = 4.0


def _peak_rss_bytes() -> int:
    """This process's peak resident set: ``VmHWM`` from /proc (the high-water mark of this
    program's own address space), else ``ru_maxrss``. (``ru_maxrss`` of a process started
    with vfork+exec also holds the *parent's* peak at the exec, on Linux: after writing a
    100M-row file the parent's peak would be reported for the child.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover -- not Linux
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _child(args) -> None:
    """One ingest in this (fresh) process; prints a JSON line."""
    from attnlab.data.pipeline import load_sequences
    from attnlab.data.synthetic_parquet import COLUMNS

    opts = {"path": args.data, "columns": COLUMNS, "batch_rows": args.batch_rows,
            "memory_budget_mb": args.memory_budget_mb}
    t0 = time.perf_counter()
    store = load_sequences("parquet_stream", opts, cache_dir=args.cache, refresh=True,
                           progress=False)
    seconds = time.perf_counter() - t0
    rss = _peak_rss_bytes()
    entry = Path(store.meta["cache"]["path"])
    arrays = json.loads((entry / "meta.json").read_text())["arrays"]
    print(json.dumps({
        "seconds": seconds, "peak_rss_bytes": rss, "fingerprint": store.fingerprint,
        "crc32": {k: v["crc32"] for k, v in arrays.items()},
        "store_bytes": sum(v["nbytes"] for v in arrays.values()),
        "counts": store.meta["counts"], "out_of_core": store.meta["out_of_core"],
        "repairs": {r["code"]: r["count"] for r in store.meta["repairs"] if r["count"]},
        "memmap": type(store.item).__name__,
    }))


def _write(args, path: Path) -> dict:
    import pyarrow.parquet as pq

    from attnlab.data.synthetic_parquet import write_synthetic_parquet

    side = path.with_name(path.name + ".json")
    if path.exists() and side.exists() and pq.ParquetFile(path).metadata.num_rows == args.events:
        info = json.loads(side.read_text())
        info["reused"] = True
        return info
    print(f"writing {args.events:,} events to {path} ...", flush=True)
    info = write_synthetic_parquet(path, n_events=args.events, n_items=args.n_items,
                                   block_customers=args.block_customers, seed=args.seed,
                                   progress=True)
    side.write_text(json.dumps(info))
    info["reused"] = False
    return info


def _table(args, info: dict, runs: list[dict]) -> str:
    gib = 2**30
    same_fp = len({r["fingerprint"] for r in runs}) == 1
    same_crc = all(r["crc32"] == runs[0]["crc32"] for r in runs)
    lines = [
        "# Out-of-core ingest benchmark (`parquet_stream`)",
        "",
        f"Command: `python experiments/ingest_bench.py --events {args.events}"
        + (f" --memory-budget-mb {args.memory_budget_mb:g}"
           if args.memory_budget_mb != 1024 else "")
        + "`  ",
        f"Machine: {os.cpu_count()} CPU cores, {platform.platform()}, Python "
        f"{platform.python_version()}; 1-min load average {info['load'][0]:.1f} before the "
        f"runs, {info['load'][1]:.1f} after (other jobs share the cores); each ingest in a "
        "fresh process "
        f"(`load_sequences(..., refresh=True)`, including the CRC-verified reopen); peak RSS = "
        "the build process's `VmHWM`.  ",
        f"Input: synthetic simulator, {info['rows']:,} rows, {info['customers']:,} customers, "
        f"n_items={args.n_items}, {info['row_groups']} row groups, snappy; options "
        f"batch_rows={args.batch_rows:,}, memory_budget_mb={args.memory_budget_mb:g}.",
        "",
        "| run | events in | Parquet bytes | write s | ingest s | rows/s | peak RSS GiB | "
        "events out | store bytes | ranges |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        ooc = r["out_of_core"]
        lines.append(
            f"| {i} | {info['rows']:,} | {info['bytes']:,} | {info['seconds']:.1f} | "
            f"{r['seconds']:.1f} | {info['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_rss_bytes'] / gib:.2f} | {r['counts']['events']:,} | "
            f"{r['store_bytes']:,} | {ooc['ranges']} |")
    peak = max(r["peak_rss_bytes"] for r in runs) / gib
    lines += [
        "",
        f"- fingerprint equal across runs: **{'yes' if same_fp else 'no'}** "
        f"(`{runs[0]['fingerprint']}`)",
        f"- every array's CRC-32 equal across runs: **{'yes' if same_crc else 'no'}**",
        f"- peak RSS {peak:.2f} GiB vs target {TARGET_RSS_GIB:g} GiB: "
        f"**{'met' if peak <= TARGET_RSS_GIB else 'MISSED'}**",
        f"- seconds per pass (run 1): {runs[0]['out_of_core']['seconds']}; spill "
        f"{runs[0]['out_of_core']['spill_bytes']:,} bytes",
        f"- repairs (run 1, non-zero): {runs[0]['repairs']}",
        f"- the store opens memory-mapped: {runs[0]['memmap']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--data-dir", default="/tmp/attnlab_ingest")
    ap.add_argument("--n-items", type=int, default=10_000)
    ap.add_argument("--block-customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--memory-budget-mb", type=float, default=1024)
    ap.add_argument("--out", default=str(ROOT / "docs" / "ingest_bench.md"),
                    help="Markdown output ('' = print only)")
    ap.add_argument("--keep", action="store_true", help="keep the built stores")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args)
        return
    work = Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"events_{args.events}_items{args.n_items}_seed{args.seed}.parquet"
    info = _write(args, data)
    runs = []
    load_before = os.getloadavg()[0]
    for i in range(args.runs):
        cache = work / f"cache_run{i + 1}"
        shutil.rmtree(cache, ignore_errors=True)
        cmd = [sys.executable, __file__, "--child", "--data", str(data), "--cache", str(cache),
               "--batch-rows", str(args.batch_rows),
               "--memory-budget-mb", str(args.memory_budget_mb)]
        print(f"run {i + 1}: ingest in a fresh process ...", flush=True)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {runs[-1]['seconds']:.1f} s, peak RSS "
              f"{runs[-1]['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
    info["load"] = (load_before, os.getloadavg()[0])
    text = _table(args, info, runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
