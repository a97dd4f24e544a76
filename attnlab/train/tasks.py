"""Tasks: how a protocol becomes training batches, a loss, scores and metrics.

Each task is a small class registered in :data:`TASKS`; the trainer never branches on
the task name. A task states what the model may see (the protocol in
:mod:`attnlab.data.splits`) and builds training data only from ``split.train_end``
prefixes or ``split.train`` examples.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.baselines.registry import churn_baselines, ranking_baselines
from attnlab.data import splits as protocols
from attnlab.data.batching import Batch, make_batch, next_basket_targets
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples, Split
from attnlab.eval import evaluate as evaluation

ScoreFn = Callable[[SequenceStore, Examples], np.ndarray]


def _pad_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pad the leading axis to ``size`` (fixed shapes -> one compilation)."""
    out = {}
    for k, a in arrays.items():
        pad = size - a.shape[0]
        out[k] = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return out


def _predictor(fn, model, *, max_len: int, batch_size: int, use_cutoff: bool):
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
                           cutoffs=ex.cutoff[sl] if use_cutoff else None, max_len=max_len)
            out.append(np.asarray(fn(model, _pad_rows(b.model_inputs(), batch_size)))[: len(b.lengths)])
        if out:
            return np.concatenate(out)
        return np.zeros((0, store.n_items + 1) if not use_cutoff else (0,), np.float32)

    return predict


def _require_items(store: SequenceStore, task: str) -> None:
    if store.n_items == 0:
        source = store.meta.get("source", "this dataset")
        raise ValueError(
            f"task={task} ranks items, but data={source} has no item ids (e.g. CDNOW records "
            "only order counts and dollars). Use task=churn with this data, or a dataset with items."
        )


def sample_target_positions(targets: np.ndarray, n: int, rng: np.random.Generator):
    """Pick up to ``n`` positions with a target (> 0) per row, uniformly without replacement.

    Args:
      targets: ``int32[b, L]`` per-position targets (0 = none).
      n: positions per row.
      rng: numpy generator (seeded by the caller).

    Returns:
      ``(index int32[b, n], item int32[b, n])``; unused slots have item 0 (ignored).
    """
    b, length = targets.shape
    keys = np.where(targets > 0, rng.random((b, length)), np.inf)
    n = min(n, length)
    index = np.argsort(keys, axis=1)[:, :n]
    item = np.take_along_axis(targets, index, axis=1)
    return index.astype(np.int32), item.astype(np.int32)


