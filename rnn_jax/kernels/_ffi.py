"""Calling the native kernels through `jax.ffi`: rows folded under `jax.vmap`, rows split over devices.

The loop and cross-entropy kernels treat their rows independently: under `jax.vmap` the mapped axis joins the
rows (one call), and with rows sharded over devices each device runs the kernel on its own rows (`call`). The
row-panel pair of the output layer runs its XLA form under `jax.vmap` (`native_or_reference`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax import _checks


def ffi(target: str, out_types, attrs: dict | None = None, aliases: dict | None = None):
    """The kernel `target` as a function of its operands (`out_types(*operands)`: its outputs' types)."""
    return lambda *ops: jax.ffi.ffi_call(target, out_types(*ops), vmap_method="sequential",
                                         input_output_aliases=aliases)(*ops, **(attrs or {}))


def call(kernel, row_axes: tuple, out_row_axes: tuple, operands: tuple):
    """`kernel(*operands)` for a kernel whose rows are independent: per operand and per output, `row_axes` are the
    axes along which rows lie (empty for a shared operand, such as weights).

    Two transformations use that independence:
    - Under `jax.vmap` the mapped axis is folded into the first row axis, so a vmapped loop is one kernel call over
      n x B rows rather than n calls of B rows each; per-example code written for one sequence and vmapped over a
      batch then runs as the batched call. Only where a shared operand is itself mapped (an ensemble of weights)
      does each element get its own call.
    - Under `jit` with rows sharded over devices (data parallelism, `rnn_jax.parallel`) each device runs the kernel
      on its own rows (`custom_partitioning`), the shared operands replicated, instead of gathering every row onto
      every device and repeating the whole batch's work there.
    """
    @jax.custom_batching.custom_vmap
    def row_call(*ops):
        return rows_partitioned(kernel, row_axes, out_row_axes, ops)(*ops)

    @row_call.def_vmap
    def fold_mapped_axis_into_rows(axis_size, in_batched, *ops):
        if any(batched and not axes for batched, axes in zip(in_batched, row_axes)):
            outs = jax.vmap(kernel, in_axes=[0 if batched else None for batched in in_batched])(*ops)
            return outs, (True,) * len(outs)
        folded_ops = []
        for op, batched, axes in zip(ops, in_batched, row_axes):
            if axes:
                op = jnp.moveaxis(op if batched else jnp.broadcast_to(op, (axis_size,) + op.shape), 0, axes[0])
                op = op.reshape(op.shape[:axes[0]] + (-1,) + op.shape[axes[0] + 2:])
            folded_ops.append(op)
        outs = call(kernel, row_axes, out_row_axes, tuple(folded_ops))
        outs = [jnp.moveaxis(out.reshape(out.shape[:axes[0]] + (axis_size, -1) + out.shape[axes[0] + 1:]), axes[0], 0)
                for out, axes in zip(outs, out_row_axes)]
        return tuple(outs), (True,) * len(outs)

    return row_call(*operands)


def rows_partitioned(kernel, row_axes, out_row_axes, operands):
    """`kernel` under `custom_partitioning`: the k-th row axis of every operand and output is one factor, sharded as
    in the first operand where it is sharded; every other axis, and every shared operand, is replicated."""
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec

    ranks = [op.ndim for op in operands]
    out_ranks = [out.ndim for out in jax.eval_shape(kernel, *operands)]
    replicated = []

    def factors(rank, axes, tag):
        names = [f"rows{axes.index(a)}" if a in axes else f"{tag}_{a}" for a in range(rank)]
        replicated.extend(name for name in names if not name.startswith("rows"))
        return " ".join(names)

    rule = (", ".join(factors(rank, axes, f"in{i}") for i, (rank, axes) in enumerate(zip(ranks, row_axes))) + " -> "
            + ", ".join(factors(rank, axes, f"out{i}") for i, (rank, axes) in enumerate(zip(out_ranks, out_row_axes))))

    def shardings(mesh, arg_shapes):
        row_specs = {}
        for shape, axes in zip(arg_shapes, row_axes):
            spec = tuple(shape.sharding.spec) + (None,) * (len(shape.shape) - len(shape.sharding.spec))
            for k, axis in enumerate(axes):
                if row_specs.get(k) is None:  # the first operand whose k-th row axis is sharded decides
                    row_specs[k] = spec[axis]
        sharding = lambda rank, axes: NamedSharding(mesh, PartitionSpec(
            *[row_specs.get(axes.index(a)) if a in axes else None for a in range(rank)]))
        return (tuple(sharding(rank, axes) for rank, axes in zip(ranks, row_axes)),
                tuple(sharding(rank, axes) for rank, axes in zip(out_ranks, out_row_axes)))

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[1]

    def partition(mesh, arg_shapes, result_shape):
        arg_shardings, result_shardings = shardings(mesh, arg_shapes)
        return mesh, kernel, result_shardings, arg_shardings

    partitioned = custom_partitioning(kernel)
    partitioned.def_partition(partition, infer_sharding_from_operands=infer_sharding_from_operands,
                              sharding_rule=rule, need_replication_factors=tuple(replicated))
    return partitioned

def native_or_reference(native, reference):
    """`native`, with `jax.vmap` running `reference` (the same function in XLA ops) instead.

    The row-panel layout of the pair below depends on the number of rows per call, and the backward kernel's
    weight gradients sum over its rows, so the mapped axis cannot fold into the rows as in `call`.
    """
    @jax.custom_batching.custom_vmap
    def call(*ops):
        return native(*ops)

    @call.def_vmap
    def mapped(axis_size, in_batched, *ops):
        outs = jax.vmap(reference, in_axes=[0 if batched else None for batched in in_batched])(*ops)
        return tuple(outs), (True,) * len(outs)

    return call


def check_operands(name: str, expected: str, operands: dict, ok: bool) -> None:
    if not ok:
        got = ", ".join(f"{key} {tuple(jnp.shape(value))} {jnp.result_type(value)}" for key, value in operands.items())
        raise _checks.ShapeError(f"{name}: expected {expected}; got {got}")

