"""What every protocol shares: the :class:`Examples` / :class:`Split` contract (see
:mod:`attnlab.data.splits`), time conversions, and the vectorised per-customer helpers
(basket table, first index at a cut-off, purchase counts) the builders are made of.
Helpers used by other modules are public (no leading underscore)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np
import pandas as pd

from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore


@dataclasses.dataclass(frozen=True)
class Examples:
    """Prediction points (see :mod:`attnlab.data.splits`).

    Attributes:
      customer: ``int64[M]`` row index into the store.
      end: ``int64[M]`` absolute exclusive end of the visible history.
      cutoff: ``int64[M]`` seconds; all visible events have ``time < cutoff``.
      target_offsets: ``int64[M + 1]`` ragged target items (next_item: one each;
        next_basket: the distinct items of the next basket), or None (churn).
      target_items: ``int32[n_targets]`` vocabulary indices (>= 1), or None.
      label: ``float32[M]`` churn label (1 = churned), or None.
    """

    customer: np.ndarray
    end: np.ndarray
    cutoff: np.ndarray
    target_offsets: np.ndarray | None = None
    target_items: np.ndarray | None = None
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.customer)

    def take(self, idx: np.ndarray) -> "Examples":
        """Subset of rows ``idx`` (ragged targets re-packed)."""
        idx = np.asarray(idx)
        tgt_off = tgt = None
        if self.target_offsets is not None:
            tgt_off, tgt = ragged_gather(self.target_offsets, self.target_items, idx)
        return Examples(
            customer=self.customer[idx],
            end=self.end[idx],
            cutoff=self.cutoff[idx],
            target_offsets=tgt_off,
            target_items=tgt,
            label=None if self.label is None else self.label[idx],
        )


@dataclasses.dataclass(frozen=True)
class Split:
    """One protocol applied to one store.

    Attributes:
      protocol: ``"next_item" | "next_basket" | "churn"``.
      train_end: ``int64[n_customers]``; training (model fitting, popularity counts,
        vocab statistics) may read only events ``[offsets[c], train_end[c])``.
      train: labelled training points (churn), or None when models train on the
        ``train_end`` prefixes themselves (next_item, next_basket).
      valid: validation points (early stopping / model selection).
      test: test points (reported once).
      report: counts of customers/events excluded and why (never silent).
    """

    protocol: str
    train_end: np.ndarray
    train: Examples | None
    valid: Examples
    test: Examples
    report: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------
# Protocol builders.
#
# All builders rely on the SequenceStore contract: events are sorted by
# (customer, time, basket, seeded order inside a basket). They check the time order
# (cheap) and raise if it is broken, because every "first index at/after a cutoff"
# below is computed from counts and is only correct on time-sorted customers.
# ---------------------------------------------------------------------------

DAY = 86_400
WEEK = 7 * DAY


class Protocol(str, enum.Enum):
    """Values of :attr:`Split.protocol`."""

    NEXT_ITEM = "next_item"
    NEXT_BASKET = "next_basket"
    CHURN = "churn"


class ChurnMode(str, enum.Enum):
    """How :func:`churn_split` separates training from evaluation.

    ``TEMPORAL``: three stacked windows of length ``horizon`` (train, valid, test);
    every training input and label lies before the validation cutoff. Needs a history
    of at least three horizons plus some input time (Complete Journey: one year).
    ``HOLDOUT_CUSTOMERS``: one cutoff, one label window; customers are split into
    disjoint seeded train/valid/test groups (CDNOW calibration/holdout design, where
    the 39-week holdout leaves no room for a second window).
    """

    TEMPORAL = "temporal"
    HOLDOUT_CUSTOMERS = "holdout_customers"


@dataclasses.dataclass(frozen=True)
class BasketCutoffs:
    """Validation and test cutoffs of :func:`next_basket_split`, seconds since epoch."""

    valid_cutoff: int
    test_cutoff: int


TimeLike = int | float | np.integer | str | np.datetime64 | pd.Timestamp
DurationLike = int | np.integer | str | np.timedelta64 | pd.Timedelta


def to_seconds(t: TimeLike) -> int:
    """Converts seconds since the epoch (int, or a whole float) or an ISO date/time
    string / ``np.datetime64`` / ``pd.Timestamp`` (timezone-naive) to int seconds."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"cutoff must be seconds or an ISO date string, got {t!r}")
    if isinstance(t, (int, np.integer)):
        return int(t)
    if isinstance(t, (float, np.floating)):
        if not float(t).is_integer():
            raise ValueError(f"cutoff {t!r} must be whole seconds since the epoch")
        return int(t)
    try:
        ts = pd.Timestamp(t)
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot parse cutoff {t!r}; use seconds since epoch or an "
                         f"ISO date such as '2017-10-01'") from err
    if ts.tzinfo is not None:
        raise ValueError(f"cutoff {t!r} has a timezone; store times are timezone-naive")
    return int(ts.value // 1_000_000_000)


def to_duration_seconds(d: DurationLike) -> int:
    """Converts an int (seconds), a pandas duration string ('56D', '8W') or timedelta."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)):
        out = int(d)
    else:
        try:
            out = int(pd.Timedelta(d).value // 1_000_000_000)
        except (ValueError, TypeError) as err:
            raise ValueError(f"cannot parse duration {d!r}; use seconds or e.g. '8W', '56D'") from err
    if out <= 0:
        raise ValueError(f"duration must be positive, got {d!r} ({out} s)")
    return out


def iso(t: int) -> str:
    return str(pd.Timestamp(int(t), unit="s"))


def event_customer(store: SequenceStore) -> np.ndarray:
    """``int64[n_events]`` store row (customer index) of every event."""
    return np.repeat(np.arange(store.n_customers, dtype=np.int64), store.lengths)


def check_time_sorted(store: SequenceStore, cust: np.ndarray) -> None:
    if store.n_events < 2:
        return
    bad = (np.diff(store.time) < 0) & (cust[1:] == cust[:-1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"SequenceStore events are not time-sorted within customer row {int(cust[i])} "
            f"(event {i + 1} has time {int(store.time[i + 1])} < {int(store.time[i])}); "
            "rebuild the store with attnlab.data.sequences (it sorts by customer, time, basket)")


def first_index_at(store: SequenceStore, cust: np.ndarray, cutoff: int) -> np.ndarray:
    """``int64[n_customers]``: per customer, the first event index with ``time >= cutoff``."""
    before = np.bincount(cust[store.time < cutoff], minlength=store.n_customers)
    return store.offsets[:-1].astype(np.int64) + before


def purchase_counts(store: SequenceStore, cust: np.ndarray, lo: int | None, hi: int | None,
                     *, need_item: bool) -> np.ndarray:
    """``int64[n_customers]`` purchase events with ``lo <= time < hi`` (None = open)."""
    m = store.event_type == EventType.PURCHASE
    if need_item:
        m &= store.item > 0
    if lo is not None:
        m &= store.time >= lo
    if hi is not None:
        m &= store.time < hi
    return np.bincount(cust[m], minlength=store.n_customers)


@dataclasses.dataclass(frozen=True)
class _Baskets:
    """Purchase baskets (with at least one real item), sorted by store order.

    ``cust[b]``, ``first[b]`` (store index of the basket's first event of ANY type that
    carries its basket id), ``time[b]`` (= time of ``first``), and the basket's distinct
    purchased items ``items[item_offsets[b]:item_offsets[b + 1]]`` (ascending).
    """

    cust: np.ndarray
    first: np.ndarray
    time: np.ndarray
    item_offsets: np.ndarray
    items: np.ndarray


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based; much faster than ``np.unique`` on int64 in
    numpy 2.x, which hashes)."""
    x = np.sort(x)
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


def run_starts(sorted_x: np.ndarray) -> np.ndarray:
    """Indices where a new value starts in an already sorted array."""
    new = np.ones(len(sorted_x), dtype=bool)
    new[1:] = sorted_x[1:] != sorted_x[:-1]
    return np.flatnonzero(new)


def ragged_gather(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a ragged array: returns (new offsets int64[len(rows)+1], values)."""
    starts, stops = offsets[rows], offsets[rows + 1]
    sizes = stops - starts
    new_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    gather = np.repeat(starts - new_off[:-1], sizes) + np.arange(new_off[-1])
    return new_off, values[gather]


def basket_table(store: SequenceStore, cust: np.ndarray) -> _Baskets:
    n_items1 = store.n_items + 1
    # Group ALL events by (customer, basket id): a basket's first event is the first
    # event of any type carrying its id (stable lexsort keeps store order in a group).
    order = np.lexsort((store.basket, cust))
    sc, sb = cust[order], store.basket[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (sc[1:] != sc[:-1]) | (sb[1:] != sb[:-1])
    group_sorted = np.cumsum(new) - 1
    group_first = order[new]
    group = np.empty(len(order), dtype=np.int64)
    group[order] = group_sorted
    # Distinct purchased real items per group.
    pm = (store.event_type == EventType.PURCHASE) & (store.item > 0)
    keys = _unique(group[pm] * n_items1 + store.item[pm].astype(np.int64))
    kg, ki = keys // n_items1, (keys % n_items1).astype(np.int32)
    ustart = run_starts(kg)
    ug = kg[ustart]
    # Re-order baskets by store order of their first event.
    first = group_first[ug]
    by_time = np.argsort(first, kind="stable")
    src_off = np.concatenate([ustart, [len(keys)]]).astype(np.int64)
    item_off, items = ragged_gather(src_off, ki, by_time)
    first = first[by_time]
    return _Baskets(cust=cust[first], first=first, time=store.time[first],
                    item_offsets=item_off, items=items)


def time_run_start(store: SequenceStore, cust: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For event indices ``idx``: the first index of the same customer with the same time."""
    n = store.n_events
    new = np.ones(n, dtype=bool)
    new[1:] = (cust[1:] != cust[:-1]) | (store.time[1:] != store.time[:-1])
    run_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return run_start[idx]


def make_examples(customer, end, cutoff, tgt_off=None, tgt=None, label=None) -> Examples:
    return Examples(
        customer=np.asarray(customer, dtype=np.int64),
        end=np.asarray(end, dtype=np.int64),
        cutoff=np.asarray(cutoff, dtype=np.int64),
        target_offsets=None if tgt_off is None else np.asarray(tgt_off, dtype=np.int64),
        target_items=None if tgt is None else np.asarray(tgt, dtype=np.int32),
        label=None if label is None else np.asarray(label, dtype=np.float32),
    )


def data_span(store: SequenceStore, *, purchases_only: bool) -> tuple[int, int]:
    """(first time, end of the last observed day) in seconds."""
    t = store.time
    if purchases_only:
        t = t[(store.event_type == EventType.PURCHASE)]
    if len(t) == 0:
        raise ValueError("the store has no events to derive default cutoffs from")
    t_end = (int(t.max()) // DAY + 1) * DAY
    return int(t.min()), t_end


