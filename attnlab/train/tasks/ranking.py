"""``next_item`` and ``next_basket``: windows over the training prefixes, every position
with a target trained, full-catalogue scores."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attnlab.baselines.registry import RANKING, FittedBaseline, ranking_baselines
from attnlab.data import splits as protocols
from attnlab.data.batching import (
    basket_members, basket_pairs, make_batch, next_basket_sets, next_basket_targets, window_ends, window_lengths,
)
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples, Split
from attnlab.eval import evaluate as evaluation
from attnlab.eval.chunked import CHUNKED_ABOVE, ITEM_CHUNK, ChunkedScorer
from attnlab.models.heads import gbce_beta
from attnlab.train.task_config import NextBasketConfig, NextItemConfig, RankingTaskConfig
from attnlab.train.tasks.common import (
    BucketPlans, ScoreFn, check_baselines, pad_rows, predictor, require_items, round_rows, typed,
    window_batches,
)
from attnlab.train.tasks.sampling import NegativeSampler, pick_per_group, sample_target_positions
from attnlab.typed_config import ConfigError


class NextItemTask:
    """Next item after the history (leave-last-basket-out, full-catalogue ranking).

    Training windows (:meth:`train_windows`): each pass draws ``windows_per_customer``
    window ends per customer, seeded by ``(seed, epoch)``, among the ends of the
    customer's training baskets that have a next-basket target; a window is the last
    ``max_len`` events before its end. So the last slot of every window, the slot the
    test query sits in, is trained, and every basket of the training prefix can end a
    window (not only the most recent one). ``targets: spread``: every position's target
    is an item of the next purchase basket
    (:func:`attnlab.data.batching.next_basket_targets`); all positions with a target are
    trained (``loss_positions: 0``), or a seeded sample of ``loss_positions`` per window.
    ``targets: basket``: the last slot of every basket in the window is trained on every
    item of the next purchase basket (:func:`attnlab.data.batching.next_basket_sets`),
    the query and target of the next_basket test; up to the batch's width
    (``loss_positions`` if set) pairs per window, a seeded uniform subset past it,
    counted in :attr:`dropped_pairs` (since :meth:`prepare`: a resumed run counts the
    passes after its resume) and in the run's ``training_signal``.

    Features (``task.encoder``, the model's default encoder): ``causal``, forward
    positions and event-local features, so a position's input never depends on the events after it
    (no "age at the window's end", which would tell an inner position when the window's
    next basket comes and differs from the test query's age 0).

    Loss: logQ-corrected sampled softmax over ``sampled_softmax.negatives`` shared
    popularity-sampled negatives per batch (:class:`NegativeSampler`, proposal fitted
    on the training targets only); the exact full softmax when ``negatives`` is 0 or at
    least the catalogue size. ``loss: gbce``: gSASRec's gBCE over the same negatives
    (plain softmax head; :func:`attnlab.models.heads.gbce_loss`). Evaluation always
    ranks the full catalogue.

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
        self.cfg = typed(type(self).CONFIG, cfg)
        cfg = self.cfg
        self.monitor = cfg.monitor or type(self).monitor
        self.ks = cfg.ks
        check_baselines(cfg.baselines, RANKING, "ranking")
        self.sampler: NegativeSampler | None = None
        self.target_counts: np.ndarray | None = None
        self.plans: BucketPlans | None = None

    # -- protocol ---------------------------------------------------------------
    def split(self, store: SequenceStore, *, seed: int) -> Split:
        require_items(store, self.name)
        return protocols.next_item_split(store, seed=seed, min_baskets=self.cfg.min_baskets)

    def baselines(self, store: SequenceStore, split: Split) -> dict[str, FittedBaseline]:
        """``{name: FittedBaseline}`` (predictor + fit seconds) of ``task.baselines``."""
        return ranking_baselines(self.cfg.baselines, store, split)

    def evaluate(self, score_fn: ScoreFn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_next_item(score_fn, store, examples, ks=self.ks, progress=progress)

    # -- training data ----------------------------------------------------------
    def prepare(self, store: SequenceStore, split: Split) -> None:
        # per-event targets gathered into each window: an item (spread) or next-basket ids (basket)
        self.dropped_pairs = 0
        if self.cfg.targets == "basket":
            self._groups = next_basket_sets(store, split.train_end)
            self._targets, start, size = self._groups
            hits = np.asarray(store.item)[basket_members(self._targets[self._targets > 0], start, size)[1]]
        else:
            self._targets, self._groups = next_basket_targets(store, split.train_end), None
            hits = self._targets[self._targets > 0]
        self._ends, self._end_offsets = window_ends(store, self._targets)
        self.target_counts = np.bincount(hits, minlength=store.n_items + 1)
        self.sampler = None
        ss = self.cfg.sampled_softmax
        if ss.negatives and ss.negatives < store.n_items:
            self.sampler = NegativeSampler(self.target_counts, proposal=ss.proposal, alpha=ss.alpha)
        self.gbce_beta = None
        if self.cfg.loss == "gbce":
            if self.sampler is None:
                raise ConfigError(f"task.loss=gbce trains on sampled negatives: set task.sampled_softmax.negatives "
                                  f"to 1 .. {store.n_items - 1} (the catalogue has {store.n_items:,} items), got "
                                  f"{ss.negatives}.")
            self.gbce_beta = gbce_beta(ss.negatives, store.n_items, self.cfg.gbce_t)

        def first_pass_lengths(max_len: int, seed: int) -> np.ndarray:
            cust, ends = self.train_windows(store, split, max_len=max_len, epoch=0, seed=seed)
            return window_lengths(store, cust, ends, max_len)

        self.plans = BucketPlans(first_pass_lengths)

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

    def steps_per_epoch(self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int,
                        buckets: int = 1, seed: int = 0) -> int:
        """Batches in one pass (after :meth:`prepare`); with length buckets, in the first
        pass (later passes draw other windows: a bucket may need a batch more or less)."""
        plan = self.plans.get(max_len=max_len, batch_size=batch_size, buckets=buckets, seed=seed)
        if plan is not None:
            return plan.n_batches(self.plans.lengths(max_len, seed))
        if self.cfg.window_ends == "latest":
            n = len(self._latest_windows(store, split, max_len=max_len)[0])
        else:
            n = int(np.minimum(np.diff(self._end_offsets), self.cfg.windows_per_customer).sum())
        return -(-n // batch_size)

    def train_batches(
        self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int, epoch: int, seed: int,
        memory: int = 0, buckets: int = 1, row_multiple: int = 1,
    ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Yields ``(inputs, targets)``; targets hold ``index``/``item`` ``int32[rows, P]``
        and, with sampled softmax, the batch's shared negatives ``neg_item int32[N]``
        and ``neg_log_count float32[N]`` (``log(N q)``).

        ``P`` is the batch's length (every position with a target; with ``targets:
        basket``, that many (basket end, next-basket item) pairs, an index may repeat)
        unless ``loss_positions`` asks for a seeded sample per window. Negatives come from their
        own ``(seed, epoch)`` generator, so a resumed run draws the same ones and turning
        sampled softmax on leaves the order and positions unchanged. ``memory``:
        history-memory slots per row (``model.history_memory``; 0 = none).

        ``buckets > 1``: length-bucketed batches (:mod:`attnlab.data.buckets`): each batch
        is ``rows x length`` of one of at most ``buckets`` static shapes. ``buckets = 1``:
        every batch ``batch_size x max_len``, as before buckets existed. Rows are padded
        with empty rows (no target) to a multiple of ``row_multiple``, the data-parallel
        devices, so the batches and the loss do not depend on the device count.
        """
        cust, ends = self.train_windows(store, split, max_len=max_len, epoch=epoch, seed=seed)
        plan = self.plans.get(max_len=max_len, batch_size=batch_size, buckets=buckets, seed=seed)
        rng = np.random.default_rng([seed, epoch])
        neg_rng = np.random.default_rng([seed, epoch, 1])
        lengths = None if plan is None else window_lengths(store, cust, ends, max_len)
        for sel, length, rows in window_batches(len(cust), batch_size=batch_size, max_len=max_len, plan=plan,
                                                lengths=lengths, rng=rng):
            batch = make_batch(store, customers=cust[sel], ends=ends[sel], cutoffs=None, max_len=length,
                               targets=self._targets, memory=memory)
            if self._groups is not None:
                _, start, size = self._groups
                index, item, dropped = basket_pairs(batch.targets, start, size, store.item,
                                                    self.cfg.loss_positions or length, rng)
                self.dropped_pairs += dropped
            elif self.cfg.loss_positions:
                index, item = sample_target_positions(batch.targets, self.cfg.loss_positions, rng)
            else:
                index = np.broadcast_to(np.arange(length, dtype=np.int32), batch.targets.shape).copy()
                item = batch.targets.astype(np.int32)
            rows = round_rows(rows, row_multiple)  # empty rows: no target
            inputs = pad_rows(batch.model_inputs(), rows)
            targets = pad_rows({"index": index, "item": item}, rows)
            if self.sampler is not None:
                targets["neg_item"], targets["neg_log_count"] = self.sampler.draw(
                    neg_rng, self.cfg.sampled_softmax.negatives)
            if self.gbce_beta is not None:
                targets["gbce_beta"] = np.float32(self.gbce_beta)
            yield inputs, targets

    @staticmethod
    def n_targets(targets) -> int:
        """Training targets in one batch (positions with a target item)."""
        return int((np.asarray(targets["item"]) > 0).sum())

    def check_model(self, model_cfg) -> None:
        """Task x model choices that cannot train together, refused before any work."""
        if self.cfg.loss == "gbce" and model_cfg.item_head != "softmax":
            raise ConfigError(f"task.loss=gbce scores every item by its own sigmoid, and "
                              f"model.item_head={model_cfg.item_head} mixes a pointer over the history with the "
                              f"catalogue softmax (no per-item score): use model.item_head=softmax "
                              f"model.history_memory=0, or task.loss=softmax.")

    @staticmethod
    def loss(model, inputs, targets, rngs):
        """Mean over positions with a target of ``-log P(target)`` (sampled softmax when
        ``targets`` carries negatives ``neg_item``, ``neg_log_count``), or of the gBCE
        loss when it carries ``gbce_beta`` (``task.loss=gbce``)."""
        h = model.hidden(inputs, rngs=rngs)
        mask = targets["item"] > 0
        if "gbce_beta" in targets:
            per = model.target_gbce(h, targets["index"], targets["item"], targets["neg_item"], targets["gbce_beta"])
        else:
            negatives = (targets["neg_item"], targets["neg_log_count"]) if "neg_item" in targets else None
            per = -model.target_log_prob(h, inputs, targets["index"], targets["item"], negatives=negatives)
        return jnp.sum(jnp.where(mask, per, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def model_scores(self, model, *, max_len: int, batch_size: int,
                     item_chunk: int | None = None, buckets: int = 1) -> ScoreFn | ChunkedScorer:
        """A score function over the catalogue for the evaluator.

        ``item_chunk``: None = by catalogue size: the whole ``[batch, n_items + 1]``
        matrix per call (:meth:`SequenceModel.next_item_scores`) up to
        :data:`attnlab.eval.chunked.CHUNKED_ABOVE` items, above it a
        :class:`~attnlab.eval.chunked.ChunkedScorer` of
        :data:`~attnlab.eval.chunked.ITEM_CHUNK` items per call; 0 = the whole matrix;
        ``k > 0`` = chunks of ``k`` items (:meth:`SequenceModel.next_item_chunk_scores`,
        equal to the whole matrix's columns to fp32 rounding).

        ``buckets > 1``: the whole-matrix scorer groups examples by history length
        (:func:`attnlab.train.tasks.common.predictor`); the chunked scorer pads to ``max_len``.
        """
        if item_chunk is None:
            item_chunk = ITEM_CHUNK if model.n_items > CHUNKED_ABOVE else 0
        if not item_chunk:
            @nnx.jit
            def scores(model, inputs):
                return model.next_item_scores(inputs)

            return predictor(scores, model, max_len=max_len, batch_size=batch_size, use_cutoff=False,
                             memory=model.history_memory, buckets=buckets)

        n_cols = model.n_items + 1

        # jax.jit over the split model, not nnx.jit: nnx.jit hands every parameter back (a
        # copy of the [n_items + 1, d] embedding per call); the split is taken per prepare,
        # so a model trained between evaluations is scored with its current parameters
        @functools.partial(jax.jit, static_argnums=0)
        def state_fn(graphdef, params, inputs):
            return nnx.merge(graphdef, params).next_item_state(inputs, item_chunk=item_chunk)

        @functools.partial(jax.jit, static_argnums=(0, 4))
        def chunk_fn(graphdef, params, state, lo, size):
            return nnx.merge(graphdef, params).next_item_chunk_scores(state, lo, size)

        @functools.partial(jax.jit, static_argnums=0)
        def target_fn(graphdef, params, state, items):
            return nnx.merge(graphdef, params).next_item_target_scores(state, items)

        def prepare(store: SequenceStore, ex: Examples):
            """``(m, graphdef, params, [state of each padded batch of batch_size rows])``."""
            graphdef, params = nnx.split(model)
            states = []
            for i in range(0, len(ex), batch_size):
                b = make_batch(store, customers=ex.customer[i:i + batch_size], ends=ex.end[i:i + batch_size],
                               cutoffs=None, max_len=max_len, memory=model.history_memory)
                states.append(state_fn(graphdef, params, pad_rows(b.model_inputs(), batch_size)))
            return len(ex), graphdef, params, states

        def chunk_scores(state, lo: int, hi: int) -> np.ndarray:
            # widths rounded up to a multiple of 64 (the window shifted left to fit): CPU matrix
            # products of such widths round alike, so chunks agree with target_scores' product
            m, graphdef, params, states = state
            width = min(-(-(hi - lo) // 64) * 64, n_cols)
            start = min(lo, n_cols - width)
            out = [np.asarray(chunk_fn(graphdef, params, s, start, width)) for s in states]
            out = out[0] if len(out) == 1 else np.concatenate(out)
            return out[:m, lo - start:hi - start]

        def target_scores(state, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
            m, graphdef, params, states = state
            per_row = np.bincount(rows, minlength=m)
            t = -(-max(int(per_row.max(initial=0)), 1) // 64) * 64  # as wide as a chunk: same vector code
            slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
            grid = np.zeros((len(states) * batch_size, t), np.int32)
            grid[rows, slot] = items
            out = np.concatenate([np.asarray(target_fn(graphdef, params, s, grid[i * batch_size:(i + 1) * batch_size]))
                                  for i, s in enumerate(states)])
            return out[rows, slot]

        return ChunkedScorer(prepare=prepare, scores=chunk_scores, target_scores=target_scores,
                             item_chunk=int(item_chunk))


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
        require_items(store, self.name)
        return protocols.next_basket_split(
            store, valid_cutoff=self.cfg.valid_cutoff, test_cutoff=self.cfg.test_cutoff,
            min_history_baskets=self.cfg.min_history_baskets,
        )

    def evaluate(self, score_fn: ScoreFn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_next_basket(score_fn, store, examples, ks=self.ks, progress=progress)
