"""Full-catalogue ranking metrics and churn metrics (numpy, no sampled negatives).

Scores are ``float[m, n_items + 1]`` over the whole vocabulary; column 0 ("no item")
never counts as a candidate. Ties are broken PESSIMISTICALLY everywhere: a target is
placed after every other item that has the same score, so a constant scorer gets the
worst possible rank, never a lucky one.

Per-example metric arrays use NaN for examples where a metric is undefined (e.g. the
repeat-target recall of a basket with no repeat target); means skip those and the
number of examples that count is reported next to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------
# Next item: one target per example.
# ---------------------------------------------------------------------------


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pessimistic 1-based rank of each target over the full catalogue.

    ``rank = 1 + #{j >= 1 : s_j > s_t} + #{j >= 1, j != t : s_j == s_t}``: items tying
    with the target are counted as ranked above it (pessimistic ties). Column 0 is
    excluded.

    Args:
      scores: ``float[m, n_items + 1]``; must not contain NaN.
      targets: ``int[m]`` vocabulary indices in ``1 .. n_items``.

    Returns:
      ``int64[m]`` ranks in ``1 .. n_items``.

    Raises:
      ValueError: on a NaN score, a shape mismatch or a target outside ``1 .. n_items``.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be [m, n_items + 1] and targets [m]; got "
                         f"{scores.shape} and {targets.shape}")
    if len(targets) and (targets.min() < 1 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must be in 1..{scores.shape[1] - 1}; got "
                         f"{targets.min()}..{targets.max()}")
    body = scores[:, 1:]
    if np.isnan(body).any():
        rows = np.flatnonzero(np.isnan(body).any(axis=1))[:5]
        raise ValueError(f"scores contain NaN (rows {rows.tolist()} ...)")
    s_t = scores[np.arange(len(targets)), targets][:, None]
    # >= counts the target itself once; every other tie counts against it.
    return (body >= s_t).sum(axis=1).astype(np.int64)


def rank_metrics(ranks: np.ndarray, *, ks: Sequence[int] = (10, 20)) -> dict[str, np.ndarray]:
    """Per-example HR@k, NDCG@k, MRR@k (and untruncated MRR) from 1-based ranks.

    Args:
      ranks: ``int[m]`` ranks (>= 1) of a single target per example.
      ks: cut-offs.

    Returns:
      ``{"hr@k", "ndcg@k", "mrr@k" for k in ks} + {"mrr"}`` -> ``float64[m]``.
    """
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / r, 0.0)
    out["mrr"] = 1.0 / r
    return out


# ---------------------------------------------------------------------------
# Next basket: a set of targets per example.
# ---------------------------------------------------------------------------


def basket_target_positions(scores: np.ndarray, target_offsets: np.ndarray,
                            target_items: np.ndarray, *, max_k: int,
                            block: int = 64) -> np.ndarray:
    """Position of every target in the pessimistic full-catalogue ranking, capped.

    The ranking of row ``r`` sorts items by score (descending); among equal scores
    non-targets come first, then targets by ascending item index. This equals the
    top-k list of an arbitrary scorer with the least favourable tie-break. Positions
    larger than ``max_k`` are returned as ``max_k + 1`` (only the top ``max_k``
    matters for the @k metrics, and targets scoring below the ``max_k``-th largest
    score are pruned without a full comparison).

    Args:
      scores: ``float[m, n_items + 1]`` (column 0 ignored); no NaN.
      target_offsets: ``int[m + 1]`` ragged offsets into ``target_items``.
      target_items: ``int[n_targets]`` distinct items per row, each in ``1..n_items``.
      max_k: largest cut-off needed.
      block: number of candidate targets compared against their row at once
        (bounds memory to ``block * n_items`` scores).

    Returns:
      ``int64[n_targets]`` positions in ``1 .. max_k + 1``.
    """
    scores = np.asarray(scores)
    body = scores[:, 1:]
    m, n = body.shape
    off = np.asarray(target_offsets, dtype=np.int64)
    items = np.asarray(target_items, dtype=np.int64)
    if off.shape != (m + 1,) or off[-1] != len(items):
        raise ValueError(f"target_offsets must be [m + 1] = [{m + 1}] ending at "
                         f"len(target_items) = {len(items)}; got shape {off.shape}")
    if len(items) and (items.min() < 1 or items.max() > n):
        raise ValueError(f"target items must be in 1..{n}")
    if np.isnan(body).any():
        raise ValueError("scores contain NaN")
    row = np.repeat(np.arange(m), np.diff(off))
    s_t = scores[row, items]
    tied_targets, tied_before = target_ties(row, items, s_t)

    pos = np.full(len(items), max_k + 1, dtype=np.int64)
    k_eff = min(max_k, n)
    if k_eff == 0 or len(items) == 0:
        return pos
    kth = -np.partition(-body, k_eff - 1, axis=1)[:, k_eff - 1]
    cand = np.flatnonzero(s_t >= kth[row])
    for lo in range(0, len(cand), block):
        c = cand[lo:lo + block]
        rows = body[row[c]]
        s = s_t[c][:, None]
        gt = (rows > s).sum(axis=1)
        eq = (rows == s).sum(axis=1)
        p = 1 + gt + (eq - tied_targets[c]) + tied_before[c]
        pos[c] = np.minimum(p, max_k + 1)
    return pos


def target_ties(row: np.ndarray, items: np.ndarray, s_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets-only tie terms of :func:`basket_target_positions`, ``int64[n_targets]`` each:
    the number of targets of the row with the same score (the target included), and how
    many of those have a smaller item index (they go first among tied targets)."""
    order = np.lexsort((items, s_t, row))
    r_o, s_o = row[order], s_t[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (r_o[1:] != r_o[:-1]) | (s_o[1:] != s_o[:-1])
    grp = np.cumsum(new) - 1
    grp_start = np.flatnonzero(new)
    grp_size = np.diff(np.concatenate([grp_start, [len(order)]]))
    tied_before = np.empty(len(order), dtype=np.int64)
    tied_before[order] = np.arange(len(order)) - grp_start[grp]
    tied_targets = np.empty(len(order), dtype=np.int64)
    tied_targets[order] = grp_size[grp]
    return tied_targets, tied_before


def basket_positions_from_counts(s_t: np.ndarray, above: np.ndarray, at_or_above: np.ndarray,
                                 target_offsets: np.ndarray, target_items: np.ndarray, *,
                                 max_k: int) -> np.ndarray:
    """:func:`basket_target_positions` from per-target counts over the catalogue.

    The position depends on the scores only through ``above = #{j >= 1 : s_j > s_t}``
    and ``at_or_above = #{j >= 1 : s_j >= s_t}`` (the target itself included), which a
    chunked evaluation sums chunk by chunk (:mod:`attnlab.eval.chunked`), and through
    the targets' own scores (the tie terms, :func:`target_ties`).

    Args:
      s_t: ``float32[n_targets]`` each target's score.
      above, at_or_above: ``int64[n_targets]`` the counts above.
      target_offsets: ``int[m + 1]``; target_items: ``int[n_targets]``.
      max_k: largest cut-off needed.

    Returns:
      ``int64[n_targets]`` positions in ``1 .. max_k + 1``, equal to
      :func:`basket_target_positions` on the full score matrix.
    """
    off = np.asarray(target_offsets, dtype=np.int64)
    row = np.repeat(np.arange(len(off) - 1), np.diff(off))
    tied_targets, tied_before = target_ties(row, np.asarray(target_items, dtype=np.int64), np.asarray(s_t))
    equal = np.asarray(at_or_above, np.int64) - np.asarray(above, np.int64)
    p = 1 + np.asarray(above, np.int64) + (equal - tied_targets) + tied_before
    return np.minimum(p, max_k + 1)


def basket_metrics(positions: np.ndarray, target_offsets: np.ndarray, *,
                   ks: Sequence[int] = (10, 20),
                   relevant: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-example Recall@k, NDCG@k (binary), PHR@k from target positions.

    Args:
      positions: ``int[n_targets]`` from :func:`basket_target_positions`.
      target_offsets: ``int[m + 1]``.
      ks: cut-offs (each ``<= max_k`` used for the positions).
      relevant: optional ``bool[n_targets]``; only these targets count as relevant
        (e.g. repeat or explore targets) in the same ranked list. Rows with no
        relevant target get NaN.

    Returns:
      ``{"recall@k", "ndcg@k", "phr@k"}`` -> ``float64[m]``. NDCG uses gain 1 and
      ``IDCG@k = sum_{i=1}^{min(|T|, k)} 1 / log2(i + 1)``.
    """
    off = np.asarray(target_offsets, dtype=np.int64)
    m = len(off) - 1
    pos = np.asarray(positions, dtype=np.float64)
    rel = np.ones(len(pos), dtype=bool) if relevant is None else np.asarray(relevant, dtype=bool)
    row = np.repeat(np.arange(m), np.diff(off))
    n_rel = np.bincount(row[rel], minlength=m).astype(np.float64)
    has = n_rel > 0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = rel & (pos <= k)
        n_hit = np.bincount(row[hit], minlength=m).astype(np.float64)
        dcg = np.bincount(row[hit], weights=1.0 / np.log2(pos[hit] + 1.0), minlength=m)
        disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
        idcg = disc[np.minimum(n_rel, k).astype(np.int64)]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"recall@{k}"] = np.where(has, n_hit / n_rel, np.nan)
            out[f"ndcg@{k}"] = np.where(has, dcg / idcg, np.nan)
        out[f"phr@{k}"] = np.where(has, (n_hit > 0).astype(np.float64), np.nan)
    return out


def nan_means(per_example: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over the non-NaN entries (NaN where a metric has no example)."""
    out = {}
    for key, v in per_example.items():
        v = np.asarray(v, dtype=np.float64)
        ok = ~np.isnan(v)
        out[key] = float(v[ok].mean()) if ok.any() else float("nan")
    return out


# ---------------------------------------------------------------------------
# Churn: binary probabilities.
# ---------------------------------------------------------------------------


def _check_binary(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in length")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(p).any():
        raise ValueError("scores contain NaN")
    return y, p


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney; ties count 1/2). NaN if one class."""
    y, s = _check_binary(y, score)
    return float(roc_auc_rows(y[None], s[None])[0])


def roc_auc_rows(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """:func:`roc_auc` of every row of ``y``/``score`` ``[r, n]`` at once (bootstrap
    replicates, groups); NaN for a row with one class. Inputs are not re-validated."""
    from scipy.stats import rankdata

    y = np.atleast_2d(np.asarray(y)) > 0.5
    ranks = rankdata(np.atleast_2d(np.asarray(score, np.float64)), axis=1)  # average rank of ties, 1-based
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    u = (ranks * y).sum(1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """PR-AUC as average precision, ``sum_n (R_n - R_{n-1}) P_n`` over distinct score
    thresholds (descending; tied scores enter together). NaN if no positive."""
    y, s = _check_binary(y, score)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    y_o, s_o = y[order], s[order]
    last = np.ones(len(s), dtype=bool)
    last[:-1] = s_o[1:] != s_o[:-1]
    tp = np.cumsum(y_o)[last]
    fp = np.cumsum(1 - y_o)[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy; ``p`` clipped to ``[eps, 1 - eps]`` (float64 eps)."""
    y, p = _check_binary(y, p)
    return float(np.mean(binary_log_loss(y, p)))


def binary_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-example binary cross-entropy ``float64[m]`` (clipped as :func:`log_loss`)."""
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of probabilities."""
    y, p = _check_binary(y, p)
    return float(np.mean((p - y) ** 2))


def churn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``{"auc", "pr_auc", "log_loss", "brier", "base_rate"}`` for labels ``y`` (1 =
    churned) and churn probabilities ``p`` in ``[0, 1]``."""
    y, p = _check_binary(y, p)
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"churn probabilities must be in [0, 1], got {p.min()}..{p.max()}")
    return {
        "auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
    }
