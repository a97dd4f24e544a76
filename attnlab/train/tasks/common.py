"""What every task shares: fixed-shape batches, the predictor that scores examples with a
model, typed task configs, and the split checks that run before anything is fitted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from attnlab.data.batching import make_batch
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


def predictor(fn, model, *, max_len: int, batch_size: int, use_cutoff: bool, memory: int = 0):
    """``(store, examples) -> np.ndarray`` running jitted ``fn(model, inputs)`` over
    fixed-size padded batches (one compilation), rows in example order.

    ``use_cutoff``: time features relative to each example's cut-off (churn: the
    scoring date is known) instead of its latest visible event (ranking tasks).
    """

    def predict(store: SequenceStore, ex: Examples) -> np.ndarray:
        out = []
        for i in range(0, len(ex), batch_size):
            sl = slice(i, i + batch_size)
            b = make_batch(store, customers=ex.customer[sl], ends=ex.end[sl],
                           cutoffs=ex.cutoff[sl] if use_cutoff else None, max_len=max_len,
                           memory=memory)
            out.append(np.asarray(fn(model, pad_rows(b.model_inputs(), batch_size)))[: len(b.lengths)])
        if out:
            return np.concatenate(out)
        return np.zeros((0, store.n_items + 1) if not use_cutoff else (0,), np.float32)

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
