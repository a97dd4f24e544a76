"""Leakage-free evaluation protocols over a :class:`SequenceStore`.

CONTRACT (the protocol owner implements the builders; models, baselines and the
trainer read only these dataclasses).

An :class:`Examples` row ``m`` is one prediction point: the model may read the events
``store[offsets[customer[m]] : end[m]]`` -- a prefix of that customer's sorted
history -- and nothing else about that customer. ``cutoff[m]`` is the time (seconds)
every visible event is strictly before.

Builders (see ``docs/protocols.md``): :func:`next_item_split` (leave the last purchase
basket out), :func:`next_basket_split` (global temporal cutoffs, targets = the first
basket after the cutoff), :func:`churn_split` (:class:`ChurnMode` ``TEMPORAL`` stacked
windows or ``HOLDOUT_CUSTOMERS``). Every builder counts what it excludes in
:attr:`Split.report`.
"""

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
    """Prediction points (see module docstring).

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
            starts, stops = self.target_offsets[idx], self.target_offsets[idx + 1]
            sizes = stops - starts
            tgt_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            gather = np.repeat(starts - tgt_off[:-1], sizes) + np.arange(tgt_off[-1])
            tgt = self.target_items[gather]
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


def _iso(t: int) -> str:
    return str(pd.Timestamp(int(t), unit="s"))


def _event_customer(store: SequenceStore) -> np.ndarray:
    """``int64[n_events]`` store row (customer index) of every event."""
    return np.repeat(np.arange(store.n_customers, dtype=np.int64), store.lengths)


def _check_time_sorted(store: SequenceStore, cust: np.ndarray) -> None:
    if store.n_events < 2:
        return
    bad = (np.diff(store.time) < 0) & (cust[1:] == cust[:-1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"SequenceStore events are not time-sorted within customer row {int(cust[i])} "
            f"(event {i + 1} has time {int(store.time[i + 1])} < {int(store.time[i])}); "
            "rebuild the store with attnlab.data.sequences (it sorts by customer, time, basket)")


def _first_index_at(store: SequenceStore, cust: np.ndarray, cutoff: int) -> np.ndarray:
    """``int64[n_customers]``: per customer, the first event index with ``time >= cutoff``."""
    before = np.bincount(cust[store.time < cutoff], minlength=store.n_customers)
    return store.offsets[:-1].astype(np.int64) + before


def _purchase_counts(store: SequenceStore, cust: np.ndarray, lo: int | None, hi: int | None,
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


def _run_starts(sorted_x: np.ndarray) -> np.ndarray:
    """Indices where a new value starts in an already sorted array."""
    new = np.ones(len(sorted_x), dtype=bool)
    new[1:] = sorted_x[1:] != sorted_x[:-1]
    return np.flatnonzero(new)


def _ragged_gather(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a ragged array: returns (new offsets int64[len(rows)+1], values)."""
    starts, stops = offsets[rows], offsets[rows + 1]
    sizes = stops - starts
    new_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    gather = np.repeat(starts - new_off[:-1], sizes) + np.arange(new_off[-1])
    return new_off, values[gather]


def _basket_table(store: SequenceStore, cust: np.ndarray) -> _Baskets:
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
    ustart = _run_starts(kg)
    ug = kg[ustart]
    # Re-order baskets by store order of their first event.
    first = group_first[ug]
    by_time = np.argsort(first, kind="stable")
    src_off = np.concatenate([ustart, [len(keys)]]).astype(np.int64)
    item_off, items = _ragged_gather(src_off, ki, by_time)
    first = first[by_time]
    return _Baskets(cust=cust[first], first=first, time=store.time[first],
                    item_offsets=item_off, items=items)


