"""Tasks: how a protocol becomes training batches, a loss, scores and metrics.

Each task is a small class registered in :data:`TASKS`; the trainer never branches on
the task name. A task states what the model may see (the protocol in
:mod:`attnlab.data.splits`) and builds training data only from ``split.train_end``
prefixes or ``split.train`` examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.baselines.registry import CHURN, RANKING, FittedBaseline, churn_baselines, ranking_baselines
from attnlab.data import splits as protocols
from attnlab.data.batching import make_batch, next_basket_targets, window_ends
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples, Split
from attnlab.eval import evaluate as evaluation
from attnlab.train.task_config import (
    PROPOSALS, ChurnConfig, NextBasketConfig, NextItemConfig, RankingTaskConfig,
)
from attnlab.typed_config import TypedConfig

ScoreFn = Callable[[SequenceStore, Examples], np.ndarray]


def _pad_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pad the leading axis to ``size`` (fixed shapes -> one compilation)."""
    out = {}
    for k, a in arrays.items():
        pad = size - a.shape[0]
        out[k] = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return out


def _predictor(fn, model, *, max_len: int, batch_size: int, use_cutoff: bool, memory: int = 0):
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
            "only order counts and dollars). Use task=churn with this data (e.g. "
            "experiment=cdnow_churn), or a dataset with items (data=complete_journey, "
            "data=synthetic, or data=tabular with an item column)."
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


def pick_per_group(offsets: np.ndarray, per: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per`` distinct members of each group, uniformly at random.

    Args:
      offsets: ``int64[n_groups + 1]``: group ``g`` is ``[offsets[g], offsets[g + 1])``.
      per: members per group (all of a smaller group).
      rng: seeded by the caller (one draw per member).

    Returns:
      ``int64[k]`` chosen member indices, grouped by group (order inside a group random).
    """
    counts = np.diff(offsets)
    grp = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((rng.random(len(grp)), grp))
    rank = np.arange(len(grp)) - np.repeat(offsets[:-1], counts)
    return order[rank < per]


def _typed(cls: type[TypedConfig], cfg: TypedConfig | Mapping[str, Any]) -> Any:
    """``cfg`` as the task's typed config (a mapping is checked: unknown keys and bad values fail)."""
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, TypedConfig):
        raise TypeError(f"{cls.__name__} expected, got {type(cfg).__name__}")
    return cls.from_dict(cfg)


def _check_baselines(names: tuple[str, ...], table: dict, kind: str) -> None:
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


