"""One run folder per launch, and one live run per folder.

* :func:`register_resolvers` adds the OmegaConf resolver ``attnlab_run_id`` used by
  ``hydra.run.dir`` in ``configs/config.yaml``: ``<config hash prefix>-p<pid>-<launch
  microseconds>``. The hash prefix matches the run's results-index entry
  (:func:`attnlab.results.config_hash`); pid and launch time make two runs
  launched in the same second (same config or not) land in different folders.
* :class:`RunLock` makes a run refuse a folder that another live run owns: a lock file
  ``<run dir>/.attnlab.lock`` holds the owner's host, pid and process start time; it is
  removed when the run ends (also on an exception). A lock whose process is gone (a
  killed run) is taken over with a log message, so a relaunched sweep resumes its
  interrupted job.
* Resuming a single run: the resolver ``attnlab_run_dir`` wraps ``hydra.run.dir``. With
  ``ckpt_path=<run dir or its checkpoints dir>`` the run continues in that folder; otherwise,
  unless ``trainer.resume=false``, a relaunch of the same command (same config hash) continues
  in the newest unfinished folder of that config next to the new one (:func:`find_unfinished`:
  a ``latest`` checkpoint, no ``result.json``, no live owner), and only then takes a fresh
  folder. :func:`resume_decision` says which, for the log.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".attnlab.lock"
RUN_FILE = ".attnlab-run.json"  # {"config_hash": <16 hex>}, written by experiments/train.py
NOT_HASHED = ("hydra", "paths", "ckpt_path")  # top-level keys that never enter the config hash here
_LAUNCH = f"p{os.getpid()}-{time.time_ns() // 1000 % 10**12:012d}"  # fixed for this process


def launch_id() -> str:
    """``p<pid>-<microseconds>`` of this process's launch: unique per launch on a host, and
    stable within it (Hydra may resolve ``hydra.run.dir`` more than once)."""
    return _LAUNCH


def run_id(root: Any = None) -> str:
    """``<config hash, 8 hex>-<launch id>`` for ``hydra.run.dir`` (``root``: the whole
    config, passed by OmegaConf as ``_root_``)."""
    prefix = "nohash"
    if root is not None:
        try:
            prefix = full_config_hash(root)[:8]
        except Exception as e:  # noqa: BLE001 - naming only; the launch id keeps it unique
            log.debug("run_id: no config hash (%s)", e)
    return f"{prefix}-{launch_id()}"


def _hashable(root: Any) -> dict[str, Any]:
    """The resolved config as the trainer hashes it: without ``hydra`` (and ``paths``, which
    reads ``hydra:runtime``; never hashed) and ``ckpt_path`` (where to resume, not what)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(root, resolve=False)
    for key in NOT_HASHED:
        cfg.pop(key, None)
    return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)


def full_config_hash(root: Any) -> str:
    """The 16-hex config hash of a run config (OmegaConf node or dict), as the results index
    and :func:`run_id` compute it (``hydra``, ``paths`` and ``ckpt_path`` left out)."""
    from omegaconf import OmegaConf

    from attnlab.results import config_hash

    if not OmegaConf.is_config(root):
        root = OmegaConf.create(root)
    return config_hash(_hashable(root))


def run_folder_of(ckpt_path: str | os.PathLike) -> Path:
    """The run folder ``ckpt_path`` names: the folder itself, or the one above its
    ``checkpoints/`` (or ``checkpoints/latest|best``).

    Raises:
      FileNotFoundError: no such folder, or it holds no checkpoints.
    """
    p = Path(os.path.expanduser(str(ckpt_path))).absolute()
    for _ in range(2):
        if p.name in ("latest", "best", "checkpoints"):
            p = p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such run folder ({p}).")
    if _latest_step(p) is None:
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: {p} holds no checkpoint (expected {p / 'checkpoints' / 'latest'}/<step>); "
            "give the run folder of a run that trained at least one epoch.")
    return p


def _latest_step(run_dir: Path) -> int | None:
    """Newest step saved under ``<run_dir>/checkpoints/latest`` (without opening Orbax)."""
    latest = run_dir / "checkpoints" / "latest"
    try:
        steps = [int(p.name) for p in latest.iterdir() if p.is_dir() and p.name.isdigit()]
    except OSError:
        return None
    return max(steps) if steps else None


