"""RecBole atomic files of an export: ``recbole/<name>/<name>.{train,valid,test}.inter``
and ``recbole.yaml`` (next_item and next_basket; RecBole has no churn task)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from attnlab.atomic import atomic_write, atomic_write_text
from attnlab.data.sequences import SequenceStore, purchase_mask
from attnlab.data.splits import Examples, Protocol, Split, event_customer

RECBOLE_HEADER = ("user_id:token", "item_id:token", "timestamp:float", "item_id_list:token_seq")
#: The protocols RecBole files exist for (ranking ones; RecBole has no churn task).
RANKING = (Protocol.NEXT_ITEM.value, Protocol.NEXT_BASKET.value)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """RecBole rows: user, item (original ids), timestamp, history = purchases[start:stop]."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    start: np.ndarray
    stop: np.ndarray


def recbole_query_index(store: SequenceStore, ex: Examples, purchases: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per query: visible purchases with an item, and its first row in the RecBole file
    (-1 = none: a query without such a purchase has no history to give RecBole)."""
    n_hist = np.searchsorted(purchases, ex.end) - np.searchsorted(purchases, store.offsets[ex.customer])
    rows = np.where(n_hist > 0, np.diff(ex.target_offsets), 0)
    return n_hist.astype(np.int64), np.where(n_hist > 0, np.cumsum(rows) - rows, -1).astype(np.int64)


def _query_rows(store: SequenceStore, ex: Examples, P: np.ndarray, first: np.ndarray, H: int) -> _Rows:
    """One row per target item of each query with a purchase history; timestamp = cut-off."""
    n_hist, _ = recbole_query_index(store, ex, P)
    nt = np.diff(ex.target_offsets)
    keep = n_hist > 0
    row = np.repeat(np.arange(len(ex)), np.where(keep, nt, 0))
    stop = np.searchsorted(P, ex.end)[row]
    return _Rows(user=store.customer_ids[ex.customer[row]],
                 item=store.item_vocab[ex.target_items[np.repeat(keep, nt)]],
                 time=ex.cutoff[row], start=np.maximum(first[ex.customer[row]], stop - H), stop=stop)


def _train_rows(store: SequenceStore, cust: np.ndarray, P: np.ndarray, first: np.ndarray,
                train_end: np.ndarray, H: int) -> tuple[_Rows, dict[str, int]]:
    """One row per distinct (customer, basket, item) purchase among the training events; its
    history is the customer's purchases strictly before its time (like a query's)."""
    pc = cust[P]
    k = np.flatnonzero(P < train_end[pc])
    order = np.lexsort((k, store.item[P[k]], store.basket[P[k]], pc[k]))
    keys = np.stack([pc[k], store.basket[P[k]], store.item[P[k]]])[:, order]
    same = np.zeros(len(k), dtype=bool)
    same[1:] = (keys[:, 1:] == keys[:, :-1]).all(axis=0)
    rows = np.sort(k[order][~same])
    t = store.time[P]
    new = np.ones(len(P), dtype=bool)
    new[1:] = (pc[1:] != pc[:-1]) | (t[1:] != t[:-1])
    run_start = np.maximum.accumulate(np.where(new, np.arange(len(P)), 0)) if len(P) else new
    stop = run_start[rows]
    start = np.maximum(first[pc[rows]], stop - H)
    has = stop > start
    rows, start, stop = rows[has], start[has], stop[has]
    counts = {"train_duplicate_basket_items": int(same.sum()),
              "train_rows_without_history": int((~has).sum()),
              "train_events_not_purchases_with_item": int((train_end - store.offsets[:-1]).sum() - len(k))}
    return _Rows(user=store.customer_ids[pc[rows]], item=store.item_vocab[store.item[P[rows]]],
                 time=t[rows], start=start, stop=stop), counts


def _n_items(store: SequenceStore, P: np.ndarray, parts: list[_Rows]) -> int:
    """Distinct items in the RecBole files (as targets or in a history): RecBole's catalogue."""
    mark = np.zeros(len(P) + 1, dtype=np.int64)
    for r in parts:
        np.add.at(mark, r.start, 1)
        np.add.at(mark, r.stop, -1)
    in_history = store.item_vocab[store.item[P[np.cumsum(mark)[:-1] > 0]]]
    return len(np.unique(np.concatenate([in_history, *(r.item for r in parts)])))


