"""Writes the synthetic simulator's events as Parquet, block by block, in bounded memory.

The input of the out-of-core benchmark (``experiments/ingest_bench.py``)::

    python -m attnlab.data.synthetic_parquet --out /tmp/events_100m.parquet --events 100000000

Block ``b`` is :func:`attnlab.data.sources.synthetic.load` with ``n_customers =
block_customers`` and its own seed (``SeedSequence([seed, b])``); its customer ids are
offset by ``b * block_customers`` and its basket ids by the baskets of the blocks before,
so both are distinct across blocks, while item ids are shared (the same catalogue). Rows
keep the simulator's order (basket step by basket step, customers interleaved: not sorted
by customer). The file stops at exactly ``n_events`` rows: the last block keeps its
customers in ascending id order while they fit whole, and the first events (in time) of
the next one, so at most one customer is cut short. Columns: ``customer_id`` int64,
``item_id`` int64, ``timestamp`` timestamp[ms] (whole seconds; Parquet has no second
unit), ``basket_id`` int64, ``quantity`` float32,
``value`` float32, ``event_type`` int8. Memory: one block (about 3.3M events for 100k
customers with the default ``mean_events=30``). The file is written under a temporary
name next to ``path`` and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("customer_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.timestamp("ms")),
    ("basket_id", pa.int64()), ("quantity", pa.float32()), ("value", pa.float32()),
    ("event_type", pa.int8()),
])
COLUMNS = {"customer_id": "customer_id", "item_id": "item_id", "timestamp": "timestamp",
           "basket_id": "basket_id", "quantity": "quantity", "value": "value",
           "event_type": "event_type"}
"""The column mapping that reads these files (``tabular`` / ``parquet_stream``)."""


def block_seed(seed: int, block: int) -> int:
    """Seed of block ``block``: independent streams per (seed, block)."""
    return int(np.random.SeedSequence([int(seed), int(block)]).generate_state(1, np.uint32)[0])


def _truncate(ev, need: int):
    """The first ``need`` rows of a block at a customer boundary: customers in ascending
    id order while they fit whole, then the earliest events of the next one."""
    cust = ev["customer_id"].to_numpy()
    counts = np.bincount(cust)
    cum = np.cumsum(counts)
    whole = int(np.searchsorted(cum, need, side="right"))  # customers 0..whole-1 fit
    left = need - (int(cum[whole - 1]) if whole else 0)
    keep = cust < whole
    if left:
        part = np.flatnonzero(cust == whole)
        times = ev["timestamp"].to_numpy()[part]
        keep[part[np.argsort(times, kind="stable")[:left]]] = True
    return ev.loc[keep]


def write_synthetic_parquet(path: str | os.PathLike, *, n_events: int,
                            block_customers: int = 100_000, row_group_rows: int = 1_000_000,
                            seed: int = 0, compression: str = "snappy", progress: bool = False,
                            **options: Any) -> dict[str, Any]:
    """Writes ``n_events`` synthetic events to the Parquet file ``path`` (module docstring).

    Args:
      path: output file (replaced atomically when complete).
      n_events: exact number of rows.
      block_customers: customers simulated per block (memory ~ one block).
      row_group_rows: rows per Parquet row group (a block's last group may be smaller).
      seed: base seed (block seeds derive from it).
      compression: Parquet codec.
      progress: print one line per block.
      **options: further options of the ``synthetic`` source (``n_items``,
        ``mean_events``, ...; not ``n_customers`` / ``seed``).

    Returns:
      ``{"rows", "customers", "blocks", "row_groups", "bytes", "seconds", "path"}``.
    """
    from attnlab.data.sources.synthetic import load

    if n_events < 1 or block_customers < 1 or row_group_rows < 1:
        raise ValueError(f"n_events={n_events}, block_customers={block_customers} and "
                         f"row_group_rows={row_group_rows} must be positive.")
    bad = {"n_customers", "seed"} & set(options)
    if bad:
        raise ValueError(f"pass seed= and block_customers= instead of {sorted(bad)}.")
    t0 = time.perf_counter()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    rows = customers = blocks = 0
    basket_pos = 0  # next free positive basket id
    basket_neg = 0  # negative (non-basket) ids used so far
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression=compression) as writer:
            while rows < n_events:
                b = blocks
                ev = load(n_customers=block_customers, seed=block_seed(seed, b),
                          **options).events
                need = n_events - rows
                if len(ev) > need:
                    ev = _truncate(ev, need)
                basket = ev["basket_id"].to_numpy()
                pos = basket >= 0
                shifted = np.where(pos, basket + basket_pos, basket - basket_neg)
                if pos.any():
                    basket_pos = int(shifted[pos].max()) + 1
                if (~pos).any():
                    basket_neg = int(-shifted[~pos].min())
                cust = ev["customer_id"].to_numpy() + b * block_customers
                table = pa.table({
                    "customer_id": pa.array(cust, pa.int64()),
                    "item_id": pa.array(ev["item_id"].to_numpy(), pa.int64()),
                    "timestamp": pa.array(ev["timestamp"].to_numpy().astype("datetime64[ms]"),
                                          pa.timestamp("ms")),
                    "basket_id": pa.array(shifted, pa.int64()),
                    "quantity": pa.array(ev["quantity"].to_numpy(), pa.float32()),
                    "value": pa.array(ev["value"].to_numpy(), pa.float32()),
                    "event_type": pa.array(ev["event_type"].to_numpy(), pa.int8()),
                }, schema=SCHEMA)
                writer.write_table(table, row_group_size=row_group_rows)
                rows += len(ev)
                customers += len(np.unique(cust))
                blocks += 1
                del ev, table, cust, basket, shifted
                if progress:
                    print(f"block {b}: {rows:,} / {n_events:,} rows "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
        row_groups = pq.ParquetFile(tmp).metadata.num_row_groups
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"rows": rows, "customers": customers, "blocks": blocks, "row_groups": row_groups,
            "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 3),
            "path": str(out)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output .parquet file")
    ap.add_argument("--events", type=int, default=100_000_000, help="exact number of rows")
    ap.add_argument("--block-customers", type=int, default=100_000)
    ap.add_argument("--row-group-rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-items", type=int, default=None, help="synthetic n_items")
    ap.add_argument("--compression", default="snappy")
    args = ap.parse_args(argv)
    opts = {} if args.n_items is None else {"n_items": args.n_items}
    info = write_synthetic_parquet(args.out, n_events=args.events,
                                   block_customers=args.block_customers,
                                   row_group_rows=args.row_group_rows, seed=args.seed,
                                   compression=args.compression, progress=True, **opts)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
