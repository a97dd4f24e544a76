"""Leave-last-basket-out next-item protocol."""

from __future__ import annotations

import numpy as np

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits.base import (
    Protocol, Split, basket_table, check_time_sorted, event_customer, make_examples, time_run_start,
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
    cust = event_customer(store)
    check_time_sorted(store, cust)
    b = basket_table(store, cust)
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
    ends = time_run_start(store, cust, np.concatenate([b.first[last], b.first[second]]))
    test_end, valid_end = ends[: len(keep)], ends[len(keep):]
    train_end = store.offsets[:-1].astype(np.int64).copy()
    train_end[keep] = valid_end
    one = np.arange(len(keep) + 1)
    test = make_examples(keep, test_end, b.time[last], one, test_target)
    valid = make_examples(keep, valid_end, b.time[second], one, valid_target)
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
