"""Length-bucketed training batches: long and short histories are not padded to one length.

A window of ``l`` visible events padded to the model's ``max_len`` spends the attention
work of ``max_len**2`` on ``l**2`` useful pairs. On The Complete Journey at
``max_len=4096`` the median training window holds 170 events: 98.5% of the attention
work of one-shape batches is padding. Bucketing gives every batch the smallest of a
handful of static lengths (the *edges*) that holds its rows, so ``jax.jit`` compiles at
most ``len(edges)`` shapes per function and the padding shrinks to a few percent.

* :func:`bucket_edges` chooses at most ``k`` edges (multiples of ``multiple``, the last
  one holding the longest window) that minimise the padded attention work
  ``sum_rows edge(row)**2`` for a given length sample: an exact dynamic programme over
  the ``max_len / multiple`` candidate edges (optimal 1-D partitioning of a sorted
  sample; length bucketing itself is the long-standing practice of NMT toolkits, done
  here exactly because the candidate set is small).
* :func:`plan_buckets` adds a token budget: bucket ``b`` takes about
  ``batch_size * mean_edge / edges[b]`` rows per batch, so a batch of long windows has
  few rows and a batch of short ones many; every batch carries about the same number
  of events (and training targets), and a pass has about as many batches as
  ``ceil(n / batch_size)``. With a fixed row count the few longest windows would fill
  whole ``batch_size``-row batches at the longest edge (CJ, ``max_len=4096``: 43% of
  the work wasted with 8 buckets, against 2-4% with the budget).
* :meth:`BucketPlan.batches` forms one pass's batches: each bucket's rows in a seeded
  order cut into batches of its row count, the batch order shuffled.
* :func:`padding_report` measures the wasted share of tokens and of attention work.

Which rows share a batch changes (similar lengths together), so a bucketed run is a
different run (``trainer.length_buckets`` is part of the config hash); each row's
inputs and targets are unchanged, because windows are right-padded and every model
reads positions from the left (or counted back from ``lengths``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

BUCKET_MULTIPLE = 16
"""Edges are multiples of this (kernel tiles and vector widths like round lengths)."""
AUTO_MIN_LEN = 512
"""``trainer.length_buckets: null`` (auto) buckets from this ``max_len`` up."""
AUTO_BUCKETS = 8
"""Buckets under auto: at CJ's ``max_len=4096`` this wastes 3.6% of the attention work."""


def resolve_buckets(length_buckets: int | None, max_len: int) -> int:
    """``trainer.length_buckets`` -> the number of static lengths (1 = one shape, max_len).

    ``None`` (auto): :data:`AUTO_BUCKETS` when ``max_len >= AUTO_MIN_LEN``, else 1, so
    short-window runs (max_len 50 or 200) form their batches exactly as before.
    """
    if length_buckets is None:
        return AUTO_BUCKETS if max_len >= AUTO_MIN_LEN else 1
    return int(length_buckets)


