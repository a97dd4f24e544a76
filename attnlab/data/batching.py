"""Padded model inputs from ragged histories, and leak-free training targets.

A batch row is the most recent ``max_len`` visible events of one prediction point
(:class:`attnlab.data.splits.Examples`), right-padded: position ``lengths[b] - 1`` is
the latest visible event. Everything is gathered with vectorised index arithmetic.

Training targets (next_item / next_basket). Items of one basket share a timestamp, so
"the next event" inside a basket is not a prediction target anyone could use at
serving time. The target of every position is instead an item of the *next purchase
basket* after the position's own basket: position ``r`` of basket ``g`` (``r``-th in
the basket's seeded order) targets item ``r mod |next basket|`` of the next basket.
Targets never come from at or after ``train_end`` (see :func:`next_basket_targets`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore, range_events

SECONDS_PER_DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class Batch:
    """Right-padded model inputs; every array is ``[batch, max_len]`` unless noted.

    Attributes:
      item: int32 vocabulary index (0 = padding / no item).
      event_type: int32 :class:`EventType` code (0 = padding).
      time: float32 days relative to the prediction cutoff (<= 0), for time decay.
      gap: float32 log1p(days since the previous visible event), 0 at the first.
      age: float32 log1p(days from the event to the cutoff).
      value: float32 signed log1p of the money value.
      quantity: float32 log1p of max(quantity, 0).
      weekday: int32 0..6 (Monday = 0). hour: int32 0..23.
      lengths: int32[batch] number of valid positions.
      index: int64 absolute store index of each position (-1 at padding).
      targets: int32 per-position training target item (0 = none), or None.
      mem_item, mem_count, mem_time: the history memory (:func:`history_memory`),
        ``[batch, K]``, or None when the batch was made with ``memory=0``.
      summary: float32 ``[batch, S]`` whole-history RFM summary (:func:`history_summary`;
        ``S = SummarySpec.width``), or None when the batch was made with ``summary=False``.
    """

    item: np.ndarray
    event_type: np.ndarray
    time: np.ndarray
    gap: np.ndarray
    age: np.ndarray
    value: np.ndarray
    quantity: np.ndarray
    weekday: np.ndarray
    hour: np.ndarray
    lengths: np.ndarray
    index: np.ndarray
    targets: np.ndarray | None = None
    mem_item: np.ndarray | None = None
    mem_count: np.ndarray | None = None
    mem_time: np.ndarray | None = None
    summary: np.ndarray | None = None

    def model_inputs(self) -> dict[str, np.ndarray]:
        """The arrays a model reads (everything except bookkeeping; memory if made)."""
        d = dataclasses.asdict(self)
        d.pop("index")
        d.pop("targets")
        return {k: v for k, v in d.items() if v is not None}


def window_indices(
    starts: np.ndarray, ends: np.ndarray, *, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Absolute indices of the last ``max_len`` events of ``[starts, ends)``.

    Returns:
      ``(index int64[m, max_len], lengths int32[m])``; padded slots hold -1.
    """
    lengths = np.minimum(ends - starts, max_len).clip(min=0)
    first = ends - lengths
    idx = first[:, None] + np.arange(max_len)[None, :]
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    return np.where(valid, idx, -1), lengths.astype(np.int32)


