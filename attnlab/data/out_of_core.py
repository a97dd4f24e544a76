"""Out-of-core build of a :class:`~attnlab.data.sequences.SequenceStore` from Parquet files.

The in-memory path (``tabular`` source -> pandas frame -> :func:`build_store`) holds the
whole table several times over; 100M events need tens of GiB. This module builds the
same cache entry in bounded memory, streaming the files with pyarrow in record batches
and sorting externally by customer range (issue 15, part 4)::

    build_store_to("cache/x", path="events/", columns={"customer_id": "user", ...})

Passes (each with a tqdm bar; seconds per pass in ``meta["out_of_core"]``):

1. **Count.** Scan the id columns (and ``quantity`` when negative quantities are
   dropped or refused): validate ids, count or refuse missing ids, count ``NO_ITEM``
   rows, collect the events per distinct customer id (a merged ``np.unique`` per
   batch; customer-level arrays only). The customer subsample (``max_customers``) is
   drawn here, exactly as :func:`attnlab.data.pipeline.subsample_customers` draws it.
2. **Partition.** Range-partition the customers (ascending id) into contiguous ranges
   whose events fit ``memory_budget_mb``; re-scan every column, convert each batch to
   canonical columns (validated, with file and row in every error) and append them to
   per-range spill files (plain binary files in a temporary directory next to the
   output). The item vocabulary is collected here.
3. **Sort and write.** For each range in ascending order: load its spill, drop exact
   duplicate rows, turn negative quantities into RETURN events, sort by
   ``(customer, time, basket, tiebreak)`` and append the arrays to the final ``.npy``
   files, computing every CRC-32 while writing. ``.npy`` headers are written last, in
   place (fixed 128-byte headers), and ``meta.json`` (the cache format of
   :func:`attnlab.data.pipeline.save_store`) marks the directory complete.

Peak memory is about ``memory_budget_mb`` plus one record batch plus the
customer-level arrays (16 bytes per customer and a few copies); no per-event array of
the whole data set is ever materialised.

Within-basket order. ``tiebreak`` is a seeded hash of the *global input row number*
(splitmix64 of ``row * 0x9E3779B97F4A7C15 + mix(seed)``; a bijection, so no two rows
tie), not the ``permutation(n)`` of the in-memory :func:`build_store`, which depends on
the row count after repairs. The order inside a basket is therefore a different (still
seeded) shuffle; everything else (customers, offsets, item vocabulary, times, baskets,
quantities, values, event types and the repair counts) is identical to the ``tabular``
source on the same file.

Supported input (what is refused and why: see docs/data.md, "Out-of-core ingest"):
integer id columns (float columns whose values are exact integers below 2**53 are
accepted), Parquet timestamp / date columns, or numbers with ``timestamp_unit``. Text
ids and text timestamps are refused with a :class:`DataError` pointing to the
in-memory ``tabular`` source: factorising text ids and inferring one date format need
the whole column.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import json
import os
import shutil
import tempfile
import time as timer
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from attnlab.data.errors import DataError
from attnlab.data.events import RepairReport
from attnlab.data.schema import NO_ITEM, EventType
from attnlab.data.sequences import DICT_GROUPS, VOCAB_GROUPS
from attnlab.data.sources.table_files import MAPPING_KEYS, check_repair_options, column_mapping
from attnlab.data.timestamps import (
    EPOCH_UNITS, TIME_MAX, TIME_MIN, implausible_epoch, other_epoch_unit, outside_range, unit_origin_seconds,
    wrong_epoch_unit,
)

NAME = "parquet_stream"
_BY_NAME = ("basket_id", "quantity", "value", "unit_price")
BYTES_PER_EVENT = 200
"""Working-set bytes per event of pass 3 (spill columns, hash, sort indices, outputs);
``memory_budget_mb`` is divided by it to size the customer ranges."""
NPY_HEADER_BYTES = 128
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_SECOND_NS = 1_000_000_000
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_MAX_EXACT_FLOAT = 2.0**53

# spill columns: name -> dtype (basket only when mapped)
_SPILL = {"customer_id": np.int64, "item_id": np.int64, "time_ns": np.int64,
          "basket_id": np.int64, "quantity": np.float32, "value": np.float32,
          "event_type": np.int8, "row": np.int64}


# ------------------------------------------------------------------------------ helpers


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of a ``uint64`` array (a bijection; wraps silently)."""
    z = x.copy()
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def tiebreak(rows: np.ndarray, seed: int) -> np.ndarray:
    """Seeded ``uint64`` order key of global input rows: distinct rows never tie."""
    base = _mix(np.array([np.uint64(seed & 0xFFFFFFFFFFFFFFFF)]))[0]
    with np.errstate(over="ignore"):
        return _mix(rows.astype(np.uint64) * _GOLDEN + base)


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The ``.parquet`` files of ``path``: a file, a directory (every ``*.parquet`` /
    ``*.pq`` below it, sorted) or a glob pattern (sorted matches)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in
                       (".parquet", ".pq") and not f.name.startswith((".", "_")))
    elif any(ch in str(path) for ch in "*?["):
        found = sorted(Path(f) for f in globlib.glob(str(path), recursive=True)
                       if Path(f).is_file())
    else:
        found = [p] if p.exists() else []
    return found


def _where(file: Path) -> str:
    return f"[{NAME}] {file}"


def _rows_text(rows: np.ndarray, values: list | None = None, limit: int = 5) -> str:
    shown = []
    for k, r in enumerate(rows[:limit]):
        v = "" if values is None else f" ({values[k]!r})"
        shown.append(f"row {int(r)}{v}")
    more = len(rows) - len(shown)
    return ", ".join(shown) + (f", ... and {more:,} more in this batch" if more > 0 else "")


