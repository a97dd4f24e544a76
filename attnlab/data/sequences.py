"""Ragged per-customer event sequences (offsets + values), cached and memory-mappable.

CONTRACT (other modules code against this; the data owner extends it):

A :class:`SequenceStore` holds every event of every customer, sorted by
``(customer, time, basket, seeded random order inside a basket)``. Customer ``c``'s
events are ``slice(offsets[c], offsets[c + 1])`` of every per-event array. Items are
re-indexed into a dense vocabulary: index 0 means "no item / padding", indices
``1 .. n_items`` are real items (``item_vocab[i]`` gives the source item id).
Inside a basket the order is a seeded shuffle, so "the first item of a basket" is a
seeded random item of it (never "the highest product id").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from attnlab.data.events import EventData
from attnlab.data.schema import EVENT_COLUMNS, NO_ITEM, UNKNOWN_LABEL, EventType


@dataclasses.dataclass(frozen=True)
class SequenceStore:
    """Per-customer ragged event arrays.

    Attributes:
      offsets: ``int64[n_customers + 1]``, monotone, ``offsets[0] == 0``.
      customer_ids: ``int64[n_customers]`` source customer ids, ascending.
      item: ``int32[n_events]`` vocabulary index (0 = no item).
      time: ``int64[n_events]`` seconds since the Unix epoch.
      event_type: ``int8[n_events]`` :class:`attnlab.data.schema.EventType` codes.
      basket: ``int64[n_events]`` source basket id (events of one trip share it).
      quantity: ``float32[n_events]``.
      value: ``float32[n_events]``.
      item_vocab: ``int64[n_items + 1]`` source item id per index; ``item_vocab[0] == -1``.
      item_side: name -> ``int32[n_items + 1]`` categorical side information per item
        (e.g. ``department``), code 0 = unknown; ``item_side_vocab[name]`` lists labels.
      item_side_vocab: name -> list of labels (index = code).
      meta: source name, preprocessing config, fingerprint, repair report, ...
      item_numeric: name -> ``float64[n_items + 1]`` numeric item side information
        (e.g. synthetic ``price``), NaN = unknown (always NaN at index 0).
      customer_side: name -> ``int32[n_customers]`` categorical customer side
        information (e.g. CJ demographics ``age``), code 0 = unknown;
        ``customer_side_vocab[name]`` lists labels.
      customer_side_vocab: name -> list of labels (index = code).
      customer_numeric: name -> ``float64[n_customers]`` numeric customer columns
        (e.g. synthetic ground truth ``churned``), NaN = unknown.
      event_side: name -> ``int32[n_events]`` categorical per-event side columns
        (e.g. CJ ``campaign_id`` of CAMPAIGN / COUPON_REDEMPTION events), 0 = none.
      event_side_vocab: name -> list of labels (index = code).
    """

    offsets: np.ndarray
    customer_ids: np.ndarray
    item: np.ndarray
    time: np.ndarray
    event_type: np.ndarray
    basket: np.ndarray
    quantity: np.ndarray
    value: np.ndarray
    item_vocab: np.ndarray
    item_side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    item_side_vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    item_numeric: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    customer_side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    customer_side_vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    customer_numeric: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    event_side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    event_side_vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def n_events(self) -> int:
        return len(self.item)

    @property
    def n_items(self) -> int:
        """Number of real items (vocabulary size without the 0 slot)."""
        return len(self.item_vocab) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", "unknown"))

    def customer_slice(self, c: int) -> slice:
        return slice(int(self.offsets[c]), int(self.offsets[c + 1]))

    def customer_index(self, customer_id: int) -> int:
        """Row of source customer id ``customer_id`` (raises KeyError if absent)."""
        i = int(np.searchsorted(self.customer_ids, customer_id))
        if i >= self.n_customers or int(self.customer_ids[i]) != int(customer_id):
            raise KeyError(f"customer id {customer_id} is not in this store")
        return i

    def history(self, c: int, end: int | None = None) -> dict[str, np.ndarray]:
        """Customer row ``c``'s events ``[offsets[c], end)`` as named arrays.

        Args:
          c: customer row (not the source id; see :meth:`customer_index`).
          end: absolute exclusive end (e.g. ``Examples.end``); default: all events.

        Returns:
          ``{"item", "time", "event_type", "basket", "quantity", "value", *event_side}``,
          each ``[length]`` (views, no copies).
        """
        lo, hi = int(self.offsets[c]), int(self.offsets[c + 1])
        if end is not None:
            if not lo <= end <= hi:
                raise ValueError(f"end={end} outside customer {c}'s events [{lo}, {hi}]")
            hi = int(end)
        out = {name: getattr(self, name)[lo:hi] for name in EVENT_ARRAYS}
        out.update({name: arr[lo:hi] for name, arr in self.event_side.items()})
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the store by a flat, file-safe key (used by the cache)."""
        out = {name: getattr(self, name) for name in CORE_ARRAYS}
        for group in DICT_GROUPS:
            for i, (name, arr) in enumerate(getattr(self, group).items()):
                out[f"{group}.{i}"] = arr
        return out


