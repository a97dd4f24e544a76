"""Export a split exactly as attnlab evaluates it: Parquet files and RecBole atomic files.

    from attnlab.data.export import export_split
    manifest = export_split(store, split, "exports/cj-next_item")      # docs/export.md

``out_dir`` after an export (every file written atomically, ``manifest.json`` last):

* ``train_events.parquet``: every event training may read (rule below), one row per event.
* ``valid_queries.parquet`` / ``test_queries.parquet`` (and ``train_queries.parquet`` for
  churn): one row per prediction point, in the split's row order (column ``row``), with
  the original customer id, the cut-off, the visible history and the targets (original
  item ids) or the churn label.
* ``recbole/<name>/``: ``<name>.{train,valid,test}.inter`` and ``recbole.yaml``
  (next_item and next_basket; RecBole has no churn task).
* ``manifest.json``: protocol, data fingerprint, row counts, what was left out of which
  file and why, the leakage checks, and what each file holds.

Training events. A :class:`~attnlab.data.splits.Split` lets training read
``[offsets[c], train_end[c])``, and a churn training row ``m`` ``[offsets[c], end[m])``.
``train_events`` is their union per customer (:func:`training_end`): for next_item every
event before the customer's validation basket, for next_basket every event before the
validation cut-off, for churn every event before the validation cut-off (temporal) or
before the cut-off for training customers (holdout).

Leakage. :func:`check_no_leakage` raises :class:`LeakageError` before anything is written
when, for a validation or test query of customer ``c`` with cut-off ``t``, (1) a target's
basket (the basket of the target item's first purchase at or after the query's history
end) has an event among ``c``'s training events (the target or a same-basket item), or
(2) ``c`` has a training event at or after ``t`` (this also covers churn label windows).
A next_basket test query does see the validation basket (it lies before the test
cut-off); that is the query's history, not training data, and not in ``train_events``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from attnlab.data.pipeline import _json_default
from attnlab.data.schema import EventType
from attnlab.data.sequences import DICT_GROUPS, EVENT_ARRAYS, SequenceStore, purchase_mask, range_events
from attnlab.data.splits import Examples, Protocol, Split, event_customer, iso
from attnlab.atomic import atomic_write, atomic_write_text


class ExportFormat(str, enum.Enum):
    """Output formats of :func:`export_split`."""

    RECBOLE = "recbole"
    PARQUET = "parquet"


class LeakageError(ValueError):
    """A validation or test target (or anything at/after a query's cut-off) would be
    exported as training data."""


EXPORT_VERSION = 1
RECBOLE_HEADER = ("user_id:token", "item_id:token", "timestamp:float", "item_id_list:token_seq")
_RANKING = (Protocol.NEXT_ITEM.value, Protocol.NEXT_BASKET.value)
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_COLUMN = {"item": "item_id", "basket": "basket_id"}   # store array -> exported column, where renamed


def check_formats(formats: Iterable[str] | str, protocol: str) -> tuple[ExportFormat, ...]:
    """Parses ``formats`` for ``protocol`` (raises ValueError naming the fix)."""
    Protocol(protocol)
    out: list[ExportFormat] = []
    for f in [formats] if isinstance(formats, str) else formats:
        try:
            fmt = ExportFormat(str(f).lower())
        except ValueError:
            raise ValueError(f"export format {f!r} is not one of {[x.value for x in ExportFormat]} "
                             "(CLI: export.formats)") from None
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise ValueError("no export format given: use formats=('recbole', 'parquet') or one of them")
    if ExportFormat.RECBOLE in out and protocol not in _RANKING:
        raise ValueError(
            f"protocol {protocol!r}: RecBole has no churn task, so there are no RecBole files to "
            "write. Export Parquet only: formats=('parquet',) (CLI: export.formats=[parquet]); "
            "the labels are in {train,valid,test}_queries.parquet.")
    return tuple(out)


def _check_rows(store: SequenceStore, ex: Examples, name: str) -> None:
    """Rows must index this store, see a prefix of their customer and nothing at/after the cut-off."""
    c = np.asarray(ex.customer)
    if len(c) and (c.min() < 0 or c.max() >= store.n_customers):
        raise ValueError(f"split.{name}: customer rows reach {int(c.max())}, the store has "
                         f"{store.n_customers} customers; rebuild the split from this store")
    lo, hi, end = store.offsets[c], store.offsets[c + 1], np.asarray(ex.end)
    bad = np.flatnonzero((end < lo) | (end > hi))
    if len(bad):
        m = int(bad[0])
        raise ValueError(f"split.{name} row {m}: history end {int(end[m])} is outside customer "
                         f"{int(store.customer_ids[c[m]])}'s events [{int(lo[m])}, {int(hi[m])}]; "
                         "rebuild the split from this store")
    seen = np.flatnonzero(end > lo)
    late = seen[store.time[end[seen] - 1] >= np.asarray(ex.cutoff)[seen]]
    if len(late):
        m = int(late[0])
        raise LeakageError(f"split.{name} row {m} (customer {int(store.customer_ids[c[m]])}): its "
                           f"visible history holds an event at/after its cut-off {iso(ex.cutoff[m])}; "
                           "rebuild the split with attnlab.data.splits")


def training_end(store: SequenceStore, split: Split) -> np.ndarray:
    """``int64[n_customers]``: exclusive end of the events training may read per customer
    (``split.train_end``, raised to the end of any ``split.train`` row of that customer)."""
    end = np.array(split.train_end, dtype=np.int64)
    if end.shape != (store.n_customers,):
        raise ValueError(f"split.train_end has shape {end.shape} but the store has "
                         f"{store.n_customers} customers; rebuild the split from this store")
    if split.train is not None and len(split.train):
        _check_rows(store, split.train, "train")
        np.maximum.at(end, split.train.customer, split.train.end)
    bad = np.flatnonzero((end < store.offsets[:-1]) | (end > store.offsets[1:]))
    if len(bad):
        c = int(bad[0])
        raise ValueError(f"split.train_end[{c}] = {int(end[c])} is outside customer "
                         f"{int(store.customer_ids[c])}'s events; rebuild the split from this store")
    return end


def _target_events(store: SequenceStore, cust: np.ndarray, ex: Examples, name: str) -> np.ndarray:
    """``int64[n_targets]``: store index of each target item's first purchase at or after
    its query's history end (raises if there is none: the split is not of this store)."""
    n_targets = len(ex.target_items)
    P = np.flatnonzero(purchase_mask(store))
    key = cust[P] * (store.n_items + 1) + store.item[P]
    order = np.argsort(key, kind="stable")   # P is ascending: index order within a key
    skey, sidx = key[order], P[order]
    group = np.cumsum(np.concatenate([[True], skey[1:] != skey[:-1]])) - 1 if len(P) else skey
    row = np.repeat(np.arange(len(ex)), np.diff(ex.target_offsets))
    qkey = ex.customer[row] * (store.n_items + 1) + ex.target_items.astype(np.int64)
    lo, hi = np.searchsorted(skey, qkey, "left"), np.searchsorted(skey, qkey, "right")
    found = lo < hi
    if n_targets and len(P):
        # (group, index) is ascending in sorted order: the first purchase at/after the end
        span = store.n_events + 1
        pos = np.searchsorted(group * span + sidx, group[np.minimum(lo, len(P) - 1)] * span + ex.end[row])
        found &= pos < hi
    if not found.all():
        t = int(np.flatnonzero(~found)[0])
        m = int(row[t])
        raise ValueError(f"split.{name} row {m} (customer {int(store.customer_ids[ex.customer[m]])}): "
                         f"target item {int(store.item_vocab[ex.target_items[t]])} is never purchased at "
                         f"or after its history end; the split is not of this store, rebuild it")
    return sidx[pos] if n_targets else np.zeros(0, np.int64)


def check_no_leakage(store: SequenceStore, split: Split, train_end: np.ndarray) -> dict[str, dict[str, int]]:
    """Raises :class:`LeakageError` if a validation or test target's basket, or any event at
    or after a query's cut-off, is among that customer's events ``[offsets, train_end)``.

    Returns:
      per part (``valid``, ``test``): the numbers checked (queries, targets, baskets).
    """
    cust = event_customer(store)
    train_idx, _ = range_events(store.offsets[:-1], train_end)
    last = np.full(store.n_customers, np.iinfo(np.int64).min)
    np.maximum.at(last, cust[train_idx], store.time[train_idx])
    train = pd.DataFrame({"c": cust[train_idx], "b": store.basket[train_idx], "event": train_idx})
    out: dict[str, dict[str, int]] = {}
    for name, ex in (("valid", split.valid), ("test", split.test)):
        _check_rows(store, ex, name)
        stats = {"queries": len(ex)}
        if ex.target_items is not None:
            tgt = _target_events(store, cust, ex, name)
            baskets = pd.DataFrame({"c": cust[tgt], "b": store.basket[tgt], "target": tgt})
            hits = train.merge(baskets, on=["c", "b"])
            if len(hits):
                h = hits.iloc[0]
                raise LeakageError(
                    f"{name} target item {int(store.item_vocab[store.item[h.target]])} of customer "
                    f"{int(store.customer_ids[h.c])} (basket {int(h.b)}, {iso(store.time[h.target])}): "
                    f"{len(hits)} event(s) of its basket are in the training events (split.train_end or a "
                    "split.train row reaches into it). The split leaks; rebuild it with attnlab.data.splits.")
            stats.update(targets=len(tgt), target_baskets=len(baskets.drop_duplicates(["c", "b"])))
        late = np.flatnonzero(last[ex.customer] >= ex.cutoff)
        if len(late):
            m = int(late[0])
            c = int(ex.customer[m])
            raise LeakageError(
                f"{name} query {m} (customer {int(store.customer_ids[c])}, cut-off {iso(ex.cutoff[m])}): "
                f"the customer's training events reach {iso(last[c])}, at or after the cut-off "
                "(split.train_end or a split.train row). The split leaks; rebuild it with attnlab.data.splits.")
        out[name] = stats
    return out


# ------------------------------------------------------------------------------ Parquet


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
        n_hist, first_row = _recbole_query_index(store, ex, purchases)
        cols["n_history_purchases"], cols["recbole_first_row"] = n_hist, first_row
    if history:
        idx, _ = range_events(starts, ex.end)
        off = np.concatenate([[0], np.cumsum(ex.end - starts)])
        for col, values in _events_columns(store, idx, cust).items():
            if col not in ("customer_id", "position"):
                cols[f"history_{col}"] = _lists(off, values)
    return cols


# ------------------------------------------------------------------------------ RecBole


@dataclasses.dataclass(frozen=True)
class _Rows:
    """RecBole rows: user, item (original ids), timestamp, history = purchases[start:stop]."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    start: np.ndarray
    stop: np.ndarray


def _recbole_query_index(store: SequenceStore, ex: Examples, purchases: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per query: visible purchases with an item, and its first row in the RecBole file
    (-1 = none: a query without such a purchase has no history to give RecBole)."""
    n_hist = np.searchsorted(purchases, ex.end) - np.searchsorted(purchases, store.offsets[ex.customer])
    rows = np.where(n_hist > 0, np.diff(ex.target_offsets), 0)
    return n_hist.astype(np.int64), np.where(n_hist > 0, np.cumsum(rows) - rows, -1).astype(np.int64)


def _query_rows(store: SequenceStore, ex: Examples, P: np.ndarray, first: np.ndarray, H: int) -> _Rows:
    """One row per target item of each query with a purchase history; timestamp = cut-off."""
    n_hist, _ = _recbole_query_index(store, ex, P)
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


# ------------------------------------------------------------------------------- export


def _parquet_files(store: SequenceStore, split: Split, out: Path, train_idx: np.ndarray,
                   parts: list[tuple[str, Examples]]) -> dict[str, dict[str, Any]]:
    """Writes ``train_events.parquet`` and ``<part>_queries.parquet``; returns their manifest entries."""
    cust = event_customer(store)
    ranking = split.protocol in _RANKING
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


def _recbole_files(store: SequenceStore, split: Split, out: Path, name: str, train_end: np.ndarray,
                   H: int, ks: Sequence[int]) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Writes ``recbole/<name>/``; returns (manifest entries, what was left out, summary)."""
    cust = event_customer(store)
    P = np.flatnonzero(purchase_mask(store))
    first = np.searchsorted(P, store.offsets[:-1])
    rows, counts = _train_rows(store, cust, P, first, train_end, H)
    written = {"train": rows}
    for part, ex in (("valid", split.valid), ("test", split.test)):
        written[part] = _query_rows(store, ex, P, first, H)
        n_hist, _ = _recbole_query_index(store, ex, P)
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


def export_split(store: SequenceStore, split: Split, out_dir: str | Path, *,
                 formats: Iterable[str] | str = ("recbole", "parquet"), dataset_name: str | None = None,
                 max_history: int = 50, ks: Sequence[int] = (10, 20),
                 provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes ``split`` of ``store`` to ``out_dir`` (layout and rules: module docstring).

    Args:
      store: the store the split was built from.
      split: any :class:`~attnlab.data.splits.Split`.
      out_dir: folder (created); files of an earlier export are replaced one by one.
      formats: ``"parquet"`` and/or ``"recbole"`` (not for churn).
      dataset_name: RecBole dataset name (letters, digits, ``_``, ``-``); default
        ``<source>_<protocol>``.
      max_history: RecBole rows keep the last ``max_history`` purchased items (RecBole's
        ``MAX_ITEM_LIST_LENGTH``; sequential models cannot read longer lists).
      ks: RecBole ``topk``.
      provenance: recorded as is in the manifest (e.g. the config that built the split).

    Returns:
      The manifest (also written to ``out_dir/manifest.json``).

    Raises:
      LeakageError: a validation/test target basket or a post-cut-off event is in training.
      ValueError: unknown format, RecBole for churn, bad name, a split of another store.
    """
    fmts = check_formats(formats, split.protocol)
    name = dataset_name or f"{store.meta.get('source', 'attnlab')}_{split.protocol}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"dataset_name {name!r}: use letters, digits, '_' and '-' only (RecBole "
                         "reads <name>.train.inter, so no dots or slashes; CLI: export.dataset_name)")
    if isinstance(max_history, bool) or not isinstance(max_history, (int, np.integer)) or max_history < 1:
        raise ValueError(f"max_history must be an integer >= 1 (CLI: export.max_history), got {max_history!r}")
    if isinstance(ks, (str, int)) or not ks or any(
            isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1 (CLI: export.ks), got {ks!r}")
    out = Path(out_dir)
    train_end = training_end(store, split)
    checks = check_no_leakage(store, split, train_end)
    train_idx, _ = range_events(store.offsets[:-1], train_end)
    parts = [("train", split.train)] if split.train is not None else []
    parts += [("valid", split.valid), ("test", split.test)]
    files: dict[str, dict[str, Any]] = {}
    excluded: dict[str, Any] = {"events_after_training_end": int(store.n_events - len(train_idx))}
    recbole = None
    if ExportFormat.PARQUET in fmts:
        files.update(_parquet_files(store, split, out, train_idx, parts))
        excluded["not_exported"] = sorted(f"{group}.{k}" for group in DICT_GROUPS for k in getattr(store, group))
    if ExportFormat.RECBOLE in fmts:
        more, excluded["recbole"], recbole = _recbole_files(store, split, out, name, train_end,
                                                            int(max_history), ks)
        files.update(more)
    manifest = {
        "export_version": EXPORT_VERSION, "protocol": split.protocol,
        "data_fingerprint": store.fingerprint, "source": store.meta.get("source"),
        "formats": [f.value for f in fmts],
        "training_rule": ("per customer, events [offsets[c], max(train_end[c], max end of its split.train "
                          "rows)) in store order"),
        "counts": {"customers": store.n_customers, "events": store.n_events,
                   "customers_with_training_events": int((train_end > store.offsets[:-1]).sum()),
                   "train_events": int(len(train_idx)),
                   **{f"{p}_queries": len(ex) for p, ex in parts},
                   **{f"{p}_targets": len(ex.target_items) for p, ex in parts if ex.target_items is not None}},
        "leakage_checks": checks, "excluded": excluded, "recbole": recbole,
        "event_types": {int(e): e.name for e in EventType}, "time_unit": "seconds since 1970-01-01 (UTC-naive)",
        "split_report": split.report, "provenance": dict(provenance or {}), "files": files,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return manifest


def describe(manifest: Mapping[str, Any], out_dir: str | Path) -> str:
    """A few lines for the console: where, what, how many rows, what was left out."""
    lines = [f"exported {manifest['protocol']} split of {manifest['data_fingerprint']} to {out_dir}"]
    lines += [f"  {path}: {info['rows']:,} rows" for path, info in manifest["files"].items()
              if info["rows"] is not None]
    rec = (manifest["excluded"] or {}).get("recbole")
    if rec:
        lines.append("  left out of the RecBole files: " + ", ".join(f"{k} {v:,}" for k, v in rec.items()))
    if manifest["recbole"]:
        lines.append(f"  RecBole: run_recbole(model='SASRec', dataset='{manifest['recbole']['dataset']}', "
                     f"config_file_list=['{Path(out_dir) / manifest['recbole']['config']}'])")
    return "\n".join(lines)
