"""Ragged per-customer event sequences (offsets + values), cached and memory-mappable.

CONTRACT (other modules code against this; the data owner extends it):

A :class:`SequenceStore` holds every event of every customer, sorted by
``(customer, time, basket, seeded random order inside a basket)``. Customer ``c``'s
events are ``slice(offsets[c], offsets[c + 1])`` of every per-event array. Items are
re-indexed into a dense vocabulary: index 0 means "no item / padding", indices
``1 .. n_items`` are real items (``item_vocab[i]`` gives the source item id).
Inside a basket the order is a seeded shuffle, so "the first item of a basket" is a
seeded random item of it (never "the highest product id").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class SequenceStore:
    """Per-customer ragged event arrays.

    Attributes:
      offsets: ``int64[n_customers + 1]``, monotone, ``offsets[0] == 0``.
      customer_ids: ``int64[n_customers]`` source customer ids, ascending.
      item: ``int32[n_events]`` vocabulary index (0 = no item).
      time: ``int64[n_events]`` seconds since the Unix epoch.
      event_type: ``int8[n_events]`` :class:`attnlab.data.schema.EventType` codes.
      basket: ``int64[n_events]`` source basket id (events of one trip share it).
      quantity: ``float32[n_events]``.
      value: ``float32[n_events]``.
      item_vocab: ``int64[n_items + 1]`` source item id per index; ``item_vocab[0] == -1``.
      item_side: name -> ``int32[n_items + 1]`` categorical side information per item
        (e.g. ``department``), code 0 = unknown; ``item_side_vocab[name]`` lists labels.
      item_side_vocab: name -> list of labels (index = code).
      meta: source name, preprocessing config, fingerprint, repair report, ...
    """

    offsets: np.ndarray
    customer_ids: np.ndarray
    item: np.ndarray
    time: np.ndarray
    event_type: np.ndarray
    basket: np.ndarray
    quantity: np.ndarray
    value: np.ndarray
    item_vocab: np.ndarray
    item_side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    item_side_vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def n_events(self) -> int:
        return len(self.item)

    @property
    def n_items(self) -> int:
        """Number of real items (vocabulary size without the 0 slot)."""
        return len(self.item_vocab) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", "unknown"))

    def customer_slice(self, c: int) -> slice:
        return slice(int(self.offsets[c]), int(self.offsets[c + 1]))
