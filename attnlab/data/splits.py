"""Leakage-free evaluation protocols over a :class:`SequenceStore`.

CONTRACT (the protocol owner implements the builders; models, baselines and the
trainer read only these dataclasses).

An :class:`Examples` row ``m`` is one prediction point: the model may read the events
``store[offsets[customer[m]] : end[m]]`` -- a prefix of that customer's sorted
history -- and nothing else about that customer. ``cutoff[m]`` is the time (seconds)
every visible event is strictly before.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Examples:
    """Prediction points (see module docstring).

    Attributes:
      customer: ``int64[M]`` row index into the store.
      end: ``int64[M]`` absolute exclusive end of the visible history.
      cutoff: ``int64[M]`` seconds; all visible events have ``time < cutoff``.
      target_offsets: ``int64[M + 1]`` ragged target items (next_item: one each;
        next_basket: the distinct items of the next basket), or None (churn).
      target_items: ``int32[n_targets]`` vocabulary indices (>= 1), or None.
      label: ``float32[M]`` churn label (1 = churned), or None.
    """

    customer: np.ndarray
    end: np.ndarray
    cutoff: np.ndarray
    target_offsets: np.ndarray | None = None
    target_items: np.ndarray | None = None
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.customer)

    def take(self, idx: np.ndarray) -> "Examples":
        """Subset of rows ``idx`` (ragged targets re-packed)."""
        idx = np.asarray(idx)
        tgt_off = tgt = None
        if self.target_offsets is not None:
            starts, stops = self.target_offsets[idx], self.target_offsets[idx + 1]
            sizes = stops - starts
            tgt_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            gather = np.repeat(starts - tgt_off[:-1], sizes) + np.arange(tgt_off[-1])
            tgt = self.target_items[gather]
        return Examples(
            customer=self.customer[idx],
            end=self.end[idx],
            cutoff=self.cutoff[idx],
            target_offsets=tgt_off,
            target_items=tgt,
            label=None if self.label is None else self.label[idx],
        )


@dataclasses.dataclass(frozen=True)
class Split:
    """One protocol applied to one store.

    Attributes:
      protocol: ``"next_item" | "next_basket" | "churn"``.
      train_end: ``int64[n_customers]``; training (model fitting, popularity counts,
        vocab statistics) may read only events ``[offsets[c], train_end[c])``.
      train: labelled training points (churn), or None when models train on the
        ``train_end`` prefixes themselves (next_item, next_basket).
      valid: validation points (early stopping / model selection).
      test: test points (reported once).
      report: counts of customers/events excluded and why (never silent).
    """

    protocol: str
    train_end: np.ndarray
    train: Examples | None
    valid: Examples
    test: Examples
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
