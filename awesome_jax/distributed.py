"""Runs over several processes (hosts): when to start jax.distributed, and who writes.

A multi-host run (a TPU pod slice, several GPU machines) starts the same command on every
host; each process drives its own devices and together they form one 'data' mesh
(awesome_jax/sharding.py). `main` calls `maybe_initialize(os.environ)` before jax touches
a device. It starts `jax.distributed` only where a launcher says there are several
processes, from the environment variables that jax itself reads or auto-detects:

  JAX_COORDINATOR_ADDRESS=host:port (process 0's), with JAX_NUM_PROCESSES and
      JAX_PROCESS_ID (jax reads only the address; the two numbers are passed on here;
      where they are unset, jax detects them: Slurm, Open MPI, Cloud TPU VM metadata)
  TPU_WORKER_HOSTNAMES or TPU_PROCESS_ADDRESSES listing more than one host (a multi-host
      TPU slice on GKE), or MEGASCALE_COORDINATOR_ADDRESS (several TPU slices)
  SLURM_NTASKS > 1 with the other SLURM_* variables jax needs (srun of several tasks)
  OMPI_MCA_orte_hnp_uri with OMPI_COMM_WORLD_SIZE > 1 (mpirun of several processes)

Anything else is a single-process run: nothing is initialised and nothing changes.
A Cloud TPU VM pod slice started with `gcloud ... ssh --worker=all` sets none of these
(jax finds the slice's hosts in the VM metadata, through the network): there the TPU
runtime joins the hosts by itself (jax.distributed is optional on TPUs); export
JAX_COORDINATOR_ADDRESS=<worker 0's address>:<free port> on every host to start it anyway.

Outputs: every process runs the same steps, but only process 0 writes results.json, the
.npz and .png files, metrics and config.json (`is_writer`). Orbax checkpoints are written
by all processes together (checkpoint.py); the workdir must be a folder all hosts see.
A task whose processes each hold their own (host-local) copy of the state saves host
(numpy) copies of it (checkpoint.host): orbax takes those from process 0. `sync(name)`
waits for the others (process 0 is about to write what they read first, or has written
what they read next); `writer_first(fetch, fields)` downloads on process 0 before the
others, which then find the files in the cache folder. With one process both are plain
calls: nothing to wait for.
"""

import jax
from jax.experimental import multihost_utils
import numpy as np

# the variables Slurm sets that jax's Slurm detection needs (jax/_src/clusters)
SLURM = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
         'SLURM_LOCALID')


def _count(value):
  """int(value), or 0 where it is missing or not a number."""
  try:
    return int(value)
  except (TypeError, ValueError):
    return 0


def launch_kwargs(environ):
  """The keyword arguments for jax.distributed.initialize of a multi-process launch
  described by `environ` (a mapping like os.environ), or None for a single process."""
  if environ.get('JAX_COORDINATOR_ADDRESS'):
    kwargs = {'coordinator_address': environ['JAX_COORDINATOR_ADDRESS']}
    for key, name in (('num_processes', 'JAX_NUM_PROCESSES'),
                      ('process_id', 'JAX_PROCESS_ID')):
      if environ.get(name, '') != '':
        kwargs[key] = int(environ[name])
    return kwargs
  hosts = environ.get('TPU_PROCESS_ADDRESSES') or environ.get('TPU_WORKER_HOSTNAMES') or ''
  if len([h for h in hosts.split(',') if h.strip()]) > 1:
    return {}
  if environ.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return {}
  if all(name in environ for name in SLURM) and _count(environ['SLURM_NTASKS']) > 1:
    return {}
  if environ.get('OMPI_MCA_orte_hnp_uri') and _count(environ.get('OMPI_COMM_WORLD_SIZE')) > 1:
    return {}
  return None


def maybe_initialize(environ, initialize=None):
  """Starts jax.distributed if `environ` describes a multi-process launch (see the
  module docstring); returns the keyword arguments it was started with, or None.
  `initialize`: the function to call (default jax.distributed.initialize)."""
  kwargs = launch_kwargs(environ)
  if kwargs is None or jax.distributed.is_initialized():
    return None
  (initialize or jax.distributed.initialize)(**kwargs)
  return kwargs


def is_writer():
  """Whether this process writes the run's files: process 0 (the only one, usually)."""
  return jax.process_index() == 0


def sync(name):
  """Waits until every process has called sync(name) (nothing to wait for with one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def writer_first(fetch, fields, error=RuntimeError):
  """fetch() on process 0 first, then, once it has succeeded, on the others: they find its
  files in the cache folder they share and fetch nothing (a process on another host
  fetches its own copy). With one process: fetch().

  fields: the config fields that asked for the files; if process 0 failed, it raises its
  own error and the others raise `error` (an exception class) with a line naming them.
  """
  if jax.process_count() == 1:
    return fetch()
  out, failure = None, None
  if is_writer():
    try:
      out = fetch()
    except Exception as e:  # pylint: disable=broad-except  (raised below, after the others know)
      failure = e
  ok = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
  if failure is not None:
    raise failure
  if not ok:
    raise error(f'{fields}: process 0 could not fetch the published files (its error says '
                'why)')
  return out if is_writer() else fetch()
