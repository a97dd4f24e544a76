"""Registry of data sources: name -> loader.

Each source module defines ``load(**options) -> EventData`` (keyword-only options
with defaults) and ``files(**options) -> list[Path]`` (the raw files it reads, for
cache fingerprints), and registers itself here. A *streaming source* (``parquet_stream``)
also sets ``build_store_to``: it writes the cache entry itself, out of core, instead of
returning all events in memory. Configs name a source by its
registered name::

    from attnlab.data.sources import get_source
    data = get_source("cdnow").load(zero_value="keep")
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

from attnlab.data.events import DataError, EventData


@dataclasses.dataclass(frozen=True)
class Source:
    """A registered data source.

    Attributes:
      name: registry name used in configs.
      load: ``load(**options) -> EventData``.
      files: ``files(**options) -> list[Path]`` raw inputs (fingerprinted).
      version: bump when the source's repair rules change (invalidates caches).
      build_store_to: optional ``build_store_to(directory, options, *, seed, progress,
        subsample=None, extra_meta=None)`` of a streaming source: writes a complete
        cache entry (the :func:`attnlab.data.pipeline.save_store` layout) into the new
        ``directory`` from the resolved ``options``; returns a ``SequenceStore`` or None.
        ``subsample`` is ``{"max_customers", "seed"}`` or None; ``extra_meta`` is merged
        into the store meta. :func:`attnlab.data.pipeline.load_sequences` uses it instead
        of ``load`` + ``build_store``.
    """

    name: str
    load: Callable[..., EventData]
    files: Callable[..., list[Path]]
    version: str = "1"
    build_store_to: Callable[..., Any] | None = None

    def resolve_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """All options with defaults filled in; unknown names raise :class:`DataError`."""
        options = dict(options or {})
        sig = inspect.signature(self.load)
        try:
            bound = sig.bind(**options)
        except TypeError as err:
            known = [p for p in sig.parameters]
            raise DataError(
                f"[{self.name}] bad options {sorted(options)}: {err}. "
                f"Known options: {known}."
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)


_REGISTRY: dict[str, Source] = {}
_BUILTIN = {
    "complete_journey": "attnlab.data.sources.complete_journey",
    "cdnow": "attnlab.data.sources.cdnow",
    "tabular": "attnlab.data.sources.tabular",
    "synthetic": "attnlab.data.sources.synthetic",
    "parquet_stream": "attnlab.data.sources.parquet_stream",
}


def register_source(source: Source) -> Source:
    """Adds ``source`` to the registry (re-registering a name replaces it)."""
    _REGISTRY[source.name] = source
    return source


def get_source(name: str) -> Source:
    """Looks up a source by name, importing built-in modules lazily.

    Raises:
      DataError: unknown name (the message lists the registered names).
    """
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise DataError(
            f"unknown data source {name!r}; available: {available_sources()}. "
            "Register new ones with attnlab.data.sources.register_source."
        )
    return _REGISTRY[name]


def available_sources() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


__all__ = ["Source", "available_sources", "get_source", "register_source"]
