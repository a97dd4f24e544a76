"""One run folder per launch, and one live run per folder.

* :func:`register_resolvers` adds the OmegaConf resolver ``attnlab_run_id`` used by
  ``hydra.run.dir`` in ``configs/config.yaml``: ``<config hash prefix>-p<pid>-<launch
  microseconds>``. The hash prefix matches the run's results-index entry
  (:func:`attnlab.train.results.config_hash`); pid and launch time make two runs
  launched in the same second (same config or not) land in different folders.
* :class:`RunLock` makes a run refuse a folder that another live run owns: a lock file
  ``<run dir>/.attnlab.lock`` holds the owner's host, pid and process start time; it is
  removed when the run ends (also on an exception). A lock whose process is gone (a
  killed run) is taken over with a log message, so a relaunched sweep resumes its
  interrupted job.
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
            from omegaconf import OmegaConf

            from attnlab.train.results import config_hash

            cfg = OmegaConf.to_container(root, resolve=False)
            for key in ("hydra", "paths"):  # not part of the hash; paths reads hydra:runtime
                cfg.pop(key, None)
            resolved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
            prefix = config_hash(resolved)[:8]
        except Exception as e:  # noqa: BLE001 - naming only; the launch id keeps it unique
            log.debug("run_id: no config hash (%s)", e)
    return f"{prefix}-{launch_id()}"


def register_resolvers() -> None:
    """Register ``${attnlab_run_id:}`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("attnlab_run_id"):
        OmegaConf.register_new_resolver("attnlab_run_id", lambda _root_: run_id(_root_), use_cache=False)


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
