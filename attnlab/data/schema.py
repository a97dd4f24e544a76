"""Canonical event schema: the one table shape every data source produces.

A source module returns an :class:`attnlab.data.events.EventData` whose ``events``
frame has exactly the columns in :data:`EVENT_COLUMNS` (plus optional side columns),
one row per event. Conventions:

* ``customer_id`` int64 -- the customer/household.
* ``item_id`` int64 -- the product; ``NO_ITEM`` (-1) for events without an item
  (campaign contacts, CDNOW orders which carry no item ids).
* ``timestamp`` datetime64[ns] -- when it happened (timezone-naive, local retail time).
* ``basket_id`` int64 -- events of one shopping trip share it; non-basket events get a
  unique negative id so they never group with anything.
* ``quantity`` float32, ``value`` float32 -- units and money (currency of the source).
* ``event_type`` int8 -- an :class:`EventType` code.
"""

from __future__ import annotations

import enum

import numpy as np

NO_ITEM = -1


class EventType(enum.IntEnum):
    """Event kinds. 0 is reserved for padding in model inputs."""

    PAD = 0
    PURCHASE = 1
    RETURN = 2
    CAMPAIGN = 3  # the customer was targeted by a marketing campaign (contact event)
    COUPON_REDEMPTION = 4


EVENT_COLUMNS: dict[str, np.dtype] = {
    "customer_id": np.dtype("int64"),
    "item_id": np.dtype("int64"),
    "timestamp": np.dtype("datetime64[ns]"),
    "basket_id": np.dtype("int64"),
    "quantity": np.dtype("float32"),
    "value": np.dtype("float32"),
    "event_type": np.dtype("int8"),
}

REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "item_id", "timestamp")
"""Columns a source must always provide; the others have documented defaults."""

OPTIONAL_DEFAULTS: dict[str, str] = {
    "basket_id": "one basket per (customer_id, timestamp)",
    "quantity": "1.0",
    "value": "0.0",
    "event_type": "EventType.PURCHASE",
}
"""What :func:`attnlab.data.events.validate_events` assumes when a column is absent."""

PREPROCESSING_VERSION = "1"
"""Bump whenever a change to repairs or store layout must invalidate every cache."""

UNKNOWN_LABEL = "<unknown>"
"""Label of code 0 in every categorical side-information vocabulary."""