EVENT_ARRAYS = ("item", "time", "event_type", "basket", "quantity", "value")
"""Per-event arrays (length ``n_events``)."""
CORE_ARRAYS = ("offsets", "customer_ids", *EVENT_ARRAYS, "item_vocab")
DICT_GROUPS = ("item_side", "item_numeric", "customer_side", "customer_numeric", "event_side")
VOCAB_GROUPS = ("item_side_vocab", "customer_side_vocab", "event_side_vocab")


# ------------------------------------------------------------------------ construction


def range_events(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event indices of the ranges ``[starts[i], stops[i])`` (flat, in order) and the
    range id of each: the one gather behind every "events of these histories" read."""
    sizes = np.asarray(stops, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
    if (sizes < 0).any():
        raise ValueError("a history end lies before its customer's first event")
    cum = np.concatenate([[0], np.cumsum(sizes)])
    ev = np.repeat(np.asarray(starts, dtype=np.int64) - cum[:-1], sizes) + np.arange(cum[-1])
    return ev, np.repeat(np.arange(len(sizes)), sizes)


def purchase_mask(store: "SequenceStore") -> np.ndarray:
    """``bool[n_events]``: ``PURCHASE`` events with a real item (``item > 0``)."""
    return (np.asarray(store.event_type) == EventType.PURCHASE) & (np.asarray(store.item) > 0)


def _categorical(col: pd.Series, present: np.ndarray | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """Codes ``1..k`` for the sorted distinct values of ``col`` (numeric values sort
    numerically, others as strings); 0 = missing or not ``present``."""
    ok = col.notna().to_numpy().copy()
    if present is not None:
        ok &= present
    codes = np.zeros(len(col), np.int32)
    if not ok.any():
        return codes, [UNKNOWN_LABEL]
    vals = col[ok]
    if pd.api.types.is_numeric_dtype(vals.dtype) and not pd.api.types.is_bool_dtype(vals.dtype):
        uniq, inv = np.unique(vals.to_numpy(np.float64), return_inverse=True)
        labels = [str(int(u)) if float(u).is_integer() else str(u) for u in uniq]
    else:
        uniq, inv = np.unique(vals.astype(str).to_numpy(dtype=object).astype(str),
                              return_inverse=True)
        labels = uniq.tolist()
    codes[ok] = inv.astype(np.int32) + 1
    return codes, [UNKNOWN_LABEL, *labels]


def _side_tables(frame: pd.DataFrame, keys: np.ndarray, *, pad_front: bool):
    """Splits a feature frame (indexed by source id) into categorical / numeric arrays
    aligned with ``keys`` (plus a leading unknown slot when ``pad_front``)."""
    cats: dict[str, np.ndarray] = {}
    vocabs: dict[str, list[str]] = {}
    nums: dict[str, np.ndarray] = {}
    if frame is None or frame.shape[1] == 0:
        return cats, vocabs, nums
    frame = frame[~frame.index.duplicated(keep="first")]
    pos = frame.index.get_indexer(keys)
    found = pos >= 0
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            arr = np.full(len(keys), np.nan)
            arr[found] = col.to_numpy(np.float64, na_value=np.nan)[pos[found]]
            nums[str(name)] = np.concatenate([[np.nan], arr]) if pad_front else arr
        else:
            vals = pd.Series(col.to_numpy(dtype=object)[np.maximum(pos, 0)], dtype=object)
            codes, vocab = _categorical(vals.infer_objects(), found)
            cats[str(name)] = np.concatenate([[0], codes]).astype(np.int32) if pad_front else codes
            vocabs[str(name)] = vocab
    return cats, vocabs, nums


def build_store(data: EventData, *, seed: int = 0, progress: bool = True) -> SequenceStore:
    """Sorts, indexes and packs validated events into a :class:`SequenceStore`.

    Vectorised: one ``np.lexsort`` by (customer, time, basket, seeded random key), a
    sorted item vocabulary over all events (0 = no item), side information aligned with
    the vocabulary, offsets from ``np.bincount``. Every event is kept.

    Args:
      data: output of a source (already validated).
      seed: seed of the random order inside a basket.
      progress: show a tqdm bar over the build stages.

    Returns:
      The store; ``meta`` holds source, seed, counts, repairs and source meta.
    """
    ev = data.events
    n = len(ev)
    bar = tqdm(total=5, desc=f"build {data.source}", disable=not progress, leave=False)
    bar.set_postfix_str("ids and vocabularies")
    cust_raw = ev["customer_id"].to_numpy(np.int64)
    customer_ids, cust = np.unique(cust_raw, return_inverse=True)
    items_raw = ev["item_id"].to_numpy(np.int64)
    real = items_raw != NO_ITEM
    vocab_ids = np.unique(items_raw[real])
    item = np.zeros(n, np.int32)
    item[real] = np.searchsorted(vocab_ids, items_raw[real]).astype(np.int32) + 1
    time = ev["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    basket = ev["basket_id"].to_numpy(np.int64)
    bar.update()
    bar.set_postfix_str("sort events")
    tiebreak = np.random.default_rng(seed).permutation(n)
    order = np.lexsort((tiebreak, basket, time, cust))
    bar.update()
    bar.set_postfix_str("offsets")
    offsets = np.zeros(len(customer_ids) + 1, np.int64)
    np.cumsum(np.bincount(cust, minlength=len(customer_ids)), out=offsets[1:])
    item_vocab = np.concatenate([[NO_ITEM], vocab_ids]).astype(np.int64)
    bar.update()
    bar.set_postfix_str("item and customer tables")
    item_side, item_side_vocab, item_numeric = _side_tables(
        data.item_features, vocab_ids, pad_front=True)
    cust_side, cust_side_vocab, cust_numeric = _side_tables(
        data.customer_features, customer_ids, pad_front=False)
    bar.update()
    bar.set_postfix_str("event side columns")
    event_side, event_side_vocab = {}, {}
    for name in [c for c in ev.columns if c not in EVENT_COLUMNS]:
        codes, vocab = _categorical(ev[name].iloc[order].reset_index(drop=True))
        event_side[str(name)], event_side_vocab[str(name)] = codes, vocab
    bar.update()
    bar.close()
    return SequenceStore(
        offsets=offsets,
        customer_ids=customer_ids.astype(np.int64),
        item=item[order],
        time=time[order],
        event_type=ev["event_type"].to_numpy(np.int8)[order],
        basket=basket[order],
        quantity=ev["quantity"].to_numpy(np.float32)[order],
        value=ev["value"].to_numpy(np.float32)[order],
        item_vocab=item_vocab,
        item_side=item_side,
        item_side_vocab=item_side_vocab,
        item_numeric=item_numeric,
        customer_side=cust_side,
        customer_side_vocab=cust_side_vocab,
        customer_numeric=cust_numeric,
        event_side=event_side,
        event_side_vocab=event_side_vocab,
        meta={
            "source": data.source,
            "seed": int(seed),
            "counts": {"events": int(n), "customers": int(len(customer_ids)),
                       "items": int(len(vocab_ids))},
            "repairs": data.repairs.to_list(),
            "source_meta": data.meta,
        },
    )
