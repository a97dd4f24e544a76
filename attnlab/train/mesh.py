"""Data-parallel layout: one device mesh, the batch split on its ``data`` axis (and the
catalogue tables on an optional ``item`` axis).

The training step is one jitted program over a :class:`jax.sharding.Mesh`. Each batch
array is placed with ``NamedSharding(mesh, P("data"))`` (its rows split evenly over the
devices); parameters and optimiser state are replicated (``P()``). XLA's partitioner
then runs the step on every device and all-reduces the gradients, so one step over
``n`` devices computes the same update as one device on the same global batch
(``trainer.batch_size`` is the global batch), up to the order of fp32 additions.

``trainer.mesh.data`` chooses the layout: ``-1`` (default) every device JAX sees (all
processes of a multi-process job), ``n`` the first ``n`` devices. On one device the
placement is a no-op on values and the compiled step is the single-device program.
``trainer.mesh.item = k > 1`` (catalogues too large to replicate) adds a second axis:
``data x k`` devices, the batch split over ``data``, the item table (and its optimiser
moments) split by embedding columns over ``item`` (:func:`place_state`).

Multi-process: every process builds the same global batch (the order and negatives are
drawn from ``(seed, epoch)``) and hands JAX only the rows its own devices hold
(:func:`jax.make_array_from_callback` asks each process for its addressable shards),
so the global batch equals the single-process one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attnlab.typed_config import ConfigError, TypedConfig

DATA = "data"
ITEM = "item"


@dataclasses.dataclass(frozen=True)
class MeshConfig(TypedConfig):
    """``trainer.mesh``: devices on each mesh axis."""

    data: int = -1   # devices the batch is split over; -1 = every device (of every process) / item
    item: int = 1    # devices the catalogue tables are split over (FSDP-style, by embedding columns)

    GROUP = "trainer.mesh"

    def check(self) -> None:
        if self.data == 0 or self.data < -1:
            raise self.bad("data", self.data, "a device count >= 1, or -1 for every device")
        if self.item < 1:
            raise self.bad("item", self.item, "a device count >= 1")


def _devices_text() -> str:
    procs = jax.process_count()
    kind = jax.devices()[0].platform
    if procs == 1:
        return f"{jax.device_count()} {kind} device(s) visible"
    return (f"{jax.device_count()} {kind} devices in all ({procs} processes x "
            f"{jax.local_device_count()} local)")


def make_mesh(cfg: MeshConfig, *, batch_size: int) -> Mesh:
    """The training mesh for ``cfg``, checked against the devices and the batch size: axes
    ``("data",)``, or ``("data", "item")`` with ``trainer.mesh.item > 1``."""
    n, item = jax.device_count(), cfg.item
    if item > n or n % item:
        raise ConfigError(
            f"trainer.mesh.item={item} must divide the devices ({_devices_text()}): use 1 or a divisor of {n}.")
    data = n // item if cfg.data == -1 else cfg.data
    if data * item > n:
        raise ConfigError(
            f"trainer.mesh.data={cfg.data} asks for more devices than there are: {_devices_text()}"
            f"{f' (x trainer.mesh.item={item})' if item > 1 else ''}. "
            f"Use trainer.mesh.data=-1 (every device) or a number <= {n // item}.")
    if jax.process_count() > 1 and data * item != n:
        raise ConfigError(
            f"trainer.mesh.data={cfg.data}: a multi-process job trains on every device ({_devices_text()}); "
            "use trainer.mesh.data=-1.")
    if batch_size % data:
        raise ConfigError(
            f"trainer.batch_size={batch_size} does not split evenly over the mesh's data axis of {data} devices "
            f"({_devices_text()}; trainer.mesh.data={cfg.data}): use a multiple of {data}, e.g. "
            f"trainer.batch_size={max(data, batch_size - batch_size % data)}, or fewer devices "
            "(trainer.mesh.data=N). The batch size is the global batch over all devices.")
    if item == 1:
        return Mesh(np.asarray(jax.devices()[:data]), (DATA,))
    return Mesh(np.asarray(jax.devices()[:data * item]).reshape(data, item), (DATA, ITEM))


def describe(mesh: Mesh) -> dict[str, Any]:
    """The layout, for the run's provenance."""
    return {"mesh": dict(mesh.shape), "devices": int(mesh.size), "processes": jax.process_count(),
            "platform": mesh.devices.flat[0].platform}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` as a global array laid out by ``sharding``; each process supplies only the
    shards of its own devices, cut from its (identical) copy of ``x``."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_place(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` (parameters, optimiser state, a PRNG key) copied to every device."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _place(x, sharding), tree)


