"""What distilled data is for (Wang et al. 2018, Sec. 4-5): adapting pretrained nets to a
new domain, and poisoning well-trained nets.

Both start from *pretrained* nets instead of random inits:

- Domain adaptation: nets trained on a source domain (e.g. USPS) are the inits; the
  synthetic images are distilled from the target domain (e.g. MNIST) so that a few SGD
  steps on them adapt a source net to the target. With a *fixed* pretrained net the set
  is made for that one net; with *random* pretrained nets each outer step samples
  `distill.n_inits` nets from a pool trained on the source, and the set is tested on a
  held-out pool it never saw.
- Data poisoning: nets well trained on the data are the inits; the meta-loss is the
  cross-entropy against labels where the attacked class is replaced by the target
  class, so that after the steps on the (innocently labelled) synthetic images the nets
  call the attacked class the target and keep the other classes right.

This module holds the pieces the `distill_adapt` / `distill_attack` tasks
(`awesome_jax/tasks/applications.py`) put together: training pools of nets
(`train_nets`, vmapped Adam, each net its own data order), sampling a pool's nets for
an outer step, the attack's relabelling, and per-net metrics from predictions.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from awesome_jax import checkpoint as ckpt_lib


def relabel(y, attack_class, target_class):
  """The poisoning objective's labels: the attacked class becomes the target class."""
  y = np.asarray(y).copy()
  y[y == attack_class] = target_class
  return y


def stack_trees(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def take(params, idx):
  """The nets `idx` (int array) of a pool with a leading axis over nets."""
  idx = jnp.asarray(idx)
  return jax.tree_util.tree_map(lambda a: a[idx], params)


def pool_size(params):
  return int(jax.tree_util.tree_leaves(params)[0].shape[0])


def sample_nets(pool, n, seed, step):
  """`n` distinct nets of `pool`, drawn from (seed, step) only: a resumed run draws the
  same nets at the same step. The whole pool, in order, when it has n nets."""
  size = pool_size(pool)
  if size == n:
    return pool
  idx = np.random.default_rng([seed, step, 17]).choice(size, n, replace=False)
  return take(pool, np.sort(idx))


class NetTrainer:
  """Trains nets of one model with Adam, one net after another (each its own order).

  One net at a time: on XLA:CPU a vmap over nets cost 1.6-2x more per net than a loop
  (LeNet, batch 128, 2026-12-01). `train_apply_fn`, `to_train` and `from_train` let the
  training run a faster twin of the model (e.g. nn.Conv instead of the matmul conv that
  distillation differentiates twice) on renamed params: see `training_twin`.
  """

  def __init__(self, apply_fn, lr, b1=0.9, b2=0.999, decay_every=0, decay_factor=0.5,
               twin=None):
    schedule = lr
    if decay_every > 0:
      schedule = optax.exponential_decay(lr, decay_every, decay_factor, staircase=True)
    self.tx = optax.adam(schedule, b1=b1, b2=b2)
    self.apply_fn = apply_fn
    self.twin = twin or (apply_fn, lambda p: p, lambda p: p)
    train_apply = self.twin[0]

    def loss(p, x, y):
      logits = train_apply(p, x)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def step(p, opt, x, y):
      g = jax.grad(loss)(p, x, y)
      updates, opt = self.tx.update(g, opt, p)
      return optax.apply_updates(p, updates), opt

    self._step = jax.jit(step)
    self._init_opt = jax.jit(self.tx.init)

  def train(self, params, x, y, epochs, batch_size, seed, progress=None):
    """Trains every net of `params` (leading axis) on (x, y) for `epochs` epochs.

    Net i's batches come from its own permutation per epoch, seeded by (seed, i, epoch).
    `progress(n)` is called after each step (a progress bar's update).
    """
    _, to_train, from_train = self.twin
    n = pool_size(params)
    batch_size = min(batch_size, len(x))
    per_epoch = len(x) // batch_size
    out = []
    for i in range(n):
      p = to_train(jax.tree_util.tree_map(lambda a, i=i: a[i], params))
      opt = self._init_opt(p)
      for epoch in range(epochs):
        perm = np.random.default_rng([seed, i, epoch]).permutation(len(x))
        for b in range(per_epoch):
          idx = perm[b * batch_size:(b + 1) * batch_size]
          p, opt = self._step(p, opt, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
          if progress is not None:
            progress(1)
      out.append(from_train(p))
    return stack_trees(out)


def training_twin(model, input_shape):
  """(apply_fn, to_twin, from_twin) of the model's `conv_impl='xla'` twin (nn.Conv: about
  2x faster to train once-differentiated on XLA:CPU than the matmul conv), mapping param
  names MatmulConv_i <-> Conv_i; None when the model has no such twin."""
  if getattr(model, 'conv_impl', None) != 'matmul':
    return None
  twin = model.clone(conv_impl='xla')
  dummy = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  try:
    ours = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))['params']
    theirs = jax.eval_shape(lambda: twin.init(jax.random.key(0), dummy))['params']
  except Exception:  # pylint: disable=broad-except  (no twin for this model)
    return None
  there = lambda name: name.replace('MatmulConv_', 'Conv_')
  back = {there(k): k for k in ours}
  shapes = lambda tree: jax.tree_util.tree_map(lambda a: a.shape, tree)
  if {there(k): shapes(v) for k, v in ours.items()} != shapes(dict(theirs)):
    return None
  return (lambda p, x: twin.apply({'params': p}, x),
          lambda p: {there(k): v for k, v in p.items()},
          lambda p: {back[k]: v for k, v in p.items()})


