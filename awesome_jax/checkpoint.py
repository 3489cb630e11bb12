"""Orbax checkpoints in the workdir: a run restarted with the same command resumes."""

import os

import numpy as np
import orbax.checkpoint as ocp


class ResumeMismatchError(ValueError):
  """The workdir's checkpoint does not fit the state the current config builds."""


class Checkpointer:
  """Saves and restores one pytree of arrays per step under `directory`.

  Several processes (a multi-host run, awesome_jax/distributed.py): safe as written, when
  every process makes the same calls in the same order (each runs the same loop) and
  `directory` is one folder all hosts see (NFS or a bucket mounted with gcsfuse: the
  path goes through os.path.abspath, so gs:// URLs are not supported here). Orbax's
  CheckpointManager coordinates the processes itself: barriers around each save,
  process 0 creates the folders, writes the metadata and commits the step; each array
  shard is written once, by the process that holds its first replica (the replicated
  state of train.shard / distill.shard: once in all); numpy leaves by process 0. A
  restore gives every process the arrays with the shardings of `like`. Checked with two
  processes on one machine (tests/test_multidevice_train.py: a save; a resume by hand).
  """

  def __init__(self, directory, max_to_keep=2):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                          item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self):
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def save(self, step, state):
    self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, like, step=None):
    """Restores the newest (or `step`) checkpoint into the structure of `like`."""
    step = self.latest_step() if step is None else step
    import jax  # pylint: disable=g-import-not-at-top
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    # Check first: a failed orbax restore leaves threads that print tracebacks at exit.
    saved = self._manager.item_metadata(step)
    saved = getattr(saved, 'tree', saved)
    shapes = lambda tree: sorted(tuple(getattr(l, 'shape', ())) for l in
                                 jax.tree_util.tree_leaves(tree))
    saved_shapes = shapes(saved)
    if saved_shapes and saved_shapes != shapes(abstract):  # (no metadata: orbax decides)
      raise ResumeMismatchError(
          f'{self._manager.directory} holds step {step} of a run whose state differs from '
          'what this config builds (a field that changes the learned or optimizer state '
          'was changed, e.g. distill.lr_per_layer, distill.learn_labels, distill.steps, '
          'outer.decay_every between 0 and > 0, model.*); resume with the config the run '
          'was started with (the previous one is in config.prev.json) or use a new '
          '--workdir')
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self):
    self._manager.close()


def host(tree):
  """Copies a pytree of device arrays to numpy (for saving outside orbax)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(np.asarray, tree)


def path_name(path):
  """'a/b/c' for a jax key path of dict keys."""
  return '/'.join(k.key for k in path)


def flatten_tree(tree, prefix=''):
  """{prefix + 'a/b/c': numpy leaf} of a nested dict of arrays (for .npz files)."""
  import jax  # pylint: disable=g-import-not-at-top
  return {prefix + path_name(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def unflatten_tree(flat, prefix=''):
  """Inverse of flatten_tree over the keys that start with `prefix` (None if none)."""
  tree = None
  for key, value in flat.items():
    if not key.startswith(prefix):
      continue
    tree = {} if tree is None else tree
    node = tree
    *parents, leaf = key[len(prefix):].split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree
