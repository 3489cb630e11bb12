"""Data parallelism with JAX's own sharding: one `Mesh` over all devices, axis 'data'.

The same jitted step runs on 1 CPU, 8 GPUs or a TPU slice: arrays carry a
`NamedSharding` (batch axis split over 'data', or replicated) and XLA inserts the
reductions (the mean over the batch, the gradient of replicated parameters).
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


def indivisible(name, value, num_devices):
  """The one-line message for a field that must divide over the devices, or None."""
  if value % num_devices == 0:
    return None
  return (f'{name}={value}: must be divisible by the {num_devices} devices of the '
          f"'{AXIS}' mesh (distill.shard=True)")