class NextItemTask:
    """Next item after the history (leave-last-basket-out, full-catalogue ranking).

    Training windows: the customer's training prefix (events before the validation
    basket) cut into non-overlapping ``max_len`` windows from the most recent backwards,
    at most ``windows_per_customer`` per customer; every position's target is an item of
    the next purchase basket (:func:`attnlab.data.batching.next_basket_targets`).
    """

    name = "next_item"
    monitor = "ndcg@10"

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.ks = tuple(cfg.get("ks", (10, 20)))

    # -- protocol ---------------------------------------------------------------
    def split(self, store: SequenceStore, *, seed: int) -> Split:
        _require_items(store, self.name)
        return protocols.next_item_split(store, seed=seed, min_baskets=int(self.cfg.get("min_baskets", 3)))

    def baselines(self, store: SequenceStore, split: Split) -> dict[str, ScoreFn]:
        names = self.cfg.get("baselines") or ("most_popular", "personal_repeat")
        return ranking_baselines(names, store, split)

    def evaluate(self, score_fn: ScoreFn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_next_item(score_fn, store, examples, ks=self.ks, progress=progress)

    # -- training data ----------------------------------------------------------
    def prepare(self, store: SequenceStore, split: Split) -> None:
        self._targets = next_basket_targets(store, split.train_end)

    def train_windows(self, store: SequenceStore, split: Split, *, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``(customers, ends)`` of every training window (deterministic)."""
        per = int(self.cfg.get("windows_per_customer", 4))
        starts = np.asarray(store.offsets)[:-1]
        n = np.asarray(split.train_end) - starts
        k = np.minimum(np.ceil(n / max_len).astype(np.int64), per)
        cust = np.repeat(np.arange(store.n_customers), k)
        rank = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
        ends = np.asarray(split.train_end)[cust] - rank * max_len
        keep = ends - starts[cust] >= 2
        return cust[keep], ends[keep]

    def train_batches(
        self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int, epoch: int, seed: int
    ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Yields ``(inputs, targets)``; targets hold ``index``/``item`` ``int32[batch, P]``.

        The full-catalogue softmax is the expensive part (``n_items`` logits per
        position), so each window contributes ``loss_positions`` seeded-random positions
        that have a target (all of them if fewer): an unbiased estimate of the mean
        per-position loss, at a fraction of the cost. 0 = every position.
        """
        cust, ends = self.train_windows(store, split, max_len=max_len)
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(cust))
        n_pos = int(self.cfg.get("loss_positions", 0)) or max_len
        for i in range(0, len(order), batch_size):
            sel = order[i : i + batch_size]
            batch = make_batch(store, customers=cust[sel], ends=ends[sel], cutoffs=None,
                               max_len=max_len, targets=self._targets)
            index, item = sample_target_positions(batch.targets, n_pos, rng)
            inputs = _pad_rows(batch.model_inputs(), batch_size)
            yield inputs, _pad_rows({"index": index, "item": item}, batch_size)

    @staticmethod
    def loss(model, inputs, targets, rngs):
        h = model.hidden(inputs, rngs=rngs)
        logp = model.target_log_prob(h, inputs, targets["index"], targets["item"])
        mask = targets["item"] > 0
        return -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def model_scores(self, model, *, max_len: int, batch_size: int) -> ScoreFn:
        """A score function over the catalogue for the evaluator."""

        @nnx.jit
        def scores(model, inputs):
            return model.next_item_scores(inputs)

        return _predictor(scores, model, max_len=max_len, batch_size=batch_size, use_cutoff=False)


class NextBasketTask(NextItemTask):
    """Items of the next basket after a global cut-off (Recall/NDCG/PHR, repeat vs explore).

    Trains exactly like :class:`NextItemTask` on the ``train_end`` prefixes (events
    before the validation cut-off); scores the catalogue from the latest visible event.
    """

    name = "next_basket"
    monitor = "recall@10"

    def split(self, store: SequenceStore, *, seed: int) -> Split:
        _require_items(store, self.name)
        return protocols.next_basket_split(
            store, valid_cutoff=self.cfg.get("valid_cutoff"), test_cutoff=self.cfg.get("test_cutoff"),
            min_history_baskets=int(self.cfg.get("min_history_baskets", 1)),
        )

    def evaluate(self, score_fn: ScoreFn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_next_basket(score_fn, store, examples, ks=self.ks, progress=progress)


class ChurnTask:
    """No purchase within ``horizon`` after the cut-off (AUC, PR-AUC, log loss, Brier).

    Trains on ``split.train`` examples only (inputs and labels before the validation
    cut-off in temporal mode; disjoint customers in holdout mode).
    """

    name = "churn"
    monitor = "auc"

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    def split(self, store: SequenceStore, *, seed: int) -> Split:
        return protocols.churn_split(
            store, cutoff=self.cfg.get("cutoff"), horizon=self.cfg.get("horizon", "8W"),
            mode=self.cfg.get("mode", "temporal"), seed=seed,
        )

    def baselines(self, store: SequenceStore, split: Split) -> dict[str, ScoreFn]:
        names = self.cfg.get("baselines") or ("recency_frequency",)
        horizon_days = protocols.to_duration_seconds(self.cfg.get("horizon", "8W")) / 86400.0
        return churn_baselines(names, store, split, horizon_days=horizon_days)

    def evaluate(self, prob_fn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_churn(prob_fn, store, examples)

    def prepare(self, store: SequenceStore, split: Split) -> None:
        if split.train is None or len(split.train) == 0:
            raise ValueError("churn: the split has no training examples; move the cut-off later.")

    def train_batches(self, store, split, *, max_len, batch_size, epoch, seed):
        ex = split.train
        order = np.random.default_rng([seed, epoch]).permutation(len(ex))
        for i in range(0, len(order), batch_size):
            sel = order[i : i + batch_size]
            b = make_batch(store, customers=ex.customer[sel], ends=ex.end[sel], cutoffs=ex.cutoff[sel], max_len=max_len)
            labels = np.full(batch_size, -1.0, np.float32)  # -1 marks padded rows
            labels[: len(sel)] = ex.label[sel]
            yield _pad_rows(b.model_inputs(), batch_size), labels

    @staticmethod
    def loss(model, inputs, labels, rngs):
        logit = model.churn_logit(inputs, rngs=rngs)
        mask = labels >= 0
        bce = optax.sigmoid_binary_cross_entropy(logit, jnp.clip(labels, 0.0, 1.0))
        return jnp.sum(jnp.where(mask, bce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def model_scores(self, model, *, max_len: int, batch_size: int):
        @nnx.jit
        def probs(model, inputs):
            return jax.nn.sigmoid(model.churn_logit(inputs))

        return _predictor(probs, model, max_len=max_len, batch_size=batch_size, use_cutoff=True)


TASKS: dict[str, type] = {"next_item": NextItemTask, "next_basket": NextBasketTask, "churn": ChurnTask}


def make_task(task_cfg: dict[str, Any]):
    name = task_cfg["name"]
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {sorted(TASKS)}. Pick one with task=<name>.")
    return TASKS[name](task_cfg)