def _write_inter(path: Path, rows: _Rows, tokens: list[str]) -> int:
    u, i, t = rows.user.tolist(), rows.item.tolist(), rows.time.tolist()
    a, b = rows.start.tolist(), rows.stop.tolist()

    def write(f: IO[str]) -> None:
        f.write("\t".join(RECBOLE_HEADER) + "\n")
        for lo in range(0, len(u), 65_536):
            f.write("".join(f"{u[r]}\t{i[r]}\t{t[r]}\t{' '.join(tokens[a[r]:b[r]])}\n"
                            for r in range(lo, min(lo + 65_536, len(u)))))

    atomic_write(path, write, binary=False)
    return len(u)


def _recbole_yaml(root: Path, name: str, protocol: str, H: int, ks: Sequence[int]) -> dict[str, Any]:
    main = "NDCG" if protocol == Protocol.NEXT_ITEM.value else "Recall"
    return {
        "data_path": str(root.resolve()), "dataset": name,
        "benchmark_filename": ["train", "valid", "test"],
        "field_separator": "\t", "seq_separator": " ",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "LIST_SUFFIX": "_list", "ITEM_LIST_LENGTH_FIELD": "item_length", "MAX_ITEM_LIST_LENGTH": int(H),
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "item_id_list"]},
        "train_neg_sample_args": None, "repeatable": True,
        "eval_args": {"order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "Recall", "NDCG", "MRR"], "topk": [int(k) for k in ks],
        "valid_metric": f"{main}@{int(ks[0])}",
    }


def recbole_files(store: SequenceStore, split: Split, out: Path, name: str, train_end: np.ndarray,
                  H: int, ks: Sequence[int]) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Writes ``recbole/<name>/``; returns (manifest entries, what was left out, summary)."""
    cust = event_customer(store)
    P = np.flatnonzero(purchase_mask(store))
    first = np.searchsorted(P, store.offsets[:-1])
    rows, counts = _train_rows(store, cust, P, first, train_end, H)
    written = {"train": rows}
    for part, ex in (("valid", split.valid), ("test", split.test)):
        written[part] = _query_rows(store, ex, P, first, H)
        n_hist, _ = recbole_query_index(store, ex, P)
        counts[f"{part}_queries_without_purchase_history"] = int((n_hist == 0).sum())
    counts["catalogue_items_not_in_files"] = store.n_items - _n_items(store, P, list(written.values()))
    folder = out / "recbole" / name
    tokens = [str(x) for x in store.item_vocab[store.item[P]].tolist()]
    n_rows = {part: _write_inter(folder / f"{name}.{part}.inter", r, tokens) for part, r in written.items()}
    files = {f"recbole/{name}/{name}.{part}.inter": {"rows": n_rows[part], "contains": (
        "RecBole atomic file, tab-separated, header " + "\\t".join(RECBOLE_HEADER) + "; "
        + ("one row per distinct training purchase (customer, basket, item) with a history" if part == "train"
           else f"one row per target item of each {part} query (timestamp = its cut-off)")
        + "; item_id_list = the last purchased items before it, oldest first")} for part in n_rows}
    config = _recbole_yaml(out / "recbole", name, split.protocol, H, ks)
    header = (f"# Written by attnlab.data.export (data {store.fingerprint}, protocol {split.protocol}).\n"
              f"# run_recbole(model='SASRec', dataset='{name}', config_file_list=['{folder.resolve()}"
              "/recbole.yaml'])\n# data_path is absolute: edit it if you move this folder (docs/export.md).\n")
    atomic_write_text(folder / "recbole.yaml", header + yaml.safe_dump(config, sort_keys=False))
    files[f"recbole/{name}/recbole.yaml"] = {"rows": None, "contains": "RecBole config for this split"}
    return files, counts, {"dataset": name, "config": f"recbole/{name}/recbole.yaml",
                           "max_history": H, "rows": n_rows}