def check_item_split(mesh: Mesh, *, d_model: int) -> None:
    """A mesh with an ``item`` axis splits the item table by its ``d_model`` columns: they
    must divide evenly (checked when the run starts, before any work)."""
    if ITEM in mesh.axis_names and d_model % mesh.shape[ITEM]:
        raise ConfigError(
            f"trainer.mesh.item={mesh.shape[ITEM]} splits the item table by its {d_model} columns "
            f"(model.d_model): use a model.d_model that is a multiple of {mesh.shape[ITEM]}, or "
            "trainer.mesh.item=1.")


def place_state(tree: Any, mesh: Mesh, *, catalogue_rows: int) -> Any:
    """Parameters and optimiser state on the mesh: replicated, except, on a mesh with an
    ``item`` axis, the catalogue tables (2-D leaves of ``catalogue_rows`` rows: the item
    embedding, which is also the output layer, and its Adam moments) split by columns
    over ``item`` (``P(None, "item")``: each device holds ``d / item`` of every item's
    vector). XLA's partitioner adds the collectives, so the full-softmax and sampled-softmax
    losses are the replicated ones up to the order of fp32 additions. Columns, not rows:
    ``n_items + 1`` rarely divides evenly, ``d_model`` must (checked here)."""
    whole = replicated(mesh)
    split = NamedSharding(mesh, P(None, ITEM)) if ITEM in mesh.axis_names else None

    def put(x):
        if split is not None and getattr(x, "ndim", 0) == 2 and x.shape[0] == catalogue_rows:
            check_item_split(mesh, d_model=x.shape[1])
            return _place(x, split)
        return _place(x, whole)

    return jax.tree.map(put, tree)


def shard_batch(tree: Any, mesh: Mesh, *, batch_size: int) -> Any:
    """A batch placed on the mesh: arrays with ``batch_size`` rows split over ``data``,
    anything else (e.g. a batch's shared sampled negatives) replicated. Either way the
    global array equals the host array, so the layout never changes what is computed.
    One transfer call for the whole batch (a step's host overhead stays ~1 ms)."""
    rows, whole = NamedSharding(mesh, P(DATA)), replicated(mesh)
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(x) for x in leaves]
    shardings = [rows if x.ndim and x.shape[0] == batch_size else whole for x in leaves]
    if jax.process_count() == 1:
        placed = jax.device_put(leaves, shardings)
    else:
        placed = [_place(x, s) for x, s in zip(leaves, shardings)]
    return jax.tree.unflatten(treedef, placed)


def first_copy(tree: Any) -> Any:
    """Each leaf of ``tree`` whole on this process's first local device (a replicated leaf:
    its local copy; a split one, e.g. the item table on an ``item`` axis: gathered). After
    training, evaluation and the tracker's extras then run per process, with no collective
    (process 0 alone draws the W&B attention heatmap)."""

    def local(x):
        if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
            return x
        if not x.sharding.is_fully_replicated:
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                x = np.asarray(multihost_utils.process_allgather(x, tiled=True))
            return jax.device_put(x, jax.local_devices()[0])
        return x.addressable_data(0)

    return jax.tree.map(local, tree)
