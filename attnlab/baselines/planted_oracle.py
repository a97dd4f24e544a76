"""The planted-pair oracle: the ceiling of the long-range memory study.

:class:`PlantedOracle` knows the simulator's ground truth -- the planted (trigger,
target) pairs and the cue item, read from the store's meta
(:func:`attnlab.eval.evaluate.planted_pairs`, :func:`~attnlab.eval.evaluate.planted_cue`)
-- and ranks the catalogue like :class:`~attnlab.baselines.popularity.MostPopular`,
except that when an example's latest visible event is the cue and a trigger was
purchased in its visible history, the target of the most recent such trigger goes
first. That is the rule the simulator plants (``trigger_mode="cue"``), applied with
perfect memory, so on planted rows whose trigger is visible it scores HR@1 = 1; a row
table of the long-range experiment shows it as the ceiling next to the models.

It reads only the example's visible history plus the planted ground truth, which no
model ever receives (models read :meth:`attnlab.data.batching.Batch.model_inputs`,
built from events alone). On a store without a cue item (lag mode, real data) it is
plain popularity.
"""

from __future__ import annotations

import numpy as np

from attnlab.baselines.popularity import MostPopular, _prefix_events
from attnlab.data.schema import EventType
from attnlab.data.sequences import SequenceStore
from attnlab.data.splits import Examples
from attnlab.eval.evaluate import planted_cue, planted_pairs


class PlantedOracle(MostPopular):
    """Popularity, with the planted target first on cued rows whose trigger is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs = np.zeros((0, 2), np.int64)
        self.cue = 0

    def fit(self, store: SequenceStore, train_end: np.ndarray) -> "PlantedOracle":
        """Popularity counts on the training prefixes; pairs and cue from the store's meta."""
        super().fit(store, train_end)
        self.pairs = planted_pairs(store)
        self.cue = planted_cue(store)
        return self

    def planted_target(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``int64[m]``: the target the oracle puts first, 0 where it does not fire.

        Fires when the latest visible event is the cue and a trigger PURCHASE is in the
        visible history; the target is the partner of the most recent such trigger.
        """
        m = len(examples)
        out = np.zeros(m, np.int64)
        if not self.cue or len(self.pairs) == 0 or m == 0:
            return out
        starts = np.asarray(store.offsets)[examples.customer].astype(np.int64)
        ends = np.asarray(examples.end, dtype=np.int64)
        item = np.asarray(store.item)
        latest = np.where(ends > starts, item[np.maximum(ends - 1, 0)], 0)
        cued = np.flatnonzero(latest == self.cue)
        if len(cued) == 0:
            return out
        target_of = np.zeros(store.n_items + 1, np.int64)
        target_of[self.pairs[:, 0]] = self.pairs[:, 1]
        ev, row = _prefix_events(starts[cued], ends[cued])
        hit = (target_of[item[ev]] > 0) & (np.asarray(store.event_type)[ev] == EventType.PURCHASE)
        last_trigger = np.full(len(cued), -1, np.int64)
        np.maximum.at(last_trigger, row[hit], ev[hit])
        found = last_trigger >= 0
        out[cued[found]] = target_of[item[last_trigger[found]]]
        return out

    def score(self, store: SequenceStore, examples: Examples) -> np.ndarray:
        """``float32[m, n_items + 1]``: popularity, the fired target above everything."""
        scores = super().score(store, examples)
        target = self.planted_target(store, examples)
        rows = np.flatnonzero(target > 0)
        if len(rows):
            top = np.float32(self.counts.max() + 1.0)
            scores[rows, target[rows]] = top
        return scores
