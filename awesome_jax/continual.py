"""Continual learning with distilled images as the memory of past tasks.

A stream of tasks, one net trained on each in turn, and a small memory of the tasks
already seen that is replayed while the next ones are learnt.

Streams (`make_stream`):
  split     task k holds the classes [k*c, (k+1)*c) of the dataset (split MNIST: 5 tasks
            of 2 classes). One shared head over all the dataset's classes and no task id
            at test time (class-incremental: a test image of task 0 must be told from all
            10 classes, not only from 0 and 1).
  permuted  every task holds all classes, under its own fixed random permutation of the
            pixels (the same for every channel; task 0 the identity with
            `identity_first`). The permutations are drawn from the stream's seed.

Learner (`Learner`): plain minibatch SGD (optionally heavy-ball momentum) or Adam on the
current task's training data, `epochs` passes; the optimiser state starts afresh at each
task. With a memory, each real minibatch is concatenated with a minibatch drawn uniformly,
with replacement, from the memory of all past tasks (experience replay), and the loss is
the mean cross-entropy over both against target distributions (one-hot for real images
and exemplars, the learnt soft labels for distilled images when labels are learnt).

Memory of a task, M images (`memory.per_task`), built after the task is learnt:
  none       nothing is kept (the forgetting baseline).
  random     M real training images of the task, balanced over its classes.
  distilled  M synthetic images learnt by dataset distillation (Wang et al. 2018): the
             images, one lr per inner step and optionally soft labels are trained (Adam,
             `MemoryDistiller`) so that `steps * epochs` SGD steps on them take freshly
             initialised nets to a low loss on the task's real data
             (`awesome_jax.distill.meta_loss`, with the task's class ids as the fixed
             labels and the stream's full head). Only the images and their targets are
             replayed; the learnt lrs served the distillation and are kept in the npz.
The last task's memory is never replayed, so it is not built.

Metrics (`accuracy_matrix` rows come from evaluating after each task):
  R[i, j]        test accuracy on task j after training through task i (all j, so
                 R[i, j > i] shows what an unseen task scores).
  average accuracy     mean_j R[T-1, j]; after each task i: mean_{j<=i} R[i, j].
  forgetting of task j  max_{j <= l < T-1} R[l, j] - R[T-1, j], for j < T-1
                 (Chaudhry et al. 2018): how far it fell from its best.
  backward transfer    mean_{j<T-1} (R[T-1, j] - R[j, j]) (Lopez-Paz & Ranzato 2017).

This module is the method; the task that runs it (data, checkpoints and resume, outputs)
is `awesome_jax/tasks/continual.py`.
"""

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from awesome_jax import distill as distill_lib

ConfigError = distill_lib.ConfigError

STREAMS = ('split', 'permuted')
MEMORY_KINDS = ('none', 'random', 'distilled')
OPTIMIZERS = ('sgd', 'adam')


def seed_of(*parts):
  """One int seed from a seed and indices (numpy's SeedSequence): independent streams."""
  return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# ------------------------------------------------------------------- streams


def permute(x, perm):
  """NHWC images with their pixels reordered by `perm` ((H*W,) indices), or x if None."""
  if perm is None:
    return x
  n, h, w, c = x.shape
  return x.reshape(n, h * w, c)[:, perm].reshape(n, h, w, c)


def unpermute(x, perm):
  """The inverse of `permute`: the images back in the dataset's pixel order."""
  return x if perm is None else permute(x, np.argsort(perm))


@dataclasses.dataclass
class Task:
  """One task of a stream: normalised images and int labels of its classes.

  A permuted task keeps the dataset's own arrays and its permutation `perm`, applied when
  a split is asked for (permuted MNIST is then not held in memory once per task).
  """
  index: int
  classes: tuple
  train_xy: tuple
  test_xy: tuple
  perm: Optional[np.ndarray] = None

  def train_set(self):
    return permute(self.train_xy[0], self.perm), self.train_xy[1]

  def test_set(self):
    return permute(self.test_xy[0], self.perm), self.test_xy[1]


def split_classes(num_tasks, classes_per_task):
  """[(0, 1), (2, 3), ...]: the classes of each task of a split stream."""
  return [tuple(range(k * classes_per_task, (k + 1) * classes_per_task))
          for k in range(num_tasks)]