def _held_by_live_run(run_dir: Path) -> bool:
    try:
        owner = json.loads((run_dir / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return bool(owner)  # another host's run: cannot tell, leave it alone
    pid = owner.get("pid")
    return isinstance(pid, int) and _alive(pid, owner.get("started"))


def find_unfinished(parent: str | os.PathLike, *, prefix: str, config_hash: str) -> Path | None:
    """The newest folder ``<parent>/<prefix>*-<config_hash[:8]>-p*`` whose run has the same
    config hash (its ``.attnlab-run.json``), saved a ``latest`` checkpoint, wrote no
    ``result.json`` and is not held by a live run; None when there is none."""
    parent = Path(parent)
    if not parent.is_dir():
        return None
    found = []
    for d in parent.glob(f"{prefix}*-{config_hash[:8]}-p*"):
        if not d.is_dir() or (d / "result.json").exists():
            continue
        try:
            recorded = json.loads((d / RUN_FILE).read_text()).get("config_hash")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded != config_hash or _latest_step(d) is None or _held_by_live_run(d):
            continue
        found.append((d.stat().st_mtime, d.name, d))
    return max(found)[2] if found else None


_DECISIONS: dict[str, tuple[str, str | None]] = {}


def resume_decision() -> tuple[str, str | None] | None:
    """How this process's ``hydra.run.dir`` was chosen: ``("ckpt_path" | "unfinished" |
    "fresh", folder)``; None when :func:`run_dir` was not used."""
    return next(iter(_DECISIONS.values()), None)


def run_dir(fresh: str, root: Any = None) -> str:
    """``${attnlab_run_dir:<fresh folder>}``: the folder a single run writes to (see the
    module docstring). Stable within a process (Hydra may resolve it more than once)."""
    if fresh in _DECISIONS:
        return _DECISIONS[fresh][1] or fresh
    decision: tuple[str, str | None] = ("fresh", None)
    ckpt_path = root.get("ckpt_path") if root is not None else None
    if ckpt_path:
        decision = ("ckpt_path", str(run_folder_of(ckpt_path)))
    elif root is not None and _resume_on(root):
        try:
            h = full_config_hash(root)
            fresh_path = Path(fresh)
            seed_part = fresh_path.name.split("-", 1)[0]  # "seed<k>"
            found = find_unfinished(fresh_path.parent, prefix=f"{seed_part}-", config_hash=h)
            if found is not None:
                decision = ("unfinished", str(found))
        except Exception as e:  # noqa: BLE001 - cannot look: start fresh, as before
            log.debug("run_dir: no search for unfinished runs (%s)", e)
    _DECISIONS[fresh] = decision
    return decision[1] or fresh


def _resume_on(root: Any) -> bool:
    try:
        return bool(root.trainer.get("resume", True))
    except Exception:  # noqa: BLE001
        return True


def write_run_file(directory: str | os.PathLike, config_hash: str) -> None:
    """Record the run's full config hash in its folder (read by :func:`find_unfinished`)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{RUN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"config_hash": config_hash}))
    os.replace(tmp, d / RUN_FILE)


#: Characters Orbax cannot have in a checkpoint folder's path: it finds the per-process files of a
#: save with a glob under the folder (``orbax ... ocdbt_utils``), which reads ``[``, ``]``, ``*`` and
#: ``?`` in the path as a pattern; the save then skips merging them and leaves a checkpoint that
#: cannot be restored (found when ``-m ... task.baselines=[a,b]`` put brackets in a sweep folder).
#: Refused by :func:`attnlab.train.checkpoint.check_directory`, respelt in sweep folder names.
GLOB_CHARS = "[]*?"

#: How a sweep job's folder name (Hydra's ``override_dirname``) spells :data:`GLOB_CHARS`: a list
#: override ``task.baselines=[a,b]`` names the folder ``task.baselines=(a,b)``.
SWEEP_SUBDIR_SPELLING = str.maketrans(dict(zip(GLOB_CHARS, "()+_")))


def sweep_subdir(override_dirname: str) -> str:
    """A sweep job's folder name: its overrides, glob characters respelt (the same overrides
    give the same name, so a relaunched sweep finds its interrupted jobs)."""
    return str(override_dirname).translate(SWEEP_SUBDIR_SPELLING)


def register_resolvers() -> None:
    """Register ``${attnlab_run_id:}``, ``${attnlab_run_dir:...}`` and
    ``${attnlab_sweep_subdir:...}`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("attnlab_sweep_subdir"):
        OmegaConf.register_new_resolver("attnlab_sweep_subdir", sweep_subdir)

    if not OmegaConf.has_resolver("attnlab_run_id"):
        OmegaConf.register_new_resolver("attnlab_run_id", lambda _root_: run_id(_root_), use_cache=False)
    if not OmegaConf.has_resolver("attnlab_run_dir"):
        OmegaConf.register_new_resolver("attnlab_run_dir", lambda fresh, _root_: run_dir(str(fresh), _root_),
                                        use_cache=False)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live owner
    from an unrelated process that reused its pid; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = _start_time(pid)
    return started is None or now is None or now == started


class RunFolderInUseError(RuntimeError):
    """Another live run owns the run folder."""


class RunLock:
    """``with RunLock(run_dir):`` owns ``run_dir`` for the block (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).absolute()
        self.path = self.directory / LOCK_NAME
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}
        self._held = False
        self._reentered = False

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: a writer died half way (the file is written in one call)

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read()
                if other is None:
                    continue  # released in between: try again
                if other.get("host") == self.owner["host"] and other.get("pid") == self.owner["pid"] \
                        and other.get("started") == self.owner["started"]:
                    self._reentered = True  # this process already owns it (a nested call)
                    return
                self._check_stale(other)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.owner))
            self._held = True
            return
        raise RunFolderInUseError(f"could not take the lock {self.path}: other runs keep taking it; "
                                  "give each run its own folder.")

    def _check_stale(self, other: dict[str, Any]) -> None:
        pid, host = other.get("pid"), other.get("host")
        if not other:
            log.warning("taking over the unreadable lock %s (its writer died)", self.path)
            return
        if host != self.owner["host"]:
            raise RunFolderInUseError(
                f"run folder {self.directory} is locked by pid {pid} on host {host} ({self.path}); this host "
                f"({self.owner['host']}) cannot tell whether that run is alive. Use another folder "
                "(hydra.run.dir=... / hydra.sweep.dir=...), or delete the lock file if that run is no "
                "longer running.")
        if isinstance(pid, int) and _alive(pid, other.get("started")):
            raise RunFolderInUseError(
                f"run folder {self.directory} is in use by a live run (pid {pid}, lock {self.path}); two runs "
                "writing one folder would corrupt each other's checkpoints and results. Wait for it to "
                "finish, stop it, or give this run its own folder (hydra.run.dir=... / hydra.sweep.dir=...).")
        log.warning("taking over the stale lock %s: its owner (pid %s) is no longer running", self.path, pid)

    def release(self) -> None:
        if self._held:
            try:
                if (self._read() or {}).get("pid") == self.owner["pid"]:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
