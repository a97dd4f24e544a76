"""One results JSON per run, with provenance, written atomically."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from attnlab.atomic import atomic_write_text

PACKAGES = ("attnlab", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core", "wandb", "numpy", "pandas")


@dataclasses.dataclass
class RunResult:
    """What :func:`attnlab.train.train_and_evaluate` returns and writes.

    Attributes:
      metrics: ``{"model": {...}, "most_popular": {...}, ...}`` test metrics per contender.
      valid: best validation metrics of the model.
      history: per-epoch training records (loss, validation metric, seconds).
      provenance: experiment, seed, config hash, data fingerprint, git SHA, versions,
        hardware, wall time.
      path: where the JSON was written (None if not written).
    """

    metrics: dict[str, dict[str, float]]
    valid: dict[str, float]
    history: list[dict[str, Any]]
    provenance: dict[str, Any]
    path: str | None = None
    config: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_result(result: RunResult, path: str | os.PathLike) -> str:
    result.path = str(path)
    atomic_write_text(path, json.dumps(result.to_json(), indent=2, sort_keys=True, default=_jsonable))
    return str(path)


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


#: Config keys (dotted) that never change a run's results: excluded from every hash.
NOT_RESULTS = ("logger", "paths", "progress", "hydra", "report", "trainer.resume", "trainer.skip_completed",
               "trainer.eval_batch_size", "trainer.mesh", "trainer.distributed")  # layout: same results on any devices


#: Config keys added after results were filed, with the value that reproduces the runs from
#: before them. A config holding exactly that value hashes and tabulates as if the key were
#: absent, so an earlier run keeps its hash (``skip_completed`` still finds it) and lands in
#: the same table cell as a new run of the same recipe. Any other value is a different run.
ADDED_DEFAULTS = {"task.loss": "softmax", "task.gbce_t": 0.75, "task.recent_half_life": None,
                  "task.summary_bgnbd": False, "model.summary_bgnbd": False,
                  "trainer.stop_at": None}


def _parent(cfg: dict[str, Any], key: str) -> tuple[dict[str, Any] | None, str]:
    """``(the dict holding dotted key's leaf, the leaf)``; the dict is None when a parent is missing."""
    *parents, leaf = key.split(".")
    node: Any = cfg
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), leaf


def added_defaults(cfg: dict[str, Any], *, fill: bool = False) -> dict[str, Any]:
    """A copy of ``cfg`` without the :data:`ADDED_DEFAULTS` keys that hold their default
    (for hashing), or with ``fill``, with every missing one set to it (for tables: a run
    from before the key is labelled with the value it ran with)."""
    out = json.loads(json.dumps(cfg, default=str))
    for key, default in ADDED_DEFAULTS.items():
        node, leaf = _parent(out, key)
        if node is None:
            continue
        if fill:
            node.setdefault(leaf, default)
        elif leaf in node and node[leaf] == default:
            node.pop(leaf)
    return out


def result_config(cfg: dict[str, Any], *, ignore: tuple[str, ...] = NOT_RESULTS) -> dict[str, Any]:
    """The resolved config minus the keys in ``ignore`` (dotted paths) and the
    :data:`ADDED_DEFAULTS` at their default: what a result depends on."""
    out = added_defaults(cfg)
    for key in ignore:
        node, leaf = _parent(out, key)
        if node is not None:
            node.pop(leaf, None)
    return out


def default_results_dir() -> Path:
    """The results index the command-line tools read by default: ``$ATTNLAB_OUTPUTS/results``,
    else ``outputs/results`` (where ``configs/paths/default.yaml`` files runs)."""
    return Path(os.environ.get("ATTNLAB_OUTPUTS", "outputs")) / "results"


def config_hash(cfg: dict[str, Any], *, ignore: tuple[str, ...] = NOT_RESULTS) -> str:
    """sha256 (16 hex) of the resolved config, minus keys that do not change results.

    Includes the seed: two runs with the same hash are the same run. See :func:`cell_hash`.
    """
    blob = json.dumps(result_config(cfg, ignore=ignore), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cell_hash(cfg: dict[str, Any]) -> str:
    """:func:`config_hash` without the seed: runs sharing it are seeds of one table cell."""
    return config_hash(cfg, ignore=NOT_RESULTS + ("seed",))


def completed_path(results_dir: str | os.PathLike, cfg: dict[str, Any]) -> Path:
    """Where the index keeps the result of the run ``cfg`` describes (keyed by config hash,
    which includes the seed): ``<results_dir>/<experiment>/<config_hash>.json``."""
    experiment = cfg.get("experiment_name") or "default"
    return Path(results_dir) / experiment / f"{config_hash(cfg)}.json"


def read_result(path: str | os.PathLike) -> RunResult:
    result = RunResult.from_json(json.loads(Path(path).read_text()))
    result.path = str(path)
    return result


class BadResultFile(ValueError):
    """A results JSON that cannot be read (truncated, not JSON, not a run result)."""


def _problem(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(data, None)`` for a readable run result, else ``(None, why)``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({type(e).__name__}: {e})"
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON, e.g. truncated by a crash or a full disk ({e})"
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not a run result"
    missing = [k for k in ("metrics", "provenance") if not isinstance(data.get(k), dict)]
    if missing:
        return None, f"has no {' / '.join(missing)}: not a run result"
    return data, None


def check_result_file(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed JSON of a run result, or :class:`BadResultFile` naming the file and the fix."""
    data, why = _problem(Path(path))
    if why:
        raise BadResultFile(f"{path} {why}; delete it (and its .npz) and re-run that job")
    return data


def try_read_result(path: str | os.PathLike) -> RunResult | None:
    """:func:`read_result`, or None with a warning naming the file when it is unreadable
    (the caller then treats the run as not done: a sweep re-runs it and rewrites the file)."""
    try:
        data = check_result_file(path)
    except BadResultFile as e:
        logging.getLogger(__name__).warning("ignoring a bad results file: %s", e)
        return None
    result = RunResult.from_json(data)
    result.path = str(path)
    return result


def read_index(folder: str | os.PathLike, *, warn=None) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Every readable result JSON in a results-index folder, sorted by name, and one
    message per skipped file (each naming the file). One bad file (truncated by a crash,
    not JSON, no ``config``) never stops the others: it is skipped, and ``warn(message)``
    (default: a logged warning) is called for it."""
    warn = warn or logging.getLogger(__name__).warning
    good, skipped = [], []
    for path in sorted(Path(folder).glob("*.json")):
        data, why = _problem(path)
        if why is None and not data.get("config"):
            why = "has no 'config' (written by an older attnlab)"
        if why:
            msg = f"skipping {path}: it {why}; delete it (and its .npz) and re-run that job to get it back"
            skipped.append(msg)
            warn(msg)
            continue
        good.append((path, data))
    return good, skipped


def git_sha(cwd: str | os.PathLike | None = None) -> str:
    """The commit of the checkout attnlab runs from (``<sha>-dirty`` with uncommitted changes
    to tracked files), or ``unknown`` outside a git checkout. ``cwd``: another checkout."""
    cwd = cwd or Path(__file__).resolve().parents[1]  # attnlab/results.py -> the repository root
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty and sha else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def hardware() -> dict[str, Any]:
    import jax

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
    }