def _time_run_start(store: SequenceStore, cust: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For event indices ``idx``: the first index of the same customer with the same time."""
    n = store.n_events
    new = np.ones(n, dtype=bool)
    new[1:] = (cust[1:] != cust[:-1]) | (store.time[1:] != store.time[:-1])
    run_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return run_start[idx]


def _examples(customer, end, cutoff, tgt_off=None, tgt=None, label=None) -> Examples:
    return Examples(
        customer=np.asarray(customer, dtype=np.int64),
        end=np.asarray(end, dtype=np.int64),
        cutoff=np.asarray(cutoff, dtype=np.int64),
        target_offsets=None if tgt_off is None else np.asarray(tgt_off, dtype=np.int64),
        target_items=None if tgt is None else np.asarray(tgt, dtype=np.int32),
        label=None if label is None else np.asarray(label, dtype=np.float32),
    )


def next_item_split(store: SequenceStore, *, seed: int = 0, min_baskets: int = 3) -> Split:
    """Leave-last-basket-out next-item protocol over purchase baskets.

    A purchase basket is a ``(customer, basket id)`` group holding at least one
    ``PURCHASE`` event with a real item (``item > 0``); baskets are ordered by their
    first event in store order. For each customer with ``>= min_baskets`` baskets:

    * test: target = a seeded uniform choice among the distinct items of the LAST
      basket; the visible history ends at the first event of the customer whose time
      is ``>=`` that basket's time (so no event of the target basket, nor any other
      event at or after its timestamp, is visible); ``cutoff`` = the basket time.
    * valid: the same rule on the second-to-last basket.
    * ``train_end`` = the validation history end, so training reads only events before
      the validation basket. Excluded customers get ``train_end == offsets`` (nothing).

    Args:
      store: the event store.
      seed: seeds the choice of the target item inside the target basket.
      min_baskets: customers with fewer purchase baskets are excluded (>= 2).

    Returns:
      ``Split(protocol="next_item", train=None, ...)``; examples hold one target each
      (``target_offsets = arange(M + 1)``), rows sorted by customer.
    """
    if min_baskets < 2:
        raise ValueError(f"min_baskets must be >= 2 (one valid + one test basket), got {min_baskets}")
    cust = _event_customer(store)
    _check_time_sorted(store, cust)
    b = _basket_table(store, cust)
    if len(b.cust) == 0:
        raise ValueError("next_item_split: the store has no PURCHASE event with an item id "
                         "(item > 0); sources without item ids (CDNOW) support churn only")
    n_c = store.n_customers
    nb = np.bincount(b.cust, minlength=n_c)
    keep = np.flatnonzero(nb >= min_baskets)
    last = np.cumsum(nb)[keep] - 1
    second = last - 1
    rng = np.random.default_rng(seed)

    def pick(bidx: np.ndarray) -> np.ndarray:
        start = b.item_offsets[bidx]
        size = b.item_offsets[bidx + 1] - start
        r = np.minimum((rng.random(len(bidx)) * size).astype(np.int64), size - 1)
        return b.items[start + r]

    test_target, valid_target = pick(last), pick(second)
    ends = _time_run_start(store, cust, np.concatenate([b.first[last], b.first[second]]))
    test_end, valid_end = ends[: len(keep)], ends[len(keep):]
    train_end = store.offsets[:-1].astype(np.int64).copy()
    train_end[keep] = valid_end
    one = np.arange(len(keep) + 1)
    test = _examples(keep, test_end, b.time[last], one, test_target)
    valid = _examples(keep, valid_end, b.time[second], one, valid_target)
    report = {
        "protocol": Protocol.NEXT_ITEM.value,
        "seed": int(seed),
        "min_baskets": int(min_baskets),
        "n_customers": int(n_c),
        "n_customers_kept": int(len(keep)),
        "excluded_no_purchase_basket": int((nb == 0).sum()),
        "excluded_fewer_than_min_baskets": int(((nb > 0) & (nb < min_baskets)).sum()),
        "n_purchase_baskets": int(len(b.cust)),
        "n_train_events": int((train_end - store.offsets[:-1]).sum()),
        "n_events_hidden_from_training": int(store.n_events - (train_end - store.offsets[:-1]).sum()),
        "mean_test_basket_size": float(np.mean(np.diff(b.item_offsets)[last])) if len(keep) else 0.0,
    }
    return Split(protocol=Protocol.NEXT_ITEM.value, train_end=train_end, train=None,
                 valid=valid, test=test, report=report)


def _data_span(store: SequenceStore, *, purchases_only: bool) -> tuple[int, int]:
    """(first time, end of the last observed day) in seconds."""
    t = store.time
    if purchases_only:
        t = t[(store.event_type == EventType.PURCHASE)]
    if len(t) == 0:
        raise ValueError("the store has no events to derive default cutoffs from")
    t_end = (int(t.max()) // DAY + 1) * DAY
    return int(t.min()), t_end


def default_cutoffs(store: SequenceStore, *, valid_frac: float = 0.1,
                    test_frac: float = 0.1) -> BasketCutoffs:
    """Default next-basket cutoffs: the last ``test_frac`` of the purchase time range is
    the test period and the ``valid_frac`` before it the validation period; both cutoffs
    are floored to midnight.
    """
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(f"need 0 < valid_frac, test_frac and valid_frac + test_frac < 1, "
                         f"got {valid_frac}, {test_frac}")
    t0, t1 = _data_span(store, purchases_only=True)
    span = t1 - t0
    test = (t1 - int(test_frac * span)) // DAY * DAY
    valid = (test - int(valid_frac * span)) // DAY * DAY
    if not t0 < valid < test:
        raise ValueError(f"data span {_iso(t0)} .. {_iso(t1)} is too short for day-aligned cutoffs")
    return BasketCutoffs(valid_cutoff=int(valid), test_cutoff=int(test))


def next_basket_split(store: SequenceStore, *, valid_cutoff: TimeLike | None = None,
                      test_cutoff: TimeLike | None = None,
                      min_history_baskets: int = 1) -> Split:
    """Global-temporal next-basket protocol.

    For a cutoff ``c`` (and an upper bound ``u``: ``test_cutoff`` for validation, none
    for test), an example is made for each customer with a purchase basket whose first
    event time is in ``[c, u)`` and with ``>= min_history_baskets`` purchase baskets
    before ``c``; its visible history is every event with ``time < c``; its targets
    are the distinct purchased items of the FIRST such basket. ``train_end`` is the
    first event with ``time >= valid_cutoff`` for every customer.

    Args:
      store: the event store.
      valid_cutoff: seconds since epoch or ISO date; default from :func:`default_cutoffs`.
      test_cutoff: same; must be after ``valid_cutoff``.
      min_history_baskets: customers with fewer purchase baskets before the cutoff are
        excluded (counted in ``report``); 0 keeps cold-start customers.

    Returns:
      ``Split(protocol="next_basket", train=None, ...)``, rows sorted by customer.
    """
    if valid_cutoff is None or test_cutoff is None:
        d = default_cutoffs(store)
        valid_cutoff = d.valid_cutoff if valid_cutoff is None else valid_cutoff
        test_cutoff = d.test_cutoff if test_cutoff is None else test_cutoff
    vc, tc = to_seconds(valid_cutoff), to_seconds(test_cutoff)
    if not vc < tc:
        raise ValueError(f"valid_cutoff {_iso(vc)} must be before test_cutoff {_iso(tc)}")
    cust = _event_customer(store)
    _check_time_sorted(store, cust)
    b = _basket_table(store, cust)
    n_c = store.n_customers
    report: dict[str, Any] = {
        "protocol": Protocol.NEXT_BASKET.value,
        "valid_cutoff": _iso(vc), "test_cutoff": _iso(tc),
        "min_history_baskets": int(min_history_baskets), "n_customers": int(n_c),
    }

    def build(lo: int, hi: int | None, name: str) -> Examples:
        in_win = b.time >= lo
        if hi is not None:
            in_win &= b.time < hi
        cand = np.flatnonzero(in_win)
        first_pos = _run_starts(b.cust[cand])
        cust_c = b.cust[cand][first_pos]
        bidx = cand[first_pos]
        hist = np.bincount(b.cust[b.time < lo], minlength=n_c)[cust_c]
        ok = hist >= min_history_baskets
        report[f"{name}_no_target_basket"] = int(n_c - len(cust_c))
        report[f"{name}_excluded_short_history"] = int((~ok).sum())
        cust_c, bidx = cust_c[ok], bidx[ok]
        tgt_off, tgt = _ragged_gather(b.item_offsets, b.items, bidx)
        end = _first_index_at(store, cust, lo)[cust_c]
        report[f"{name}_n_examples"] = int(len(cust_c))
        report[f"{name}_mean_basket_size"] = float(np.mean(np.diff(tgt_off))) if len(cust_c) else 0.0
        return _examples(cust_c, end, np.full(len(cust_c), lo), tgt_off, tgt)

    valid = build(vc, tc, "valid")
    test = build(tc, None, "test")
    train_end = _first_index_at(store, cust, vc)
    report["n_train_events"] = int((train_end - store.offsets[:-1]).sum())
    return Split(protocol=Protocol.NEXT_BASKET.value, train_end=train_end, train=None,
                 valid=valid, test=test, report=report)


def default_churn_cutoff(store: SequenceStore, *, horizon: DurationLike = 8 * WEEK) -> int:
    """Test cutoff = end of the last observed day minus ``horizon`` (seconds)."""
    _, t_end = _data_span(store, purchases_only=False)
    return t_end - to_duration_seconds(horizon)


def churn_split(store: SequenceStore, *, cutoff: TimeLike | None = None,
                horizon: DurationLike = 8 * WEEK,
                mode: ChurnMode | str = ChurnMode.TEMPORAL, seed: int = 0,
                fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                train_stride: DurationLike | None = None) -> Split:
    """Churn protocol: label 1 iff the customer makes NO purchase in ``[c, c + horizon)``.

    A purchase is any ``PURCHASE`` event (item ids not needed). Only customers with at
    least one purchase before ``c`` get an example; inputs are events with time < c.

    * ``TEMPORAL``: ``cutoff`` is the test cutoff ``c_test``; ``c_valid = c_test -
      horizon`` and ``c_train = c_valid - horizon``. Train examples: inputs
      ``< c_train``, labels ``[c_train, c_valid)``; valid: inputs ``< c_valid``, labels
      ``[c_valid, c_test)``; test: inputs ``< c_test``, labels ``[c_test, c_test +
      horizon)``. ``train_end`` = first event ``>= c_valid`` for every customer.
    * ``HOLDOUT_CUSTOMERS``: one cutoff ``c``; eligible customers are split into
      disjoint seeded groups by ``fractions`` (train, valid, test); all inputs ``< c``,
      labels ``[c, c + horizon)``. ``train_end`` = first event ``>= c`` for train
      customers and ``offsets`` (nothing) for valid/test customers.

    Args:
      store: the event store.
      cutoff: (test) cutoff, seconds or ISO date; default :func:`default_churn_cutoff`.
      horizon: label window length (seconds or e.g. ``"8W"``, ``"273D"``).
      mode: a :class:`ChurnMode` (or its value).
      seed: seeds the customer split (``HOLDOUT_CUSTOMERS``).
      fractions: (train, valid, test) shares for ``HOLDOUT_CUSTOMERS``; sum to 1.
      train_stride: None = one training cut-off (above). A duration (e.g. ``"1W"``) =
        rolling training cut-offs ``c_train - k * stride`` (``k = 0, 1, ...``, while some
        customer has a purchase before it): every label window that ends by the
        validation cut-off (``TEMPORAL``), or by ``c + horizon`` for the train customers
        (``HOLDOUT_CUSTOMERS``), becomes training examples, so a model sees many labels
        per customer instead of one. Valid and test examples are unchanged.

    Returns:
      ``Split(protocol="churn")`` whose ``train``/``valid``/``test`` carry ``label``
      (float32, 1 = churned) and no targets; rows sorted by customer.

    Raises:
      ValueError: if a label window reaches past the end of the data (censored labels),
        or no customer has a purchase before a cutoff.
    """
    mode = ChurnMode(mode)
    h = to_duration_seconds(horizon)
    t0, t_end = _data_span(store, purchases_only=False)
    c = default_churn_cutoff(store, horizon=h) if cutoff is None else to_seconds(cutoff)
    if c + h > t_end:
        raise ValueError(f"churn label window [{_iso(c)}, {_iso(c + h)}) ends after the data "
                         f"ends ({_iso(t_end)}): labels would be censored; move the cutoff "
                         f"to {_iso(t_end - h)} or earlier, or shorten the horizon")
    cust = _event_customer(store)
    _check_time_sorted(store, cust)
    n_c = store.n_customers
    report: dict[str, Any] = {"protocol": Protocol.CHURN.value, "mode": mode.value,
                              "horizon_days": h / DAY, "n_customers": int(n_c)}

    def rolling(first: int, customers: np.ndarray | None) -> Examples:
        """Training examples at ``first, first - stride, ...`` (rows by customer, then time)."""
        stride = to_duration_seconds(train_stride)
        parts, cutoffs = [], []
        lo = first
        while lo > t0:
            active = _purchase_counts(store, cust, None, lo, need_item=False) > 0
            if not (active if customers is None else active[customers]).any():
                break   # none of these customers has bought yet: earlier cut-offs have no examples
            parts.append(window(lo, customers, "train"))
            cutoffs.append(lo)
            lo -= stride
        report["train_cutoff"] = _iso(first)   # the latest; the others are stride apart before it
        report["train_cutoffs"] = len(cutoffs)
        report["train_first_cutoff"] = _iso(cutoffs[-1])
        report.pop("train_excluded_no_purchase_before_cutoff", None)   # differs per cut-off
        report["train_stride_days"] = stride / DAY
        ex = _examples(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("customer", "end", "cutoff")),
                       label=np.concatenate([p.label for p in parts]))
        order = np.lexsort((ex.cutoff, ex.customer))
        ex = ex.take(order)
        report["train_n_examples"] = len(ex)
        report["train_churn_rate"] = float(ex.label.mean())
        return ex

    def window(lo: int, customers: np.ndarray | None, name: str) -> Examples:
        active = _purchase_counts(store, cust, None, lo, need_item=False) > 0
        if customers is None:
            customers = np.arange(n_c)
        elig = customers[active[customers]]
        report[f"{name}_cutoff"] = _iso(lo)
        report[f"{name}_excluded_no_purchase_before_cutoff"] = int(len(customers) - len(elig))
        if len(elig) == 0 and len(customers) > 0:
            raise ValueError(f"churn_split: no customer has a purchase before the {name} "
                             f"cutoff {_iso(lo)}; move the cutoff later or shorten the horizon")
        label = _purchase_counts(store, cust, lo, lo + h, need_item=False)[elig] == 0
        report[f"{name}_n_examples"] = int(len(elig))
        report[f"{name}_churn_rate"] = float(label.mean())
        end = _first_index_at(store, cust, lo)[elig]
        return _examples(elig, end, np.full(len(elig), lo), label=label)

    if mode is ChurnMode.TEMPORAL:
        vc, trc = c - h, c - 2 * h
        if trc <= t0:
            raise ValueError(f"temporal churn needs inputs before the train cutoff {_iso(trc)} "
                             f"(= test cutoff - 2 x horizon) but the data starts {_iso(t0)}; "
                             "use mode='holdout_customers' or a shorter horizon")
        train = window(trc, None, "train") if train_stride is None else rolling(trc, None)
        valid, test = window(vc, None, "valid"), window(c, None, "test")
        train_end = _first_index_at(store, cust, vc)
    else:
        f = np.asarray(fractions, dtype=np.float64)
        if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1) > 1e-6 or f[0] <= 0 or f[2] <= 0:
            raise ValueError(f"fractions must be 3 non-negative shares (train, valid, test) "
                             f"summing to 1 with train, test > 0, got {fractions}")
        # Split only the eligible customers, so the shares hold among examples.
        elig = np.flatnonzero(_purchase_counts(store, cust, None, c, need_item=False) > 0)
        report["excluded_no_purchase_before_cutoff"] = int(n_c - len(elig))
        perm = np.random.default_rng(seed).permutation(elig)
        n_tr, n_va = int(round(f[0] * len(elig))), int(round(f[1] * len(elig)))
        groups = [np.sort(perm[:n_tr]), np.sort(perm[n_tr:n_tr + n_va]), np.sort(perm[n_tr + n_va:])]
        train, valid, test = (window(c, g, name) for g, name in zip(groups, ("train", "valid", "test")))
        if train_stride is not None:
            train = rolling(c, groups[0])
        train_end = store.offsets[:-1].astype(np.int64).copy()
        train_end[groups[0]] = _first_index_at(store, cust, c)[groups[0]]
        report["seed"] = int(seed)
        report["fractions"] = [float(x) for x in f]
    report["n_train_events"] = int((train_end - store.offsets[:-1]).sum())
    return Split(protocol=Protocol.CHURN.value, train_end=train_end, train=train,
                 valid=valid, test=test, report=report)
