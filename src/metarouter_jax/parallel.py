"""Several devices: a 1-D mesh over them, and the task batch or a sweep's configurations on it.

* Meta-training is data parallel over users: each meta-step's `tasks_per_step` task keys
  are split across the devices (`Trainer.task_sharding`), the vmapped task losses follow
  them, and the mean over tasks becomes an all-reduce that XLA inserts; parameters,
  optimiser state and the dataset are replicated. `MetaRouter.fit` does this by itself
  whenever JAX sees several devices (`resolve_mesh`).
* A sweep shards its configuration axis: each device trains S / n configurations and the
  devices never talk to each other.

With one device every helper returns its input unchanged, so callers need no special case.
Across hosts, call `jax.distributed.initialize()` first: `jax.devices()` then spans every
host, the default mesh too, and the same code runs unchanged (`put` and `to_host` move
arrays onto and off such a mesh; every process holds the same data and grid).
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

TASK_AXIS = "tasks"
CONFIG_AXIS = "configs"


def default_mesh(axis_name: str, devices=None) -> Mesh:
    """A 1-D mesh named `axis_name` over `devices` (default: every device JAX sees)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def resolve_mesh(mesh: Mesh | str | None, axis_name: str, tasks_per_step: int | None = None) -> Mesh | None:
    """`mesh` as given (a Mesh, or None: one device), or for "auto" (the default of
    `MetaRouter.fit` and `run_sweep`) a mesh named `axis_name` over every device JAX sees when
    there are several. With `tasks_per_step` (a task batch to split), "auto" keeps one device
    where it does not divide over them, and a warning names both numbers."""
    if not isinstance(mesh, str):
        return mesh
    if mesh != "auto":
        raise ValueError(f"mesh must be 'auto', a jax.sharding.Mesh or None, got {mesh!r}")
    count = jax.device_count()
    if count == 1:
        return None
    if tasks_per_step is not None and tasks_per_step % count:
        warnings.warn(f"tasks_per_step ({tasks_per_step}) is not a multiple of the {count} devices JAX sees, so "
                      f"meta-training runs on one device; a multiple of {count} splits the task batch across all",
                      stacklevel=3)
        return None
    return default_mesh(axis_name)


def _leading(mesh: Mesh) -> NamedSharding:
    """Leading axis split over every axis of the mesh, the rest replicated."""
    return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def put(tree, sharding: NamedSharding):
    """`jax.device_put(tree, sharding)`, also for a mesh spanning several processes (hosts).

    Across processes every process must hold the same whole `tree`; each then places the
    shards its own devices hold.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put_leaf(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put_leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put_leaf, tree)


def to_host(tree):
    """NumPy copies of every leaf; arrays spread over several processes are gathered first."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)

    return jax.tree.map(get, tree)


def replicate(tree, mesh: Mesh):
    """A full copy of `tree` on every device of the mesh (no-op on one device)."""
    if mesh.size == 1:
        return tree
    return put(tree, NamedSharding(mesh, P()))


def shard_tasks(trainer, mesh: Mesh | None = None):
    """`trainer` with its task batch split across the mesh and its dataset replicated on it.

    Raises ValueError if `tasks_per_step` is not a multiple of the number of devices. With
    one device, returns `trainer` itself.
    """
    mesh = default_mesh(TASK_AXIS) if mesh is None else mesh
    if mesh.size == 1:
        return trainer
    tasks = trainer.config.tasks_per_step
    if tasks % mesh.size:
        raise ValueError(f"tasks_per_step ({tasks}) must be a multiple of the number of devices "
                         f"({mesh.size}) to shard the task batch across them")
    # Committed, replicated data make jit place the rest of the computation on the mesh too.
    sharded = dataclasses.replace(trainer, task_sharding=_leading(mesh), trace_counter=[0])
    sharded = sharded.bind(replicate(trainer.data_args(), mesh))
    # A replicated initial state has the sharding the chunks return, so `run_training` traces
    # its chunk once (an uncommitted one would retrace at chunk 2). Fills the cached property.
    sharded.__dict__["jit_init"] = jax.jit(sharded.init, out_shardings=NamedSharding(mesh, P()))
    return sharded


def shard_configs(tree, mesh: Mesh | None):
    """Put a stack of configurations (every leaf [S, ...]) on the mesh, split along S.

    Raises ValueError if S is not a multiple of the number of devices (`run_sweep` pads).
    No-op when `mesh` is None or has one device.
    """
    if mesh is None or mesh.size == 1:
        return tree
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(tree)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every leaf needs the same leading configuration axis, got sizes {sorted(map(str, sizes))}")
    (size,) = sizes
    if size % mesh.size:
        raise ValueError(f"the number of configurations ({size}) must be a multiple of the number of "
                         f"devices ({mesh.size}) to shard them")
    return put(tree, _leading(mesh))
