"""Time cold (build + write) and cached (memory-mapped) ``load_sequences`` per source,
and the three protocol splits on each cached store.

    python experiments/data_bench.py                       # CJ, CDNOW, synthetic 100k
    python experiments/data_bench.py --sources cdnow --repeats 5

Cold runs use ``refresh=True`` in a fresh temporary cache directory; cached runs hit
that entry. Prints a Markdown table (median seconds over ``--repeats``); the numbers
in docs/data.md come from this script.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

from attnlab.data.pipeline import load_sequences
from attnlab.data.splits import churn_split, next_basket_split, next_item_split

SPLITS = {"next_item": next_item_split, "next_basket": next_basket_split, "churn": churn_split}

CASES = {
    "complete_journey": ("complete_journey", {}),
    "cdnow": ("cdnow", {}),
    "synthetic_100k": ("synthetic", {"n_customers": 100_000, "seed": 0}),
}


def bench(name: str, options: dict, *, repeats: int, cache_dir: str) -> dict:
    cold, hot = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store = load_sequences(name, options, cache_dir=cache_dir, progress=False, refresh=True)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cached = load_sequences(name, options, cache_dir=cache_dir, progress=False)
        # touch every byte once so the cached time includes reading the arrays
        _ = int(cached.item.sum()) + int(cached.time[-1])
        hot.append(time.perf_counter() - t0)
        assert cached.meta["cache"]["hit"]
    split_s = {}
    for split_name, split in SPLITS.items():
        times = []
        if split_name != "churn" and not (cached.item > 0).any():
            split_s[split_name] = float("nan")  # no item ids (CDNOW): churn only
            continue
        for _ in range(repeats):
            t0 = time.perf_counter()
            split(cached)
            times.append(time.perf_counter() - t0)
        split_s[split_name] = statistics.median(times)
    return {"splits": split_s, "customers": store.n_customers, "events": store.n_events, "items": store.n_items,
            "cold": statistics.median(cold), "cached": statistics.median(hot),
            "build": store.meta["build_seconds"], "fingerprint": store.fingerprint}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"# data bench ({platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, median of {args.repeats})\n")
    print("| source | customers | events | items | cold s | cached s | speed-up "
          "| split s (item/basket/churn) | fingerprint |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-") as cache_dir:
        for case in args.sources:
            name, options = CASES[case]
            r = bench(name, options, repeats=args.repeats, cache_dir=cache_dir)
            print(f"| {case} | {r['customers']:,} | {r['events']:,} | {r['items']:,} | "
                  f"{r['cold']:.2f} | {r['cached']:.3f} | {r['cold'] / r['cached']:.0f}x | "
                  f"{' / '.join('n/a' if v != v else f'{v:.2f}' for v in r['splits'].values())} | "
                  f"`{r['fingerprint']}` |", flush=True)


if __name__ == "__main__":
    main()
