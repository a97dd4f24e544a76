"""Multi-process (multi-host) JAX: start the job's processes together, say who writes.

One training job may run as several processes (one per GPU, across nodes). They meet
at a coordinator (process 0's ``host:port``) through :func:`jax.distributed.initialize`,
after which ``jax.devices()`` lists every device of every process and one jitted step
runs on all of them (see :mod:`attnlab.train.mesh`). Every process runs the same code
on the same config; only process 0 (:func:`is_main`) writes the results JSON, the
results index entry and the W&B run, and holds the run folder's lock.

Where the processes come from (:class:`DistributedConfig`, ``trainer.distributed``):

* ``coordinator_address``, ``num_processes``, ``process_id`` set: exactly those;
* else a SLURM step with more than one task (``SLURM_NTASKS > 1``): JAX's own SLURM
  detection (coordinator on the step's first node, one process per task, each task
  using the GPU of its ``SLURM_LOCALID``: ``configs/hydra/launcher/slurm_multinode.yaml``);
* else: one process, nothing to do (the default everywhere else).

A coordinator that cannot be reached fails after ``timeout_s`` with an error naming the
address and the key; JAX itself would abort the process (a C++ fatal error) instead,
so the address is probed from Python first.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import time
from typing import Any

from attnlab.typed_config import ConfigError, TypedConfig

log = logging.getLogger(__name__)


class DistributedError(ConfigError):
    """The job's processes cannot meet; the message names the address and the config key."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig(TypedConfig):
    """``trainer.distributed``: how this process joins a multi-process job (see the module
    docstring). All null (the default): a SLURM step's tasks, else a single process."""

    coordinator_address: str | None = None   # "host:port" of process 0; null = SLURM's first node, else none
    num_processes: int | None = None         # processes in the job; null = SLURM_NTASKS, else 1
    process_id: int | None = None            # this process's rank; null = SLURM_PROCID, else 0
    local_device_ids: tuple[int, ...] | None = None  # devices this process drives; null = SLURM_LOCALID / all
    timeout_s: int = 300                     # how long to wait for the coordinator and the other processes

    GROUP = "trainer.distributed"

    def check(self) -> None:
        if self.timeout_s < 1:
            raise self.bad("timeout_s", self.timeout_s, "seconds, >= 1")
        if self.num_processes is not None and self.num_processes < 1:
            raise self.bad("num_processes", self.num_processes, "must be >= 1 or null")
        explicit = (self.coordinator_address, self.num_processes, self.process_id)
        if any(v is not None for v in explicit) and (self.num_processes or 1) > 1 and None in explicit:
            raise ConfigError(
                "trainer.distributed: a multi-process job set by hand needs all three of coordinator_address "
                f"(host:port of process 0), num_processes and process_id; got {explicit}.")
        if self.process_id is not None and not 0 <= self.process_id < (self.num_processes or 1):
            raise self.bad("process_id", self.process_id, f"in [0, num_processes={self.num_processes})")
        if self.coordinator_address is not None and not _split_address(self.coordinator_address):
            raise self.bad("coordinator_address", self.coordinator_address, "host:port, e.g. 10.0.0.1:12355")


def _split_address(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _slurm_tasks() -> int:
    """Tasks of the current SLURM step (1 outside SLURM, or when the variables are incomplete)."""
    need = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if not all(v in os.environ for v in need):
        return 1
    try:
        return int(os.environ["SLURM_NTASKS"])
    except ValueError:
        return 1


def wanted(cfg: DistributedConfig) -> bool:
    """Whether this config asks for more than one process."""
    if cfg.num_processes is not None:
        return cfg.num_processes > 1
    return cfg.coordinator_address is None and _slurm_tasks() > 1


def is_initialized() -> bool:
    """Whether this process has joined a multi-process job (without importing JAX)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import distributed as jd

    return jd.global_state.client is not None


def initialize(cfg: DistributedConfig | dict[str, Any] | None = None) -> bool:
    """Join the job's processes (see the module docstring); a no-op for one process and
    when already joined. Returns whether this process is part of a multi-process job.

    Must run before anything asks JAX for its devices (``experiments/train.py`` calls it
    first; :func:`attnlab.train.loop.train_and_evaluate` calls it again, a no-op then)."""
    cfg = cfg if isinstance(cfg, DistributedConfig) else DistributedConfig.from_dict(cfg or {})
    if is_initialized():
        return True
    if not wanted(cfg):
        return False
    where = cfg.coordinator_address or "SLURM (first node of the step)"
    if _jax_started():
        raise DistributedError(
            f"trainer.distributed asks for a multi-process job (coordinator {where}), but JAX already "
            "started its devices in this process; jax.distributed.initialize must come first "
            "(experiments/train.py does this; in your own script call "
            "attnlab.train.distributed.initialize(cfg.trainer.distributed) before any JAX work).")
    if cfg.coordinator_address is not None:
        host, port = _split_address(cfg.coordinator_address)
        if cfg.process_id == 0:
            _check_local(host, cfg.coordinator_address)
        else:
            _wait_for(host, port, address=cfg.coordinator_address, timeout_s=cfg.timeout_s)
    import jax

    log.info("joining a %s-process JAX job (this is process %s), coordinator %s; waiting up to %d s "
             "(trainer.distributed.timeout_s) for every process", cfg.num_processes or "SLURM",
             cfg.process_id if cfg.process_id is not None else os.environ.get("SLURM_PROCID"), where, cfg.timeout_s)
    jax.distributed.initialize(
        coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
        process_id=cfg.process_id,
        local_device_ids=list(cfg.local_device_ids) if cfg.local_device_ids is not None else None,
        initialization_timeout=int(cfg.timeout_s))
    log.info("process %d of %d: %d local devices, %d in all", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


def _jax_started() -> bool:
    """Whether JAX has started its devices in this process (without importing it)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def _check_local(host: str, address: str) -> None:
    """Process 0 runs the coordinator: its host must be an address of this machine."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
    except OSError as e:
        raise DistributedError(
            f"trainer.distributed.coordinator_address={address}: process 0 runs the coordinator, but {host} is "
            f"not an address of this machine ({socket.gethostname()}: {e}). Launch process 0 on {host}, or set "
            "the address to this machine's.") from None


def _wait_for(host: str, port: int, *, address: str, timeout_s: int) -> None:
    """Until ``host:port`` accepts a connection (process 0 may start later), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise DistributedError(
        f"cannot reach the coordinator trainer.distributed.coordinator_address={address} within "
        f"trainer.distributed.timeout_s={timeout_s} s ({type(last).__name__}: {last}). Is process 0 of the job "
        "running and is that its host:port (reachable from this node, port not firewalled)? Start process 0 "
        "first, or raise trainer.distributed.timeout_s.")


def process_index() -> int:
    """This process's rank (0 without a multi-process job)."""
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_main() -> bool:
    """Process 0: the one that writes results, the index and the W&B run."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all arrive (a no-op for one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
