"""Evaluation loops: full-catalogue ranking (next item / next basket) and churn.

A ranking scorer is ``score_fn(store, examples_chunk) -> float32[m, n_items + 1]``: one
score per vocabulary entry for each example of the chunk, computed from the visible
history ``store[offsets[customer[i]]:end[i]]`` only. The evaluator overwrites column
0 ("no item") with ``-inf`` and ranks the target(s) against EVERY item (no sampled
negatives), ``batch_size`` examples at a time so memory stays at
``batch_size x (n_items + 1)`` scores. A :class:`attnlab.eval.chunked.ChunkedScorer` in
place of ``score_fn`` scores the catalogue ``item_chunk`` items at a time instead
(memory ``batch_size x item_chunk``), with the same ranks, metrics and per-example
arrays for the same scores (:mod:`attnlab.eval.chunked`).

Planted long-range pairs. When the store carries known (trigger, target) item pairs
(the synthetic simulator writes them to ``meta["source_meta"]["trigger_pairs"]``, in
source item ids), :func:`evaluate_next_item` also reports the metrics restricted to the
test examples whose target is a planted target item (``planted/...``), and whether the
matching trigger is visible in the example's history window: the ``max_len`` most
recent visible events (the model's window), or the whole visible history when
``max_len`` is None. When the store also names a cue item (the simulator's
``trigger_mode="cue"`` writes ``meta["source_meta"]["cue_item"]``), ``planted/cued``
is the share of planted rows whose latest visible event is the cue. Stores without
pairs get exactly the plain metrics. Validation reports the same keys, so
``task.monitor: planted/hr@1`` selects checkpoints on the planted rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from attnlab.data.batching import window_lengths
from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.eval import metrics as M
from attnlab.eval.chunked import ChunkedScorer, target_counts

ScoreFn = Callable[[SequenceStore, Examples], np.ndarray]
ProbFn = Callable[[SequenceStore, Examples], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Result of one evaluation.

    Attributes:
      metrics: name -> mean over the examples where the metric is defined (plus
        counts such as ``n_repeat``); JSON-friendly floats.
      per_example: name -> ``float64[n]`` (NaN where undefined), aligned with the
        examples' rows, for paired significance tests.
      n: number of examples evaluated.
    """

    metrics: dict[str, float]
    per_example: dict[str, np.ndarray]
    n: int


def history_order(store: SequenceStore, examples: Examples) -> np.ndarray:
    """Example rows ordered by visible-history length, shortest first (stable).

    The evaluators score chunks in this order, so each chunk holds histories of similar
    length and a length-bucketed scorer (:func:`attnlab.train.tasks.common.predictor`)
    pads a chunk to about its own length instead of the longest history in the data.
    A row's scores do not depend on which rows share its chunk (up to fp32 rounding when a
    length-bucketed scorer pads the chunk to another length); results stay in example order.
    """
    lengths = window_lengths(store, examples.customer, examples.end, max_len=np.iinfo(np.int64).max)
    return np.argsort(lengths, kind="stable")


