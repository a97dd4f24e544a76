"""Data: sources -> validated events -> cached ragged :class:`SequenceStore`.

Main entry point (what the trainer calls)::

    from attnlab.data import load_sequences
    store = load_sequences("complete_journey", {"include_campaigns": True},
                           cache_dir=".cache/attnlab")

See ``docs/data.md`` for the sources, their repair rules and the cache.
"""

from attnlab.data.events import DataError, EventData, RepairReport, validate_events
from attnlab.data.pipeline import (
    fingerprint, load_events, load_sequences, load_store, save_store, store_from_config,
)
from attnlab.data.schema import EVENT_COLUMNS, NO_ITEM, EventType
from attnlab.data.sequences import SequenceStore, build_store
from attnlab.data.sources import available_sources, get_source, register_source

__all__ = [
    "DataError", "EVENT_COLUMNS", "EventData", "EventType", "NO_ITEM", "RepairReport",
    "SequenceStore", "available_sources", "build_store", "fingerprint", "get_source",
    "load_events", "load_sequences", "load_store", "register_source", "save_store",
    "store_from_config", "validate_events",
]
