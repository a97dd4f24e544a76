"""Reading run results: result files of a run folder or results index, their configs and
per-example arrays (:func:`load_runs`), and dotted config look-ups (:func:`config_value`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _to_container(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return cfg
        if isinstance(cfg, Mapping):
            return OmegaConf.create(dict(cfg))
    except ImportError:  # pragma: no cover
        pass
    return cfg


def config_value(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` for a dotted key of a dict / OmegaConf config, or ``default``.

    Interpolations that cannot be resolved outside Hydra (``${hydra:...}``) give
    ``default`` instead of raising.
    """
    if cfg is None:
        return default
    try:
        from omegaconf import OmegaConf

        value = OmegaConf.select(_to_container(cfg), key, default=default)
    except Exception:  # unresolvable interpolation, not a config
        return default
    return default if value is None else value


def _read_result(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def _hydra_config(run_dir: Path) -> Any:
    f = run_dir / ".hydra" / "config.yaml"
    if not f.exists():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.load(f)


def _result_files(folder: Path) -> list[Path]:
    """``result.json`` of every Hydra run under ``folder``; else, for a results-index
    folder (``<results_dir>/<experiment>/<config_hash>.json``), its JSON files."""
    found = sorted(folder.rglob("result.json"))
    if found:
        return found
    out = []
    for f in sorted(folder.rglob("*.json")):
        try:
            data = _read_result(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "metrics" in data and "provenance" in data:
            out.append(f)
    return out


def _per_example_file(result_file: Path) -> Path:
    """``per_example.npz`` next to a run's ``result.json``; ``<hash>.npz`` in the index."""
    if result_file.name == "result.json":
        return result_file.with_name("per_example.npz")
    return result_file.with_suffix(".npz")


def load_runs(source: Any, configs: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Normalises run results from many shapes into ``{"result", "config", "per_example"}``.

    Args:
      source: a directory (a Hydra multirun/run directory, searched recursively for
        ``result.json``, or a results-index folder ``<results_dir>/<experiment>``), a
        path to a result JSON, a :class:`attnlab.results.RunResult`, a result dict
        (the JSON), a ``(result, config)`` tuple, or a list of any of these.
      configs: optional configs aligned with a list ``source`` (e.g. the composed Hydra
        configs passed to ``train_and_evaluate``). Without one, a run's config is the
        ``config`` stored in its result (attnlab >= the results index), else
        ``.hydra/config.yaml`` next to its ``result.json``.

    Returns:
      One dict per run: ``result`` (JSON dict with ``metrics``/``provenance``),
      ``config`` (OmegaConf/dict or None) and ``per_example`` (path of the per-example
      ``.npz`` or None).
    """
    items: list[Any]
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            items = _result_files(p)
        elif p.exists():
            items = [p]
        else:
            raise FileNotFoundError(f"{p}: no such run directory or result file")
    elif isinstance(source, list):
        items = list(source)
    else:
        items = [source]
    if configs is not None and len(configs) != len(items):
        raise ValueError(f"got {len(configs)} configs for {len(items)} runs")
    runs = []
    for i, item in enumerate(items):
        cfg = None if configs is None else configs[i]
        if _is_pair(item):
            item, cfg = item
        result_file = None
        if isinstance(item, (str, Path)):
            result_file = Path(item)
            result = _read_result(result_file)
        elif hasattr(item, "to_json"):
            result = item.to_json()
        elif isinstance(item, Mapping):
            result = dict(item)
        else:
            raise TypeError(f"cannot read a run result from {type(item).__name__}")
        if result_file is None and result.get("path"):
            result_file = Path(result["path"])
        if cfg is None:
            cfg = result.get("config") or None
        if cfg is None and result_file is not None:
            cfg = _hydra_config(result_file.parent)
        npz = _per_example_file(result_file) if result_file is not None else None
        runs.append({"result": result, "config": cfg,
                     "per_example": npz if npz is not None and npz.exists() else None})
    return runs


def _is_pair(x: Any) -> bool:
    """A tuple is a ``(result, config)`` pair; several runs go in a list."""
    return isinstance(x, tuple) and len(x) == 2
