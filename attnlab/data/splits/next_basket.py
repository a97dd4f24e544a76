"""Global-temporal next-basket protocol and its default cut-offs."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits.base import (
    DAY, BasketCutoffs, Examples, Protocol, Split, TimeLike, basket_table, check_time_sorted, data_span, event_customer, first_index_at, iso, make_examples, ragged_gather, run_starts, to_seconds,
)


def default_cutoffs(store: SequenceStore, *, valid_frac: float = 0.1,
                    test_frac: float = 0.1) -> BasketCutoffs:
    """Default next-basket cutoffs: the last ``test_frac`` of the purchase time range is
    the test period and the ``valid_frac`` before it the validation period; both cutoffs
    are floored to midnight.
    """
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(f"need 0 < valid_frac, test_frac and valid_frac + test_frac < 1, "
                         f"got {valid_frac}, {test_frac}")
    t0, t1 = data_span(store, purchases_only=True)
    span = t1 - t0
    test = (t1 - int(test_frac * span)) // DAY * DAY
    valid = (test - int(valid_frac * span)) // DAY * DAY
    if not t0 < valid < test:
        raise ValueError(f"data span {iso(t0)} .. {iso(t1)} is too short for day-aligned cutoffs")
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
        raise ValueError(f"valid_cutoff {iso(vc)} must be before test_cutoff {iso(tc)}")
    cust = event_customer(store)
    check_time_sorted(store, cust)
    b = basket_table(store, cust)
    n_c = store.n_customers
    report: dict[str, Any] = {
        "protocol": Protocol.NEXT_BASKET.value,
        "valid_cutoff": iso(vc), "test_cutoff": iso(tc),
        "min_history_baskets": int(min_history_baskets), "n_customers": int(n_c),
    }

    def build(lo: int, hi: int | None, name: str) -> Examples:
        in_win = b.time >= lo
        if hi is not None:
            in_win &= b.time < hi
        cand = np.flatnonzero(in_win)
        first_pos = run_starts(b.cust[cand])
        cust_c = b.cust[cand][first_pos]
        bidx = cand[first_pos]
        hist = np.bincount(b.cust[b.time < lo], minlength=n_c)[cust_c]
        ok = hist >= min_history_baskets
        report[f"{name}_no_target_basket"] = int(n_c - len(cust_c))
        report[f"{name}_excluded_short_history"] = int((~ok).sum())
        cust_c, bidx = cust_c[ok], bidx[ok]
        tgt_off, tgt = ragged_gather(b.item_offsets, b.items, bidx)
        end = first_index_at(store, cust, lo)[cust_c]
        report[f"{name}_n_examples"] = int(len(cust_c))
        report[f"{name}_mean_basket_size"] = float(np.mean(np.diff(tgt_off))) if len(cust_c) else 0.0
        return make_examples(cust_c, end, np.full(len(cust_c), lo), tgt_off, tgt)

    valid = build(vc, tc, "valid")
    test = build(tc, None, "test")
    train_end = first_index_at(store, cust, vc)
    report["n_train_events"] = int((train_end - store.offsets[:-1]).sum())
    return Split(protocol=Protocol.NEXT_BASKET.value, train_end=train_end, train=None,
                 valid=valid, test=test, report=report)
