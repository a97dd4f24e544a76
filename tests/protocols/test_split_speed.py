"""Scale check: a 2,469-customer x 1.5M-event store (Complete Journey size) splits.

The split times are measured by ``experiments/data_bench.py`` (not timed here: a
wall-clock bound on a shared CI CPU is flaky).
"""

import numpy as np
import pytest

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import churn_split, next_basket_split, next_item_split


def cj_sized_store(n_customers=2469, n_events=1_500_000, n_items=92_000, seed=0):
    rng = np.random.default_rng(seed)
    n_baskets = n_events // 10
    b_cust = np.sort(rng.integers(0, n_customers, n_baskets))
    b_time = 1_500_000_000 + rng.integers(0, 365 * 86_400, n_baskets)
    order = np.lexsort((b_time, b_cust))
    b_cust, b_time = b_cust[order], b_time[order]
    ev_basket = np.sort(rng.integers(0, n_baskets, n_events))
    cust = b_cust[ev_basket]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(cust, minlength=n_customers))])
    return SequenceStore(
        offsets=offsets.astype(np.int64), customer_ids=np.arange(n_customers, dtype=np.int64),
        item=rng.integers(1, n_items + 1, n_events).astype(np.int32),
        time=b_time[ev_basket].astype(np.int64),
        event_type=np.where(rng.random(n_events) < 0.97, 1, 3).astype(np.int8),
        basket=ev_basket.astype(np.int64),
        quantity=np.ones(n_events, np.float32), value=np.ones(n_events, np.float32),
        item_vocab=np.arange(-1, n_items, dtype=np.int64))


@pytest.mark.slow
def test_protocols_split_cj_sized_store():
    s = cj_sized_store()
    builders = {
        "next_item": lambda: next_item_split(s),
        "next_basket": lambda: next_basket_split(s),
        "churn": lambda: churn_split(s),
    }
    for name, build in builders.items():
        sp = build()
        assert len(sp.test) > 2000, name
