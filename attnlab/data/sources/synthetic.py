"""Seeded simulator of customer journeys with planted, known signals.

Every customer shops in baskets (``1 + Poisson(size_scale - 1)`` items, capped at
``max_basket_size``) separated by exponential gaps of mean ``gap_scale_days``; both
scales vary by customer (log-normal around ``mean_basket_size`` / ``mean_gap_days``). Three signals are planted; their ground truth is returned in
``EventData.meta`` and ``customer_features``:

(a) Long-range dependency. ``n_triggers`` (trigger, target) item pairs are reserved
    (never sampled otherwise). With probability ``trigger_prob`` a customer's basket
    number ``trigger_step`` (uniform in ``[0, trigger_window)``) contains trigger
    ``j``; basket number ``trigger_step + trigger_distance`` -- if the customer is
    still active -- contains target ``j``. A target is therefore perfectly predicted
    by its trigger, ``trigger_distance`` baskets (~ distance x basket size events)
    earlier.
(b) Time decay. Each item of a basket picks a category with weight
    ``pref[c, k] + decay_boost * exp(-decay_rate * days_since_category_k_bought)``,
    then an item of that category by Zipf popularity: recently bought categories are
    more likely next, with a known ``decay_rate`` per day.
(c) Churn hazard. Each customer stops for good ``Exponential(rate)`` days after the
    first basket (day uniform in [0, 30)), at ``churn_day``,
    with ``rate = r0 * exp(churn_gap_coef * log(gap_scale / mean_gap_days) -
    churn_size_coef * log(size_scale / mean_basket_size))``: slow shoppers and
    small-basket shoppers -- both observable in the history -- churn sooner. ``r0`` is
    solved so the mean number of events is about ``mean_events``. ``churned = 1`` when
    ``churn_day < horizon_days``; otherwise the customer is censored at the horizon.

Generation is vectorised over customers (one loop over basket steps); 100k customers
take a few seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnlab.data.events import EventData, RepairReport, negative_ids, validate_events
from attnlab.data.schema import NO_ITEM, EventType
from attnlab.data.sources import Source, register_source

NAME = "synthetic"


def files(**_) -> list:
    """Synthetic data reads no files (the fingerprint is options + seed)."""
    return []


def _solve_rate(x: np.ndarray, per_day: np.ndarray, span: float, target: float) -> float:
    """``r0`` with ``mean(per_day * (1 - exp(-r * span)) / r) == target``, ``r = r0 e^x``.

    ``per_day`` is a customer's expected events per day; the expression is the expected
    number of events before an exponential churn time or the end of ``span`` days.
    """
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        r = np.exp(mid + x)
        events = (per_day * -np.expm1(-r * span) / r).mean()
        lo, hi = (mid, hi) if events > target else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def load(
    *,
    n_customers: int = 1000,
    n_items: int = 200,
    n_categories: int = 10,
    mean_events: float = 30.0,
    mean_basket_size: float = 3.0,
    max_basket_size: int = 8,
    mean_gap_days: float = 7.0,
    horizon_days: float = 120.0,
    n_triggers: int = 8,
    trigger_prob: float = 0.5,
    trigger_window: int = 3,
    trigger_distance: int = 10,
    decay_rate: float = 0.3,
    decay_boost: float = 8.0,
    churn_gap_coef: float = 1.5,
    churn_size_coef: float = 1.0,
    campaigns_per_customer: float = 0.0,
    start: str = "2020-01-01",
    seed: int = 0,
) -> EventData:
    """Simulates customer journeys (see module docstring for the planted signals).

    Args:
      n_customers: customers simulated (ids ``0 .. n_customers - 1``).
      n_items: items in total, including ``2 * n_triggers`` reserved trigger/target
        items (ids ``n_items - 2 * n_triggers ..``).
      n_categories: categories of the regular items.
      mean_events: approximate mean purchase events per customer.
      mean_basket_size: mean items per basket.
      max_basket_size: cap on items per basket.
      mean_gap_days: population mean of the inter-basket gap.
      horizon_days: end of observation; later baskets are not generated.
      n_triggers: number of (trigger, target) pairs.
      trigger_prob: share of customers who receive a trigger.
      trigger_window: trigger basket is uniform in ``[0, trigger_window)``.
      trigger_distance: baskets between trigger and target.
      decay_rate: per-day decay of the recency boost of a category.
      decay_boost: size of the recency boost relative to mean preference 1.
      churn_gap_coef: log churn rate per unit of ``log(gap_scale / mean_gap_days)``.
      churn_size_coef: minus log churn rate per unit of
        ``log(size_scale / mean_basket_size)``.
      campaigns_per_customer: mean CAMPAIGN events per customer (no planted effect).
      start: date of day 0.
      seed: RNG seed; same seed and options give identical events.

    Returns:
      :class:`EventData`; ground truth in ``meta`` and ``customer_features``.
    """
    n_reg = n_items - 2 * n_triggers
    if n_reg < n_categories or n_categories < 1 or n_customers < 1:
        raise ValueError(f"[{NAME}] need n_items - 2*n_triggers >= n_categories >= 1 and "
                         f"n_customers >= 1; got n_items={n_items}, n_triggers={n_triggers}, "
                         f"n_categories={n_categories}, n_customers={n_customers}.")
    rng = np.random.default_rng(seed)
    n, K, B = n_customers, n_categories, max_basket_size

    # Items: regular items in contiguous category blocks, Zipf popularity inside.
    item_cat = np.sort(np.concatenate([np.arange(K), rng.integers(0, K, n_reg - K)]))
    cat_start = np.searchsorted(item_cat, np.arange(K))
    rank = np.arange(n_reg) - cat_start[item_cat]
    pop = 1.0 / (rank + 1.0)
    cat_tot = np.bincount(item_cat, weights=pop, minlength=K)
    within = np.cumsum(pop) - np.concatenate([[0.0], np.cumsum(cat_tot)])[item_cat]
    cdf = item_cat + within / cat_tot[item_cat]  # in (k, k + 1] for category k
    price = np.exp(rng.normal(1.0, 0.6, n_items)).round(2)
    triggers = n_reg + np.arange(n_triggers)
    targets = n_reg + n_triggers + np.arange(n_triggers)

    # Customers.
    gap_scale = mean_gap_days * np.exp(rng.normal(0.0, 0.5, n))
    gap_scale *= mean_gap_days / gap_scale.mean()
    size_scale = 1.0 + (mean_basket_size - 1.0) * np.exp(rng.normal(0.0, 0.5, n))
    size_scale *= mean_basket_size / size_scale.mean()
    pref = rng.dirichlet(np.full(K, 0.5), n) * K
    x_churn = (churn_gap_coef * np.log(gap_scale / mean_gap_days)
               - churn_size_coef * np.log(size_scale / mean_basket_size))
    exp_size = np.minimum(size_scale, B)
    r0 = _solve_rate(x_churn, exp_size / gap_scale, horizon_days - 15.0, mean_events)
    churn_rate = r0 * np.exp(x_churn)
    churn_day = rng.exponential(1.0 / churn_rate)
    has_trig = rng.random(n) < trigger_prob
    pair = np.where(has_trig, rng.integers(0, n_triggers, n), -1)
    trig_step = np.where(has_trig, rng.integers(0, trigger_window, n), -1)
    tgt_step = np.where(has_trig, trig_step + trigger_distance, -1)

    t = rng.uniform(0.0, 30.0, n)
    # generous cap on baskets (only customers with extreme rates could reach it)
    max_steps = int(min(np.ceil(3 * (horizon_days / gap_scale).max()) + 20, 10_000))
    last = np.full((n, K), -np.inf)
    churn_day = t + churn_day  # counted from the first basket: everyone has one
    stop_day = np.minimum(churn_day, horizon_days)
    active = np.ones(n, bool)
    n_baskets = np.zeros(n, np.int64)
    out_c, out_s, out_i, out_t = [], [], [], []
    for s in range(max_steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        tc = t[idx]
        size = np.minimum(1 + rng.poisson(size_scale[idx] - 1.0), B)
        w = pref[idx] + decay_boost * np.exp(-decay_rate * (tc[:, None] - last[idx]))
        cum = np.cumsum(w, axis=1)
        u = rng.random((idx.size, B)) * cum[:, -1:]
        cats = np.minimum((u[:, :, None] > cum[:, None, :]).sum(-1), K - 1)
        item = np.searchsorted(cdf, cats + rng.random((idx.size, B)), side="left")
        item = np.minimum(item, n_reg - 1)
        fire_t = trig_step[idx] == s
        fire_g = tgt_step[idx] == s
        item[fire_t, 0] = triggers[pair[idx[fire_t]]]
        item[fire_g, 0] = targets[pair[idx[fire_g]]]
        mask = np.arange(B)[None, :] < size[:, None]
        rows, cols = np.nonzero(mask)
        reg = item[rows, cols] < n_reg
        last[idx[rows[reg]], item_cat[item[rows[reg], cols[reg]]]] = tc[rows[reg]]
        out_c.append(idx[rows])
        out_s.append(np.full(rows.size, s, np.int64))
        out_i.append(item[rows, cols])
        out_t.append(tc[rows])
        n_baskets[idx] += 1
        t[idx] = tc + rng.exponential(gap_scale[idx])
        active[idx] = t[idx] < stop_day[idx]

    cust = np.concatenate(out_c)
    step = np.concatenate(out_s)
    item = np.concatenate(out_i)
    days = np.concatenate(out_t)
    qty = (1 + rng.poisson(0.3, cust.size)).astype(np.float32)
    t0 = np.datetime64(pd.Timestamp(start).to_datetime64(), "s")
    stamp = t0 + np.round(days * 86400).astype("timedelta64[s]")
    rep = RepairReport()
    rep.add("simulated", cust.size, "simulated {count:,} purchase events (no repairs needed)")
    events = pd.DataFrame({
        "customer_id": cust, "item_id": item, "timestamp": stamp,
        "basket_id": cust * max_steps + step, "quantity": qty,
        "value": (qty * price[item]).astype(np.float32),
        "event_type": np.int8(EventType.PURCHASE),
    })
    last_time = np.zeros(n)
    np.maximum.at(last_time, cust, days)
    if campaigns_per_customer > 0:
        m = rng.poisson(campaigns_per_customer, n)
        cc = np.repeat(np.arange(n), m)
        cd = rng.uniform(0.0, last_time[cc] + 1.0)
        rep.add("campaign_events", cc.size, "simulated {count:,} CAMPAIGN events (no effect)")
        events = pd.concat([events, pd.DataFrame({
            "customer_id": cc, "item_id": NO_ITEM,
            "timestamp": t0 + np.round(cd * 86400).astype("timedelta64[s]"),
            "basket_id": negative_ids(cc.size), "quantity": np.float32(0),
            "value": np.float32(0), "event_type": np.int8(EventType.CAMPAIGN),
        })], ignore_index=True)
    events = validate_events(events, source=NAME)

    role = np.array(["regular"] * n_reg + ["trigger"] * n_triggers + ["target"] * n_triggers)
    cat_label = np.concatenate([np.char.add("cat_", np.char.zfill(item_cat.astype(str), 2)),
                                np.full(2 * n_triggers, "special")])
    item_features = pd.DataFrame({"category": cat_label, "role": role, "price": price},
                                 index=pd.Index(np.arange(n_items), name="item_id"))
    customer_features = pd.DataFrame({
        "gap_scale_days": gap_scale,
        "size_scale": size_scale,
        "churn_rate_per_day": churn_rate,
        "churn_day": churn_day,
        "churned": (churn_day < horizon_days).astype(np.int64),
        "n_baskets": n_baskets,
        "trigger_item": np.where(has_trig, triggers[np.maximum(pair, 0)], -1),
        "trigger_step": trig_step,
        "target_item": np.where(has_trig, targets[np.maximum(pair, 0)], -1),
        "target_step": tgt_step,
        "target_delivered": (has_trig & (n_baskets > tgt_step)).astype(np.int64),
        "top_category": pref.argmax(1),
    }, index=pd.Index(np.arange(n), name="customer_id"))
    meta = {
        "trigger_pairs": [[int(a), int(b)] for a, b in zip(triggers, targets)],
        "trigger_distance_baskets": trigger_distance,
        "decay_rate_per_day": decay_rate, "decay_boost": decay_boost,
        "churn_base_rate_per_day": r0, "churn_gap_coef": churn_gap_coef,
        "churn_size_coef": churn_size_coef, "mean_gap_days": mean_gap_days,
        "horizon_days": horizon_days, "start": str(start),
        "churned_share": float((churn_day < horizon_days).mean()),
        "truncated_customers": int(active.sum()),
    }
    return EventData(events=events, item_features=item_features,
                     customer_features=customer_features, repairs=rep, source=NAME, meta=meta)


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="1"))