def pixel_permutations(num_pixels, num_tasks, seed, identity_first=True):
  """num_tasks (num_pixels,) permutations drawn from `seed`; the first the identity."""
  rng = np.random.default_rng(seed_of(seed, 1))
  perms = [rng.permutation(num_pixels) for _ in range(num_tasks)]
  if identity_first:
    perms[0] = np.arange(num_pixels)
  return perms


def make_stream(x_train, y_train, x_test, y_test, num_classes, name, num_tasks,
                classes_per_task=2, train_per_task=0, seed=0, identity_first=True):
  """The tasks of stream `name` ('split' or 'permuted') of a dataset (normalised x).

  train_per_task > 0 keeps that many random training images of each task (a CPU budget);
  the test sets are whole.
  """
  if name not in STREAMS:
    raise ConfigError(f'stream.name={name!r}: unknown; allowed: {", ".join(STREAMS)}')
  tasks = []
  if name == 'split':
    for k, classes in enumerate(split_classes(num_tasks, classes_per_task)):
      tr, te = np.isin(y_train, classes), np.isin(y_test, classes)
      tasks.append(Task(k, classes, (x_train[tr], y_train[tr]), (x_test[te], y_test[te])))
  else:
    h, w = x_train.shape[1:3]
    perms = pixel_permutations(h * w, num_tasks, seed, identity_first)
    for k, perm in enumerate(perms):
      tasks.append(Task(k, tuple(range(num_classes)), (x_train, y_train), (x_test, y_test),
                        None if identity_first and k == 0 else perm))
  if train_per_task:
    for t in tasks:
      x, y = t.train_xy
      if len(x) > train_per_task:
        keep = np.sort(np.random.default_rng(seed_of(seed, 2, t.index)).choice(
            len(x), train_per_task, replace=False))
        t.train_xy = (x[keep], y[keep])
  return tasks


# -------------------------------------------------------------------- memory