@functools.lru_cache(maxsize=8)
def _predictor(apply_fn):
  """One jitted vmap per apply_fn (a bound method hashes by its object), so repeated
  evaluations reuse its compilation instead of tracing a new lambda each call."""
  return jax.jit(jax.vmap(lambda p, xb: jnp.argmax(apply_fn(p, xb), -1), in_axes=(0, None)))


def predict(apply_fn, params, x, batch_size=1000):
  """(N_nets, len(x)) predicted classes of every net of `params` (leading axis)."""
  fn = _predictor(apply_fn)
  out = [np.asarray(fn(params, jnp.asarray(x[i:i + batch_size])))
         for i in range(0, len(x), batch_size)]
  return np.concatenate(out, axis=1)


def accuracy_metrics(pred, y):
  """{'acc': (N,)} test accuracy of each net from its predictions (N, M)."""
  return {'acc': (pred == y[None]).mean(1)}


def attack_metrics(pred, y, attack_class, target_class):
  """Per-net metrics of a poisoning attack from predictions (N, M) on labels y (M,).

  acc: plain accuracy; attack_success: fraction of the attacked class predicted as the
  target class; other_acc: accuracy on all other classes; acc_wrt_modified: accuracy
  against the labels with the attacked class replaced by the target (the objective).
  """
  attacked = y == attack_class
  return {
      'acc': (pred == y[None]).mean(1),
      'attack_success': (pred[:, attacked] == target_class).mean(1),
      'other_acc': (pred[:, ~attacked] == y[None, ~attacked]).mean(1),
      'acc_wrt_modified': (pred == relabel(y, attack_class, target_class)[None]).mean(1),
  }


def summarize(metrics):
  """{name: (N,) array} -> {name_mean, name_std} floats (and the per-net values)."""
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v, np.float64)
    out[f'{k}_mean'] = float(v.mean())
    out[f'{k}_std'] = float(v.std())
    out[f'{k}_all'] = [float(a) for a in v]
  return out


def save_pool(path, params, meta):
  """A pool of nets (leading axis) as one npz: 'params/<path>' arrays + `meta` strings."""
  flat = ckpt_lib.flatten_tree(jax.tree_util.tree_map(np.asarray, params), 'params/')
  tmp = path + '.tmp.npz'
  np.savez(tmp, **flat, **{f'meta/{k}': np.array(v) for k, v in meta.items()})
  os.replace(tmp, path)


def load_pool(path):
  """(params with a leading axis, meta dict) of a pool saved by `save_pool`."""
  with np.load(path) as z:
    flat = {k: z[k] for k in z.files}
  meta = {k[len('meta/'):]: v.item() if v.ndim == 0 else v.tolist()
          for k, v in flat.items() if k.startswith('meta/')}
  params = ckpt_lib.unflatten_tree(flat, 'params/')
  return jax.tree_util.tree_map(jnp.asarray, params), meta
