"""Config -> events -> :class:`SequenceStore`, fingerprinted and cached on disk.

The one call the trainer makes::

    store = load_sequences(cfg.data.name, dict(cfg.data.options), cache_dir=".cache/attnlab")

Cache layout: ``<cache_dir>/<fingerprint>/`` holds one ``.npy`` per array and
``meta.json`` (written last, with ``"complete": true``). The directory is written
under a temporary name and renamed into place, so a crashed build never looks like a
cache hit. Cached arrays are opened with ``np.load(mmap_mode="r")``: nothing is read
until used, so stores larger than RAM work.

The fingerprint hashes: the source name and version, every option (defaults filled
in), the name, size and SHA-256 of the contents of every raw file the source reads, the
preprocessing version (:data:`attnlab.data.schema.PREPROCESSING_VERSION`) and the build
seed. Contents, not modification times: the same package installed on another machine (or
reinstalled) gives the same fingerprint, and an edited file a new one. Once a store is
built or found, the digests are recorded in ``<cache_dir>/file_digests.json`` under each
file's path, size and mtime, so a large raw file is read once, not on every run (a file
whose size or mtime changed is re-hashed).

Subsampling (any source): the options ``max_customers`` (keep at most this many customers,
drawn without replacement) and ``subsample_seed`` (default 0) are not passed to the source;
they are applied to its events after loading, before the store is built, and enter the
fingerprint (only when ``max_customers`` is set, so full-data fingerprints are unchanged).
``debug=tiny`` uses them so it works with every source::

    load_sequences("cdnow", {"max_customers": 300})

Streaming sources (``Source.build_store_to``, e.g. ``parquet_stream``) write the
entry themselves, out of core, into the same temporary directory; it is renamed and
re-opened exactly as above (:mod:`attnlab.data.out_of_core`).

The cache does not trust its files: ``meta.json`` records the dtype, shape, size and a
CRC-32 of every array at save time, and every load checks them (about 30 ms for The
Complete Journey's 51 MB; memory-mapped arrays are checked with plain 64 MiB file reads,
so verifying a store larger than RAM adds nothing to the resident set). A mismatch, a
truncated or unreadable ``.npy`` or a damaged ``meta.json`` is never a hit:
:func:`load_sequences` warns, naming the file, and rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm.auto import tqdm

from attnlab.atomic import atomic_write_text
from attnlab.data.events import DataError, EventData, RepairReport
from attnlab.data.schema import PREPROCESSING_VERSION
from attnlab.data.sequences import (
    CORE_ARRAYS, DICT_GROUPS, VOCAB_GROUPS, SequenceStore, build_store,
)
from attnlab.data.sources import get_source

log = logging.getLogger("attnlab.data")


class CacheWarning(UserWarning):
    """A cache entry was damaged (names the file) and is being rebuilt."""

META_FILE = "meta.json"


def _plain(obj: Any) -> Any:
    """JSON-friendly copy of options (OmegaConf containers, Paths, numpy scalars)."""
    try:  # Hydra configs
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


SUBSAMPLE_OPTIONS = ("max_customers", "subsample_seed")
"""Options every source accepts (handled here, not by the source): see the module docstring."""


def split_subsample(options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, int] | None]:
    """``options`` -> (the source's own options, ``{"max_customers", "seed"}`` or None).

    Raises:
      DataError: ``max_customers`` not a positive integer, or ``subsample_seed`` not an integer.
    """
    opts = dict(_plain(options or {}))
    n = opts.pop("max_customers", None)
    seed = opts.pop("subsample_seed", 0)
    if n is None:
        return opts, None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"data.options.max_customers must be a positive integer (or null for all "
                        f"customers), got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"data.options.subsample_seed must be an integer, got {seed!r}.")
    return opts, {"max_customers": int(n), "seed": int(seed)}


def subsample_customers(data: EventData, max_customers: int, *, seed: int = 0) -> EventData:
    """``data`` restricted to at most ``max_customers`` customers drawn (without replacement,
    seeded) from those with events: all their events and side information are kept."""
    ids = np.unique(data.events["customer_id"].to_numpy())
    if len(ids) <= max_customers:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(ids, size=max_customers, replace=False))
    events = data.events[data.events["customer_id"].isin(keep)].reset_index(drop=True)
    cf = data.customer_features
    if len(cf):
        cf = cf[cf.index.isin(keep)]
    meta = {**data.meta, "subsample": {"max_customers": int(max_customers), "seed": int(seed),
                                       "customers_before": int(len(ids))}}
    log.info("[%s] subsampled %d of %d customers (seed %d): %d of %d events", data.source,
             max_customers, len(ids), seed, len(events), len(data.events))
    return dataclasses.replace(data, events=events, customer_features=cf, meta=meta)


DIGESTS_FILE = "file_digests.json"
_DIGESTS: dict[tuple[str, int, int], str] = {}   # (path, size, mtime_ns) -> sha256, this process


def _read_digests(cache_dir: str | Path) -> dict[str, Any]:
    """``<cache_dir>/file_digests.json`` as a dict; missing, damaged or foreign: ``{}``."""
    path = Path(cache_dir) / DIGESTS_FILE
    try:
        book = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return book if isinstance(book, dict) else {}


def file_digest(path: str | Path, *, cache_dir: str | Path | None = None,
                book: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the contents of ``path`` (hex), remembered per (path, size, mtime_ns) in
    this process, and looked up (not written: :func:`load_sequences` records digests once
    its store is built or found) in ``<cache_dir>/file_digests.json`` (or in ``book``, that
    file already read, when a caller digests several files)."""
    f = Path(path).resolve()
    st = f.stat()
    key = (str(f), int(st.st_size), int(st.st_mtime_ns))
    if key in _DIGESTS:
        return _DIGESTS[key]
    if book is None and cache_dir is not None:
        book = _read_digests(cache_dir)
    hit = book.get(key[0]) if book is not None else None
    if isinstance(hit, dict) and hit.get("size") == key[1] and hit.get("mtime_ns") == key[2] \
            and isinstance(hit.get("sha256"), str):
        _DIGESTS[key] = hit["sha256"]
        return hit["sha256"]
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _remember_digests(cache_dir: str | Path) -> None:
    """Adds this process's file digests to ``<cache_dir>/file_digests.json`` (atomically;
    a read-only cache is not an error: the next process re-hashes)."""
    book = _read_digests(cache_dir)
    fresh = {p: {"size": n, "mtime_ns": t, "sha256": d} for (p, n, t), d in _DIGESTS.items()
             if book.get(p) != {"size": n, "mtime_ns": t, "sha256": d}}
    if not fresh:
        return
    try:
        atomic_write_text(Path(cache_dir) / DIGESTS_FILE, json.dumps({**book, **fresh}, indent=1, sort_keys=True))
    except OSError as e:
        log.debug("could not record raw-file digests in %s: %s", cache_dir, e)


def fingerprint(name: str, options: Mapping[str, Any] | None = None, *, seed: int = 0,
                cache_dir: str | Path | None = None) -> str:
    """Cache key ``"<name>-<16 hex>"`` of a source, its options, the contents of its raw
    files (name, size, SHA-256: :func:`file_digest`; ``cache_dir`` remembers digests) and
    seed (and the customer subsample, when ``max_customers`` is set)."""
    src = get_source(name)
    options, sub = split_subsample(options)
    opts = src.resolve_options(_plain(options or {}))
    files = []
    book = _read_digests(cache_dir) if cache_dir is not None else None   # read once for every file
    for f in src.files(**opts):
        f = Path(f)
        if f.is_file():
            files.append([f.name, f.stat().st_size, file_digest(f, book=book)])
        else:   # missing (the build then raises, naming it) or a directory
            files.append([f.name, -1, None])
    payload = {"source": name, "source_version": src.version, "options": opts,
               "files": files, "preprocessing": PREPROCESSING_VERSION, "seed": int(seed)}
    if sub is not None:
        payload["subsample"] = sub
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    return f"{name}-{digest.hexdigest()[:16]}"


def load_events(name: str, options: Mapping[str, Any] | None = None) -> EventData:
    """Runs source ``name`` with ``options`` (unknown options raise :class:`DataError`),
    then the customer subsample (``max_customers``, ``subsample_seed``) if asked for."""
    src = get_source(name)
    options, sub = split_subsample(options)
    data = src.load(**src.resolve_options(options))
    if sub is not None:
        data = subsample_customers(data, sub["max_customers"], seed=sub["seed"])
    return data


# ---------------------------------------------------------------------------- store I/O


def save_store(store: SequenceStore, directory: str | Path, *, progress: bool = False) -> None:
    """Writes ``store`` as ``.npy`` files + ``meta.json`` into a new ``directory``.

    Not atomic by itself; :func:`load_sequences` writes into a temporary directory
    and renames it. ``meta.json`` is written last and marks the directory complete.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=False)
    arrays = store.arrays()
    checks = {}
    for key, arr in tqdm(arrays.items(), desc="write cache", disable=not progress, leave=False):
        arr = np.ascontiguousarray(arr)
        np.save(d / f"{key}.npy", arr, allow_pickle=False)
        checks[key] = {"dtype": arr.dtype.str, "shape": list(arr.shape),
                       "nbytes": int(arr.nbytes), "crc32": _crc32(arr)}
    meta = {
        "complete": True,
        "format": CACHE_FORMAT,
        "arrays": checks,
        "groups": {g: list(getattr(store, g)) for g in DICT_GROUPS},
        "vocabs": {g: getattr(store, g) for g in VOCAB_GROUPS},
        "meta": store.meta,
    }
    with open(d / META_FILE, "w") as fh:
        json.dump(meta, fh, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())


CACHE_FORMAT = 2
"""2: ``meta.json`` holds ``arrays`` = {key: dtype, shape, nbytes, crc32}."""


def _crc32(arr: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order), in 64 MiB chunks."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    crc, step = 0, 64 << 20
    for lo in range(0, len(flat), step):
        crc = zlib.crc32(flat[lo:lo + step], crc)
    return int(crc)


def _file_crc32(path: Path, arr: np.memmap) -> int:
    """CRC-32 of a memory-mapped array's bytes, read from its file in 64 MiB chunks
    (plain reads: the pages never enter the process's resident set, so verifying a
    store larger than RAM costs no memory)."""
    crc, left, step = 0, int(arr.nbytes), 64 << 20
    buf = bytearray(min(step, max(left, 1)))
    view = memoryview(buf)
    try:
        with open(path, "rb") as fh:
            fh.seek(int(arr.offset))
            while left > 0:
                got = fh.readinto(view[:min(step, left)])
                if not got:
                    break  # truncated: the CRC cannot match
                crc = zlib.crc32(view[:got], crc)
                left -= got
    except OSError as err:
        raise DataError(f"{path}: unreadable or truncated cache file ({err}); rebuild "
                        "with refresh=True.") from None
    return int(crc)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def is_complete(directory: str | Path) -> bool:
    """True when ``directory`` holds a fully written store."""
    try:
        with open(Path(directory) / META_FILE) as fh:
            return bool(json.load(fh).get("complete"))
    except (OSError, ValueError):
        return False


def load_store(directory: str | Path, *, mmap: bool = True, verify: bool = True
               ) -> SequenceStore:
    """Opens a saved store; arrays are memory-mapped (read-only) when ``mmap``.

    Every array's dtype, shape and size are checked against ``meta.json``, and with
    ``verify`` (the default) its CRC-32 too (this reads each file once).

    Raises:
      DataError: incomplete store, or an array file that is missing, truncated,
        unreadable or changed since it was written (the message names the file).
    """
    d = Path(directory)
    if not is_complete(d):
        raise DataError(f"{d}: not a complete attnlab store (no valid {META_FILE}); "
                        "delete the directory or rebuild with refresh=True.")
    with open(d / META_FILE) as fh:
        meta = json.load(fh)
    checks = meta.get("arrays")
    if meta.get("format") != CACHE_FORMAT or not isinstance(checks, dict):
        raise DataError(f"{d / META_FILE}: store format {meta.get('format')!r} has no array "
                        f"checksums (format {CACHE_FORMAT} has); rebuild with refresh=True.")
    mode = "r" if mmap else None

    def arr(key: str) -> np.ndarray:
        f = d / f"{key}.npy"
        want = checks.get(key)
        if want is None:
            raise DataError(f"{f}: not listed in {d / META_FILE}; rebuild with refresh=True.")
        try:
            a = np.load(f, mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{f}: unreadable or truncated cache file ({err}); rebuild "
                            "with refresh=True.") from None
        if a.dtype.str != want["dtype"] or list(a.shape) != want["shape"] \
                or int(a.nbytes) != want["nbytes"]:
            raise DataError(f"{f}: holds {a.dtype.str}{list(a.shape)}, {META_FILE} says "
                            f"{want['dtype']}{want['shape']}; rebuild with refresh=True.")
        if verify:
            crc = _file_crc32(f, a) if isinstance(a, np.memmap) else _crc32(a)
            if crc != want["crc32"]:
                raise DataError(f"{f}: checksum mismatch (CRC-32 {crc:#010x}, written as "
                                f"{want['crc32']:#010x}): the file changed after it was "
                                "written; rebuild with refresh=True.")
        return a

    kw: dict[str, Any] = {name: arr(name) for name in CORE_ARRAYS}
    for group in DICT_GROUPS:
        kw[group] = {name: arr(f"{group}.{i}") for i, name in enumerate(meta["groups"][group])}
    for group in VOCAB_GROUPS:
        kw[group] = meta["vocabs"][group]
    return SequenceStore(**kw, meta=meta["meta"])


# ------------------------------------------------------------------------------- entry


def _say(msg: str, progress: bool) -> None:
    """Log ``msg`` at INFO; with ``progress`` also print it (above any tqdm bar), unless a
    logging handler already shows it on the terminal (Hydra's console handler does):
    each line appears once."""
    log.info(msg)
    if not progress:
        return
    console = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    node = log if log.isEnabledFor(logging.INFO) else None
    while node is not None:
        if any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               and getattr(h, "stream", None) in console and h.level <= logging.INFO
               for h in node.handlers):
            return
        node = node.parent if node.propagate else None
    tqdm.write(msg, file=sys.stderr)


def load_sequences(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    cache_dir: str | Path | None = ".cache/attnlab",
    seed: int = 0,
    progress: bool = True,
    refresh: bool = False,
) -> SequenceStore:
    """Loads a source as a cached, memory-mapped :class:`SequenceStore`.

    Args:
      name: registered source (``complete_journey``, ``cdnow``, ``tabular``,
        ``synthetic``, or one added with ``register_source``).
      options: keyword options of that source (a dict or OmegaConf node).
      cache_dir: root of the on-disk cache; ``None`` disables caching (a streaming
        source such as ``parquet_stream`` then builds into a temporary directory that is
        removed once the store is open: the memory-mapped files live until the store
        is garbage-collected).
      seed: seed of the within-basket order (part of the fingerprint).
      progress: tqdm bars and a printed repair report.
      refresh: rebuild even when a complete cache entry exists.

    Returns:
      The store. ``meta`` has ``fingerprint``, ``source``, ``options``, ``repairs``
      (list of ``{code, count, message}``), ``build_seconds`` and ``cache``
      (``{"hit", "path", "load_seconds"}``).

    Raises:
      DataError: unknown source or option, unreadable or invalid input data.
    """
    t0 = time.perf_counter()
    source_opts, sub = split_subsample(options)
    opts = get_source(name).resolve_options(source_opts)
    if sub is not None:
        opts = {**opts, "max_customers": sub["max_customers"], "subsample_seed": sub["seed"]}
    fp = fingerprint(name, opts, seed=seed, cache_dir=cache_dir)
    if cache_dir is None and get_source(name).build_store_to is not None:
        # a streaming source writes files: into a temporary directory, opened memory-
        # mapped and unlinked at once (POSIX keeps the mapped files until the store goes)
        tmp = Path(tempfile.mkdtemp(prefix=f"attnlab-{fp}-"))
        try:
            _build_streaming(name, opts, fp, tmp / "store", seed=seed, progress=progress)
            store = load_store(tmp / "store", mmap=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return _with_cache_info(store, hit=False, path=None, t0=t0)
    if cache_dir is None:
        store = _build(name, opts, fp, seed=seed, progress=progress)
        return _with_cache_info(store, hit=False, path=None, t0=t0)
    root = Path(cache_dir)
    final = root / fp
    hit = None
    if not refresh and final.exists():
        try:
            hit = load_store(final, mmap=True)
        except DataError as err:
            msg = f"[{name}] cache entry {final} cannot be trusted, rebuilding it: {err}"
            log.warning(msg)
            warnings.warn(msg, CacheWarning, stacklevel=2)
    if hit is not None:
        store = hit
        _say(f"[{name}] cache hit {final} ({store.n_customers:,} customers, "
             f"{store.n_events:,} events); repairs at build time:", progress)
        for item in store.meta.get("repairs", []):
            _say(f"  - {item['message']}", progress)
        _remember_digests(root)
        return _with_cache_info(store, hit=True, path=final, t0=t0)

    streaming = get_source(name).build_store_to is not None
    store = None if streaming else _build(name, opts, fp, seed=seed, progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fp}-", dir=root))
    try:
        if streaming:
            _build_streaming(name, opts, fp, tmp / "store", seed=seed, progress=progress)
        else:
            save_store(store, tmp / "store", progress=progress)
        if final.exists():  # stale/partial entry or refresh: replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp / "store", final)
        except OSError:
            if not is_complete(final):  # someone else's rename won only if complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store = load_store(final, mmap=True)
    _remember_digests(root)
    return _with_cache_info(store, hit=False, path=final, t0=t0)


def _build(name: str, opts: dict, fp: str, *, seed: int, progress: bool) -> SequenceStore:
    t0 = time.perf_counter()
    _say(f"[{name}] building {fp} (cache miss)", progress)
    data = load_events(name, opts)
    _say(data.repairs.format(title=f"[{name}] repairs"), progress)
    store = build_store(data, seed=seed, progress=progress)
    store.meta.update({"fingerprint": fp, "options": _plain(opts),
                       "build_seconds": round(time.perf_counter() - t0, 3)})
    return store


def _build_streaming(name: str, opts: dict, fp: str, directory: Path, *, seed: int,
                     progress: bool) -> None:
    """Lets a streaming source (``Source.build_store_to``) write the entry into
    ``directory``; the customer subsample options are passed as ``subsample``."""
    _say(f"[{name}] building {fp} (cache miss, out of core)", progress)
    src = get_source(name)
    source_opts, sub = split_subsample(opts)
    src.build_store_to(directory, src.resolve_options(source_opts), seed=seed,
                       progress=progress, subsample=sub,
                       extra_meta={"fingerprint": fp, "options": _plain(opts)})
    with open(directory / META_FILE) as fh:
        repairs = RepairReport.from_list(json.load(fh)["meta"].get("repairs", []))
    _say(repairs.format(title=f"[{name}] repairs"), progress)


def _with_cache_info(store: SequenceStore, *, hit: bool, path: Path | None,
                     t0: float) -> SequenceStore:
    store.meta["cache"] = {"hit": hit, "path": None if path is None else str(path),
                           "load_seconds": round(time.perf_counter() - t0, 3)}
    return store


def store_from_config(cfg: Mapping[str, Any], *, cache_dir: str | Path = ".cache/attnlab",
                      progress: bool = True, refresh: bool = False) -> SequenceStore:
    """``{name: ..., options: {...}, seed?: int}`` (e.g. Hydra ``cfg.data``) -> store."""
    c = _plain(cfg)
    if "name" not in c:
        raise DataError(f"data config needs a 'name' (one of the registered sources); got {c}.")
    return load_sequences(c["name"], c.get("options") or {}, cache_dir=cache_dir,
                          seed=int(c.get("seed", 0)), progress=progress, refresh=refresh)
