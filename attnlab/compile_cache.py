"""JAX's persistent compilation cache for attnlab runs: compile once, reuse across launches.

Most of a short run's wall time on CPU is XLA compiling the same few programs (the train
step, the scoring functions, the small eager ops of model construction). With the cache on,
the first launch writes every compiled program to disk and later launches of the same
shapes (the next job of a ``-m`` sweep, a relaunch, another seed) load it instead.

Where (first that is set wins):

1. ``enable(setting)`` / the config key ``paths.compile_cache`` (``configs/config.yaml``);
2. the environment variable ``ATTNLAB_COMPILE_CACHE``;
3. ``$XDG_CACHE_HOME/attnlab/jax`` (``~/.cache/attnlab/jax``).

``off`` (also ``none``, ``false``, ``0`` or empty) disables it. ``experiments/train.py``
calls :func:`enable` before any compilation; tests can call it with a temporary folder.

Small programs are cached too (``jax_persistent_cache_min_compile_time_secs=0``,
``jax_persistent_cache_min_entry_size_bytes=-1``): on CPU most programs compile in
well under JAX's default 1 s threshold, yet together they are most of a tiny run.

Concurrent jobs: entries are keyed by a hash of the program, compiler options and backend,
so jobs with different shapes never collide, and a job reading an entry another job is
writing either sees the whole entry or none. jax 0.10's file cache writes an entry in place
(``Path.write_bytes``, no lock unless ``jax_compilation_cache_max_size`` is set), so a
reader could see a partial file and a job killed mid-write would leave a truncated entry that
is never rewritten (JAX then warns and recompiles that program on every launch).
:func:`enable` therefore makes the writes atomic (temporary file + ``os.replace`` in the
same folder); if JAX's internals change so that this cannot be done, the cache still works
with JAX's own writes and a debug message says so.

The cache is trusted code: keep it in a folder only you can write (JAX's docs).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "ATTNLAB_COMPILE_CACHE"
OFF = {"off", "none", "null", "false", "0", "no", "disable", "disabled", ""}

_enabled: Path | None = None


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/attnlab/jax``, else ``~/.cache/attnlab/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attnlab" / "jax"


def resolve(setting: str | os.PathLike | bool | None = None) -> Path | None:
    """The cache folder ``setting`` (else ``$ATTNLAB_COMPILE_CACHE``, else :func:`default_dir`)
    stands for, or None when it says off. ``True`` means the default."""
    if setting is None or setting is True:
        setting = os.environ.get(ENV) if setting is None else None
    if setting is False:
        return None
    if setting is None:
        return default_dir()
    text = str(setting).strip()
    if text.lower() in OFF:
        return None
    return Path(os.path.expandvars(os.path.expanduser(text))).absolute()


def _atomic_writes() -> bool:
    """Make jax's file cache write each entry atomically (see the module docstring)."""
    try:
        from jax._src import lru_cache
    except ImportError:  # pragma: no cover - jax layout changed
        return False
    cls = getattr(lru_cache, "LRUCache", None)
    put = getattr(cls, "put", None)
    if put is None or not hasattr(lru_cache, "_CACHE_SUFFIX"):
        return False
    if getattr(put, "_attnlab_atomic", False):
        return True

    def atomic_put(self, key: str, value: bytes) -> None:
        where = str(getattr(self, "path", "") or "")
        if getattr(self, "eviction_enabled", True) or not where or "://" in where:
            return put(self, key, value)  # JAX's own locked path (or a remote store): unchanged
        if not key:
            raise ValueError("key cannot be empty")
        final = Path(where) / f"{key}{lru_cache._CACHE_SUFFIX}"
        if final.exists():
            return
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{key[:24]}-", dir=where)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
            os.replace(tmp, final)  # readers see the whole entry or none
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    atomic_put._attnlab_atomic = True  # type: ignore[attr-defined]
    atomic_put.__wrapped__ = put  # type: ignore[attr-defined]
    cls.put = atomic_put
    return True


def enable(setting: str | os.PathLike | bool | None = None, *, min_compile_time_secs: float = 0.0,
           min_entry_size_bytes: int = -1) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``setting``'s folder (see :func:`resolve`);
    returns the folder, or None when off. Call it before the first compilation; calling it
    again with another folder switches folders (JAX's cache is reset)."""
    global _enabled
    import jax

    path = resolve(setting)
    if path is None:
        if _enabled is not None:
            disable()
        log.info("JAX compilation cache: off")
        return None
    path.mkdir(parents=True, exist_ok=True)
    atomic = _atomic_writes()
    if not atomic:
        log.debug("JAX compilation cache: could not make entry writes atomic (jax internals changed)")
    current = jax.config.jax_compilation_cache_dir
    if current and Path(current).absolute() != path:
        from jax.experimental.compilation_cache import compilation_cache as cc

        cc.reset_cache()
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    _enabled = path
    log.info("JAX compilation cache: %s (%s=off to disable)", path, ENV)
    return path


def disable() -> None:
    """Turn the persistent cache off for the rest of the process."""
    global _enabled
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    jax.config.update("jax_compilation_cache_dir", None)
    cc.reset_cache()
    _enabled = None


def enabled_dir() -> Path | None:
    """The folder :func:`enable` turned on in this process (None: off or never called)."""
    return _enabled
