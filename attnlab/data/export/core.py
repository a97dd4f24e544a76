"""The export itself: :func:`export_split` (checks, files, ``manifest.json``) and
:func:`describe` (layout and rules: :mod:`attnlab.data.export`)."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.atomic import atomic_write_text
from attnlab.data.export.leakage import check_no_leakage, training_end
from attnlab.data.export.parquet import parquet_files
from attnlab.data.export.recbole import RANKING, recbole_files
from attnlab.data.pipeline import _json_default
from attnlab.data.schema import EventType
from attnlab.data.sequences import DICT_GROUPS, SequenceStore, range_events
from attnlab.data.splits import Protocol, Split


class ExportFormat(str, enum.Enum):
    """Output formats of :func:`export_split`."""

    RECBOLE = "recbole"
    PARQUET = "parquet"


EXPORT_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_formats(formats: Iterable[str] | str, protocol: str) -> tuple[ExportFormat, ...]:
    """Parses ``formats`` for ``protocol`` (raises ValueError naming the fix)."""
    Protocol(protocol)
    out: list[ExportFormat] = []
    for f in [formats] if isinstance(formats, str) else formats:
        try:
            fmt = ExportFormat(str(f).lower())
        except ValueError:
            raise ValueError(f"export format {f!r} is not one of {[x.value for x in ExportFormat]} "
                             "(CLI: export.formats)") from None
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise ValueError("no export format given: use formats=('recbole', 'parquet') or one of them")
    if ExportFormat.RECBOLE in out and protocol not in RANKING:
        raise ValueError(
            f"protocol {protocol!r}: RecBole has no churn task, so there are no RecBole files to "
            "write. Export Parquet only: formats=('parquet',) (CLI: export.formats=[parquet]); "
            "the labels are in {train,valid,test}_queries.parquet.")
    return tuple(out)


def export_split(store: SequenceStore, split: Split, out_dir: str | Path, *,
                 formats: Iterable[str] | str = ("recbole", "parquet"), dataset_name: str | None = None,
                 max_history: int = 50, ks: Sequence[int] = (10, 20),
                 provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes ``split`` of ``store`` to ``out_dir`` (layout and rules: :mod:`attnlab.data.export`).

    Args:
      store: the store the split was built from.
      split: any :class:`~attnlab.data.splits.Split`.
      out_dir: folder (created); files of an earlier export are replaced one by one.
      formats: ``"parquet"`` and/or ``"recbole"`` (not for churn).
      dataset_name: RecBole dataset name (letters, digits, ``_``, ``-``); default
        ``<source>_<protocol>``.
      max_history: RecBole rows keep the last ``max_history`` purchased items (RecBole's
        ``MAX_ITEM_LIST_LENGTH``; sequential models cannot read longer lists).
      ks: RecBole ``topk``.
      provenance: recorded as is in the manifest (e.g. the config that built the split).

    Returns:
      The manifest (also written to ``out_dir/manifest.json``).

    Raises:
      LeakageError: a validation/test target basket or a post-cut-off event is in training.
      ValueError: unknown format, RecBole for churn, bad name, a split of another store.
    """
    fmts = check_formats(formats, split.protocol)
    name = dataset_name or f"{store.meta.get('source', 'attnlab')}_{split.protocol}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"dataset_name {name!r}: use letters, digits, '_' and '-' only (RecBole "
                         "reads <name>.train.inter, so no dots or slashes; CLI: export.dataset_name)")
    if isinstance(max_history, bool) or not isinstance(max_history, (int, np.integer)) or max_history < 1:
        raise ValueError(f"max_history must be an integer >= 1 (CLI: export.max_history), got {max_history!r}")
    if isinstance(ks, (str, int)) or not ks or any(
            isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1 (CLI: export.ks), got {ks!r}")
    out = Path(out_dir)
    train_end = training_end(store, split)
    checks = check_no_leakage(store, split, train_end)
    train_idx, _ = range_events(store.offsets[:-1], train_end)
    parts = [("train", split.train)] if split.train is not None else []
    parts += [("valid", split.valid), ("test", split.test)]
    files: dict[str, dict[str, Any]] = {}
    excluded: dict[str, Any] = {"events_after_training_end": int(store.n_events - len(train_idx))}
    recbole = None
    if ExportFormat.PARQUET in fmts:
        files.update(parquet_files(store, split, out, train_idx, parts))
        excluded["not_exported"] = sorted(f"{group}.{k}" for group in DICT_GROUPS for k in getattr(store, group))
    if ExportFormat.RECBOLE in fmts:
        more, excluded["recbole"], recbole = recbole_files(store, split, out, name, train_end,
                                                           int(max_history), ks)
        files.update(more)
    manifest = {
        "export_version": EXPORT_VERSION, "protocol": split.protocol,
        "data_fingerprint": store.fingerprint, "source": store.meta.get("source"),
        "formats": [f.value for f in fmts],
        "training_rule": ("per customer, events [offsets[c], max(train_end[c], max end of its split.train "
                          "rows)) in store order"),
        "counts": {"customers": store.n_customers, "events": store.n_events,
                   "customers_with_training_events": int((train_end > store.offsets[:-1]).sum()),
                   "train_events": int(len(train_idx)),
                   **{f"{p}_queries": len(ex) for p, ex in parts},
                   **{f"{p}_targets": len(ex.target_items) for p, ex in parts if ex.target_items is not None}},
        "leakage_checks": checks, "excluded": excluded, "recbole": recbole,
        "event_types": {int(e): e.name for e in EventType}, "time_unit": "seconds since 1970-01-01 (UTC-naive)",
        "split_report": split.report, "provenance": dict(provenance or {}), "files": files,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return manifest


def describe(manifest: Mapping[str, Any], out_dir: str | Path) -> str:
    """A few lines for the console: where, what, how many rows, what was left out."""
    lines = [f"exported {manifest['protocol']} split of {manifest['data_fingerprint']} to {out_dir}"]
    lines += [f"  {path}: {info['rows']:,} rows" for path, info in manifest["files"].items()
              if info["rows"] is not None]
    rec = (manifest["excluded"] or {}).get("recbole")
    if rec:
        lines.append("  left out of the RecBole files: " + ", ".join(f"{k} {v:,}" for k, v in rec.items()))
    if manifest["recbole"]:
        lines.append(f"  RecBole: run_recbole(model='SASRec', dataset='{manifest['recbole']['dataset']}', "
                     f"config_file_list=['{Path(out_dir) / manifest['recbole']['config']}'])")
    return "\n".join(lines)