def _chunks(order: np.ndarray, batch_size: int):
    """``order`` cut into consecutive chunks of ``batch_size`` rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for lo in range(0, len(order), batch_size):
        yield order[lo:lo + batch_size]


def _chunked(score_fn, item_chunk: int | None) -> bool:
    """Whether to score in item chunks: ``score_fn`` is a :class:`ChunkedScorer`."""
    if isinstance(score_fn, ChunkedScorer):
        return True
    if item_chunk is not None:
        raise ValueError("item_chunk needs a ChunkedScorer (attnlab.eval.chunked); this score_fn returns "
                         "the whole [examples, n_items + 1] matrix at once.")
    return False


def _checked_scores(score_fn: ScoreFn, store: SequenceStore, chunk: Examples) -> np.ndarray:
    scores = np.asarray(score_fn(store, chunk))
    expected = (len(chunk), store.n_items + 1)
    if scores.shape != expected:
        raise ValueError(f"score_fn returned shape {scores.shape}; expected {expected} "
                         "(examples x (n_items + 1), column 0 = no item)")
    scores = np.array(scores, dtype=np.float32, copy=True)  # own a writable copy
    scores[:, 0] = -np.inf
    if np.isnan(scores).any():
        bad = np.flatnonzero(np.isnan(scores).any(axis=1))[:5]
        raise ValueError(f"score_fn returned NaN scores for chunk rows {bad.tolist()} ...")
    return scores


def evaluate_next_item(score_fn: ScoreFn | ChunkedScorer, store: SequenceStore, examples: Examples, *,
                       ks: Sequence[int] = (10, 20), batch_size: int = 256,
                       progress: bool = True, max_len: int | None = None,
                       item_chunk: int | None = None) -> EvalResult:
    """Full-catalogue next-item evaluation (pessimistic ties, no sampled negatives).

    Args:
      score_fn: ``(store, examples_chunk) -> float32[m, n_items + 1]``, or a
        :class:`~attnlab.eval.chunked.ChunkedScorer` (scored in item chunks).
      store: the event store the examples index into.
      examples: one target per row (``target_offsets == arange(M + 1)``).
      ks: cut-offs for HR/NDCG/MRR.
      batch_size: examples scored per call.
      progress: show a tqdm bar.
      max_len: the scorer's history window (most recent events it reads), used only to
        decide whether a planted trigger is visible; None = the whole visible history.
      item_chunk: items per call of a chunked scorer (None = its ``item_chunk``).

    Returns:
      :class:`EvalResult` with ``hr@k``, ``ndcg@k``, ``mrr@k``, ``mrr`` and per-example
      ``rank`` (1-based, over all ``n_items`` items). With planted pairs in the store
      (see the module docstring) also :func:`planted_metrics`.
    """
    if examples.target_items is None:
        raise ValueError("next-item evaluation needs Examples with target_items")
    if not np.array_equal(np.diff(examples.target_offsets), np.ones(len(examples))):
        raise ValueError("next-item evaluation needs exactly one target per example; "
                         "use evaluate_next_basket for target sets")
    chunked = _chunked(score_fn, item_chunk)
    ranks = np.empty(len(examples), dtype=np.int64)
    with tqdm(total=len(examples), desc="next-item eval", disable=not progress) as bar:
        for idx in _chunks(history_order(store, examples), batch_size):
            chunk = examples.take(idx)
            if chunked:
                ranks[idx] = target_counts(score_fn, store, chunk, item_chunk=item_chunk).at_or_above
            else:
                scores = _checked_scores(score_fn, store, chunk)
                ranks[idx] = M.target_ranks(scores, chunk.target_items)
            bar.update(len(idx))
    per = M.rank_metrics(ranks, ks=ks)
    per["rank"] = ranks.astype(np.float64)
    metrics = {k: v for k, v in M.nan_means(per).items() if k != "rank"}
    metrics["n"] = float(len(examples))
    pairs = planted_pairs(store)
    if len(pairs):
        p_metrics, p_per = planted_metrics(store, examples, ranks, pairs=pairs, ks=ks, max_len=max_len)
        metrics.update(p_metrics)
        per.update(p_per)
    return EvalResult(metrics=metrics, per_example=per, n=len(examples))


# ------------------------------------------------------------- planted long-range pairs


def planted_pairs(store: SequenceStore) -> np.ndarray:
    """``int64[P, 2]`` planted (trigger, target) pairs as vocabulary indices.

    Read from ``store.meta["source_meta"]["trigger_pairs"]`` (or ``meta["trigger_pairs"]``),
    given in source item ids; pairs with an item that never occurs in the store (so has
    no vocabulary index) are dropped. Empty ``[0, 2]`` when the store has none.
    """
    meta = store.meta or {}
    raw = (meta.get("source_meta") or {}).get("trigger_pairs") or meta.get("trigger_pairs") or []
    raw = np.asarray(raw, dtype=np.int64).reshape(-1, 2)
    vocab = np.asarray(store.item_vocab)[1:]
    if len(raw) == 0 or len(vocab) == 0:
        return np.zeros((0, 2), np.int64)
    pos = np.searchsorted(vocab, raw).clip(max=len(vocab) - 1)
    found = (vocab[pos] == raw).all(axis=1)
    return (pos[found] + 1).astype(np.int64)


def _source_item_index(store: SequenceStore, item_id) -> int:
    """Vocabulary index of a source item id, 0 when absent."""
    if item_id is None:
        return 0
    vocab = np.asarray(store.item_vocab)[1:]
    pos = int(np.searchsorted(vocab, int(item_id)))
    return pos + 1 if pos < len(vocab) and vocab[pos] == int(item_id) else 0


def planted_cue(store: SequenceStore) -> int:
    """Vocabulary index of the planted cue item (``meta["source_meta"]["cue_item"]`` or
    ``meta["cue_item"]``, a source item id); 0 when the store has none."""
    meta = store.meta or {}
    cue = (meta.get("source_meta") or {}).get("cue_item", meta.get("cue_item"))
    return _source_item_index(store, cue)


def planted_trigger_back(store: SequenceStore, examples: Examples,
                         pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which examples have a planted target, and how far back their trigger is.

    Args:
      store: the event store.
      examples: one target per row.
      pairs: ``int[P, 2]`` (trigger, target) vocabulary indices (:func:`planted_pairs`).

    Returns:
      ``(planted bool[M], back float64[M])``: ``planted[m]`` iff the target of row ``m``
      is a planted target item; ``back[m]`` = position of the latest PURCHASE of the
      matching trigger counted from the end of the visible history (1 = the last
      visible event), NaN when the row is not planted or the trigger is not in its
      visible history.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = len(examples)
    target = np.asarray(examples.target_items, dtype=np.int64)[np.asarray(examples.target_offsets)[:-1]]
    trigger_of = np.zeros(store.n_items + 1, np.int64)  # 0 = not a planted target
    trigger_of[pairs[:, 1]] = pairs[:, 0]
    trig = trigger_of[target]
    planted = trig > 0
    back = np.full(m, np.nan)
    rows = np.flatnonzero(planted)
    if len(rows) == 0:
        return planted, back
    starts = np.asarray(store.offsets)[examples.customer[rows]]
    sizes = np.asarray(examples.end)[rows] - starts
    h_off = np.concatenate([[0], np.cumsum(sizes)])
    ev = np.repeat(starts - h_off[:-1], sizes) + np.arange(h_off[-1])
    h_row = np.repeat(np.arange(len(rows)), sizes)
    hit = ((np.asarray(store.item)[ev] == trig[rows][h_row])
           & (np.asarray(store.event_type)[ev] == EventType.PURCHASE))
    latest = np.full(len(rows), -1, np.int64)
    np.maximum.at(latest, h_row[hit], ev[hit])
    found = latest >= 0
    back[rows[found]] = (np.asarray(examples.end)[rows[found]] - latest[found]).astype(np.float64)
    return planted, back


def planted_metrics(store: SequenceStore, examples: Examples, ranks: np.ndarray, *,
                    pairs: np.ndarray | None = None, ks: Sequence[int] = (10, 20),
                    max_len: int | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Next-item metrics restricted to the examples whose target is a planted target.

    Args:
      store: the event store (pairs from :func:`planted_pairs` unless given).
      examples: one target per row, aligned with ``ranks``.
      ranks: ``int[M]`` 1-based target ranks (from the full-catalogue evaluation).
      pairs: ``int[P, 2]`` (trigger, target) vocabulary indices.
      ks: cut-offs (HR@1 is always added: "accuracy").
      max_len: the scorer's window; a trigger further back than ``max_len`` events is
        not visible. None = the whole visible history.

    Returns:
      ``(metrics, per_example)``. Per-example arrays (``float64[M]``, aligned with the
      rows): ``planted`` (1/0), ``planted/trigger_back`` (see
      :func:`planted_trigger_back`), ``planted/visible`` (1/0 on planted rows),
      ``planted/hr@1``, ``planted/hr@k``, ``planted/mrr`` (on planted rows) and
      ``planted/visible_hr@1``, ``planted/visible_hr@k`` (on planted rows whose trigger
      is visible); NaN on the other rows. With a cue item in the store (:func:`planted_cue`)
      also ``planted/cued`` (1/0 on planted rows: the latest visible event is the cue).
      Metrics: ``planted/n`` (planted examples) and the mean of every per-example array
      but the first two over the rows where it is defined (``planted/visible`` = share of
      planted examples whose trigger is in the window; NaN when no row qualifies).
    """
    if pairs is None:
        pairs = planted_pairs(store)
    planted, back = planted_trigger_back(store, examples, pairs)
    cue = planted_cue(store)
    visible = ~np.isnan(back)
    if max_len is not None:
        visible &= np.nan_to_num(back, nan=np.inf) <= int(max_len)
    r = np.asarray(ranks, dtype=np.float64)
    per = {
        "planted": planted.astype(np.float64),
        "planted/trigger_back": back,
        "planted/visible": np.where(planted, visible.astype(np.float64), np.nan),
    }
    cut = (1, *[k for k in ks if k != 1])
    for k in cut:
        per[f"planted/hr@{k}"] = np.where(planted, (r <= k).astype(np.float64), np.nan)
    per["planted/mrr"] = np.where(planted, 1.0 / r, np.nan)
    for k in cut:
        per[f"planted/visible_hr@{k}"] = np.where(planted & visible, (r <= k).astype(np.float64), np.nan)
    if cue:
        starts = np.asarray(store.offsets)[examples.customer]
        ends = np.asarray(examples.end)
        latest = np.where(ends > starts, np.asarray(store.item)[np.maximum(ends - 1, 0)], 0)
        per["planted/cued"] = np.where(planted, (latest == cue).astype(np.float64), np.nan)
    metrics = {"planted/n": float(planted.sum())}
    metrics.update(M.nan_means({k: v for k, v in per.items()
                                if k not in ("planted", "planted/trigger_back")}))
    return metrics, per


