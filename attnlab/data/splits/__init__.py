"""Leakage-free evaluation protocols over a :class:`SequenceStore`.

CONTRACT (the protocol owner implements the builders; models, baselines and the
trainer read only these dataclasses).

An :class:`Examples` row ``m`` is one prediction point: the model may read the events
``store[offsets[customer[m]] : end[m]]`` -- a prefix of that customer's sorted
history -- and nothing else about that customer. ``cutoff[m]`` is the time (seconds)
every visible event is strictly before.

Builders (see ``docs/protocols.md``): :func:`next_item_split` (leave the last purchase
basket out), :func:`next_basket_split` (global temporal cutoffs, targets = the first
basket after the cutoff), :func:`churn_split` (:class:`ChurnMode` ``TEMPORAL`` stacked
windows or ``HOLDOUT_CUSTOMERS``). Every builder counts what it excludes in
:attr:`Split.report`.
"""

from attnlab.data.splits.base import (
    DAY, WEEK, BasketCutoffs, ChurnMode, DurationLike, Examples, Protocol, Split, TimeLike,
    event_customer, iso, to_duration_seconds, to_seconds,
)
from attnlab.data.splits.churn import churn_split, default_churn_cutoff
from attnlab.data.splits.next_basket import default_cutoffs, next_basket_split
from attnlab.data.splits.next_item import next_item_split

__all__ = [
    "DAY", "WEEK", "BasketCutoffs", "ChurnMode", "DurationLike", "Examples", "Protocol", "Split",
    "TimeLike", "churn_split", "default_churn_cutoff", "default_cutoffs", "event_customer", "iso",
    "next_basket_split", "next_item_split", "to_duration_seconds", "to_seconds",
]
