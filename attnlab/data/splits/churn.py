"""Churn protocol: temporal stacked windows or disjoint hold-out customers."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.data.sequences import SequenceStore
from attnlab.data.splits.base import (
    DAY, WEEK, ChurnMode, DurationLike, Examples, Protocol, Split, TimeLike, check_time_sorted, data_span, event_customer, first_index_at, iso, make_examples, purchase_counts, to_duration_seconds, to_seconds,
)


def default_churn_cutoff(store: SequenceStore, *, horizon: DurationLike = 8 * WEEK) -> int:
    """Test cutoff = end of the last observed day minus ``horizon`` (seconds)."""
    _, t_end = data_span(store, purchases_only=False)
    return t_end - to_duration_seconds(horizon)


def churn_split(store: SequenceStore, *, cutoff: TimeLike | None = None,
                horizon: DurationLike = 8 * WEEK,
                mode: ChurnMode | str = ChurnMode.TEMPORAL, seed: int = 0,
                fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                train_stride: DurationLike | None = None, refit: bool = False) -> Split:
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
      refit: ``TEMPORAL`` only. The training labels move one horizon later: the latest
        training cut-off is ``c_valid`` (with ``train_stride``, every label window that
        ends by the *test* cut-off), so the validation labels become training labels
        and ``train_end`` is the first event ``>= c_test``. For the final fit after the
        step count was chosen on the ordinary split: the validation rows are then
        in-sample and must not choose anything. Test examples are unchanged; no label
        at or after ``c_test`` is read.

    Returns:
      ``Split(protocol="churn")`` whose ``train``/``valid``/``test`` carry ``label``
      (float32, 1 = churned) and no targets; rows sorted by customer.

    Raises:
      ValueError: if a label window reaches past the end of the data (censored labels),
        or no customer has a purchase before a cutoff.
    """
    mode = ChurnMode(mode)
    if refit and mode is not ChurnMode.TEMPORAL:
        raise ValueError("churn refit moves the training labels up to the test cut-off; it is defined for "
                         f"mode='temporal' only, got mode={mode.value!r}")
    h = to_duration_seconds(horizon)
    t0, t_end = data_span(store, purchases_only=False)
    c = default_churn_cutoff(store, horizon=h) if cutoff is None else to_seconds(cutoff)
    if c + h > t_end:
        raise ValueError(f"churn label window [{iso(c)}, {iso(c + h)}) ends after the data "
                         f"ends ({iso(t_end)}): labels would be censored; move the cutoff "
                         f"to {iso(t_end - h)} or earlier, or shorten the horizon")
    cust = event_customer(store)
    check_time_sorted(store, cust)
    n_c = store.n_customers
    report: dict[str, Any] = {"protocol": Protocol.CHURN.value, "mode": mode.value,
                              "horizon_days": h / DAY, "n_customers": int(n_c)}

    def rolling(first: int, customers: np.ndarray | None) -> Examples:
        """Training examples at ``first, first - stride, ...`` (rows by customer, then time)."""
        stride = to_duration_seconds(train_stride)
        parts, cutoffs = [], []
        lo = first
        while lo > t0:
            active = purchase_counts(store, cust, None, lo, need_item=False) > 0
            if not (active if customers is None else active[customers]).any():
                break   # none of these customers has bought yet: earlier cut-offs have no examples
            parts.append(window(lo, customers, "train"))
            cutoffs.append(lo)
            lo -= stride
        report["train_cutoff"] = iso(first)   # the latest; the others are stride apart before it
        report["train_cutoffs"] = len(cutoffs)
        report["train_first_cutoff"] = iso(cutoffs[-1])
        report.pop("train_excluded_no_purchase_before_cutoff", None)   # differs per cut-off
        report["train_stride_days"] = stride / DAY
        ex = make_examples(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("customer", "end", "cutoff")),
                       label=np.concatenate([p.label for p in parts]))
        order = np.lexsort((ex.cutoff, ex.customer))
        ex = ex.take(order)
        report["train_n_examples"] = len(ex)
        report["train_churn_rate"] = float(ex.label.mean())
        return ex

    def window(lo: int, customers: np.ndarray | None, name: str) -> Examples:
        active = purchase_counts(store, cust, None, lo, need_item=False) > 0
        if customers is None:
            customers = np.arange(n_c)
        elig = customers[active[customers]]
        report[f"{name}_cutoff"] = iso(lo)
        report[f"{name}_excluded_no_purchase_before_cutoff"] = int(len(customers) - len(elig))
        if len(elig) == 0 and len(customers) > 0:
            raise ValueError(f"churn_split: no customer has a purchase before the {name} "
                             f"cutoff {iso(lo)}; move the cutoff later or shorten the horizon")
        label = purchase_counts(store, cust, lo, lo + h, need_item=False)[elig] == 0
        report[f"{name}_n_examples"] = int(len(elig))
        report[f"{name}_churn_rate"] = float(label.mean())
        end = first_index_at(store, cust, lo)[elig]
        return make_examples(elig, end, np.full(len(elig), lo), label=label)

    if mode is ChurnMode.TEMPORAL:
        vc, trc = c - h, c - 2 * h
        if trc <= t0:
            raise ValueError(f"temporal churn needs inputs before the train cutoff {iso(trc)} "
                             f"(= test cutoff - 2 x horizon) but the data starts {iso(t0)}; "
                             "use mode='holdout_customers' or a shorter horizon")
        first = vc if refit else trc   # refit: the validation labels are training labels too
        train = window(first, None, "train") if train_stride is None else rolling(first, None)
        valid, test = window(vc, None, "valid"), window(c, None, "test")
        train_end = first_index_at(store, cust, c if refit else vc)
        report["refit"] = bool(refit)
    else:
        f = np.asarray(fractions, dtype=np.float64)
        if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1) > 1e-6 or f[0] <= 0 or f[2] <= 0:
            raise ValueError(f"fractions must be 3 non-negative shares (train, valid, test) "
                             f"summing to 1 with train, test > 0, got {fractions}")
        # Split only the eligible customers, so the shares hold among examples.
        elig = np.flatnonzero(purchase_counts(store, cust, None, c, need_item=False) > 0)
        report["excluded_no_purchase_before_cutoff"] = int(n_c - len(elig))
        perm = np.random.default_rng(seed).permutation(elig)
        n_tr, n_va = int(round(f[0] * len(elig))), int(round(f[1] * len(elig)))
        groups = [np.sort(perm[:n_tr]), np.sort(perm[n_tr:n_tr + n_va]), np.sort(perm[n_tr + n_va:])]
        train, valid, test = (window(c, g, name) for g, name in zip(groups, ("train", "valid", "test")))
        if train_stride is not None:
            train = rolling(c, groups[0])
        train_end = store.offsets[:-1].astype(np.int64).copy()
        train_end[groups[0]] = first_index_at(store, cust, c)[groups[0]]
        report["seed"] = int(seed)
        report["fractions"] = [float(x) for x in f]
    report["n_train_events"] = int((train_end - store.offsets[:-1]).sum())
    return Split(protocol=Protocol.CHURN.value, train_end=train_end, train=train,
                 valid=valid, test=test, report=report)
