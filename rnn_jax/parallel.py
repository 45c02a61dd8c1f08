"""Data parallelism with JAX's own SPMD machinery: one mesh axis "data" over the devices.

Batch rows (token windows and the carried recurrent state) are sharded along "data"; parameters and
optimiser state are replicated; XLA inserts the gradient all-reduce. Steps are traced and run under
`jax.set_mesh(mesh)`, which tells the library's products (`rows_product`) and native kernels to keep every
row on its device. On several hosts, call
`initialize_distributed()` first (it wraps `jax.distributed.initialize`); each process then builds only its
own rows of every batch (`local_rows`) and `global_batch` assembles the global array from them.

Examples:
    >>> mesh = make_mesh()                       # every visible device
    >>> batch = global_batch(mesh, rows_of_this_process)          # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_jax import precision

AXIS = "data"


def initialize_distributed() -> None:
    """`jax.distributed.initialize()` once, when launched as one of several processes.

    It reads the standard variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a cluster
    environment such as SLURM that JAX detects); a single process needs nothing.
    """
    if int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1 or "SLURM_NTASKS" in os.environ:
        if not jax.distributed.is_initialized():
            jax.distributed.initialize()


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (None: all of them, across every process)."""
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(f"num_devices must be between 1 and the {len(devices)} visible device(s); got {num_devices}")
    return Mesh(np.array(devices[:num_devices]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def rows_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the devices, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def check_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(f"{name}={batch_size} does not divide over {devices} devices (data parallelism gives each "
                         f"device batch_size / devices rows); use a multiple of {devices} or set num_devices")


def local_rows(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of the batch rows (all of them on a single process)."""
    count, index = jax.process_count(), jax.process_index()
    if rows.shape[0] % count:
        raise ValueError(f"{rows.shape[0]} batch rows do not divide over {count} processes")
    share = rows.shape[0] // count
    return rows[index * share:(index + 1) * share]


def global_batch(mesh: Mesh, local: np.ndarray) -> jax.Array:
    """The global (B, ...) array, row-sharded, from this process's rows."""
    global_shape = (local.shape[0] * jax.process_count(),) + tuple(local.shape[1:])
    return jax.make_array_from_process_local_data(rows_sharded(mesh), np.asarray(local), global_shape)


def place(tree: Any, sharding: NamedSharding) -> Any:
    return jax.device_put(tree, sharding)


def under_mesh(mesh: Mesh, fn: Callable) -> Callable:
    """`fn` called, and so traced when it is a jitted function, under `jax.set_mesh(mesh)` (see `rows_product`);
    the wrapper keeps `fn` as `__wrapped__`."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with jax.set_mesh(mesh):
            return fn(*args, **kwargs)
    return call


def several_devices() -> bool:
    """Whether the code being traced runs under a mesh of more than one device (`jax.set_mesh`)."""
    mesh = jax.sharding.get_abstract_mesh()
    return not mesh.empty and mesh.size > 1


def rows_product(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """`lhs^T rhs` summed over every leading (row) axis: (..., I) and (..., J) -> (I, J), e.g. a weight gradient;
    lhs (...) with one weight per row gives (J,). A 16-bit operand makes it a 16-bit product with float32 sums.

    On one device the leading axes are merged first (a free reshape) and `precision.transposed_product` runs the
    product. Under a mesh of several devices they stay apart: merging time-major (T, B) axes would
    interleave each device's batch rows, so XLA would gather every row onto every device and repeat the whole
    batch's work there; apart, each device sums its own rows and XLA adds the partial sums across devices.
    """
    per_row = lhs.ndim == rhs.ndim - 1
    if not several_devices():
        rhs = rhs.reshape(-1, rhs.shape[-1])
        if per_row:
            return precision.matmul(lhs.reshape(-1), rhs)
        return precision.transposed_product(lhs.reshape(-1, lhs.shape[-1]), rhs)
    lhs, rhs, accumulate = precision.operands(lhs, rhs)
    axes = tuple(range(rhs.ndim - 1))
    if per_row or lhs.size <= rhs.size:
        return jnp.tensordot(lhs, rhs, (axes, axes), preferred_element_type=accumulate)
    # XLA copies its first operand into place: the smaller one
    return jnp.tensordot(rhs, lhs, (axes, axes), preferred_element_type=accumulate).T
