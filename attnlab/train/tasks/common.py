"""What every task shares: fixed-shape batches, the predictor that scores examples with a
model, typed task configs, and the split checks that run before anything is fitted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from attnlab.data.batching import make_batch, window_lengths
from attnlab.data.buckets import BucketPlan, length_ladder, pass_padding, plan_buckets
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples, Split
from attnlab.typed_config import TypedConfig

ScoreFn = Callable[[SequenceStore, Examples], np.ndarray]


def pad_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pad the leading axis to ``size`` (fixed shapes -> one compilation)."""
    out = {}
    for k, a in arrays.items():
        pad = size - a.shape[0]
        out[k] = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return out


def round_rows(rows: int, multiple: int) -> int:
    """``rows`` rounded up to a multiple of ``multiple`` (the data-parallel devices)."""
    return -(-rows // multiple) * multiple


def window_batches(n: int, *, batch_size: int, max_len: int, plan: BucketPlan | None,
                   lengths: np.ndarray | None, rng: np.random.Generator) -> list[tuple[np.ndarray, int, int]]:
    """One pass's batches over ``n`` training rows: ``[(rows, padded length, batch rows)]``.

    ``plan`` None: the one-shape batches (a seeded permutation cut into ``batch_size``
    rows, each padded to ``max_len``; ``rng`` is used exactly as before buckets existed).
    Else :meth:`attnlab.data.buckets.BucketPlan.batches` over the rows' window ``lengths``.
    """
    if plan is None:
        order = rng.permutation(n)
        return [(order[i:i + batch_size], max_len, batch_size) for i in range(0, n, batch_size)]
    return plan.batches(lengths, rng)


class BucketPlans:
    """A task's :class:`~attnlab.data.buckets.BucketPlan` per run layout, planned once on
    the window lengths of the first pass (``epoch = 0``, the run's seed), so every pass and
    a resumed run use the same static shapes.

    Args:
      lengths_of: ``(max_len, seed) -> int64[rows]`` window lengths of the first pass.
    """

    def __init__(self, lengths_of: Callable[[int, int], np.ndarray]):
        self._lengths_of = lengths_of
        self._lengths: dict[tuple[int, int], np.ndarray] = {}
        self._plans: dict[tuple, BucketPlan | None] = {}

    def lengths(self, max_len: int, seed: int) -> np.ndarray:
        """The first pass's window lengths (computed once per ``(max_len, seed)``)."""
        if (max_len, seed) not in self._lengths:
            self._lengths[(max_len, seed)] = self._lengths_of(max_len, seed)
        return self._lengths[(max_len, seed)]

    def get(self, *, max_len: int, batch_size: int, buckets: int, seed: int) -> BucketPlan | None:
        """The plan, or None for one-shape batches (``buckets <= 1``)."""
        if buckets <= 1:
            return None
        key = (max_len, batch_size, buckets, seed)
        if key not in self._plans:
            self._plans[key] = plan_buckets(self.lengths(max_len, seed), k=buckets, max_len=max_len,
                                            batch_size=batch_size)
        return self._plans[key]

    def describe(self, *, max_len: int, batch_size: int, buckets: int, seed: int) -> dict[str, Any]:
        """For the provenance: the static shapes ``[[rows, length], ...]`` and the share of
        tokens and of attention work (``length**2`` per row) that the first pass's batches
        spend on padding in those shapes."""
        plan = self.get(max_len=max_len, batch_size=batch_size, buckets=buckets, seed=seed)
        lengths = self.lengths(max_len, seed)
        batches = window_batches(len(lengths), batch_size=batch_size, max_len=max_len, plan=plan,
                                 lengths=lengths, rng=np.random.default_rng([seed, 0]))
        report = pass_padding(batches, lengths)
        return {"buckets": int(buckets), "shapes": [list(s) for s in report["shapes"]],
                "padding_tokens": round(report["padding_tokens"], 4),
                "padding_work": round(report["padding_work"], 4)}


def predictor(fn, model, *, max_len: int, batch_size: int, use_cutoff: bool, memory: int = 0, buckets: int = 1,
              summary: Any = False):
    """``(store, examples) -> np.ndarray`` running jitted ``fn(model, inputs)`` over
    fixed-size padded batches; results in example order.

    ``use_cutoff``: time features relative to each example's cut-off (churn: the
    scoring date is known) instead of its latest visible event (ranking tasks).
    ``buckets > 1``: the call's examples sorted by history length (stable) and cut into
    ``batch_size``-row batches, each padded to the shortest of ``buckets`` fixed lengths
    (:func:`attnlab.data.buckets.length_ladder`) that holds its longest row: at most
    ``buckets`` compilations for the whole run, scores in example order and equal to
    the one-shape scores to fp32 rounding. The evaluators hand over examples in
    history-length order (:func:`attnlab.eval.evaluate.history_order`), so a batch's
    rows have similar lengths; an unsorted call is never padded beyond ``max_len``.
    ``buckets = 1``: every batch padded to ``max_len`` (one compilation), rows also sorted
    by length (the chunked attention loops stop at a batch's longest row). ``memory``,
    ``summary``: the inputs carry the history memory / summary (:func:`make_batch`).
    """
    ladder = length_ladder(max_len, max(buckets, 1))   # one bucket: [max_len]

    def predict(store: SequenceStore, ex: Examples) -> np.ndarray:
        if len(ex) == 0:
            return np.zeros((0, store.n_items + 1) if not use_cutoff else (0,), np.float32)
        lengths = window_lengths(store, ex.customer, ex.end, max_len)
        order = np.argsort(lengths, kind="stable")
        out = None
        for i in range(0, len(order), batch_size):
            sl = order[i:i + batch_size]
            length = int(ladder[np.searchsorted(ladder, lengths[sl].max())])
            b = make_batch(store, customers=ex.customer[sl], ends=ex.end[sl],
                           cutoffs=ex.cutoff[sl] if use_cutoff else None, max_len=length, memory=memory, summary=summary)
            values = np.asarray(fn(model, pad_rows(b.model_inputs(), batch_size)))[: len(sl)]
            if out is None:
                out = np.empty((len(ex),) + values.shape[1:], values.dtype)
            out[sl] = values
        return out

    return predict


def require_items(store: SequenceStore, task: str) -> None:
    if store.n_items == 0:
        source = store.meta.get("source", "this dataset")
        raise ValueError(
            f"task={task} ranks items, but data={source} has no item ids (e.g. CDNOW records "
            "only order counts and dollars). Use task=churn with this data (e.g. "
            "experiment=cdnow_churn), or a dataset with items (data=complete_journey, "
            "data=synthetic, or data=tabular with an item column)."
        )


def typed(cls: type[TypedConfig], cfg: TypedConfig | Mapping[str, Any]) -> Any:
    """``cfg`` as the task's typed config (a mapping is checked: unknown keys and bad values fail)."""
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, TypedConfig):
        raise TypeError(f"{cls.__name__} expected, got {type(cfg).__name__}")
    return cls.from_dict(cfg)