def bucket_edges(lengths: np.ndarray, *, k: int, max_len: int,
                 multiple: int = BUCKET_MULTIPLE) -> np.ndarray:
    """At most ``k`` ascending batch lengths minimising the padded attention work.

    Args:
      lengths: window lengths (each in ``[0, max_len]``) of a representative pass.
      k: the most static shapes allowed (``>= 1``).
      max_len: the model's window; no edge exceeds it.
      multiple: every edge is a multiple of it, except ``max_len`` itself.

    Returns:
      ``int64[<= k]`` edges; the last is the smallest candidate that holds
      ``max(lengths)`` (``max_len`` for ``k == 1``, the one-shape batches).
    """
    if k < 1:
        raise ValueError(f"length buckets must be >= 1, got {k}")
    lengths = np.clip(np.asarray(lengths, np.int64), 0, max_len)
    if k == 1 or len(lengths) == 0:
        return np.array([max_len], np.int64)
    cand = np.unique(np.append(np.arange(multiple, max_len, multiple), max_len)).astype(np.int64)
    top = int(np.searchsorted(cand, lengths.max()))             # the last edge: holds the longest row
    cand = cand[: top + 1]
    # rows at or below each candidate: the rows of bucket (cand[s], cand[t]] number below[t] - below[s]
    below = np.searchsorted(np.sort(lengths), cand, side="right").astype(np.float64)
    width2 = cand.astype(np.float64) ** 2
    n = len(cand)
    best = below * width2                                       # one bucket ending at t
    choice = np.full((k, n), -1, np.int64)
    for j in range(1, min(k, n)):
        # best[s] + (below[t] - below[s]) * width2[t] over s < t
        total = best[:, None] + (below[None, :] - below[:, None]) * width2[None, :]
        total[np.tril_indices(n)] = np.inf
        prev = np.argmin(total, axis=0)
        new = total[prev, np.arange(n)]
        better = new < best
        choice[j] = np.where(better, prev, -1)
        best = np.where(better, new, best)
    # walk back from the last candidate; a layer that did not improve t keeps layer j-1's answer
    edges, t = [int(cand[-1])], n - 1
    for j in range(min(k, n) - 1, 0, -1):
        s = choice[j, t]
        if s >= 0:
            edges.append(int(cand[s]))
            t = s
    return np.array(sorted(edges), np.int64)


