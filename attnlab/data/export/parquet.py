"""Parquet files of an export: ``train_events.parquet`` and ``<part>_queries.parquet``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attnlab.atomic import atomic_write
from attnlab.data.export.recbole import RANKING, recbole_query_index
from attnlab.data.sequences import EVENT_ARRAYS, SequenceStore, purchase_mask, range_events
from attnlab.data.splits import Examples, Split, event_customer

_COLUMN = {"item": "item_id", "basket": "basket_id"}   # store array -> exported column, where renamed


def _lists(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    off = np.asarray(offsets, dtype=np.int64)
    if off[-1] < 2 ** 31:
        return pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(values))
    return pa.LargeListArray.from_arrays(pa.array(off), pa.array(values))


def _write_parquet(path: Path, columns: Mapping[str, Any]) -> int:
    table = pa.table(dict(columns))
    atomic_write(path, lambda f: pq.write_table(table, f), binary=True, suffix=".parquet")
    return table.num_rows


def _events_columns(store: SequenceStore, idx: np.ndarray, cust: np.ndarray) -> dict[str, Any]:
    c = cust[idx]
    cols: dict[str, Any] = {"customer_id": store.customer_ids[c], "position": idx - store.offsets[c]}
    for arr in EVENT_ARRAYS:
        values = getattr(store, arr)[idx]
        cols[_COLUMN.get(arr, arr)] = store.item_vocab[values] if arr == "item" else values
    return cols


def _query_columns(store: SequenceStore, ex: Examples, cust: np.ndarray, *, history: bool,
                   purchases: np.ndarray | None) -> dict[str, Any]:
    starts = store.offsets[ex.customer]
    cols: dict[str, Any] = {"row": np.arange(len(ex), dtype=np.int64),
                            "customer_id": store.customer_ids[ex.customer],
                            "cutoff": np.asarray(ex.cutoff, np.int64),
                            "history_length": np.asarray(ex.end - starts, np.int64)}
    if ex.target_items is not None:
        cols["n_targets"] = np.diff(ex.target_offsets)
        cols["target_item_ids"] = _lists(ex.target_offsets, store.item_vocab[ex.target_items])
    if ex.label is not None:
        cols["label"] = np.asarray(ex.label, np.float32)
    if purchases is not None:   # ranking protocols: what a RecBole row of this query holds
        n_hist, first_row = recbole_query_index(store, ex, purchases)
        cols["n_history_purchases"], cols["recbole_first_row"] = n_hist, first_row
    if history:
        idx, _ = range_events(starts, ex.end)
        off = np.concatenate([[0], np.cumsum(ex.end - starts)])
        for col, values in _events_columns(store, idx, cust).items():
            if col not in ("customer_id", "position"):
                cols[f"history_{col}"] = _lists(off, values)
    return cols


def parquet_files(store: SequenceStore, split: Split, out: Path, train_idx: np.ndarray,
                  parts: list[tuple[str, Examples]]) -> dict[str, dict[str, Any]]:
    """Writes ``train_events.parquet`` and ``<part>_queries.parquet``; returns their manifest entries."""
    cust = event_customer(store)
    ranking = split.protocol in RANKING
    P = np.flatnonzero(purchase_mask(store)) if ranking else None
    n = _write_parquet(out / "train_events.parquet", _events_columns(store, train_idx, cust))
    files = {"train_events.parquet": {"rows": n, "contains": (
        "every event training may read, in store order (position = index in the customer's "
        "time-sorted history); item_id -1 = no item")}}
    for part, ex in parts:
        n = _write_parquet(out / f"{part}_queries.parquet", _query_columns(
            store, ex, cust, history=part != "train", purchases=P))
        files[f"{part}_queries.parquet"] = {"rows": n, "contains": (
            f"one row per query of split.{part} (row = its index there): customer_id, cutoff (seconds; "
            "the history is the customer's first history_length events, all before it), "
            + ("target_item_ids" if ranking else "label (1 = churned)")
            + ("; history_* lists hold that history" if part != "train" else
               "; the history is in train_events.parquet"))}
    return files
