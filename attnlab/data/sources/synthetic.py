"""Seeded simulator of customer journeys with planted, known signals.

Every customer shops in baskets (``1 + Poisson(size_scale - 1)`` items, capped at
``max_basket_size``) separated by exponential gaps of mean ``gap_scale_days``; both
scales vary by customer (log-normal around ``mean_basket_size`` / ``mean_gap_days``). Three signals are planted; their ground truth is returned in
``EventData.meta`` and ``customer_features``:

(a) Long-range dependency. ``n_triggers`` (trigger, target) item pairs are reserved
    (never sampled otherwise). With probability ``trigger_prob`` a customer's basket
    number ``trigger_step`` (``trigger_offset`` + uniform in ``[0, trigger_window)``)
    contains trigger ``j``; basket number ``trigger_step + trigger_distance`` -- if the
    customer is still active -- contains target ``j``. Two variants
    (``trigger_mode``):

    * ``"lag"`` (default, the original design): nothing announces the target; it lands
      exactly ``trigger_distance`` baskets after its trigger. A model must know *which*
      target (the trigger's identity) and *when* (count the baskets since the trigger),
      so it measures exact-lag counting as much as memory.
    * ``"cue"`` (the long-range memory study, ``configs/experiment/long_range.yaml``):
      a reserved **cue item** is bought alone in the basket right before the target
      basket. The cue says *now recall the trigger*; the trigger's identity says *which*
      target. Every customer with a trigger has exactly one episode
      ``trigger -> (distance - 2 baskets) -> cue -> target``, so at the cue exactly one
      trigger is in the history and the only evidence for the target lies
      ``distance`` baskets back: the study measures memory, not counting. With
      ``trigger_jitter = J > 0`` (lag-tolerant variant) the distance of each episode is
      uniform in ``[distance - J, distance + J]``, so not even the cue's position can be
      predicted by counting. The cue and target baskets hold one item each. With
      ``train_lag_min = m`` (mixed training lags) the episodes of the "train" role
      (below) have log-uniform lags in ``[m, distance + J]`` while the evaluated
      episodes keep ``distance``: the recall rule can be learnt from short episodes, so
      a miss at ``distance`` says the memory does not reach that far rather than that
      the rule was not found within the budget.

      Histories are built around the evaluation protocol
      (:func:`attnlab.data.splits.next_item_split`: test = last basket, validation =
      second to last). A seeded share ``planted_test_share`` of the customers with a
      trigger *end* on ``cue -> target`` (their test row is planted), a share
      ``planted_valid_share`` end on ``cue -> target -> one regular basket`` (their
      validation row is planted) and the rest ("train" role) continue after the target
      up to ``max_events``, so their episode lies in the training prefix, which is how
      a model can learn the rule; customers without a trigger also run to
      ``max_events``. Role counts are exact (``round(share * triggered)``).

      ``max_events`` caps every history: at most ``max_events // max_basket_size``
      baskets, hence at most ``max_events`` events. With ``max_events <= model.max_len``
      every training window (the last ``max_len`` events before some basket end) is a
      whole prefix of its customer's history, so a window that holds a target also
      holds its trigger. Cue mode needs ``max_events``; it does not simulate churn
      (histories end by the schedule above; ``horizon_days`` is ignored) and adds a
      floor of one minute to the gaps so that the cue is always strictly before the
      target basket in time (the protocol hides everything at or after a target
      basket's timestamp).
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
    (Lag mode only.)

Generation is vectorised over customers (one loop over basket steps); 100k customers
take a few seconds. The new options (``trigger_mode``, ``trigger_offset``,
``trigger_jitter``, ``train_lag_min``, ``max_events``, ``planted_*_share``) default to the original
behaviour: with their defaults the events are exactly those of earlier versions.
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


#: Values of ``trigger_mode`` (see the module docstring).
TRIGGER_MODES = ("lag", "cue")
#: ``planted_role`` codes of cue mode (customer_features column, as labels).
ROLES = ("none", "test", "valid", "train")
_NONE, _TEST, _VALID, _TRAIN = range(4)
MIN_GAP_DAYS = 1.0 / 1440.0  # cue mode: one minute, so no two baskets share a timestamp


def _check_cue_options(*, trigger_mode: str, trigger_distance: int, trigger_offset: int,
                       trigger_window: int, trigger_jitter: int, train_lag_min: int | None,
                       max_events: int | None,
                       max_basket_size: int, campaigns_per_customer: float,
                       planted_test_share: float, planted_valid_share: float) -> int | None:
    """Validates the planted-dependency options; returns the basket cap (or None)."""
    def bad(msg: str) -> ValueError:
        return ValueError(f"[{NAME}] {msg}")

    if trigger_mode not in TRIGGER_MODES:
        raise bad(f"trigger_mode={trigger_mode!r} is not one of {list(TRIGGER_MODES)}.")
    if trigger_window < 1 or trigger_offset < 0 or trigger_distance < 1:
        raise bad(f"need trigger_window >= 1, trigger_offset >= 0, trigger_distance >= 1; got "
                  f"{trigger_window}, {trigger_offset}, {trigger_distance}.")
    if trigger_jitter < 0 or (trigger_jitter and trigger_mode != "cue"):
        raise bad(f"trigger_jitter={trigger_jitter} needs trigger_mode='cue' and must be >= 0 "
                  "(without a cue a jittered target could not be predicted at all).")
    if train_lag_min is not None and (trigger_mode != "cue" or not 2 <= train_lag_min <= trigger_distance):
        raise bad(f"train_lag_min={train_lag_min} needs trigger_mode='cue' and 2 <= train_lag_min <= "
                  f"trigger_distance ({trigger_distance}).")
    cap = None
    if max_events is not None:
        if max_events < max_basket_size:
            raise bad(f"max_events={max_events} is below max_basket_size={max_basket_size}.")
        if campaigns_per_customer > 0:
            raise bad("max_events caps purchase histories; campaigns_per_customer > 0 would add "
                      "events beyond the cap. Set campaigns_per_customer: 0.")
        cap = max_events // max_basket_size
    if trigger_mode != "cue":
        return cap
    if cap is None:
        raise bad("trigger_mode='cue' needs max_events (set it to the model's max_len, e.g. "
                  "data.options.max_events=${model.max_len}).")
    if trigger_distance - trigger_jitter < 2:
        raise bad(f"trigger_mode='cue' needs trigger_distance - trigger_jitter >= 2 (trigger, cue, "
                  f"target are three baskets); got {trigger_distance} - {trigger_jitter}.")
    last_target = trigger_offset + trigger_window - 1 + trigger_distance + trigger_jitter
    if last_target + 3 > cap:
        raise bad(f"max_events={max_events} is too small for trigger_distance={trigger_distance} "
                  f"(+ jitter {trigger_jitter}, trigger by basket {trigger_offset + trigger_window - 1}): "
                  f"a history must hold the target basket plus two more, i.e. at least "
                  f"{(last_target + 3) * max_basket_size} events. Raise max_events (and model.max_len).")
    shares = (planted_test_share, planted_valid_share)
    if min(shares) < 0 or sum(shares) > 1:
        raise bad(f"planted_test_share={planted_test_share} and planted_valid_share="
                  f"{planted_valid_share} must be >= 0 and sum to at most 1.")
    return cap


def _cue_roles(rng: np.random.Generator, has_trig: np.ndarray, test_share: float,
               valid_share: float) -> np.ndarray:
    """``int[n]`` role codes: exact seeded counts among the customers with a trigger."""
    role = np.full(has_trig.shape, _NONE, np.int64)
    idx = rng.permutation(np.flatnonzero(has_trig))
    n_test = int(round(test_share * len(idx)))
    n_valid = min(int(round(valid_share * len(idx))), len(idx) - n_test)
    role[idx] = _TRAIN
    role[idx[:n_test]] = _TEST
    role[idx[n_test:n_test + n_valid]] = _VALID
    return role


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
    trigger_mode: str = "lag",
    trigger_offset: int = 0,
    trigger_jitter: int = 0,
    train_lag_min: int | None = None,
    max_events: int | None = None,
    planted_test_share: float = 0.25,
    planted_valid_share: float = 0.25,
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
        items (ids ``n_items - 2 * n_triggers ..``) and, in cue mode, the cue item
        (the last id, ``n_items - 1``).
      n_categories: categories of the regular items.
      mean_events: approximate mean purchase events per customer (lag mode).
      mean_basket_size: mean items per basket.
      max_basket_size: cap on items per basket.
      mean_gap_days: population mean of the inter-basket gap.
      horizon_days: end of observation; later baskets are not generated (lag mode).
      n_triggers: number of (trigger, target) pairs.
      trigger_prob: share of customers who receive a trigger.
      trigger_window: trigger basket is ``trigger_offset`` + uniform in
        ``[0, trigger_window)``.
      trigger_distance: baskets between trigger and target.
      trigger_mode: ``"lag"`` (target exactly ``trigger_distance`` baskets later, no
        announcement) or ``"cue"`` (a cue basket right before the target; see the
        module docstring).
      trigger_offset: earliest trigger basket (keeps the trigger off the first
        positions of a window, e.g. off a sparse model's global positions).
      trigger_jitter: cue mode only: each episode's distance is uniform in
        ``[trigger_distance - J, trigger_distance + J]`` (lag-tolerant variant).
      train_lag_min: cue mode only: the training-role episodes get log-uniform lags in
        ``[train_lag_min, trigger_distance + J]`` (None = the same lags as the
        evaluated episodes).
      max_events: cap on every customer's history: at most
        ``max_events // max_basket_size`` baskets (None = no cap). Required in cue mode.
      planted_test_share: cue mode: share of the triggered customers whose history ends
        on ``cue -> target`` (a planted test row each).
      planted_valid_share: cue mode: share ending on ``cue -> target -> one basket`` (a
        planted validation row each).
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
    cap = _check_cue_options(
        trigger_mode=trigger_mode, trigger_distance=trigger_distance, trigger_offset=trigger_offset,
        trigger_window=trigger_window, trigger_jitter=trigger_jitter, train_lag_min=train_lag_min,
        max_events=max_events,
        max_basket_size=max_basket_size, campaigns_per_customer=campaigns_per_customer,
        planted_test_share=planted_test_share, planted_valid_share=planted_valid_share)
    cue = trigger_mode == "cue"
    n_special = 2 * n_triggers + int(cue)
    n_reg = n_items - n_special
    if n_reg < n_categories or n_categories < 1 or n_customers < 1:
        raise ValueError(f"[{NAME}] need n_items - 2*n_triggers{' - 1 (cue)' if cue else ''} >= "
                         f"n_categories >= 1 and n_customers >= 1; got n_items={n_items}, "
                         f"n_triggers={n_triggers}, n_categories={n_categories}, n_customers={n_customers}.")
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
    cue_item = n_reg + 2 * n_triggers  # == n_items - 1; only used in cue mode

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
    trig_step = np.where(has_trig, trigger_offset + rng.integers(0, trigger_window, n), -1)
    tgt_step = np.where(has_trig, trig_step + trigger_distance, -1)
    plan = np.full(n, np.iinfo(np.int64).max)  # baskets per customer (no cap: churn decides)
    if cap is not None:
        plan[:] = cap
    if cue:
        # a separate stream, so the draws of the shared part above stay as in lag mode
        crng = np.random.default_rng([seed, 1])
        lag = trigger_distance + crng.integers(-trigger_jitter, trigger_jitter + 1, n)
        tgt_step = np.where(has_trig, trig_step + lag, -1)
        role = _cue_roles(crng, has_trig, planted_test_share, planted_valid_share)
        if train_lag_min is not None:
            hi = trigger_distance + trigger_jitter
            mixed = np.exp(crng.uniform(np.log(train_lag_min), np.log(hi + 1), n)).astype(np.int64)
            lag = np.where(role == _TRAIN, np.clip(mixed, train_lag_min, hi), lag)
            tgt_step = np.where(has_trig, trig_step + lag, -1)
        plan = np.select([role == _TEST, role == _VALID], [tgt_step + 1, tgt_step + 2], cap)
    cue_step = np.where(has_trig & cue, tgt_step - 1, -1)

    t = rng.uniform(0.0, 30.0, n)
    # generous cap on baskets (only customers with extreme rates could reach it)
    max_steps = int(min(np.ceil(3 * (horizon_days / gap_scale).max()) + 20, 10_000))
    if cue:
        max_steps = cap
    elif cap is not None:
        max_steps = min(max_steps, cap)
    last = np.full((n, K), -np.inf)
    churn_day = t + churn_day  # counted from the first basket: everyone has one
    stop_day = np.full(n, np.inf) if cue else np.minimum(churn_day, horizon_days)
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
        if cue:
            fire_c = cue_step[idx] == s
            item[fire_c, 0] = cue_item
            size = np.where(fire_c | fire_g, 1, size)  # the cue and the target are alone
        mask = np.arange(B)[None, :] < size[:, None]
        rows, cols = np.nonzero(mask)
        reg = item[rows, cols] < n_reg
        last[idx[rows[reg]], item_cat[item[rows[reg], cols[reg]]]] = tc[rows[reg]]
        out_c.append(idx[rows])
        out_s.append(np.full(rows.size, s, np.int64))
        out_i.append(item[rows, cols])
        out_t.append(tc[rows])
        n_baskets[idx] += 1
        gap = rng.exponential(gap_scale[idx])
        t[idx] = tc + (np.maximum(gap, MIN_GAP_DAYS) if cue else gap)
        active[idx] = (t[idx] < stop_day[idx]) & (n_baskets[idx] < plan[idx])

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

    roles = ["regular"] * n_reg + ["trigger"] * n_triggers + ["target"] * n_triggers + ["cue"] * int(cue)
    role_col = np.array(roles)
    cat_label = np.concatenate([np.char.add("cat_", np.char.zfill(item_cat.astype(str), 2)),
                                np.full(n_special, "special")])
    item_features = pd.DataFrame({"category": cat_label, "role": role_col, "price": price},
                                 index=pd.Index(np.arange(n_items), name="item_id"))
    churned = np.zeros(n, np.int64) if cue else (churn_day < horizon_days).astype(np.int64)
    features = {
        "gap_scale_days": gap_scale,
        "size_scale": size_scale,
        "churn_rate_per_day": churn_rate,
        "churn_day": np.full(n, np.inf) if cue else churn_day,
        "churned": churned,
        "n_baskets": n_baskets,
        "trigger_item": np.where(has_trig, triggers[np.maximum(pair, 0)], -1),
        "trigger_step": trig_step,
        "target_item": np.where(has_trig, targets[np.maximum(pair, 0)], -1),
        "target_step": tgt_step,
        "target_delivered": (has_trig & (n_baskets > tgt_step)).astype(np.int64),
        "top_category": pref.argmax(1),
    }
    if cue:
        features["cue_step"] = cue_step
        features["planted_role"] = np.array(ROLES)[role]
    customer_features = pd.DataFrame(features, index=pd.Index(np.arange(n), name="customer_id"))
    meta = {
        "trigger_pairs": [[int(a), int(b)] for a, b in zip(triggers, targets)],
        "trigger_distance_baskets": trigger_distance,
        "decay_rate_per_day": decay_rate, "decay_boost": decay_boost,
        "churn_base_rate_per_day": r0, "churn_gap_coef": churn_gap_coef,
        "churn_size_coef": churn_size_coef, "mean_gap_days": mean_gap_days,
        "horizon_days": horizon_days, "start": str(start),
        "churned_share": float(churned.mean()),
        "truncated_customers": int(active.sum()),
    }
    if cap is not None:
        meta["max_events"] = int(max_events)
    if cue:
        meta.update({
            "trigger_mode": "cue", "cue_item": int(cue_item), "trigger_jitter": int(trigger_jitter),
            "train_lag_min": None if train_lag_min is None else int(train_lag_min),
            "planted_roles": {name: int((role == code).sum()) for code, name in enumerate(ROLES)},
        })
    return EventData(events=events, item_features=item_features,
                     customer_features=customer_features, repairs=rep, source=NAME, meta=meta)


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="1"))