@dataclasses.dataclass
class _Ctx:
    """Where a batch comes from (for error messages)."""

    file: Path
    first_row: int  # file-local row number of the batch's first row
    columns: dict[str, str]  # canonical key -> file column
    rows: np.ndarray | None = None  # file-local row of each position (after a filter)

    def fail(self, key: str, mask: np.ndarray, values: np.ndarray | None, problem: str,
             fix: str) -> None:
        pos = np.flatnonzero(mask)
        vals = None if values is None else [values[p].item() if hasattr(values[p], "item")
                                             else values[p] for p in pos[:5]]
        rows = self.rows[pos] if self.rows is not None else pos + self.first_row
        raise DataError(f"{_where(self.file)}: column '{self.columns[key]}' ({key}): "
                        f"{len(pos):,} row(s) {problem}. First offending: "
                        f"{_rows_text(rows, vals)}. {fix}")

    def only(self, ok: np.ndarray) -> "_Ctx":
        """The context of the rows ``ok`` of this batch."""
        base = self.rows if self.rows is not None else self.first_row + np.arange(len(ok))
        return dataclasses.replace(self, rows=base[ok])


def _decode(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _null_mask(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return arr.is_null().to_numpy(zero_copy_only=False)


def _int_ids(arr: pa.Array, key: str, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact ``int64`` ids (0 where missing) and the missing mask (None: none missing).

    Raises:
      DataError: text ids (the out-of-core path needs integer ids), float ids that are
        not exact integers below 2**53, unsigned ids beyond int64.
    """
    arr = _decode(arr)
    t = arr.type
    nulls = _null_mask(arr)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        if pa.types.is_uint64(t) and len(arr) - arr.null_count:
            big = pc.greater(arr, pa.scalar(np.iinfo(np.int64).max, pa.uint64()))
            big = big.fill_null(False).to_numpy(zero_copy_only=False)
            if big.any():
                ctx.fail(key, big, arr.to_numpy(zero_copy_only=False), "do not fit int64",
                         "Re-map the ids to integers below 2**63.")
        vals = arr.cast(pa.int64()) if not pa.types.is_int64(t) else arr
        if nulls is not None:
            vals = vals.fill_null(0)
        return vals.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), nulls
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(v) | (v != np.floor(v)) | (np.abs(v) > _MAX_EXACT_FLOAT)
        if nulls is not None:
            bad &= ~nulls
        if bad.any():
            ctx.fail(key, bad, v, "are not exact integers (float ids must be whole numbers "
                     "below 2**53 in magnitude)",
                     "Write the ids as int64 (or use the in-memory 'tabular' source).")
        return v.astype(np.int64), nulls
    raise DataError(
        f"{_where(ctx.file)}: column '{ctx.columns[key]}' ({key}) has type {t}: the "
        f"out-of-core path ({NAME}) needs integer ids (int64). Write the ids as integer "
        "codes, or use the in-memory 'tabular' source, which factorises text ids (it reads "
        "the whole file into memory).")


def _numbers(arr: pa.Array, key: str, ctx: _Ctx) -> np.ndarray:
    """A numeric column as numpy (its own dtype: int64 / float32 / float64), refusing
    missing and non-finite values and text."""
    arr = _decode(arr)
    t = arr.type
    if pa.types.is_decimal(t):
        arr, t = arr.cast(pa.float64()), pa.float64()
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise DataError(
            f"{_where(ctx.file)}: column '{ctx.columns[key]}' ({key}) has type {t}; the "
            f"out-of-core path needs numbers. Write it as a numeric column (or use the "
            "in-memory 'tabular' source, which parses numeric text).")
    nulls = _null_mask(arr)
    if pa.types.is_boolean(t) or pa.types.is_float16(t):
        arr = arr.cast(pa.float64())
    vals = arr.fill_null(0) if nulls is not None else arr
    out = vals.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        out = out.astype(np.int64, copy=False)
    bad = ~np.isfinite(out) if out.dtype.kind == "f" else np.zeros(len(out), bool)
    if nulls is not None:
        bad |= nulls
    if bad.any():
        problem = ("are missing" if nulls is not None and nulls[bad].all()
                   else "are not finite numbers")
        ctx.fail(key, bad, out, problem,
                 f"Clean or fill '{ctx.columns[key]}' in the source file (e.g. 1 for quantity, "
                 "0 for value), or drop it from the column mapping to use the default.")
    return out


def _check_time_range(ns_ok: np.ndarray, secs: np.ndarray, ctx: _Ctx, how: str,
                      values: np.ndarray) -> None:
    bad = ~ns_ok | outside_range(secs)
    if bad.any():
        ctx.fail("timestamp", bad, values,
                 f"are outside the supported range {TIME_MIN} .. {TIME_MAX}{how}",
                 "Fix or remove these rows (a typo in the year?); numeric epochs: check "
                 "timestamp_unit / timestamp_origin.")


def _time_ns(arr: pa.Array, ctx: _Ctx, unit: str | None, origin: str,
             first_batch: bool) -> np.ndarray:
    """Timestamps as ``int64`` nanoseconds since the epoch (wall-clock time for
    time-zone aware columns, like the ``tabular`` source).

    Raises:
      DataError: missing times, text times, numbers without ``timestamp_unit``, times
        outside 1677-09-22 .. 2262-04-11.
    """
    arr = _decode(arr)
    t = arr.type
    nulls = _null_mask(arr)
    if nulls is not None:
        ctx.fail("timestamp", nulls, None, "have a missing timestamp",
                 "Every event needs a time: fix or remove these rows.")
    if pa.types.is_date(t):
        arr, t = arr.cast(pa.timestamp("s")), pa.timestamp("s")
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            arr = pc.local_timestamp(arr)  # keep local wall-clock time (tabular does)
        raw = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
        per = _UNIT_NS[t.unit]
        secs = raw // (_SECOND_NS // per) if per < _SECOND_NS else raw
        _check_time_range(np.ones(len(raw), bool), secs, ctx, "",
                          raw.astype(f"datetime64[{t.unit}]"))
        return raw * per if per != 1 else raw
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        if unit is None:
            raise DataError(
                f"{_where(ctx.file)}: column '{ctx.columns['timestamp']}' (timestamp) holds "
                f"numbers ({t}), not dates. Numeric times are ambiguous: pass "
                "timestamp_unit='s' (or 'ms', 'us', 'D') and, when they do not count from "
                "1970-01-01, timestamp_origin='<date>'.")
        return _numeric_time_ns(arr, ctx, unit, origin, first_batch)
    raise DataError(
        f"{_where(ctx.file)}: column '{ctx.columns['timestamp']}' (timestamp) has type {t}: "
        f"the out-of-core path reads Parquet timestamp or date columns, or numbers with "
        "timestamp_unit. Text timestamps need one format inferred over the whole column: "
        "convert them to a timestamp column first, or use the in-memory 'tabular' source.")


def _numeric_time_ns(arr: pa.Array, ctx: _Ctx, unit: str, origin: str,
                     first_batch: bool) -> np.ndarray:
    """Numbers in ``unit`` since ``origin`` -> ns, with the checks of the tabular source
    (out-of-range rows; on each file's first batch the "looks like another epoch unit"
    check of the median magnitude)."""
    step, base = unit_origin_seconds(unit, origin, where=_where(ctx.file))
    if pa.types.is_decimal(arr.type):
        arr = arr.cast(pa.float64())
    num = arr.to_numpy(zero_copy_only=False)
    as_float = num.astype(np.float64)
    bad = ~np.isfinite(as_float) | outside_range(as_float * step + base)
    if bad.any():
        ctx.fail("timestamp", bad, num,
                 f"are outside the supported range {TIME_MIN} .. {TIME_MAX} when read with "
                 f"timestamp_unit={unit!r}, timestamp_origin={origin!r}",
                 "Check timestamp_unit / timestamp_origin, or fix the rows.")
    if first_batch and origin == "unix" and unit in EPOCH_UNITS and len(as_float):
        mag = float(np.median(np.abs(as_float)))
        other = other_epoch_unit(mag, unit) if implausible_epoch(mag, unit) else None
        if other:
            raise wrong_epoch_unit(_where(ctx.file), ctx.columns["timestamp"], unit, mag,
                                   f"row {ctx.first_row} ({num[0]!r})", other)
    if num.dtype.kind in "iu" and unit in EPOCH_UNITS and origin == "unix":
        return num.astype(np.int64) * _UNIT_NS[unit]  # exact, as the tabular source
    stamps = pd.to_datetime(pd.Series(num), unit=unit, origin=origin)
    return stamps.to_numpy().astype("datetime64[ns]").astype(np.int64)


# ---------------------------------------------------------------------------- options


@dataclasses.dataclass
class _Plan:
    files: list[Path]
    file_rows: list[int]
    columns: dict[str, str]  # canonical key -> file column
    auto: list[str]  # keys mapped by name
    timestamp_unit: str | None
    timestamp_origin: str
    on_missing_ids: str
    duplicates: str
    negative_quantity: str
    batch_rows: int
    range_rows: int

    @property
    def n_rows(self) -> int:
        return int(sum(self.file_rows))


def _plan(*, path, columns, timestamp_unit, timestamp_origin, on_missing_ids, duplicates,
          negative_quantity, batch_rows, memory_budget_mb) -> _Plan:
    """Validates the options and the files' schemas (no data read yet)."""
    if path is None or str(path) in ("", "???"):
        raise DataError(f"[{NAME}] options.path is required: a .parquet file, a directory of "
                        ".parquet files or a glob pattern.")
    check_repair_options(NAME, on_missing_ids=on_missing_ids, duplicates=duplicates,
                         negative_quantity=negative_quantity)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, (int, np.integer)) \
            or batch_rows < 1:
        raise DataError(f"[{NAME}] option batch_rows={batch_rows!r} must be a positive integer "
                        "(rows per record batch, e.g. 1000000).")
    if isinstance(memory_budget_mb, bool) or not isinstance(
            memory_budget_mb, (int, float, np.integer, np.floating)) or memory_budget_mb <= 0:
        raise DataError(f"[{NAME}] option memory_budget_mb={memory_budget_mb!r} must be a "
                        "positive number (MiB for one customer range in the sort pass).")
    files = parquet_files(path)
    if not files:
        raise DataError(f"[{NAME}] {path}: no Parquet files found (a .parquet file, a "
                        "directory holding .parquet files, or a glob pattern). Check "
                        "options.path.")
    columns, unmapped = column_mapping(columns, where=f"[{NAME}] {path}")
    schemas, rows = [], []
    for f in files:
        try:
            meta = pq.ParquetFile(f)
        except Exception as err:  # noqa: BLE001 -- pyarrow raises many types
            raise DataError(f"{_where(f)}: not a readable Parquet file ({err}). The "
                            f"out-of-core path reads Parquet only; use the 'tabular' source "
                            "for CSV.") from None
        schemas.append(set(meta.schema_arrow.names))
        rows.append(int(meta.metadata.num_rows))
    # optional keys left unmapped take the column of the same name (as in tabular)
    taken = set(columns.values())
    auto: list[str] = []
    for k in _BY_NAME:
        if k in columns or k in unmapped or k in taken or not all(k in s for s in schemas):
            continue
        if k in ("value", "unit_price") and ({"value", "unit_price"} & (set(columns) | set(auto))):
            continue
        auto.append(k)
    columns.update({k: k for k in auto})
    for f, names in zip(files, schemas):
        missing = [c for c in columns.values() if c not in names]
        if missing:
            raise DataError(f"{_where(f)}: column(s) {missing} named in the column mapping are "
                            f"not in the file; present: {sorted(names)}. Fix options.columns "
                            "(every file must hold every mapped column).")
    range_rows = max(1, int(float(memory_budget_mb) * 2**20) // BYTES_PER_EVENT)
    return _Plan(files=files, file_rows=rows, columns=columns, auto=auto,
                 timestamp_unit=timestamp_unit,
                 timestamp_origin="unix" if timestamp_origin is None else str(timestamp_origin),
                 on_missing_ids=on_missing_ids, duplicates=duplicates,
                 negative_quantity=negative_quantity, batch_rows=int(batch_rows),
                 range_rows=range_rows)


def _batches(plan: _Plan, keys: list[str]) -> Iterator[tuple[_Ctx, pa.RecordBatch, int]]:
    """(context, batch of the mapped columns ``keys``, global row of its first row)."""
    global_row = 0
    for f, n in zip(plan.files, plan.file_rows):
        cols = list(dict.fromkeys(plan.columns[k] for k in keys))
        local = 0
        pf = pq.ParquetFile(f)
        try:
            # one iterator per row group: an iterator spanning many row groups keeps
            # memory of every group it passed (pyarrow 26: +370 MiB per 100M rows read)
            for group in range(pf.metadata.num_row_groups):
                for batch in pf.iter_batches(batch_size=plan.batch_rows, row_groups=[group],
                                             columns=cols):
                    yield _Ctx(f, local, plan.columns), batch, global_row + local
                    local += batch.num_rows
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 -- a corrupt page, an I/O error
            raise DataError(f"{_where(f)}: cannot read rows after row {local} ({err}).") from None
        finally:
            pf.close()
        if local != n:  # pragma: no cover -- belt and braces
            raise DataError(f"{_where(f)}: read {local} rows, the footer says {n}.")
        global_row += n


def _col(batch: pa.RecordBatch, plan: _Plan, key: str) -> pa.Array:
    return batch.column(batch.schema.get_field_index(plan.columns[key]))


class _Counter:
    """Distinct ``int64`` keys with summed counts, merged from per-batch uniques in
    bounded memory (pending parts are folded in when they outgrow the merged part)."""

    def __init__(self, width: int = 1) -> None:
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros((0, width), np.int64)
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending = 0
        self.width = width

    def add(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        if len(values) == 0:
            return
        uniq, inv = np.unique(values, return_inverse=True)
        w = np.ones((len(values), 1), np.int64) if weights is None else weights
        cnt = np.stack([np.bincount(inv, weights=w[:, j], minlength=len(uniq))
                        for j in range(self.width)], 1).astype(np.int64)
        self._parts.append((uniq, cnt))
        self._pending += len(uniq)
        if self._pending > max(len(self.keys), 1 << 20):
            self._fold()

    def _fold(self) -> None:
        if not self._parts:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._parts])
        cnts = np.concatenate([self.counts] + [c for _, c in self._parts])
        self._parts, self._pending = [], 0
        self.keys, inv = np.unique(keys, return_inverse=True)
        self.counts = np.stack([np.bincount(inv, weights=cnts[:, j], minlength=len(self.keys))
                                for j in range(self.width)], 1).astype(np.int64)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._fold()
        return self.keys, self.counts


# ------------------------------------------------------------------------------ output


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """A version-1.0 ``.npy`` header for a 1-D C-order array, padded to exactly
    :data:`NPY_HEADER_BYTES` bytes (so it can be rewritten in place once the length is
    known)."""
    d = "{'descr': %r, 'fortran_order': False, 'shape': (%d,), }" % (np.dtype(dtype).str,
                                                                      int(length))
    body_len = NPY_HEADER_BYTES - 10
    if len(d) + 1 > body_len:  # pragma: no cover -- 1-D shapes always fit
        raise ValueError(f"npy header too long: {d}")
    body = (d + " " * (body_len - len(d) - 1) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body


class _NpyWriter:
    """Appends chunks to a 1-D ``.npy`` file, CRC-32 computed while writing; the header
    (with the final length) is written by :meth:`close`."""

    def __init__(self, path: Path, dtype) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.fh = open(path, "wb")
        self.fh.write(npy_header(self.dtype, 0))
        self.n, self.crc = 0, 0

    def append(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if not len(arr):
            return
        view = arr.reshape(-1).view(np.uint8)
        self.crc = zlib.crc32(view, self.crc)
        self.fh.write(view.data)
        self.n += len(arr)

    def close(self) -> dict[str, Any]:
        self.fh.seek(0)
        self.fh.write(npy_header(self.dtype, self.n))
        self.fh.close()
        return {"dtype": self.dtype.str, "shape": [self.n],
                "nbytes": int(self.n * self.dtype.itemsize), "crc32": int(self.crc)}

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()


# ------------------------------------------------------------------------------- build


def build_store_to(
    directory: str | os.PathLike,
    *,
    path,
    columns: Mapping[str, Any],
    timestamp_unit: str | None = None,
    timestamp_origin: str = "unix",
    on_missing_ids: str = "error",
    duplicates: str = "drop",
    negative_quantity: str = "return",
    batch_rows: int = 1_000_000,
    memory_budget_mb: float = 1024,
    seed: int = 0,
    progress: bool = True,
    subsample: Mapping[str, int] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Streams Parquet files into a cache entry in ``directory`` (see the module docstring).

    ``directory`` must not exist; it is written in place (``meta.json`` last) and is
    complete only when this returns. :func:`attnlab.data.pipeline.load_sequences` calls
    it on a temporary directory and renames it, so a crashed build is never a cache hit.

    Args:
      directory: the store directory to create.
      path: a ``.parquet`` file, a directory of them or a glob (files sorted by path;
        the global row number counts across them in that order).
      columns: canonical key -> file column, as for the ``tabular`` source (``None``:
        an optional key takes the column of the same name when every file has one;
        ``False``: never mapped).
      timestamp_unit, timestamp_origin: numeric timestamps (as ``tabular``).
      on_missing_ids: ``"error"`` | ``"drop"`` rows without customer or item id.
      duplicates: ``"drop"`` | ``"keep"`` exact duplicate rows.
      negative_quantity: ``"return"`` | ``"drop"`` | ``"error"``.
      batch_rows: rows per record batch read.
      memory_budget_mb: working memory of one customer range in the sort pass.
      seed: seed of the order inside a basket.
      progress: tqdm bars.
      subsample: ``{"max_customers", "seed"}``: keep a seeded sample of the customers
        (drawn as :func:`attnlab.data.pipeline.subsample_customers` does).
      extra_meta: merged into the store meta (the pipeline passes the fingerprint).

    Returns:
      The store meta written to ``meta.json`` (``meta`` key).

    Raises:
      DataError: bad options, unreadable files, a missing column, text ids, bad values
        (the message names the file, the column, the first offending rows and a fix).
    """
    t_start = timer.perf_counter()
    out = Path(directory)
    plan = _plan(path=path, columns=columns, timestamp_unit=timestamp_unit,
                 timestamp_origin=timestamp_origin, on_missing_ids=on_missing_ids,
                 duplicates=duplicates, negative_quantity=negative_quantity,
                 batch_rows=batch_rows, memory_budget_mb=memory_budget_mb)
    out.mkdir(parents=True, exist_ok=False)
    spill = Path(tempfile.mkdtemp(prefix=".spill-", dir=out.parent))
    try:
        return _build(out, spill, plan, seed=int(seed), progress=progress,
                      subsample=subsample, extra_meta=dict(extra_meta or {}), t_start=t_start)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _build(out: Path, spill: Path, plan: _Plan, *, seed: int, progress: bool,
           subsample, extra_meta: dict, t_start: float) -> dict[str, Any]:
    rep = RepairReport()
    n_raw = plan.n_rows
    names = ", ".join(f.name for f in plan.files[:3]) + (
        f" and {len(plan.files) - 3} more" if len(plan.files) > 3 else "")
    rep.add("raw_rows", n_raw, f"read {{count:,}} rows from {names}")
    rep.add("mapped_by_name", len(plan.auto),
            f"{{count:,}} optional column(s) mapped by their name: {plan.auto} (set "
            "data.options.columns.<key>=false to leave one unmapped)")
    for key in ("customer_id", "item_id", "basket_id"):
        if key in plan.columns:  # integer ids carry no whitespace: checked, none
            rep.add(f"stripped_{key}", 0,
                    f"{key}: {{count:,}} ids had surrounding whitespace, stripped (text and "
                    "numeric ids alike: 'cust 1 ' is 'cust 1')")
    seconds: dict[str, float] = {}

    # ---------------------------------------------------------------- pass 1: count
    t0 = timer.perf_counter()
    neg_rule = plan.negative_quantity != "return" and "quantity" in plan.columns
    keys1 = ["customer_id", "item_id"] + (["quantity"] if neg_rule else [])
    counter = _Counter(width=2)  # [rows after missing ids, rows that become events]
    n_missing = n_no_item = 0
    bar = tqdm(total=n_raw, desc=f"{NAME} 1/3 count", unit="row", unit_scale=True,
               disable=not progress, leave=False)
    for ctx, batch, _ in _batches(plan, keys1):
        cust, c_null = _int_ids(_col(batch, plan, "customer_id"), "customer_id", ctx)
        item, i_null = _int_ids(_col(batch, plan, "item_id"), "item_id", ctx)
        missing = np.zeros(batch.num_rows, bool)
        for key, nulls in (("customer_id", c_null), ("item_id", i_null)):
            if nulls is not None:
                if plan.on_missing_ids == "error":
                    ctx.fail(key, nulls, None, "have no id",
                             "Pass on_missing_ids='drop' to drop them (counted in the repair "
                             "report) or fill them in.")
                missing |= nulls
        ok = ~missing
        n_missing += int(missing.sum())
        bad = ok & (item < NO_ITEM)
        if bad.any():
            ctx.fail("item_id", bad, item, f"are negative (only {NO_ITEM} = NO_ITEM is "
                     "allowed)", "Re-map the item ids to non-negative integers.")
        n_no_item += int((ok & (item == NO_ITEM)).sum())
        kept = ok
        if neg_rule:
            q = np.zeros(batch.num_rows)
            q[ok] = _numbers(_col(batch, plan, "quantity").filter(pa.array(ok)), "quantity",
                             ctx.only(ok))
            neg = ok & (q < 0)
            if neg.any() and plan.negative_quantity == "error":
                ctx.fail("quantity", neg, q, "have a negative quantity",
                         "Pass negative_quantity='return' (RETURN events) or 'drop'.")
            kept = ok & ~neg
        counter.add(cust[ok], np.stack([np.ones(int(ok.sum()), np.int64),
                                        kept[ok].astype(np.int64)], 1))
        bar.update(batch.num_rows)
    bar.close()
    rep.add("missing_ids", n_missing, "dropped {count:,} rows without customer or item id")
    if n_raw == 0:
        raise DataError(f"{_where(plan.files[0])}: no events: the file(s) hold 0 rows.")
    if n_missing == n_raw:
        raise DataError(f"{_where(plan.files[0])}: no events: {n_raw:,} row(s) read, "
                        f"{n_missing:,} dropped for a missing id in column(s) "
                        f"'{plan.columns['customer_id']}'/'{plan.columns['item_id']}' "
                        "(on_missing_ids='drop').")
    rep.add("no_item", n_no_item,
            f"{{count:,}} rows have item id {NO_ITEM} (NO_ITEM): kept as events without an "
            "item (visits, contacts), never scored as products")
    n_valid = n_raw - n_missing
    for key, default in (("basket_id", None), ("quantity", 1.0), ("value", 0.0)):
        if key == "value" and "unit_price" in plan.columns:
            continue
        if key not in plan.columns:
            if key == "basket_id":
                rep.add("default_basket", n_valid,
                        "no basket column: {count:,} events grouped into one basket per "
                        "(customer, timestamp)")
            else:
                rep.add(f"default_{key}", n_valid,
                        f"no {key} column: {{count:,}} events get {key} = {default}")
    # every customer with a row is spilled (its negative rows are counted in pass 3 even
    # when none is left); customers end up in the store when they keep an event
    cust_ids, counts = counter.result()
    cust_rows = counts[:, 0]
    present = cust_ids[counts[:, 1] > 0]
    sub_meta = None
    if subsample is not None and len(present) > int(subsample["max_customers"]):
        keep = np.sort(np.random.default_rng(int(subsample["seed"])).choice(
            present, size=int(subsample["max_customers"]), replace=False))
        sub_meta = {"max_customers": int(subsample["max_customers"]),
                    "seed": int(subsample["seed"]), "customers_before": int(len(present))}
        cust_ids, cust_rows = keep, cust_rows[np.searchsorted(cust_ids, keep)]
    del counts, counter, present
    if len(cust_ids) == 0:
        raise DataError(f"{_where(plan.files[0])}: no events: all {n_raw:,} row(s) were "
                        "dropped (missing ids, negative_quantity='drop'). Check the files and "
                        "the on_missing_ids / negative_quantity options.")
    seconds["count"] = timer.perf_counter() - t0

    # ------------------------------------------------------------ pass 2: partition
    t0 = timer.perf_counter()
    starts = _ranges(cust_rows, plan.range_rows)
    range_first_id = cust_ids[starts]
    bounds = np.append(starts, len(cust_ids))
    has_basket = "basket_id" in plan.columns
    spill_cols = [c for c in _SPILL if c != "basket_id" or has_basket]
    spill_rows = np.zeros(len(starts), np.int64)
    items = _Counter(width=1)
    keys2 = [k for k in MAPPING_KEYS if k in plan.columns]
    file_first_batch: set[Path] = set()
    bar = tqdm(total=n_raw, desc=f"{NAME} 2/3 partition ({len(starts)} ranges)", unit="row",
               unit_scale=True, disable=not progress, leave=False)
    for ctx, batch, row0 in _batches(plan, keys2):
        first = ctx.file not in file_first_batch
        file_first_batch.add(ctx.file)
        cols = _canonical(batch, plan, ctx, row0, first)
        pos = np.minimum(np.searchsorted(cust_ids, cols["customer_id"]), len(cust_ids) - 1)
        keep = cust_ids[pos] == cols["customer_id"]  # the subsample, customers left
        if not keep.all():
            cols = {k: v[keep] for k, v in cols.items()}
        rng_id = np.searchsorted(range_first_id, cols["customer_id"], side="right") - 1
        eventish = cols["item_id"] != NO_ITEM
        if plan.negative_quantity == "drop":
            eventish &= cols["quantity"] >= 0
        items.add(cols["item_id"][eventish])
        order = np.argsort(rng_id, kind="stable")
        sorted_rng = rng_id[order]
        cuts = np.searchsorted(sorted_rng, np.arange(len(starts) + 1))
        for r in np.flatnonzero(np.diff(cuts)):
            sel = order[cuts[r]:cuts[r + 1]]
            for c in spill_cols:
                with open(spill / f"{r}.{c}", "ab") as fh:
                    np.ascontiguousarray(cols[c][sel], dtype=_SPILL[c]).tofile(fh)
            spill_rows[r] += len(sel)
        bar.update(batch.num_rows)
    bar.close()
    vocab_ids = items.result()[0]
    del items
    spill_bytes = sum(f.stat().st_size for f in spill.iterdir())
    seconds["partition"] = timer.perf_counter() - t0

    # ------------------------------------------------------- pass 3: sort and write
    t0 = timer.perf_counter()
    writers = {"item": _NpyWriter(out / "item.npy", np.int32),
               "time": _NpyWriter(out / "time.npy", np.int64),
               "event_type": _NpyWriter(out / "event_type.npy", np.int8),
               "basket": _NpyWriter(out / "basket.npy", np.int64),
               "quantity": _NpyWriter(out / "quantity.npy", np.float32),
               "value": _NpyWriter(out / "value.npy", np.float32)}
    lengths = np.zeros(len(cust_ids), np.int64)
    n_dup = n_neg = n_zero = 0
    basket_next = 0
    bar = tqdm(total=int(spill_rows.sum()), desc=f"{NAME} 3/3 sort", unit="row",
               unit_scale=True, disable=not progress, leave=False)
    try:
        for r in range(len(starts)):
            ids_r = cust_ids[bounds[r]:bounds[r + 1]]
            res = _sort_range(spill, r, spill_cols, int(spill_rows[r]), ids_r, plan, seed,
                              vocab_ids, basket_next)
            n_dup += res["duplicates"]
            n_neg += res["negative"]
            n_zero += res["zero"]
            basket_next = res["basket_next"]
            lengths[bounds[r]:bounds[r + 1]] = res["lengths"]
            for k, w in writers.items():
                w.append(res[k])
            for c in spill_cols:
                (spill / f"{r}.{c}").unlink(missing_ok=True)
            bar.update(int(spill_rows[r]))
        checks = {k: w.close() for k, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        bar.close()
    if plan.duplicates == "drop":
        rep.add("exact_duplicates", n_dup,
                "dropped {count:,} exact duplicate rows (kept the first of each)")
    if plan.negative_quantity == "drop":
        rep.add("negative_quantity", n_neg, "dropped {count:,} negative-quantity rows")
    else:
        rep.add("negative_quantity", n_neg,
                "{count:,} negative-quantity rows became RETURN events (|quantity|, |value|)")
    rep.add("zero_quantity", n_zero, "{count:,} zero-quantity rows kept")
    n_events = int(lengths.sum())
    if (lengths == 0).any():  # customers whose every row was dropped
        cust_ids, lengths = cust_ids[lengths > 0], lengths[lengths > 0]
    if n_events < 2:
        dropped = [x.message for x in rep if x.count and x.message.startswith("dropped")]
        raise DataError(f"{_where(plan.files[0])}: only {n_events} event(s) left of {n_raw} "
                        f"row(s) read{' (' + '; '.join(dropped) + ')' if dropped else ''}; a "
                        "sequence data set needs at least 2 events. Check the files and the "
                        "on_missing_ids/duplicates/negative_quantity options.")
    offsets = np.zeros(len(cust_ids) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    small = {"offsets": offsets, "customer_ids": cust_ids.astype(np.int64),
             "item_vocab": np.concatenate([[NO_ITEM], vocab_ids]).astype(np.int64)}
    for k, arr in small.items():
        w = _NpyWriter(out / f"{k}.npy", arr.dtype)
        w.append(arr)
        checks[k] = w.close()
    seconds["sort_write"] = timer.perf_counter() - t0

    source_meta: dict[str, Any] = {"paths": [str(f) for f in plan.files], "format": "parquet"}
    if sub_meta is not None:
        source_meta["subsample"] = sub_meta
    meta = {
        "source": NAME,
        "seed": int(seed),
        "counts": {"events": n_events, "customers": int(len(cust_ids)),
                   "items": int(len(vocab_ids))},
        "repairs": rep.to_list(),
        "source_meta": source_meta,
        "out_of_core": {
            "files": len(plan.files), "rows": n_raw, "batch_rows": plan.batch_rows,
            "range_rows": plan.range_rows, "ranges": int(len(starts)),
            "largest_range_rows": int(spill_rows.max()) if len(spill_rows) else 0,
            "spill_bytes": int(spill_bytes),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        },
        **extra_meta,
        "build_seconds": round(timer.perf_counter() - t_start, 3),
    }
    _write_meta(out, checks, meta)
    return meta


def _write_meta(out: Path, checks: dict, meta: dict) -> None:
    """``meta.json`` exactly as :func:`attnlab.data.pipeline.save_store` writes it."""
    from attnlab.data.pipeline import CACHE_FORMAT, META_FILE, _json_default

    doc = {"complete": True, "format": CACHE_FORMAT,
           "arrays": {k: checks[k] for k in ("offsets", "customer_ids", "item", "time",
                                             "event_type", "basket", "quantity", "value",
                                             "item_vocab")},
           "groups": {g: [] for g in DICT_GROUPS},
           "vocabs": {g: {} for g in VOCAB_GROUPS},
           "meta": meta}
    with open(out / META_FILE, "w") as fh:
        json.dump(doc, fh, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())


def _ranges(rows: np.ndarray, range_rows: int) -> np.ndarray:
    """Start index of each contiguous customer range holding at most ``range_rows``
    rows (a customer with more rows gets a range of its own)."""
    if len(rows) == 0:
        return np.zeros(1, np.int64)
    cum = np.cumsum(rows)
    starts, s = [], 0
    while s < len(rows):
        starts.append(s)
        before = cum[s - 1] if s else 0
        e = int(np.searchsorted(cum, before + range_rows, side="right"))
        s = max(e, s + 1)
    return np.asarray(starts, np.int64)


def _canonical(batch: pa.RecordBatch, plan: _Plan, ctx: _Ctx, row0: int, first: bool
               ) -> dict[str, np.ndarray]:
    """The rows of one batch that have both ids, as canonical columns (``row``: global
    input row numbers). Rows without an id were counted (or refused) in pass 1 and are
    not validated further, as in the ``tabular`` source."""
    out: dict[str, np.ndarray] = {}
    cust, c_null = _int_ids(_col(batch, plan, "customer_id"), "customer_id", ctx)
    item, i_null = _int_ids(_col(batch, plan, "item_id"), "item_id", ctx)
    ok = np.ones(batch.num_rows, bool)
    for nulls in (c_null, i_null):
        if nulls is not None:
            ok &= ~nulls
    out["row"] = row0 + np.arange(batch.num_rows, dtype=np.int64)
    if not ok.all():
        batch = batch.filter(pa.array(ok))
        ctx = ctx.only(ok)
        cust, item, out["row"] = cust[ok], item[ok], out["row"][ok]
    out["customer_id"], out["item_id"] = cust, item
    out["time_ns"] = _time_ns(_col(batch, plan, "timestamp"), ctx, plan.timestamp_unit,
                              plan.timestamp_origin, first)
    if "basket_id" in plan.columns:
        basket, b_null = _int_ids(_col(batch, plan, "basket_id"), "basket_id", ctx)
        if b_null is not None:
            ctx.fail("basket_id", b_null, None, "are missing",
                     "Fill them in or drop the basket column from the mapping (one basket "
                     "per customer and timestamp).")
        out["basket_id"] = basket
    q = (_numbers(_col(batch, plan, "quantity"), "quantity", ctx)
         if "quantity" in plan.columns else None)
    out["quantity"] = (np.ones(batch.num_rows, np.float32) if q is None
                       else q.astype(np.float64).astype(np.float32))
    if "unit_price" in plan.columns:
        price = _numbers(_col(batch, plan, "unit_price"), "unit_price", ctx)
        qq = np.ones(batch.num_rows, np.float64) if q is None else q
        value = qq * price  # the dtype pandas would give (as the tabular source)
        bad = ~np.isfinite(value.astype(np.float64))
        if bad.any():
            ctx.fail("unit_price", bad, value, "give a non-finite value (quantity x "
                     "unit_price)", "Fix the quantity / unit_price of these rows.")
        out["value"] = value.astype(np.float64).astype(np.float32)
    elif "value" in plan.columns:
        out["value"] = _numbers(_col(batch, plan, "value"), "value", ctx).astype(
            np.float64).astype(np.float32)
    else:
        out["value"] = np.zeros(batch.num_rows, np.float32)
    if "event_type" in plan.columns:
        et = _numbers(_col(batch, plan, "event_type"), "event_type", ctx)
        valid = np.isin(et, [int(e) for e in EventType if e != EventType.PAD])
        if not valid.all():
            ctx.fail("event_type", ~valid, et, "are not valid EventType codes (1..4)",
                     "Use attnlab.data.schema.EventType (PAD = 0 is reserved for padding).")
        out["event_type"] = et.astype(np.int8)
    else:
        out["event_type"] = np.full(batch.num_rows, int(EventType.PURCHASE), np.int8)
    return out


def _index_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` (all present) in the sorted distinct ``keys``: a lookup
    table when the keys are dense enough, else ``np.searchsorted``."""
    if len(keys) == 0 or len(values) == 0:
        return np.zeros(len(values), np.int64)
    lo, span = int(keys[0]), int(keys[-1]) - int(keys[0]) + 1
    if span <= max(4 * len(values), 4 * len(keys), 1 << 16) and span <= 1 << 26:
        lut = np.zeros(span, np.int64)
        lut[keys - lo] = np.arange(len(keys))
        return lut[values - lo]
    return np.searchsorted(keys, values)


_HASH_MULT = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
              0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB)


def _float_key(x: np.ndarray) -> np.ndarray:
    """``uint64`` bits of a float32 array with -0.0 folded into 0.0 (pandas treats them
    as equal when looking for duplicates)."""
    return (x + np.float32(0.0)).view(np.uint32).astype(np.uint64)


def _duplicates(cols: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """``bool[n]``: rows identical (in ``names``) to an earlier row (smaller ``row``).

    A 64-bit hash of every row finds the candidates (rows sharing a hash); an exact
    lexsort of the candidates alone decides, so hash collisions never merge rows."""
    n = len(cols["row"])
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for name, mult in zip(names, _HASH_MULT):
            a = cols[name]
            v = _float_key(a) if a.dtype == np.float32 else a.astype(np.int64).view(np.uint64)
            v *= np.uint64(mult)
            h += v
        h = _mix(h)
    order = np.argsort(h)
    hs = h[order]
    same = hs[1:] == hs[:-1]
    dup = np.zeros(n, bool)
    if not same.any():
        return dup
    cand_mask = np.zeros(n, bool)
    cand_mask[1:] |= same
    cand_mask[:-1] |= same
    cand = order[cand_mask]
    keys = [cols["row"][cand]] + [cols[name][cand] for name in reversed(names)]
    o = cand[np.lexsort(keys)]
    eq = np.ones(len(o) - 1, bool)
    for name in names:
        a = cols[name]
        eq &= a[o[1:]] == a[o[:-1]]
    dup[o[1:][eq]] = True
    return dup


def _event_order(local: np.ndarray, secs: np.ndarray, basket: np.ndarray,
                 tb: np.ndarray) -> np.ndarray:
    """``np.lexsort((tb, basket, secs, local))``, about twice as fast: rows are first put
    in ``tb`` order (distinct keys), then stably sorted by one packed ``(customer, time)``
    key; only when some (customer, time) holds several baskets is ``basket`` sorted too."""
    if len(local) == 0:
        return np.zeros(0, np.int64)
    t0 = int(secs.min())
    if len(local) >= 1 << 28 or int(secs.max()) - t0 >= 1 << 35:  # pragma: no cover
        return np.lexsort((tb, basket, secs, local))
    perm = np.argsort(tb)
    key = (local.astype(np.int64) << 35) | (secs - t0)
    key = key[perm]
    o = np.argsort(key, kind="stable")
    order = perm[o]
    ks, bs = key[o], basket[order]
    same = ks[1:] == ks[:-1]
    mixed = same & (bs[1:] != bs[:-1])
    if mixed.any():  # re-sort only the (customer, time) groups holding several baskets
        grp = np.concatenate([[0], np.cumsum(~same)])
        rows = np.flatnonzero(np.isin(grp, grp[1:][mixed]))
        sub = np.lexsort((rows, bs[rows], ks[rows]))  # rows: keeps the tiebreak order
        order[rows] = order[rows[sub]]
    return order


def _sort_range(spill: Path, r: int, spill_cols: list[str], n: int, ids_r: np.ndarray,
                plan: _Plan, seed: int, vocab_ids: np.ndarray, basket_next: int
                ) -> dict[str, Any]:
    """Pass 3 for one customer range: repairs, sort, output arrays."""
    cols = {c: (np.fromfile(spill / f"{r}.{c}", dtype=_SPILL[c]) if n else
                np.zeros(0, _SPILL[c])) for c in spill_cols}
    res: dict[str, Any] = {"duplicates": 0, "negative": 0, "zero": 0}
    if plan.duplicates == "drop" and n > 1:
        names = [c for c in ("customer_id", "item_id", "time_ns", "basket_id", "quantity",
                             "value", "event_type") if c in cols]
        dup = _duplicates(cols, names)
        res["duplicates"] = int(dup.sum())
        if dup.any():
            cols = {k: v[~dup] for k, v in cols.items()}
    local = _index_of(ids_r, cols.pop("customer_id"))
    time_ns = cols.pop("time_ns")
    secs = time_ns // _SECOND_NS  # floor, as numpy's datetime64[ns] -> [s] cast
    if "basket_id" not in cols:
        # default basket: rank of (customer, timestamp) among the distinct pairs, numbered
        # across ranges in ascending order (the tabular source's groupby(...).ngroup())
        o2 = np.lexsort((time_ns, local))
        new = np.ones(len(o2), bool)
        new[1:] = (local[o2][1:] != local[o2][:-1]) | (time_ns[o2][1:] != time_ns[o2][:-1])
        gid = np.empty(len(o2), np.int64)
        gid[o2] = np.cumsum(new) - 1 + basket_next
        basket_next += int(new.sum())
        cols["basket_id"] = gid
        del o2, new
    order = _event_order(local, secs, cols["basket_id"], tiebreak(cols["row"], seed))
    local = local[order]
    secs = secs[order]
    del time_ns
    cols = {k: v[order] for k, v in cols.items()}
    del order
    q, v, et = cols["quantity"], cols["value"], cols["event_type"]
    neg = q < 0
    res["negative"] = int(neg.sum())
    if plan.negative_quantity == "drop":
        if neg.any():
            keep = ~neg
            cols = {k: a[keep] for k, a in cols.items()}
            local, secs = local[keep], secs[keep]
            q, v, et = cols["quantity"], cols["value"], cols["event_type"]
    elif neg.any():
        et = et.copy()
        et[neg] = np.int8(EventType.RETURN)
        q = np.abs(q)
        v = v.copy()
        v[neg] = np.abs(v[neg])
    res["zero"] = int((q == 0).sum())
    raw_item = cols["item_id"]
    item = np.zeros(len(raw_item), np.int32)
    real = raw_item != NO_ITEM
    item[real] = (_index_of(vocab_ids, raw_item[real]) + 1).astype(np.int32)
    res.update(item=item, time=secs, event_type=et, basket=cols["basket_id"], quantity=q,
               value=v, lengths=np.bincount(local, minlength=len(ids_r)),
               basket_next=basket_next)
    return res


def store_to_event_frame(store) -> pd.DataFrame:
    """Canonical events of a store (in store order): the in-memory view used by the
    ``parquet_stream`` source's ``load`` (small data, tests)."""
    lengths = np.diff(np.asarray(store.offsets))
    return pd.DataFrame({
        "customer_id": np.repeat(np.asarray(store.customer_ids), lengths),
        "item_id": np.asarray(store.item_vocab)[np.asarray(store.item)],
        "timestamp": np.asarray(store.time).astype("datetime64[s]").astype("datetime64[ns]"),
        "basket_id": np.asarray(store.basket),
        "quantity": np.asarray(store.quantity),
        "value": np.asarray(store.value),
        "event_type": np.asarray(store.event_type),
    })