def history_repeat_mask(store: SequenceStore, examples: Examples) -> np.ndarray:
    """``bool[n_targets]``: target item was PURCHASED in the example's visible history.

    Vectorised over the chunk: the visible purchase events of every row are gathered
    into ``row * (n_items + 1) + item`` keys and matched against the target keys.
    """
    off = examples.target_offsets
    m = len(examples)
    starts = store.offsets[examples.customer]
    sizes = examples.end - starts
    h_off = np.concatenate([[0], np.cumsum(sizes)])
    ev = np.repeat(starts - h_off[:-1], sizes) + np.arange(h_off[-1])
    h_row = np.repeat(np.arange(m), sizes)
    keep = (store.event_type[ev] == EventType.PURCHASE) & (store.item[ev] > 0)
    v = store.n_items + 1
    h_keys = h_row[keep] * v + store.item[ev[keep]].astype(np.int64)
    t_keys = np.repeat(np.arange(m), np.diff(off)) * v + examples.target_items.astype(np.int64)
    return np.isin(t_keys, h_keys)


def evaluate_next_basket(score_fn: ScoreFn | ChunkedScorer, store: SequenceStore, examples: Examples, *,
                         ks: Sequence[int] = (10, 20), batch_size: int = 256,
                         progress: bool = True, item_chunk: int | None = None) -> EvalResult:
    """Full-catalogue next-basket evaluation (top-k with pessimistic ties).

    Recall@k, NDCG@k (binary relevance, IDCG over ``min(|T|, k)``) and PHR@k over all
    targets, and the same metrics restricted to repeat targets (purchased in the
    visible history) and explore targets (not purchased before), scored on the same
    ranked list; ``*_repeat`` / ``*_explore`` means are over the examples that have
    such targets, counted in ``n_repeat`` / ``n_explore``.

    Args:
      score_fn: ``(store, examples_chunk) -> float32[m, n_items + 1]``, or a
        :class:`~attnlab.eval.chunked.ChunkedScorer` (scored in item chunks).
      store: the event store.
      examples: ragged target sets (distinct items >= 1).
      ks: cut-offs.
      batch_size: examples scored per call.
      progress: show a tqdm bar.
      item_chunk: items per call of a chunked scorer (None = its ``item_chunk``).

    Returns:
      :class:`EvalResult`; per-example keys include ``n_targets``, ``n_repeat_targets``.
    """
    if examples.target_items is None:
        raise ValueError("next-basket evaluation needs Examples with target sets")
    if np.any(np.diff(examples.target_offsets) < 1):
        raise ValueError("every next-basket example needs at least one target item")
    max_k = max(ks)
    chunked = _chunked(score_fn, item_chunk)
    parts: list[dict[str, np.ndarray]] = []
    order = history_order(store, examples)
    with tqdm(total=len(examples), desc="next-basket eval", disable=not progress) as bar:
        for idx in _chunks(order, batch_size):
            chunk = examples.take(idx)
            if chunked:
                c = target_counts(score_fn, store, chunk, item_chunk=item_chunk)
                pos = M.basket_positions_from_counts(c.score, c.above, c.at_or_above, chunk.target_offsets,
                                                     chunk.target_items, max_k=max_k)
            else:
                scores = _checked_scores(score_fn, store, chunk)
                pos = M.basket_target_positions(scores, chunk.target_offsets,
                                                chunk.target_items, max_k=max_k)
            rep = history_repeat_mask(store, chunk)
            per = M.basket_metrics(pos, chunk.target_offsets, ks=ks)
            for name, rel in (("repeat", rep), ("explore", ~rep)):
                sub = M.basket_metrics(pos, chunk.target_offsets, ks=ks, relevant=rel)
                per.update({f"{k}_{name}": v for k, v in sub.items()})
            row = np.repeat(np.arange(len(idx)), np.diff(chunk.target_offsets))
            per["n_targets"] = np.diff(chunk.target_offsets).astype(np.float64)
            per["n_repeat_targets"] = np.bincount(row[rep], minlength=len(idx)).astype(np.float64)
            parts.append(per)
            bar.update(len(idx))
    keys = parts[0].keys() if parts else []
    per_example = {}
    for k in keys:   # chunks were scored in history-length order: back to example order
        values = np.concatenate([p[k] for p in parts])
        per_example[k] = np.empty_like(values)
        per_example[k][order] = values
    metrics = M.nan_means({k: v for k, v in per_example.items()
                           if k not in ("n_targets", "n_repeat_targets")})
    if per_example:
        metrics["n_repeat"] = float((per_example["n_repeat_targets"] > 0).sum())
        metrics["n_explore"] = float((per_example["n_repeat_targets"] < per_example["n_targets"]).sum())
        metrics["repeat_target_share"] = float(per_example["n_repeat_targets"].sum()
                                               / per_example["n_targets"].sum())
    metrics["n"] = float(len(examples))
    return EvalResult(metrics=metrics, per_example=per_example, n=len(examples))


def evaluate_churn(prob_fn: ProbFn, store: SequenceStore, examples: Examples) -> EvalResult:
    """Churn evaluation: AUC-ROC, PR-AUC (average precision), log loss, Brier.

    Args:
      prob_fn: ``(store, examples) -> float[M]`` churn probabilities in ``[0, 1]``.
      store: the event store.
      examples: rows with ``label`` (1 = churned).

    Returns:
      :class:`EvalResult` with per-example ``prob``, ``label``, ``log_loss``, ``brier``.
    """
    if examples.label is None:
        raise ValueError("churn evaluation needs Examples with labels (churn_split)")
    p = np.asarray(prob_fn(store, examples), dtype=np.float64).reshape(-1)
    if p.shape != (len(examples),):
        raise ValueError(f"prob_fn returned {p.shape[0]} probabilities for {len(examples)} examples")
    y = examples.label.astype(np.float64)
    metrics = M.churn_metrics(y, p)
    metrics["n"] = float(len(examples))
    per = {"prob": p, "label": y, "log_loss": M.binary_log_loss(y, p), "brier": (p - y) ** 2}
    return EvalResult(metrics=metrics, per_example=per, n=len(examples))