def window_lengths(store: SequenceStore, customers: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """Events each window ``(customer row, exclusive end)`` holds: the last ``max_len`` at most."""
    starts = np.asarray(store.offsets)[np.asarray(customers, np.int64)]
    return np.minimum(np.asarray(ends, np.int64) - starts, max_len).clip(min=0)


def make_batch(
    store: SequenceStore,
    *,
    customers: np.ndarray,
    ends: np.ndarray,
    cutoffs: np.ndarray | None,
    max_len: int,
    targets: np.ndarray | None = None,
    memory: int = 0,
    summary: "bool | str | SummarySpec" = False,
) -> Batch:
    """Gather a padded batch.

    Args:
      store: the ragged event store.
      customers: ``int64[m]`` store rows.
      ends: ``int64[m]`` exclusive absolute end of each visible history.
      cutoffs: ``int64[m]`` prediction time in seconds (all visible events are before),
        used as the reference for ``time``/``age`` (churn: the known scoring date). None
        uses each row's latest visible event instead, so the model never learns *when*
        the next purchase happens (next_item / next_basket).
      max_len: window length; older events are truncated.
      targets: optional ``int32[n_events]`` per-event training target (from
        :func:`next_basket_targets`), gathered at each position.
      memory: ``K > 0`` adds the history memory of the events before the window
        (:func:`history_memory`), with times on the same reference as ``time``.
      summary: add the whole visible history's RFM summary (:func:`history_summary`),
        measured from the same reference as ``time``: a :class:`SummarySpec`, a form name
        (``"rates"``, ``"counts"``), True for the default form, False for none.
    """
    customers = np.asarray(customers, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    starts = np.asarray(store.offsets)[customers]
    if np.any(ends < starts) or np.any(ends > np.asarray(store.offsets)[customers + 1]):
        raise ValueError("make_batch: an example's end lies outside its customer's history.")
    idx, lengths = window_indices(starts, ends, max_len=max_len)
    valid = idx >= 0
    safe = np.where(valid, idx, 0)

    def take(arr, dtype, fill=0):
        return np.where(valid, np.asarray(arr)[safe], fill).astype(dtype)

    t = np.asarray(store.time)[safe]
    if cutoffs is None:
        last = np.take_along_axis(t, np.maximum(lengths - 1, 0)[:, None].astype(np.int64), axis=1)
        cut = np.where(lengths[:, None] > 0, last, 0)
    else:
        cut = np.asarray(cutoffs, dtype=np.int64)[:, None]
    rel_days = np.where(valid, (t - cut) / SECONDS_PER_DAY, 0.0)
    prev = np.concatenate([t[:, :1], t[:, :-1]], axis=1)
    gap_days = np.where(valid, (t - prev) / SECONDS_PER_DAY, 0.0).clip(min=0.0)
    value = take(store.value, np.float32)
    # Calendar features from the epoch: day 0 (1970-01-01) was a Thursday.
    days = np.floor_divide(t, 86400)
    weekday = np.where(valid, (days + 3) % 7, 0).astype(np.int32)
    hour = np.where(valid, (t % 86400) // 3600, 0).astype(np.int32)
    mem = {}
    if memory:
        mi, mc, mt = history_memory(store, starts, ends - lengths, k=memory)
        ref = cut[:, 0]
        mem = dict(mem_item=mi, mem_count=mc,
                   mem_time=np.where(mi > 0, (mt - ref[:, None]) / SECONDS_PER_DAY, 0.0).astype(np.float32))
    if summary:
        spec = SummarySpec.of(summary)
        mem["summary"] = history_summary(store, starts, ends, cut[:, 0], firsts=ends - lengths, form=spec.form,
                                         bgnbd=spec.bgnbd, horizon_weeks=spec.horizon_weeks)
    return Batch(
        item=take(store.item, np.int32),
        event_type=take(store.event_type, np.int32),
        time=rel_days.astype(np.float32),
        gap=np.log1p(gap_days).astype(np.float32),
        age=np.log1p(np.maximum(-rel_days, 0.0)).astype(np.float32),
        value=(np.sign(value) * np.log1p(np.abs(value))).astype(np.float32),
        quantity=np.log1p(take(store.quantity, np.float32).clip(min=0.0)).astype(np.float32),
        weekday=weekday,
        hour=hour,
        lengths=lengths,
        index=idx,
        targets=None if targets is None else take(targets, np.int32),
        **mem,
    )


#: what :func:`history_summary` measures, in column order, per ``form``. ``counts`` (the
#: first version) grows with the cut-off: at the test cut-off a customer's events, baskets
#: and tenure exceed every training cut-off's, so the head extrapolates; ``rates`` keeps
#: the same information as quantities whose range does not move with the cut-off.
SUMMARY_FORMS: dict[str, tuple[str, ...]] = {
    "rates": ("events_per_30d", "overdue", "baskets_per_30d", "days_per_basket", "recency_days", "monetary"),
    "counts": ("events", "events_before_window", "frequency", "tenure_days", "recency_days", "monetary"),
}
#: the default form (``task.summary_form``'s default) and its columns (every form has as
#: many: the head's input width)
DEFAULT_SUMMARY_FORM = "rates"
SUMMARY_FEATURES = SUMMARY_FORMS[DEFAULT_SUMMARY_FORM]
assert len({len(v) for v in SUMMARY_FORMS.values()}) == 1
#: the columns ``bgnbd`` adds after the form's (``task.summary_bgnbd``)
BGNBD_FEATURES = ("p_alive", "p_no_purchase", "log1p_expected_purchases")


@dataclasses.dataclass(frozen=True)
class SummarySpec:
    """How :func:`make_batch` builds the churn head's whole-history summary.

    Attributes:
      form: a :data:`SUMMARY_FORMS` name.
      bgnbd: BG/NBD parameters (:class:`attnlab.baselines.bgnbd.BGNBDParams`) fitted on
        the training examples' histories, or None. With them the summary also carries
        :data:`BGNBD_FEATURES` of each row's history at its reference time: what the
        BG/NBD baseline predicts, as ``hgb`` reads it.
      horizon_weeks: the label window in weeks (needed with ``bgnbd``).
    """

    form: str = DEFAULT_SUMMARY_FORM
    bgnbd: Any = None
    horizon_weeks: float | None = None

    def __post_init__(self) -> None:
        _check_form(self.form)
        if self.bgnbd is not None and not (self.horizon_weeks or 0) > 0:
            raise ValueError(f"SummarySpec: the BG/NBD columns need horizon_weeks > 0, got {self.horizon_weeks!r}")

    @property
    def width(self) -> int:
        """Columns of the summary (the churn head's input width)."""
        return summary_width(bgnbd=self.bgnbd is not None)

    @classmethod
    def of(cls, summary: "bool | str | SummarySpec") -> "SummarySpec":
        """A spec from :func:`make_batch`'s ``summary`` argument (True: the default form)."""
        if isinstance(summary, cls):
            return summary
        return cls() if summary is True else cls(form=str(summary))


def _check_form(form: str) -> None:
    if form not in SUMMARY_FORMS:
        raise ValueError(f"history_summary: form must be one of {sorted(SUMMARY_FORMS)}, got {form!r}")


def summary_width(*, bgnbd: bool) -> int:
    """Columns of a history summary, with or without the BG/NBD ones."""
    return len(SUMMARY_FEATURES) + (len(BGNBD_FEATURES) if bgnbd else 0)


def history_summary(store: SequenceStore, starts: np.ndarray, ends: np.ndarray, ref: np.ndarray,
                    firsts: np.ndarray | None = None, *, form: str = DEFAULT_SUMMARY_FORM,
                    bgnbd: Any = None, horizon_weeks: float | None = None) -> np.ndarray:
    """RFM summary of each row's whole visible history ``[starts, ends)``, seen from ``ref``.

    The churn baselines (RFM, BG/NBD, ``hgb``) read a customer's frequency, tenure and
    recency over the whole history; the model's window holds its last ``max_len``
    events only (on The Complete Journey most histories are longer than 200 events).
    These features hand the churn head what those baselines read, so the model never
    sees less than they do. Built on the baselines' own RFM features
    (:func:`attnlab.data.rfm.rfm_from_ranges`: purchase baskets, tenure, recency, mean
    basket value); each column is ``log1p`` of (negative values count as 0):

    * ``form="rates"`` (default, :data:`SUMMARY_FORMS`): events and purchase baskets per
      30 days of tenure, recency over the mean days per basket ("how overdue"), days per
      basket, recency in days, mean basket value. None of them grows with the cut-off.
    * ``form="counts"``: events, events older than the window (those before ``firsts``,
      each row's first window event; 0 when None), purchase baskets, tenure, recency,
      mean basket value.

    ``bgnbd`` (BG/NBD parameters fitted on training histories, see :class:`SummarySpec`)
    appends :data:`BGNBD_FEATURES`: P(alive), P(no purchase within ``horizon_weeks``) and
    ``log1p`` of the expected purchases in it (:func:`attnlab.baselines.bgnbd.bgnbd_quantities`,
    the ``hgb`` baseline's features), each row's history seen from ``ref``. A row whose
    quantities are not finite is an error naming it (the BG/NBD formulas are finite for
    every history with finite parameters).

    Only events before ``ends`` are read.

    Returns:
      ``float32[m, summary_width(bgnbd=bgnbd is not None)]``.
    """
    from attnlab.data.rfm import rfm_from_ranges   # the baselines' definitions (imports the splits)

    _check_form(form)
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    rfm = rfm_from_ranges(store, starts, ends, np.asarray(ref, np.int64))
    events = (ends - starts).astype(np.float64)
    freq, tenure, recency = (rfm[k].to_numpy(np.float64) for k in ("frequency", "tenure_days", "recency_days"))
    if form == "counts":
        before = np.zeros(len(starts), np.int64) if firsts is None else (np.asarray(firsts, np.int64) - starts).clip(min=0)
        cols = (events, before, freq, tenure, recency, rfm["monetary"])
    else:
        days = np.maximum(tenure, 1.0)              # at least a day: a first purchase on the cut-off day
        per_basket = days / np.maximum(freq, 1.0)
        cols = (30.0 * events / days, recency / per_basket, 30.0 * freq / days, per_basket, recency, rfm["monetary"])
    out = np.log1p(np.stack([np.asarray(c, np.float64) for c in cols], axis=1).clip(min=0))
    if bgnbd is not None:
        out = np.concatenate([out, bgnbd_columns(store, starts, ends, ref, bgnbd, horizon_weeks)], axis=1)
    return out.astype(np.float32)


def bgnbd_columns(store: SequenceStore, starts: np.ndarray, ends: np.ndarray, ref: np.ndarray, params: Any,
                  horizon_weeks: float | None) -> np.ndarray:
    """:data:`BGNBD_FEATURES` of each row (float64 ``[m, 3]``; see :func:`history_summary`)."""
    from attnlab.baselines.bgnbd import bgnbd_quantities, bgnbd_stats   # the baseline's definitions

    if not (horizon_weeks or 0) > 0:
        raise ValueError(f"history_summary: the BG/NBD columns need horizon_weeks > 0, got {horizon_weeks!r}")
    st = bgnbd_stats(store, starts, ends, np.asarray(ref, np.int64))
    q = bgnbd_quantities(params, float(horizon_weeks), st["x"], st["t_x"], st["T"])
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"history_summary: BG/NBD quantities are not finite for {int(bad.sum())} row(s), e.g. "
                         f"row {i} (x={st['x'].iloc[i]}, t_x={st['t_x'].iloc[i]:.2f}, T={st['T'].iloc[i]:.2f} weeks) "
                         f"under {params}; refit the parameters or set task.summary_bgnbd=false.")
    q[:, 2] = np.log1p(np.maximum(q[:, 2], 0.0))
    return q


def history_memory(store: SequenceStore, starts: np.ndarray, firsts: np.ndarray, *, k: int,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` most purchased items of each row's events before its window.

    Row ``m`` reads the events ``[starts[m], firsts[m])`` -- the customer's history
    older than the model's window, so every position of the window may see it -- and
    keeps its purchased items (``PURCHASE``, item > 0) ranked by count, ties by the most
    recent purchase. With it the copy head reaches the whole visible history, as
    personal repeat does, while attention stays on the last ``max_len`` events.

    Returns:
      ``(item int32[m, k], log1p_count float32[m, k], last_time int64[m, k])``; empty
      slots hold item 0 (the last purchase time in seconds, 0 when empty).
    """
    starts = np.asarray(starts, np.int64)
    firsts = np.maximum(np.asarray(firsts, np.int64), starts)
    m = len(starts)
    out_i = np.zeros((m, k), np.int32)
    out_c = np.zeros((m, k), np.float32)
    out_t = np.zeros((m, k), np.int64)
    idx, row = range_events(starts, firsts)
    if len(idx) == 0 or k == 0:
        return out_i, out_c, out_t
    item = np.asarray(store.item)[idx].astype(np.int64)
    keep = (item > 0) & (np.asarray(store.event_type)[idx] == EventType.PURCHASE)  # only the gathered events
    row, item, t = row[keep], item[keep], np.asarray(store.time)[idx[keep]]
    if len(row) == 0:
        return out_i, out_c, out_t
    key = row * (store.n_items + 1) + item
    order = np.lexsort((t, key))
    key, t = key[order], t[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    starts_u = np.flatnonzero(first)
    ukey = key[starts_u]
    count = np.diff(np.append(starts_u, len(key)))
    last_t = t[np.append(starts_u[1:], len(key)) - 1]   # times sorted within a key: the last is the latest
    urow, uitem = ukey // (store.n_items + 1), ukey % (store.n_items + 1)
    rank_order = np.lexsort((-last_t, -count, urow))
    urow, uitem, count, last_t = urow[rank_order], uitem[rank_order], count[rank_order], last_t[rank_order]
    row_start = np.searchsorted(urow, np.arange(m))
    rank = np.arange(len(urow)) - row_start[urow]
    sel = rank < k
    out_i[urow[sel], rank[sel]] = uitem[sel]
    out_c[urow[sel], rank[sel]] = np.log1p(count[sel])
    out_t[urow[sel], rank[sel]] = last_t[sel]
    return out_i, out_c, out_t


def basket_groups(store: SequenceStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive runs of one customer's events sharing a basket id.

    Returns:
      ``(group int64[n_events], group_start int64[n_groups], group_size int64[n_groups])``.
    """
    n = store.n_events
    basket = np.asarray(store.basket)
    new_customer = np.zeros(n, dtype=bool)
    new_customer[np.asarray(store.offsets)[:-1][np.asarray(store.lengths) > 0]] = True
    change = np.ones(n, dtype=bool)
    if n > 1:
        change[1:] = basket[1:] != basket[:-1]
    change |= new_customer
    group = np.cumsum(change) - 1
    group_start = np.flatnonzero(change)
    group_size = np.diff(np.append(group_start, n))
    return group, group_start, group_size


def _next_purchase_groups(store: SequenceStore, train_end: np.ndarray):
    """Each basket group's next purchase group of the same customer, both before ``train_end``.

    Returns ``(group, gstart, gsize, nxt, has_next, cust_of_event)``: ``group
    int64[n_events]`` and ``gstart``/``gsize`` as :func:`basket_groups`; ``nxt[g]`` the
    next purchase group strictly after group ``g`` (valid where ``has_next[g]``), which
    lies entirely before the customer's ``train_end``.
    """
    group, gstart, gsize = basket_groups(store)
    item = np.asarray(store.item)
    etype = np.asarray(store.event_type)
    cust_of_event = np.repeat(np.arange(store.n_customers), np.asarray(store.lengths))
    gcust = cust_of_event[gstart]
    gend = gstart + gsize
    is_purchase = (etype[gstart] == EventType.PURCHASE) & (item[gstart] > 0)
    is_purchase &= gend <= np.asarray(train_end)[gcust]
    purchase_groups = np.flatnonzero(is_purchase)
    # Next purchase group strictly after each group, same customer only.
    pos = np.searchsorted(purchase_groups, np.arange(len(gstart)) + 1)
    has_next = pos < len(purchase_groups)
    nxt = np.where(has_next, purchase_groups[np.minimum(pos, len(purchase_groups) - 1)], 0)
    has_next &= gcust[nxt] == gcust
    return group, gstart, gsize, nxt, has_next, cust_of_event


def next_basket_targets(store: SequenceStore, train_end: np.ndarray) -> np.ndarray:
    """Per-event training target: an item of the next purchase basket (0 = none).

    The ``k``-th event of a basket targets the ``k mod n``-th item of the next purchase
    basket (``n`` items), so a basket's positions spread over the next basket's items
    (``task.targets: spread``). Only baskets that lie entirely before the customer's
    ``train_end`` are used as targets, so validation/test baskets never become
    training targets.

    Args:
      store: the event store.
      train_end: ``int64[n_customers]`` exclusive end of each customer's training events.

    Returns:
      ``int32[n_events]``.
    """
    n = store.n_events
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    group, gstart, gsize, nxt, has_next, cust_of_event = _next_purchase_groups(store, train_end)
    rank_in_group = np.arange(n) - gstart[group]
    ng = nxt[group]
    target_idx = gstart[ng] + rank_in_group % gsize[ng]
    targets = np.where(has_next[group], np.asarray(store.item)[target_idx], 0)
    # Positions at/after train_end are never trained on.
    targets = np.where(np.arange(n) < np.asarray(train_end)[cust_of_event], targets, 0)
    return targets.astype(np.int32)


def next_basket_sets(store: SequenceStore, train_end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-basket training targets (``task.targets: basket``).

    The last event of every basket whose next purchase basket lies entirely before
    ``train_end`` targets *every* item of that next basket, exactly the test query of
    next_basket (a history ending at a basket's last event, scored against the whole
    next basket); the other events have no target.

    Returns:
      ``(next_of_event int32[n_events], start int64[n_groups], size int64[n_groups])``:
      ``next_of_event[e] = g + 1`` when event ``e`` ends a basket whose next purchase
      basket is group ``g`` (0 = no target); that basket's items are
      ``store.item[start[g]:start[g] + size[g]]``.
    """
    n = store.n_events
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    group, gstart, gsize, nxt, has_next, _ = _next_purchase_groups(store, train_end)
    last = gstart + gsize - 1
    out = np.zeros(n, np.int32)
    out[last[has_next]] = (nxt[has_next] + 1).astype(np.int32)
    return out, gstart, gsize


def basket_members(next_ids: np.ndarray, start: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand ``g + 1`` ids (:func:`next_basket_sets`) into their baskets' events:
    ``(source int64[m], event int64[m])``, ``source`` the position in ``next_ids``
    each event comes from."""
    g = np.asarray(next_ids, np.int64) - 1
    k = size[g]
    src = np.repeat(np.arange(len(g)), k)
    return src, np.repeat(start[g] - np.cumsum(k) + k, k) + np.arange(int(k.sum()))


def basket_pairs(next_of_pos: np.ndarray, start: np.ndarray, size: np.ndarray, item: np.ndarray, n: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """``(position, item)`` training pairs of a batch under ``task.targets: basket``.

    Args:
      next_of_pos: ``int32[b, L]`` :func:`next_basket_sets`' ``next_of_event`` gathered
        at each window position.
      start, size: the basket groups (:func:`next_basket_sets`); item: ``store.item``.
      n: pairs per row (the batch's static width).
      rng: seeded generator: a row with more than ``n`` pairs keeps a uniform random ``n``
        of them (counted in the third return value, never silently).

    Returns:
      ``(index int32[b, n], item int32[b, n], dropped)``; unused slots have item 0.
    """
    b = next_of_pos.shape[0]
    row, pos = np.nonzero(next_of_pos > 0)
    src, member = basket_members(next_of_pos[row, pos], start, size)
    row, pos, items = row[src], pos[src], np.asarray(item)[member]
    order = np.lexsort((rng.random(len(row)), row))
    row, pos, items = row[order], pos[order], items[order]
    per_row = np.bincount(row, minlength=b)
    rank = np.arange(len(row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    keep = rank < n
    index_out = np.zeros((b, n), np.int32)
    item_out = np.zeros((b, n), np.int32)
    index_out[row[keep], rank[keep]] = pos[keep]
    item_out[row[keep], rank[keep]] = items[keep]
    return index_out, item_out, int((~keep).sum())


def window_ends(store: SequenceStore, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate training-window ends: just after the last event of every basket group
    whose positions have a target (from :func:`next_basket_targets`).

    A window ending there puts a basket's last event in its last slot, exactly where a
    test history ends (just before the next basket), and that slot has a target.

    Returns:
      ``(ends int64[n_ends], offsets int64[n_customers + 1])``: customer ``c``'s
      candidate exclusive ends are ``ends[offsets[c]:offsets[c + 1]]``, ascending.
    """
    if store.n_events == 0:
        return np.zeros(0, np.int64), np.zeros(store.n_customers + 1, np.int64)
    _, gstart, gsize = basket_groups(store)
    last = gstart + gsize - 1
    ok = np.asarray(targets)[last] > 0
    ends = (last[ok] + 1).astype(np.int64)
    cust = np.repeat(np.arange(store.n_customers), np.asarray(store.lengths))[last[ok]]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(cust, minlength=store.n_customers))]).astype(np.int64)
    return ends, offsets