def length_ladder(max_len: int, k: int, multiple: int = BUCKET_MULTIPLE) -> np.ndarray:
    """At most ``k`` evenly spaced static lengths up to ``max_len``: the scoring shapes of a
    length-bucketed model (:func:`attnlab.train.tasks.common.predictor`).

    Edge ``i`` is ``ceil(i * max_len / k)`` rounded up to a multiple of ``multiple``
    (capped at ``max_len``, the last edge). Fixed by ``(max_len, k)`` alone, not by the
    rows being scored, so every evaluation of a run (each validation pass, the test
    pass) reuses the same ``<= k`` compiled shapes; edges fitted to each call's rows
    would compile new shapes call after call.
    """
    if k < 1:
        raise ValueError(f"length buckets must be >= 1, got {k}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    even = -(-np.arange(1, k + 1, dtype=np.int64) * max_len // k)
    return np.unique(np.minimum(-(-even // multiple) * multiple, max_len))


def bucket_of(lengths: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the smallest edge that holds each length (lengths above the last edge
    raise: the edges were chosen for another sample)."""
    lengths = np.asarray(lengths, np.int64)
    b = np.searchsorted(edges, lengths, side="left")
    if len(lengths) and b.max() >= len(edges):
        raise ValueError(f"a window of {int(lengths.max())} events is longer than the longest "
                         f"bucket {int(edges[-1])}; the bucket edges come from another pass's lengths.")
    return b


@dataclasses.dataclass(frozen=True)
class BucketPlan:
    """The static batch shapes of a run: bucket ``b`` holds windows of at most
    ``edges[b]`` events, ``rows[b]`` of them per batch.

    Rows per batch follow a token budget: ``rows[b] = floor(batch_size * mean_edge /
    edges[b])`` (``mean_edge``: the mean padded length of the sample's rows; at least 1).
    So every batch carries about the same number of events, hence of training targets,
    and a pass has about as many batches as ``ceil(n / batch_size)``, as without buckets;
    a long bucket does not waste a ``batch_size``-row batch on its few windows. The plan
    does not depend on the devices: a data-parallel run pads each batch with empty rows
    to a multiple of its devices (they carry no target), so 1 and N devices train on the
    same batches.
    """

    edges: np.ndarray
    rows: np.ndarray

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``[(rows, length), ...]``: every batch shape a run compiles."""
        return [(int(r), int(e)) for r, e in zip(self.rows, self.edges)]

    def batches(self, lengths: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, int, int]]:
        """One pass's batches ``[(rows int64[<= rows[b]], padded length, batch rows)]``.

        Each bucket's rows sorted by length (ties in a seeded random order) and cut into
        batches of ``rows[b]`` from the long end, so the one partial batch of a bucket
        (filled with zero rows by the caller) holds its shortest rows; the batch order
        over all buckets is a seeded shuffle. Rows of one batch have similar lengths,
        so the attention loops, which stop at the batch's longest row
        (:func:`attnlab.ops.attention.xla_chunked_loops.key_block_steps`; the Triton
        kernel stops at each row's own length), do little work on padding inside the
        static shape.
        """
        lengths = np.asarray(lengths, np.int64)
        bucket = bucket_of(lengths, self.edges)
        order = np.lexsort((rng.random(len(lengths)), lengths, bucket))
        bounds = np.searchsorted(bucket[order], np.arange(len(self.edges) + 1))
        out = []
        for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            size = int(self.rows[b])
            out += [(order[max(i - size, lo):i], int(self.edges[b]), size) for i in range(hi, lo, -size)]
        return [out[i] for i in rng.permutation(len(out))]

    def n_batches(self, lengths: np.ndarray) -> int:
        """Batches of a pass over windows of these ``lengths``."""
        counts = np.bincount(bucket_of(lengths, self.edges), minlength=len(self.edges))
        return int((-(-counts // self.rows)).sum())


def plan_buckets(lengths: np.ndarray, *, k: int, max_len: int, batch_size: int) -> BucketPlan:
    """:func:`bucket_edges` of a representative pass's window ``lengths`` and the rows per
    batch of each bucket (see :class:`BucketPlan`). ``k == 1``: one shape
    ``(batch_size, max_len)``, the unbucketed batches.

    The last edge is always ``max_len``: later passes draw other window ends, so one of
    them may hold a window longer than any in the representative pass (found at CJ full
    history, ``max_len`` 4224: the first pass's longest window had 3,928 events, the
    second pass drew one of 4,027, and the run stopped). The edges are optimal for the
    sample plus one window of ``max_len`` (its weight in the sample: one row).
    """
    edges = bucket_edges(np.append(np.asarray(lengths, np.int64), max_len), k=k, max_len=max_len)
    if len(edges) == 1 and edges[0] == max_len:
        return BucketPlan(edges=edges, rows=np.array([batch_size], np.int64))
    lengths = np.clip(np.asarray(lengths, np.int64), 0, max_len)
    mean_edge = float(edges[bucket_of(lengths, edges)].mean())
    rows = np.floor(batch_size * mean_edge / edges).astype(np.int64)
    return BucketPlan(edges=edges, rows=np.maximum(rows, 1))


def padding_report(lengths: np.ndarray, padded: np.ndarray) -> dict[str, float]:
    """Wasted share of tokens and of attention work for rows of ``lengths`` padded to
    ``padded`` (per row; zero rows that fill a partial batch count with length 0).
    Attention work of a row of length ``L`` is taken as ``L**2`` (causal attention's
    ``L (L + 1) / 2`` pairs waste the same share up to ``1 / L``)."""
    lengths = np.asarray(lengths, np.float64)
    padded = np.asarray(padded, np.float64)
    tokens, work = padded.sum(), (padded ** 2).sum()
    return {
        "rows": int(len(lengths)),
        "padding_tokens": float(1.0 - lengths.sum() / tokens) if tokens else 0.0,
        "padding_work": float(1.0 - (lengths ** 2).sum() / work) if work else 0.0,
    }


def pass_padding(batches: list[tuple[np.ndarray, int, int]], lengths: np.ndarray) -> dict[str, Any]:
    """:func:`padding_report` of a pass's batches (:meth:`BucketPlan.batches`) as the model
    sees them: each batch its full rows at its padded length, fill rows included."""
    lengths = np.asarray(lengths, np.int64)
    if not batches:
        return {"rows": 0, "padding_tokens": 0.0, "padding_work": 0.0, "batches": 0, "shapes": []}
    rows = np.concatenate([np.append(lengths[r], np.zeros(size - len(r), np.int64)) for r, _, size in batches])
    padded = np.concatenate([np.full(size, width, np.int64) for _, width, size in batches])
    report = padding_report(rows, padded)
    report.update(rows=int(len(lengths)), batches=len(batches),
                  shapes=sorted({(int(size), int(width)) for _, width, size in batches}, key=lambda s: s[1]))
    return report
