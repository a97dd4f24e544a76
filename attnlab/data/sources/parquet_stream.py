"""Parquet files of any size, ingested out of core (a "streaming source").

Same column mapping and repair rules as the ``tabular`` source, for Parquet files too
large for pandas (100M events and more)::

    load_sequences("parquet_stream", {
        "path": "/data/events/",            # a .parquet file, a directory of them, a glob
        "columns": {"customer_id": "user_id", "item_id": "sku", "timestamp": "ts",
                    "basket_id": "order_id", "quantity": "qty", "unit_price": "price"},
        "memory_budget_mb": 1024}, cache_dir=".cache/attnlab")

The cache entry is written by :func:`attnlab.data.out_of_core.build_store_to` (pyarrow
batch scans, an external sort by customer range, arrays appended to the ``.npy`` files):
``Source.build_store_to`` is set, so :func:`attnlab.data.pipeline.load_sequences` lets
the source write the entry itself (into a temporary directory, renamed when complete).
``files()`` lists the Parquet files, so their names, sizes and content digests enter
the fingerprint (hashed once, then remembered by path, size and mtime in the cache).

Options (``configs/data/parquet_stream.yaml``): ``path``, ``columns`` (keys as in
``tabular``: ``customer_id``, ``item_id``, ``timestamp`` required; ``basket_id``,
``quantity``, ``value`` or ``unit_price``, ``event_type`` optional, ``None`` = the
column of the same name if every file has one, ``False`` = never mapped),
``timestamp_unit`` / ``timestamp_origin`` (numeric times), ``on_missing_ids``,
``duplicates``, ``negative_quantity`` (as ``tabular``), ``batch_rows`` (rows per record
batch) and ``memory_budget_mb`` (working memory of the sort pass). Not supported (use
``tabular``): text ids, text timestamps, CSV, item/customer feature columns.

Within a basket the order is a seeded shuffle keyed on the input row number (see
:mod:`attnlab.data.out_of_core`), so it differs from the ``tabular`` build of the same
file; everything else is identical.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from attnlab.data.events import EventData, RepairReport
from attnlab.data.out_of_core import NAME, build_store_to as _stream, parquet_files, \
    store_to_event_frame
from attnlab.data.sources import Source, register_source


def files(*, path, **_) -> list[Path]:
    """The Parquet files read (sorted; for cache fingerprints). A path that matches
    nothing gives ``[Path(path)]`` (fingerprinted as missing; the build then raises)."""
    if path is None:
        return []
    return parquet_files(path) or [Path(path)]


def load(
    *,
    path: str,
    columns: dict[str, Any],
    timestamp_unit: str | None = None,
    timestamp_origin: str = "unix",
    on_missing_ids: str = "error",
    duplicates: str = "drop",
    negative_quantity: str = "return",
    batch_rows: int = 1_000_000,
    memory_budget_mb: float = 1024,
) -> EventData:
    """The events as an in-memory :class:`EventData` (small data and tests only).

    Builds the store out of core into a temporary directory, then reads it back as a
    frame in store order. :func:`attnlab.data.pipeline.load_sequences` never calls this:
    it uses :func:`build_store_to`, which never holds the whole table.

    Args: see the module docstring (the same as :func:`build_store_to`).

    Raises:
      DataError: as :func:`attnlab.data.out_of_core.build_store_to`.
    """
    options = dict(locals())  # the options, as named in the signature
    from attnlab.data.pipeline import load_store

    tmp = Path(tempfile.mkdtemp(prefix="attnlab-parquet-stream-"))
    try:
        meta = _stream(tmp / "store", **options, seed=0, progress=False)
        store = load_store(tmp / "store", mmap=False)
        events = store_to_event_frame(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import pandas as pd

    return EventData(events=events, item_features=pd.DataFrame(),
                     customer_features=pd.DataFrame(),
                     repairs=RepairReport.from_list(meta["repairs"]), source=NAME,
                     meta=meta["source_meta"])


def build_store_to(directory: str | Path, options: Mapping[str, Any], *, seed: int = 0,
                   progress: bool = True, subsample: Mapping[str, int] | None = None,
                   extra_meta: Mapping[str, Any] | None = None) -> None:
    """The ``Source.build_store_to`` hook: writes the complete cache entry into
    ``directory`` (which must not exist) from the resolved ``options``; returns None
    (the pipeline re-opens the entry memory-mapped)."""
    _stream(directory, **dict(options), seed=seed, progress=progress, subsample=subsample,
            extra_meta=extra_meta)


SOURCE = register_source(Source(name=NAME, load=load, files=files, version="1",
                                build_store_to=build_store_to))
