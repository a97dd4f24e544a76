"""``churn``: labelled cut-offs per customer, a binary loss, probabilities."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.baselines.registry import CHURN, FittedBaseline, churn_baselines
from attnlab.data import splits as protocols
from attnlab.data.batching import SummarySpec, bgnbd_columns, make_batch, window_lengths
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples, Split
from attnlab.eval import evaluate as evaluation
from attnlab.train.task_config import ChurnConfig
from attnlab.train.tasks.common import (
    BucketPlans, check_baselines, pad_rows, predictor, round_rows, typed, window_batches,
)
from attnlab.train.tasks.sampling import pick_per_group

log = logging.getLogger(__name__)


class ChurnTask:
    """No purchase within ``horizon`` after the cut-off (AUC, PR-AUC, log loss, Brier).

    Trains on ``split.train`` examples only (inputs and labels before the validation
    cut-off in temporal mode; disjoint customers in holdout mode). With
    ``train_stride`` the split has rolling training cut-offs (many labels per
    customer, :func:`attnlab.data.splits.churn_split`); each pass then draws
    ``windows_per_customer`` of a customer's labelled cut-offs (0 = all).

    ``refit`` (temporal): the final fit after the step count was chosen on validation.
    The training labels run up to the test cut-off (the validation labels included),
    the run trains ``trainer.max_epochs`` passes with no validation and keeps its last
    weights, and the baselines refit the same way (``hgb`` keeps the hyperparameters
    chosen on the ordinary split's validation rows).

    """

    name = "churn"
    monitor = "auc"
    target_counts = None  # no catalogue
    split_hint = ("Move task.cutoff (null = the last day minus the horizon) or shorten task.horizon so "
                  "that every window holds customers with purchases before it, or use "
                  "task.mode=holdout_customers.")

    CONFIG = ChurnConfig

    def __init__(self, cfg: ChurnConfig | Mapping[str, Any]):
        self.cfg = cfg = typed(ChurnConfig, cfg)
        self.monitor = cfg.monitor or type(self).monitor
        check_baselines(cfg.baselines, CHURN, "churn")
        self.plans: BucketPlans | None = None

    @property
    def selects_on_valid(self) -> bool:
        """False for a refit (``task.refit``): its validation labels are training labels,
        so the loop trains ``trainer.max_epochs`` passes and keeps the last weights."""
        return not self.cfg.refit

    def split(self, store: SequenceStore, *, seed: int, refit: bool | None = None) -> Split:
        """The configured split; ``refit`` overrides ``task.refit`` (None = the config's)."""
        return protocols.churn_split(store, cutoff=self.cfg.cutoff, horizon=self.cfg.horizon, mode=self.cfg.mode,
                                     seed=seed, train_stride=self.cfg.train_stride,
                                     refit=self.cfg.refit if refit is None else refit)

    def baselines(self, store: SequenceStore, split: Split) -> dict[str, FittedBaseline]:
        """``{name: FittedBaseline}`` (predictor + fit seconds) of ``task.baselines``."""
        horizon_days = protocols.to_duration_seconds(self.cfg.horizon) / 86400.0
        # refit: validation rows are training rows; hyperparameters are chosen on the ordinary split
        select = self.split(store, seed=int(split.report.get("seed", 0)), refit=False) if self.cfg.refit else None
        return churn_baselines(self.cfg.baselines, store, split, horizon_days=horizon_days, select=select)

    def evaluate(self, prob_fn, store: SequenceStore, examples: Examples, *, progress: bool):
        return evaluation.evaluate_churn(prob_fn, store, examples)

    def prepare(self, store: SequenceStore, split: Split) -> None:
        if split.train is None or len(split.train) == 0:
            raise ValueError("churn: the split has no training examples; move the cut-off later.")
        ex = split.train
        self.summary = self.summary_spec(store, split)
        self._offsets = np.concatenate([[0], np.flatnonzero(np.diff(ex.customer)) + 1, [len(ex)]]).astype(np.int64)
        self._log_weights = self.cutoff_log_weights(ex.cutoff)

        def first_pass_lengths(max_len: int, seed: int) -> np.ndarray:
            first = ex.take(self.train_rows(split, epoch=0, seed=seed))
            return window_lengths(store, first.customer, first.end, max_len)

        self.plans = BucketPlans(first_pass_lengths)

    def summary_spec(self, store: SequenceStore, split: Split) -> SummarySpec:
        """The history summary every batch of this split carries: ``task.summary_form``
        and, with ``task.summary_bgnbd``, BG/NBD parameters fitted by maximum likelihood on
        the training examples' visible histories (labels unused; the fit ``hgb`` uses,
        :func:`attnlab.baselines.gbm.fit_bgnbd_params`), so validation and test rows are
        scored under parameters that saw no event after their training cut-offs."""
        if not self.cfg.summary_bgnbd:
            return SummarySpec(form=self.cfg.summary_form)
        from attnlab.baselines.bgnbd import WEEK_DAYS   # scipy and scikit-learn load only when used
        from attnlab.baselines.gbm import fit_bgnbd_params

        params = fit_bgnbd_params(store, split.train)
        if params is None:
            raise ValueError("task.summary_bgnbd=true: BG/NBD cannot be fitted on the training histories (no "
                             "training example has a repeat purchase before its cut-off, or the fit failed: see "
                             "the warning above); set task.summary_bgnbd=false.")
        horizon_weeks = protocols.to_duration_seconds(self.cfg.horizon) / (86400.0 * WEEK_DAYS)
        offsets = np.asarray(store.offsets)
        for part in (split.train, split.valid, split.test):   # a non-finite row fails here, not mid-run
            if part is not None and len(part):
                bgnbd_columns(store, offsets[part.customer], part.end, part.cutoff, params, horizon_weeks)
        log.info("churn summary: BG/NBD columns under %s (fitted on %d training histories)", params, len(split.train))
        return SummarySpec(form=self.cfg.summary_form, bgnbd=params, horizon_weeks=horizon_weeks)

    def _summary(self) -> SummarySpec:
        spec = getattr(self, "summary", None)
        if spec is None:
            if self.cfg.summary_bgnbd:
                raise RuntimeError("task.summary_bgnbd=true: ChurnTask.prepare(store, split) fits the BG/NBD "
                                   "columns' parameters and must run before batches are built.")
            return SummarySpec(form=self.cfg.summary_form)
        return spec

    def train_rows(self, split: Split, *, epoch: int, seed: int) -> np.ndarray:
        """Rows of ``split.train`` used in one pass: ``windows_per_customer`` distinct
        labelled cut-offs per customer (all of them if it has fewer), seeded by
        ``(seed, epoch)``; 0 = every row."""
        per = self.cfg.windows_per_customer
        n = len(split.train)
        if not per:
            return np.arange(n)
        return np.sort(pick_per_group(self._offsets, per, np.random.default_rng([seed, epoch, 2]), self._log_weights))

    def cutoff_log_weights(self, cutoffs: np.ndarray) -> np.ndarray | None:
        """Log sampling weight per training row, ``-(latest - cutoff) / recent_half_life * ln 2``
        (weight ``2 ** (-age / half-life)``) with ``latest`` the latest training cut-off;
        None = uniform (``task.recent_half_life`` null). The rows nearest the scoring dates
        are drawn more often."""
        if self.cfg.recent_half_life is None:
            return None
        half_life = protocols.to_duration_seconds(self.cfg.recent_half_life)
        age = (cutoffs.max() - cutoffs).astype(np.float64)
        return -age / half_life * np.log(2.0)

    def steps_per_epoch(self, store: SequenceStore, split: Split, *, max_len: int, batch_size: int,
                        buckets: int = 1, seed: int = 0) -> int:
        plan = self.plans.get(max_len=max_len, batch_size=batch_size, buckets=buckets, seed=seed)
        if plan is not None:
            return plan.n_batches(self.plans.lengths(max_len, seed))
        per = self.cfg.windows_per_customer
        counts = np.diff(self._offsets)
        n = int(np.minimum(counts, per).sum()) if per else int(counts.sum())
        return -(-n // batch_size)

    def train_batches(self, store, split, *, max_len, batch_size, epoch, seed, memory=0, buckets=1,
                      row_multiple=1):
        """Yields ``(inputs, labels)``. ``memory`` is ignored: the churn head does not
        read the copy head's history memory. The inputs always carry the whole history's
        RFM summary (``summary``, :func:`attnlab.data.batching.history_summary`; read by a
        model built with ``history_summary``, ignored otherwise), so no caller has to know
        which models read it. ``buckets``, ``row_multiple``: length-bucketed
        batches and rows padded for the devices, as in
        :meth:`attnlab.train.tasks.ranking.NextItemTask.train_batches`."""
        ex = split.train.take(self.train_rows(split, epoch=epoch, seed=seed))
        plan = self.plans.get(max_len=max_len, batch_size=batch_size, buckets=buckets, seed=seed)
        lengths = None if plan is None else window_lengths(store, ex.customer, ex.end, max_len)
        for sel, length, rows in window_batches(len(ex), batch_size=batch_size, max_len=max_len, plan=plan,
                                                lengths=lengths, rng=np.random.default_rng([seed, epoch])):
            b = make_batch(store, customers=ex.customer[sel], ends=ex.end[sel], cutoffs=ex.cutoff[sel],
                           max_len=length, summary=self._summary())
            rows = round_rows(rows, row_multiple)
            labels = np.full(rows, -1.0, np.float32)  # -1 marks padded rows
            labels[: len(sel)] = ex.label[sel]
            yield pad_rows(b.model_inputs(), rows), labels

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

    def model_scores(self, model, *, max_len: int, batch_size: int, buckets: int = 1):
        """Churn probabilities of examples; ``buckets``: length-bucketed batches
        (:func:`attnlab.train.tasks.common.predictor`)."""
        spec = self._summary()
        width = getattr(getattr(model, "churn", None), "summary", 0)
        if width and width != spec.width:   # model.summary_bgnbd overridden apart from task.summary_bgnbd
            raise ValueError(f"the churn head reads a {width}-column history summary but task.summary_bgnbd="
                             f"{str(spec.bgnbd is not None).lower()} builds {spec.width} columns: set "
                             "model.summary_bgnbd to the task's value (the default follows it).")

        @nnx.jit
        def probs(model, inputs):
            return jax.nn.sigmoid(model.churn_logit(inputs))

        return predictor(probs, model, max_len=max_len, batch_size=batch_size, use_cutoff=True, buckets=buckets,
                         summary=spec)