def balanced_labels(classes, n):
  """(n,) int labels as even over `classes` as n allows, grouped by class in order."""
  classes = np.asarray(classes, np.int32)
  return classes[np.arange(n) * len(classes) // n]


def distilled_labels(classes, per_task, steps):
  """(steps, per_task / steps) int class ids of a distilled memory: each inner batch
  balanced over the task's classes."""
  return balanced_labels(classes, per_task // steps)[None].repeat(steps, 0)


def random_exemplars(x, y, classes, per_task, rng):
  """(images, labels): `per_task` real images of (x, y), balanced over `classes`."""
  labels = balanced_labels(classes, per_task)
  idx = []
  for c in classes:
    pool = np.flatnonzero(y == c)
    count = int(np.sum(labels == c))
    idx.extend(rng.choice(pool, count, replace=count > len(pool)))
  idx = np.asarray(idx)
  return x[idx], y[idx]


def empty_memory(capacity, shape, num_classes):
  """{'x': (capacity, H, W, C), 'y': (capacity, K) targets}: room for every task's slot."""
  return {'x': np.zeros((capacity,) + tuple(shape), np.float32),
          'y': np.zeros((capacity, num_classes), np.float32)}


def write_slot(memory, k, x, targets):
  """The memory with task k's M images and (M, K) targets in slot k (rows k*M...)."""
  m = len(x)
  out = {name: np.array(a) for name, a in memory.items()}
  out['x'][k * m:(k + 1) * m] = x
  out['y'][k * m:(k + 1) * m] = targets
  return out


def replay_batch(memory, count, size, rng):
  """`size` (images, targets) drawn uniformly with replacement from the first `count`."""
  idx = rng.integers(0, count, size)
  return memory['x'][idx], memory['y'][idx]


class MemoryDistiller:
  """Distils one task at a time into M images: `awesome_jax.distill.meta_loss` in an own
  Adam loop.

  The M images form `d.steps` inner batches of M / d.steps, each balanced over the
  task's classes; their fixed labels (`fixed_labels`) are the true class ids, so targets
  live on the stream's whole head. The labels are an argument, not a constant, so that
  one compiled outer step serves every task of a stream. Learned state, as in
  `awesome_jax.distill`: x (steps, n, H, W, C), raw_lr (steps*epochs,), and labels
  (steps, n, K) logits when `d.learn_labels`.
  """

  def __init__(self, apply_fn, init_fn, shape, num_classes, d):
    self.apply_fn, self.init_fn, self.shape, self.d = apply_fn, init_fn, tuple(shape), d
    self.num_classes = num_classes
    self.tx = optax.adam(d.lr, b1=0.5, b2=0.999)  # as the distillation task's outer loop
    self.outer_step = jax.jit(self._outer_step)
    self._train_fresh = jax.jit(self._train_fresh_fn)

  def fixed_labels(self, classes, per_task):
    return jnp.asarray(distilled_labels(classes, per_task, self.d.steps))

  def init_state(self, key, fixed_labels, x_train, y_train):
    """{'step', 'learned', 'opt'}: images from noise or random real images (image_init)."""
    d = self.d
    labels = np.asarray(fixed_labels)
    if d.image_init == 'noise':
      x = jax.random.normal(key, labels.shape + self.shape, jnp.float32)
    else:  # 'real': a random real image of each image's class
      rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
      idx = [rng.choice(np.flatnonzero(y_train == c)) for c in labels.reshape(-1)]
      x = jnp.asarray(x_train[np.asarray(idx)].reshape(labels.shape + self.shape))
    learned = {'x': x, 'raw_lr': jnp.full((d.steps * d.epochs,),
                                          distill_lib.inverse_softplus(d.init_lr),
                                          jnp.float32)}
    if d.learn_labels:
      learned['labels'] = d.label_init_scale * jax.nn.one_hot(fixed_labels,
                                                             self.num_classes)
    return {'step': jnp.zeros((), jnp.int32), 'learned': learned,
            'opt': self.tx.init(learned)}

  def _outer_step(self, state, fixed_labels, real_x, real_y, key):
    params0 = jax.vmap(self.init_fn)(jax.random.split(key, self.d.n_inits))
    loss_fn = functools.partial(distill_lib.meta_loss, apply_fn=self.apply_fn,
                                fixed_labels=fixed_labels, num_classes=self.num_classes)
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['learned'], params0, real_x, real_y)
    updates, opt = self.tx.update(grads, state['opt'], state['learned'])
    new = {'step': state['step'] + 1, 'opt': opt,
           'learned': optax.apply_updates(state['learned'], updates)}
    return new, {'meta_loss': loss, 'meta_acc': acc, 'grad_norm': optax.global_norm(grads)}

  def memory(self, state, fixed_labels):
    """(images (M, H, W, C), targets (M, K), lrs (T,)) of the learned set."""
    learned = state['learned']
    targets = distill_lib.targets_of(learned, fixed_labels, self.num_classes)
    return (np.asarray(learned['x']).reshape((-1,) + self.shape),
            np.asarray(targets).reshape(-1, self.num_classes),
            np.asarray(jax.nn.softplus(learned['raw_lr'])))

  def _train_fresh_fn(self, learned, fixed_labels, keys):
    ys = distill_lib.targets_of(learned, fixed_labels, self.num_classes)
    lrs = jax.nn.softplus(learned['raw_lr'])
    return jax.vmap(lambda k: distill_lib.inner_sgd(self.apply_fn, self.init_fn(k),
                                                    learned['x'], ys, lrs))(keys)

  def train_fresh(self, state, fixed_labels, key, num_nets):
    """`num_nets` fresh nets (params with a leading axis) trained on the learned set by
    its own schedule: what the distillation optimised, a check that it worked."""
    return self._train_fresh(state['learned'], fixed_labels,
                             jax.random.split(key, num_nets))


# ------------------------------------------------------------------- learner


def make_optimizer(t):
  """SGD (heavy-ball momentum if t.momentum > 0) or Adam, constant lr `t.lr`."""
  if t.optimizer == 'sgd':
    return optax.sgd(t.lr, momentum=t.momentum or None)
  if t.optimizer == 'adam':
    return optax.adam(t.lr)
  raise ConfigError(f'train.optimizer={t.optimizer!r}: unknown; allowed: '
                    f'{", ".join(OPTIMIZERS)}')


class Learner:
  """One net of a params pytree, trained task after task; jitted step and accuracy."""

  def __init__(self, model, shape, train_config, num_classes):
    self.model, self.shape, self.t = model, tuple(shape), train_config
    self.num_classes = num_classes
    self.tx = make_optimizer(train_config)
    self.step = jax.jit(self._step)
    self._correct = jax.jit(self._correct_count)

  def apply(self, params, x):
    return self.model.apply({'params': params}, x)

  def init_params(self, key):
    return self.model.init(key, jnp.zeros((1,) + self.shape, jnp.float32))['params']

  def _step(self, params, opt, x, targets):
    loss, grads = jax.value_and_grad(
        lambda p: distill_lib.soft_cross_entropy(self.apply(p, x), targets))(params)
    updates, opt = self.tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  def _correct_count(self, params, x, y):
    return jnp.sum(jnp.argmax(self.apply(params, x), -1) == y)

  def accuracy(self, params, x, y, batch_size=1000):
    """Fraction of (x, y) classified right over the whole head; the last batch is
    padded (label -1 never matches) so that one compiled shape serves every set."""
    hits = 0
    for i in range(0, len(x), batch_size):
      xb, yb = x[i:i + batch_size], y[i:i + batch_size]
      pad = batch_size - len(xb)
      if pad:
        xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
        yb = np.concatenate([yb, np.full((pad,), -1, yb.dtype)])
      hits += int(self._correct(params, xb, yb))
    return hits / len(x)

  def batches(self, n, rng):
    """Index batches of one epoch: a permutation cut into full batches (the remainder
    is dropped; a set smaller than a batch is one batch)."""
    size = min(self.t.batch_size, n)
    perm = rng.permutation(n)
    return [perm[i * size:(i + 1) * size] for i in range(n // size)]

  def steps_per_task(self, n):
    """Training steps on a task of n images."""
    return self.t.epochs * (n // min(self.t.batch_size, n))

  def train_task(self, params, x, y, memory=None, count=0, seed=0, progress=None):
    """`t.epochs` epochs on (x, y), each batch joined by a replay batch of the first
    `count` memory rows if count > 0. Returns (params, mean loss of the last epoch)."""
    rng = np.random.default_rng(seed)
    opt = self.tx.init(params)
    onehot = np.eye(self.num_classes, dtype=np.float32)
    losses = []
    for _ in range(self.t.epochs):
      losses = []
      for idx in self.batches(len(x), rng):
        xb, yb = x[idx], onehot[y[idx]]
        if count:
          mx, my = replay_batch(memory, count, self.t.replay_batch_size, rng)
          xb, yb = np.concatenate([xb, mx]), np.concatenate([yb, my])
        params, opt, loss = self.step(params, opt, xb, yb)
        losses.append(loss)
        if progress is not None:
          progress.update(1)
    return params, float(np.mean(jax.device_get(losses)))


# ------------------------------------------------------------------- metrics


def average_accuracy(acc):
  """mean_j R[T-1, j]: the accuracy over all tasks after the last one."""
  return float(np.mean(np.asarray(acc)[-1]))


def seen_average(acc):
  """[mean_{j<=i} R[i, j] for each i]: average accuracy over the tasks seen so far."""
  acc = np.asarray(acc)
  return [float(np.mean(acc[i, :i + 1])) for i in range(len(acc))]


def forgetting(acc):
  """(T-1,) forgetting of each task but the last: max_{j<=l<T-1} R[l, j] - R[T-1, j]."""
  acc = np.asarray(acc)
  last = len(acc) - 1
  return np.array([acc[j:last, j].max() - acc[last, j] for j in range(last)])


def backward_transfer(acc):
  """mean_{j<T-1} (R[T-1, j] - R[j, j]); negative = forgotten. 0 for one task."""
  acc = np.asarray(acc)
  last = len(acc) - 1
  if last == 0:
    return 0.0
  return float(np.mean([acc[last, j] - acc[j, j] for j in range(last)]))


def summary(acc):
  """The stream's numbers of an accuracy matrix R (T, T), as plain Python values."""
  acc = np.asarray(acc)
  f = forgetting(acc)
  return {'accuracy_matrix': acc.tolist(),
          'average_accuracy': average_accuracy(acc),
          'average_accuracy_seen': seen_average(acc),
          'forgetting': f.tolist(),
          'mean_forgetting': float(f.mean()) if len(f) else 0.0,
          'backward_transfer': backward_transfer(acc)}
