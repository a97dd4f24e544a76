"""Tiny hand-built SequenceStores for protocol tests (no dependency on data sources)."""

from __future__ import annotations

import numpy as np
from attnlab.data.sequences import SequenceStore

POISON = 666.0  # quantity marker of events a model must never see


def build_store(rows, *, n_items: int | None = None) -> SequenceStore:
    """Store from ``(customer, time, basket, item, event_type[, quantity])`` tuples.

    ``customer`` is the store row (0..C-1; rows without events get empty slices);
    ``item`` is the vocabulary index (0 = none). Rows are sorted stably by
    (customer, time, basket), so the given order is the order inside a basket.
    ``quantity`` (default 1.0) doubles as a marker, e.g. :data:`POISON`.
    """
    rows = [tuple(r) + (1.0,) * (6 - len(r)) for r in rows]
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    cust, time, basket = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64)
    order = np.lexsort((basket, time, cust))
    a, cust = a[order], cust[order]
    n_c = int(cust.max()) + 1 if len(cust) else 0
    n_items = int(a[:, 3].max()) if n_items is None else n_items
    return SequenceStore(
        offsets=np.concatenate([[0], np.cumsum(np.bincount(cust, minlength=n_c))]).astype(np.int64),
        customer_ids=np.arange(n_c, dtype=np.int64) + 1000,
        item=a[:, 3].astype(np.int32),
        time=a[:, 1].astype(np.int64),
        event_type=a[:, 4].astype(np.int8),
        basket=a[:, 2].astype(np.int64),
        quantity=a[:, 5].astype(np.float32),
        value=np.zeros(len(a), np.float32),
        item_vocab=np.arange(-1, n_items, dtype=np.int64),
    )


def visible(store: SequenceStore, ex, m: int) -> slice:
    return slice(int(store.offsets[ex.customer[m]]), int(ex.end[m]))