def check_baselines(names: tuple[str, ...], table: dict, kind: str) -> None:
    """Unknown baseline names fail when the task is made (before any data is loaded)."""
    for n in names:
        if n not in table:
            raise KeyError(f"unknown {kind} baseline {n!r}; available: {sorted(table)}. "
                           f"Set task.baselines to a list of these.")


def data_span(store: SequenceStore) -> str:
    """``'<first day> .. <last day> (N customers, M events)'``: for error messages."""
    t = np.asarray(store.time)
    if len(t) == 0:
        return "no events"
    fmt = lambda x: str(np.datetime64(int(x), "s")).replace("T", " ")  # noqa: E731
    return (f"{fmt(t.min())} .. {fmt(t.max())} ({store.n_customers:,} customer(s), "
            f"{len(t):,} event(s))")


def check_split(task, store: SequenceStore, split: Split) -> None:
    """Refuse a split with no training data, no validation or no test examples, before
    anything is fitted: such a run would train on nothing, choose a checkpoint on nothing
    or file a result with ``n = 0``. The message names the cut-offs and the data span."""
    starts = np.asarray(store.offsets)[:-1]
    n_train = (len(split.train) if split.train is not None
               else int((np.asarray(split.train_end) - starts).sum()))
    empty = [name for name, n in (("training", n_train), ("validation", len(split.valid)),
                                  ("test", len(split.test))) if n == 0]
    if not empty:
        return
    report = split.report or {}
    cutoffs = {k: v for k, v in report.items() if k.endswith("cutoff") and isinstance(v, str)}
    where = (", ".join(f"{k} {v}" for k, v in cutoffs.items()) if cutoffs
             else f"leave-last-basket-out, min_baskets {report.get('min_baskets')}")
    raise ValueError(
        f"task={task.name}: the split has no {' / no '.join(empty)} examples ({where}; the data spans "
        f"{data_span(store)}). {task.split_hint} Nothing was trained or filed. Split report: {report}")
