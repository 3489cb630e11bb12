"""Data parallelism with JAX's own sharding: one `Mesh` over all devices, axis 'data'.

The same jitted step runs on 1 CPU, 8 GPUs or a TPU slice: arrays carry a
`NamedSharding` (batch axis split over 'data', or replicated) and XLA inserts the
reductions (the mean over the batch, the gradient of replicated parameters).

With several processes (one per host of a TPU pod slice or GPU cluster) the mesh spans
every host's devices; `put_batch` builds the global batch from each process's own rows.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'data'


def data_mesh(devices=None):
  """A 1-D mesh over `devices` (default: every device of every host), axis 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh):
  """The sharding of an array held whole on every device of `mesh`."""
  return NamedSharding(mesh, P())


def split_leading(mesh):
  """The sharding of an array whose leading axis is split over the mesh's devices."""
  return NamedSharding(mesh, P(AXIS))


def constrain_leading(tree, mesh):
  """Inside jit: asks XLA to split each leaf of `tree` along its leading axis."""
  return jax.lax.with_sharding_constraint(tree, split_leading(mesh))


def indivisible(name, value, num_devices, switch='distill.shard'):
  """The one-line message for a field that must divide over the devices, or None;
  `switch` names the config field that asked for the split."""
  if value % num_devices == 0:
    return None
  return (f'{name}={value}: must be divisible by the {num_devices} devices of the '
          f"'{AXIS}' mesh ({switch}=True)")


def process_rows(sharding, n):
  """Indices of the rows of an n-row global batch split by `sharding` that this
  process's devices hold, in order (all n rows with one process)."""
  blocks = {index[0].indices(n) for index in
            sharding.addressable_devices_indices_map((n,)).values()}
  return np.concatenate([np.arange(*block) for block in sorted(blocks)])


def put_batch(x, mesh):
  """The global batch `x` (a numpy array, the same on every process) as one jax.Array
  split along its leading axis over `mesh`. One process: a device_put. Several: each
  hands over only the rows its own devices hold (jax.make_array_from_process_local_data),
  so a per-host input pipeline would only need to produce those."""
  sharding = split_leading(mesh)
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_process_local_data(sharding, x[process_rows(sharding, len(x))],
                                                x.shape)