class NegativeSampler:
    """Shared negatives for the sampled-softmax training loss (next_item / next_basket).

    Draws ``n`` items *with replacement* from a proposal ``q`` over ``1..n_items``
    and returns them with ``log(n q(item))`` (their log expected count), which the
    loss subtracts from their logits (logQ correction, see
    :func:`attnlab.models.heads.sampled_softmax_log_prob`). Proposals, all positive on
    every item so the estimate stays unbiased:

    * ``uniform``: ``q = 1 / n_items``.
    * ``log_uniform``: Zipf-like over the popularity rank ``r = 0, 1, ...`` of the
      training targets, ``q = log((r + 2) / (r + 1)) / log(n_items + 1)`` (the
      log-uniform candidate sampler familiar from TensorFlow's sampled softmax, applied
      to popularity ranks because item ids here are not sorted by frequency).
    * ``popularity``: ``q ∝ (count + 1) ** alpha`` over the training targets
      (``alpha = 0.75``: word2vec's flattened unigram; add-one keeps unseen items).

    Args:
      counts: ``int[n_items + 1]`` training-target count per item (index 0 ignored).
      proposal: one of :data:`PROPOSALS`.
      alpha: popularity exponent (``popularity`` only).
    """

    def __init__(self, counts: np.ndarray, *, proposal: str = "popularity", alpha: float = 0.75):
        counts = np.asarray(counts, dtype=np.float64)[1:]
        n = len(counts)
        if n == 0:
            raise ValueError("sampled softmax needs a catalogue with at least one item.")
        if proposal == "uniform":
            q = np.full(n, 1.0 / n)
        elif proposal == "log_uniform":
            rank = np.empty(n, dtype=np.int64)
            rank[np.argsort(-counts, kind="stable")] = np.arange(n)
            q = np.log((rank + 2.0) / (rank + 1.0)) / np.log(n + 1.0)
        elif proposal == "popularity":
            w = (counts + 1.0) ** float(alpha)
            q = w / w.sum()
        else:
            raise ValueError(f"task.sampled_softmax.proposal={proposal!r} is not one of {list(PROPOSALS)}.")
        self.proposal = proposal
        self.log_q = np.concatenate([[-np.inf], np.log(q)])  # index 0: never drawn
        self._cdf = np.cumsum(q)
        self._cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(items int32[n], log_count float32[n])`` with ``log_count = log(n q(item))``."""
        idx = np.searchsorted(self._cdf, rng.random(n), side="right")
        items = np.minimum(idx, len(self._cdf) - 1) + 1
        return items.astype(np.int32), (np.log(n) + self.log_q[items]).astype(np.float32)


class NextItemTask:
    """Next item after the history (leave-last-basket-out, full-catalogue ranking).

    Training windows (:meth:`train_windows`): each pass draws ``windows_per_customer``
    window ends per customer, seeded by ``(seed, epoch)``, among the ends of the
    customer's training baskets that have a next-basket target; a window is the last
    ``max_len`` events before its end. So the last slot of every window, the slot the
    test query sits in, is trained, and every basket of the training prefix can end a
    window (not only the most recent one). Every position's target is an item of the
    next purchase basket (:func:`attnlab.data.batching.next_basket_targets`); all
    positions with a target are trained (``loss_positions: 0``), or a seeded sample of
    ``loss_positions`` per window.

    Features (``task.encoder``, the model's default encoder): ``causal``, forward
    positions and event-local features, so a position's input never depends on the events after it
    (no "age at the window's end", which would tell an inner position when the window's
    next basket comes and differs from the test query's age 0).

    Loss: logQ-corrected sampled softmax over ``sampled_softmax.negatives`` shared
    popularity-sampled negatives per batch (:class:`NegativeSampler`, proposal fitted
    on the training targets only); the exact full softmax when ``negatives`` is 0 or at
    least the catalogue size. Evaluation always ranks the full catalogue.

    After :meth:`prepare`, :attr:`target_counts` holds the training-target count per
    item (the catalogue bias is initialised from it).

    """

    name = "next_item"
    monitor = "ndcg@10"
    split_hint = ("Every customer needs task.min_baskets purchase baskets (the last one is the test "
                  "target, the one before the validation target): lower task.min_baskets (>= 2) or use "
                  "more data.")

    CONFIG: type[RankingTaskConfig] = NextItemConfig

    def __init__(self, cfg: RankingTaskConfig | Mapping[str, Any]):
        self.cfg = _typed(type(self).CONFIG, cfg)
        cfg = self.cfg
        self.monitor = cfg.monitor or type(self).monitor
        self.ks = cfg.ks
        _check_baselines(cfg.baselines, RANKING, "ranking")
        self.sampler: NegativeSampler | None = None
        self.target_counts: np.ndarray | None = None

    # -- protocol ---------------------------------------------------------------
    def split(self, store: SequenceStore, *, seed: int) -> Split:
        _require_items(store, self.name)
        return protocols.next_item_split(store, seed=seed, min_baskets=self.cfg.min_baskets)

    def baselines(self, store: SequenceStore, split: Split) -> dict[str, FittedBaseline]:
        """``{name: FittedBaseline}`` (predictor + fit seconds) of ``task.baselines``."""
        return ranking_baselines(self.cfg.baselines, store, split)

    def evaluate(self, score_fn: ScoreFn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_next_item(score_fn, store, examples, ks=self.ks, progress=progress)

    # -- training data ----------------------------------------------------------
    def prepare(self, store: SequenceStore, split: Split) -> None:
        self._targets = next_basket_targets(store, split.train_end)
        self._ends, self._end_offsets = window_ends(store, self._targets)
        hits = self._targets[self._targets > 0]
        self.target_counts = np.bincount(hits, minlength=store.n_items + 1)
        self.sampler = None
        ss = self.cfg.sampled_softmax
        if ss.negatives and ss.negatives < store.n_items:
            self.sampler = NegativeSampler(self.target_counts, proposal=ss.proposal, alpha=ss.alpha)

    def train_windows(self, store: SequenceStore, split: Split, *, max_len: int, epoch: int = 0,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(customers, ends)`` of one pass's training windows (after :meth:`prepare`).

        ``windows_per_customer`` distinct ends per customer (all of them if it has
        fewer), drawn uniformly from its candidate ends with ``(seed, epoch)``.
        """
        per = self.cfg.windows_per_customer
        if self.cfg.window_ends == "latest":
            return self._latest_windows(store, split, max_len=max_len)
        chosen = pick_per_group(self._end_offsets, per, np.random.default_rng([seed, epoch, 2]))
        cust_of = np.repeat(np.arange(len(self._end_offsets) - 1), np.diff(self._end_offsets))
        return cust_of[chosen], self._ends[chosen]

    def _latest_windows(self, store: SequenceStore, split: Split, *, max_len: int):
        """The v0.1 windows (``window_ends: latest``, kept for the ablation): the training
        prefix cut into non-overlapping ``max_len`` windows from ``train_end`` backwards,
        at most ``windows_per_customer``; the same every pass. The newest window ends at
        ``train_end``, whose last basket has no target, so its last slot is never trained."""
        starts = np.asarray(store.offsets)[:-1]
        n = np.asarray(split.train_end) - starts
        k = np.minimum(np.ceil(n / max_len).astype(np.int64), self.cfg.windows_per_customer)
        cust = np.repeat(np.arange(store.n_customers), k)
        rank = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
        ends = np.asarray(split.train_end)[cust] - rank * max_len
        keep = ends - starts[cust] >= 2
        return cust[keep], ends[keep]

    def steps_per_epoch(self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int) -> int:
        """Batches in one pass (after :meth:`prepare`)."""
        if self.cfg.window_ends == "latest":
            n = len(self._latest_windows(store, split, max_len=max_len)[0])
        else:
            n = int(np.minimum(np.diff(self._end_offsets), self.cfg.windows_per_customer).sum())
        return -(-n // batch_size)

    def train_batches(
        self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int, epoch: int, seed: int,
        memory: int = 0,
    ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Yields ``(inputs, targets)``; targets hold ``index``/``item`` ``int32[batch, P]``
        and, with sampled softmax, the batch's shared negatives ``neg_item int32[N]``
        and ``neg_log_count float32[N]`` (``log(N q)``).

        ``P = max_len`` (every position with a target) unless ``loss_positions`` asks for
        a seeded sample per window. Negatives come from their own ``(seed, epoch)``
        generator, so a resumed run draws the same ones and turning sampled softmax on
        leaves the order and positions unchanged. ``memory``: history-memory slots per
        row (``model.history_memory``; 0 = none).
        """
        cust, ends = self.train_windows(store, split, max_len=max_len, epoch=epoch, seed=seed)
        rng = np.random.default_rng([seed, epoch])
        neg_rng = np.random.default_rng([seed, epoch, 1])
        order = rng.permutation(len(cust))
        for i in range(0, len(order), batch_size):
            sel = order[i : i + batch_size]
            batch = make_batch(store, customers=cust[sel], ends=ends[sel], cutoffs=None,
                               max_len=max_len, targets=self._targets, memory=memory)
            if self.cfg.loss_positions:
                index, item = sample_target_positions(batch.targets, self.cfg.loss_positions, rng)
            else:
                index = np.broadcast_to(np.arange(max_len, dtype=np.int32), batch.targets.shape).copy()
                item = batch.targets.astype(np.int32)
            inputs = _pad_rows(batch.model_inputs(), batch_size)
            targets = _pad_rows({"index": index, "item": item}, batch_size)
            if self.sampler is not None:
                targets["neg_item"], targets["neg_log_count"] = self.sampler.draw(
                    neg_rng, self.cfg.sampled_softmax.negatives)
            yield inputs, targets

    @staticmethod
    def n_targets(targets) -> int:
        """Training targets in one batch (positions with a target item)."""
        return int((np.asarray(targets["item"]) > 0).sum())

    @staticmethod
    def loss(model, inputs, targets, rngs):
        """Mean ``-log P(target)`` over positions with a target; sampled softmax when
        ``targets`` carries negatives (``neg_item``, ``neg_log_count``)."""
        h = model.hidden(inputs, rngs=rngs)
        negatives = (targets["neg_item"], targets["neg_log_count"]) if "neg_item" in targets else None
        logp = model.target_log_prob(h, inputs, targets["index"], targets["item"], negatives=negatives)
        mask = targets["item"] > 0
        return -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def model_scores(self, model, *, max_len: int, batch_size: int) -> ScoreFn:
        """A score function over the catalogue for the evaluator."""

        @nnx.jit
        def scores(model, inputs):
            return model.next_item_scores(inputs)

        return _predictor(scores, model, max_len=max_len, batch_size=batch_size, use_cutoff=False,
                          memory=model.history_memory)


class NextBasketTask(NextItemTask):
    """Items of the next basket after a global cut-off (Recall/NDCG/PHR, repeat vs explore).

    Trains exactly like :class:`NextItemTask` on the ``train_end`` prefixes (events
    before the validation cut-off); scores the catalogue from the latest visible event.
    """

    name = "next_basket"
    monitor = "recall@10"
    CONFIG = NextBasketConfig
    split_hint = ("Put task.valid_cutoff < task.test_cutoff inside the data span, with purchases after "
                  "each (null = the defaults: the last 10% of the span is test, the 10% before it "
                  "validation), or lower task.min_history_baskets.")

    def split(self, store: SequenceStore, *, seed: int) -> Split:
        _require_items(store, self.name)
        return protocols.next_basket_split(
            store, valid_cutoff=self.cfg.valid_cutoff, test_cutoff=self.cfg.test_cutoff,
            min_history_baskets=self.cfg.min_history_baskets,
        )

    def evaluate(self, score_fn: ScoreFn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_next_basket(score_fn, store, examples, ks=self.ks, progress=progress)


class ChurnTask:
    """No purchase within ``horizon`` after the cut-off (AUC, PR-AUC, log loss, Brier).

    Trains on ``split.train`` examples only (inputs and labels before the validation
    cut-off in temporal mode; disjoint customers in holdout mode). With
    ``train_stride`` the split has rolling training cut-offs (many labels per
    customer, :func:`attnlab.data.splits.churn_split`); each pass then draws
    ``windows_per_customer`` of a customer's labelled cut-offs (0 = all).

    """

    name = "churn"
    monitor = "auc"
    target_counts = None  # no catalogue
    split_hint = ("Move task.cutoff (null = the last day minus the horizon) or shorten task.horizon so "
                  "that every window holds customers with purchases before it, or use "
                  "task.mode=holdout_customers.")

    CONFIG = ChurnConfig

    def __init__(self, cfg: ChurnConfig | Mapping[str, Any]):
        self.cfg = cfg = _typed(ChurnConfig, cfg)
        self.monitor = cfg.monitor or type(self).monitor
        _check_baselines(cfg.baselines, CHURN, "churn")

    def split(self, store: SequenceStore, *, seed: int) -> Split:
        return protocols.churn_split(store, cutoff=self.cfg.cutoff, horizon=self.cfg.horizon, mode=self.cfg.mode,
                                     seed=seed, train_stride=self.cfg.train_stride)

    def baselines(self, store: SequenceStore, split: Split) -> dict[str, FittedBaseline]:
        """``{name: FittedBaseline}`` (predictor + fit seconds) of ``task.baselines``."""
        horizon_days = protocols.to_duration_seconds(self.cfg.horizon) / 86400.0
        return churn_baselines(self.cfg.baselines, store, split, horizon_days=horizon_days)

    def evaluate(self, prob_fn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_churn(prob_fn, store, examples)

    def prepare(self, store: SequenceStore, split: Split) -> None:
        if split.train is None or len(split.train) == 0:
            raise ValueError("churn: the split has no training examples; move the cut-off later.")
        ex = split.train
        self._offsets = np.concatenate([[0], np.flatnonzero(np.diff(ex.customer)) + 1, [len(ex)]]).astype(np.int64)

    def train_rows(self, split: Split, *, epoch: int, seed: int) -> np.ndarray:
        """Rows of ``split.train`` used in one pass: ``windows_per_customer`` distinct
        labelled cut-offs per customer (all of them if it has fewer), seeded by
        ``(seed, epoch)``; 0 = every row."""
        per = self.cfg.windows_per_customer
        n = len(split.train)
        if not per:
            return np.arange(n)
        return np.sort(pick_per_group(self._offsets, per, np.random.default_rng([seed, epoch, 2])))

    def steps_per_epoch(self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int) -> int:
        per = self.cfg.windows_per_customer
        counts = np.diff(self._offsets)
        n = int(np.minimum(counts, per).sum()) if per else int(counts.sum())
        return -(-n // batch_size)

    def train_batches(self, store, split, *, max_len, batch_size, epoch, seed, memory=0):
        """Yields ``(inputs, labels)``. ``memory`` is ignored: the churn head does not
        read the copy head's history memory."""
        ex = split.train.take(self.train_rows(split, epoch=epoch, seed=seed))
        order = np.random.default_rng([seed, epoch]).permutation(len(ex))
        for i in range(0, len(order), batch_size):
            sel = order[i : i + batch_size]
            b = make_batch(store, customers=ex.customer[sel], ends=ex.end[sel], cutoffs=ex.cutoff[sel],
                           max_len=max_len)
            labels = np.full(batch_size, -1.0, np.float32)  # -1 marks padded rows
            labels[: len(sel)] = ex.label[sel]
            yield _pad_rows(b.model_inputs(), batch_size), labels

    @staticmethod
    def n_targets(labels) -> int:
        """Labelled rows in one batch (padding rows are -1)."""
        return int((np.asarray(labels) >= 0).sum())

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


def make_task(task_cfg: Mapping[str, Any]):
    """The task named by ``task_cfg["name"]``, its config typed (:mod:`attnlab.train.task_config`):
    unknown keys and out-of-range values fail here, before any data is loaded."""
    name = task_cfg.get("name")
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {sorted(TASKS)}. Pick one with task=<name>.")
    return TASKS[name](task_cfg)
