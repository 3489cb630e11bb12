"""Dataset distillation (Wang et al. 2018) by differentiating through unrolled SGD.

Learned (`learned` dict, a plain pytree):
  x:        (steps, n, H, W, C) synthetic images, normalised space; step s uses x[s]
  raw_lr:   (T,) one learning rate per inner step, lr = softplus(raw_lr); with
            distill.lr_per_layer, (T, P): one per inner step and parameter tensor
            (P = leaves of the param tree in jax.tree_util order)
  labels:   (steps, n, classes) label logits, only when labels are learned
            (targets = softmax(labels)); else targets are fixed one-hot.
  raw_momentum: () inner heavy-ball momentum, beta = sigmoid(raw_momentum), only with
            distill.learn_momentum; distill.momentum > 0 alone fixes beta (not learned).

Inner loop: T = steps * epochs SGD steps, step t trains on batch t % steps with lr[t]
(optionally with momentum: v = beta v + g, p -= lr[t] v), written as one `jax.lax.scan`.
Meta-loss: cross-entropy of the trained net on a real batch, averaged over `n_inits`
initialisations (vmap). Meta-gradient: `jax.grad` through the scan, optionally with
`jax.checkpoint` on the scan body (memory flat in T) and truncated to the last
`truncate` steps.

Devices: with distill.shard, `Distiller.outer_step` is one jit over a 'data' mesh of all
devices (awesome_jax/sharding.py): the real batch split over them, and the n_inits inits
too when the device count divides n_inits; the learned state replicated.

This module is the method and the distilled set's file format; the tasks that run it
(data, checkpoints, evaluation, outputs) are in `awesome_jax/tasks/distill.py`.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from awesome_jax import checkpoint as ckpt_lib
from awesome_jax.distilled_io import load_distilled  # noqa: F401  (the set's reader)
from awesome_jax import metrics as metrics_lib
from awesome_jax import models
from awesome_jax import sharding as sharding_lib
from awesome_jax import xla_options


class ConfigError(ValueError):
  """A config field has an impossible value."""


IMAGE_INITS = ('noise', 'real')
SELECTS = ('last', 'val')


# ------------------------------------------------------------------- the core


def soft_cross_entropy(logits, targets):
  """Mean over the batch of -sum(targets * log_softmax(logits)); targets (B, K)."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1))


def cross_entropy(logits, labels):
  return soft_cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1]))


def inverse_softplus(y):
  return float(np.log(np.expm1(y)))


def inner_sgd(apply_fn, params, xs, ys, lrs, remat=False, truncate=0, momentum=None):
  """Trains `params` by len(lrs) SGD steps; step t uses batch (xs[t % S], ys[t % S]).

  Args:
    apply_fn: (params, x) -> logits.
    params: pytree of the net's parameters.
    xs: (S, n, H, W, C) batches; ys: (S, n, K) target distributions.
    lrs: (T,) learning rate of each step, or (T, P): one per step and param leaf
      (leaves in jax.tree_util.tree_leaves order).
    remat: wrap the scan body in `jax.checkpoint` (recompute instead of store).
    truncate: if 0 < truncate < T, gradients flow only through the last `truncate`.
    momentum: None for plain SGD, else beta (a scalar, may be traced) of heavy-ball
      momentum as torch.optim.SGD: v = beta * v + g (v starts at 0), p -= lr * v.
  Returns:
    the trained params.
  """
  num_batches = xs.shape[0]

  def body(carry, inp):
    p, v = carry
    t, lr = inp
    i = t % num_batches
    g = jax.grad(lambda q: soft_cross_entropy(apply_fn(q, xs[i]), ys[i]))(p)
    if v is not None:
      v = jax.tree_util.tree_map(lambda a, b: momentum * a + b, v, g)
      g = v
    if lr.ndim == 0:
      return (jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), v), None
    leaves, treedef = jax.tree_util.tree_flatten(p)
    new = [a - lr[j] * b for j, (a, b) in enumerate(zip(leaves, jax.tree_util.tree_leaves(g)))]
    return (jax.tree_util.tree_unflatten(treedef, new), v), None

  if remat:
    body = jax.checkpoint(body)
  ts = jnp.arange(lrs.shape[0])
  total = lrs.shape[0]
  carry = (params, None if momentum is None else
           jax.tree_util.tree_map(jnp.zeros_like, params))
  if 0 < truncate < total:
    cut = total - truncate
    carry, _ = jax.lax.scan(body, carry, (ts[:cut], lrs[:cut]))
    carry = jax.lax.stop_gradient(carry)
    carry, _ = jax.lax.scan(body, carry, (ts[cut:], lrs[cut:]))
  else:
    carry, _ = jax.lax.scan(body, carry, (ts, lrs))
  return carry[0]


def momentum_of(learned, fixed):
  """The inner momentum: sigmoid of the learned raw value, else `fixed` (None if 0)."""
  if 'raw_momentum' in learned:
    return jax.nn.sigmoid(learned['raw_momentum'])
  return fixed if fixed else None


def targets_of(learned, fixed_labels, num_classes):
  """(S, n, K) target distributions: softmax of learned logits, or one-hot."""
  if 'labels' in learned:
    return jax.nn.softmax(learned['labels'], axis=-1)
  return jax.nn.one_hot(fixed_labels, num_classes)


def _chunks_of(real_x, real_y, chunk):
  """(xs, ys, ws): the batch as ceil(B / chunk) equal chunks of at most `chunk` images
  (zero images of weight 0 fill the last one), ws 1 for real images."""
  b = real_x.shape[0]
  n = -(-b // chunk)
  size = -(-b // n)  # as even as possible: the least padding
  pad = n * size - b
  ws = jnp.ones((b,), jnp.float32)
  if pad:
    real_x = jnp.pad(real_x, ((0, pad),) + ((0, 0),) * (real_x.ndim - 1))
    real_y = jnp.pad(real_y, (0, pad))
    ws = jnp.pad(ws, (0, pad))
  return (real_x.reshape((n, size) + real_x.shape[1:]), real_y.reshape(n, size),
          ws.reshape(n, size).astype(real_x.dtype))


def _chunk_sums(apply_fn, params, xc, yc, wc):
  """Summed weighted cross-entropy and number of correct images of one chunk."""
  logits = apply_fn(params, xc)
  nll = -jnp.sum(jax.nn.one_hot(yc, logits.shape[-1], dtype=logits.dtype)
                 * jax.nn.log_softmax(logits), axis=-1)
  return jnp.sum(wc * nll), jnp.sum(wc * (jnp.argmax(logits, -1) == yc))


def _real_loss_scan(apply_fn, params, real_x, real_y, chunk, with_grad):
  xs, ys, ws = _chunks_of(real_x, real_y, chunk)

  def body(carry, inp):
    if with_grad:
      (l, c), g = jax.value_and_grad(
          lambda q: _chunk_sums(apply_fn, q, *inp), has_aux=True)(params)
    else:
      (l, c), g = _chunk_sums(apply_fn, params, *inp), None
    return jax.tree_util.tree_map(jnp.add, carry, (l, c, g)), None

  zero = jnp.zeros((), ws.dtype)
  init = (zero, zero, jax.tree_util.tree_map(jnp.zeros_like, params) if with_grad else None)
  (l, c, g), _ = jax.lax.scan(body, init, (xs, ys, ws))
  b = real_x.shape[0]
  return (l / b, c / b), (None if g is None else jax.tree_util.tree_map(lambda a: a / b, g))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def _chunked_real_loss(apply_fn, params, real_x, real_y, chunk):
  return _real_loss_scan(apply_fn, params, real_x, real_y, chunk, False)[0]


def _chunked_real_loss_fwd(apply_fn, params, real_x, real_y, chunk):
  out, grads = _real_loss_scan(apply_fn, params, real_x, real_y, chunk, True)
  return out, grads


def _chunked_real_loss_bwd(apply_fn, chunk, grads, cotangents):
  ct_loss, _ = cotangents  # accuracy has no gradient
  return jax.tree_util.tree_map(lambda g: ct_loss * g, grads), None, None


_chunked_real_loss.defvjp(_chunked_real_loss_fwd, _chunked_real_loss_bwd)


def real_loss(apply_fn, params, real_x, real_y, chunk=0):
  """(cross-entropy, accuracy) of the net `params` on the real batch (int labels).

  chunk > 0 and < len(real_x): the batch goes through the net `chunk` images at a time
  (a lax.scan; uneven batches get a zero-weighted padded last chunk), and the gradient
  w.r.t. params is computed chunk by chunk in the same forward pass (a custom VJP that
  keeps only that gradient, not the activations of the whole batch). Same values and
  gradient as chunk=0 up to float rounding (sums in a different order); reverse mode
  w.r.t. params only: the real batch is data and gets no gradient. On the 2-core CPU,
  LeNet at batch 1024 (benchmarks/distill_speed.py --parts): chunks of 64-128 images ran
  the real-batch forward + backward in 0.84-0.86x the time of one whole-batch pass (each
  chunk's patch matrices, 5-10 MB instead of 80 MB, stay in cache) with 19-35 MB of
  temporaries instead of 254 MB. The float32 sums are shorter, too: the MNIST
  meta-gradient (n_inits 4, batch 1024) came out ~10x closer to its float64 value
  (relative L2 error of d/dx 1.8e-4 instead of 1.7e-3).
  """
  if not 0 < chunk < real_x.shape[0]:
    logits = apply_fn(params, real_x)
    return cross_entropy(logits, real_y), jnp.mean(jnp.argmax(logits, -1) == real_y)
  return _chunked_real_loss(apply_fn, params, jax.lax.stop_gradient(real_x), real_y, chunk)


def meta_loss(learned, params0, real_x, real_y, *, apply_fn, fixed_labels, num_classes,
              remat=False, truncate=0, momentum=0.0, real_chunk=0):
  """Mean real-batch loss (and accuracy) of nets trained from each of `params0`.

  params0 has a leading axis over initialisations; the nets are trained in a vmap.
  real_chunk: > 0 puts the real batch through each trained net that many images at a
  time (see `real_loss`); 0 = the whole batch at once.
  """
  lrs = jax.nn.softplus(learned['raw_lr'])
  ys = targets_of(learned, fixed_labels, num_classes)
  beta = momentum_of(learned, momentum)

  def one(p0):
    p = inner_sgd(apply_fn, p0, learned['x'], ys, lrs, remat=remat, truncate=truncate,
                  momentum=beta)
    return real_loss(apply_fn, p, real_x, real_y, real_chunk)

  if jax.tree_util.tree_leaves(params0)[0].shape[0] == 1:  # skip vmap's overhead
    return one(jax.tree_util.tree_map(lambda a: a[0], params0))
  losses, accs = jax.vmap(one)(params0)
  return jnp.mean(losses), jnp.mean(accs)


def step_labels(num_classes, per_class, steps):
  """(steps, num_classes * per_class) int labels: each step holds every class."""
  return np.tile(np.repeat(np.arange(num_classes), per_class), (steps, 1)).astype(np.int32)


# ---------------------------------------------------------------- the config


def check_config(config, data_shape=None, num_classes=None):
  """Raises ConfigError naming the field if the distillation config is impossible."""
  d, o, e = config.distill, config.outer, config.eval
  positive_ints = {
      'distill.images_per_class_per_step': d.images_per_class_per_step,
      'distill.steps': d.steps, 'distill.epochs': d.epochs,
      'distill.n_inits': d.n_inits, 'outer.batch_size': o.batch_size,
      'eval.num_inits': e.num_inits, 'checkpoint_every': config.checkpoint_every,
      'log_every': config.log_every,
  }
  for name, value in positive_ints.items():
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f'{name}={value!r}: must be an integer >= 1')
  if not isinstance(o.steps, int) or o.steps < 0:
    raise ConfigError(f'outer.steps={o.steps!r}: must be an integer >= 0')
  if not d.init_lr > 0:
    raise ConfigError(f'distill.init_lr={d.init_lr!r}: must be > 0')
  if not o.lr > 0:
    raise ConfigError(f'outer.lr={o.lr!r}: must be > 0')
  total = d.steps * d.epochs
  if not 0 <= d.truncate <= total:
    raise ConfigError(f'distill.truncate={d.truncate!r}: must be in [0, steps*epochs='
                      f'{total}] (0 = backprop through all steps)')
  if d.image_init not in IMAGE_INITS:
    raise ConfigError(f'distill.image_init={d.image_init!r}: unknown; allowed: '
                      f'{", ".join(IMAGE_INITS)}')
  if e.select not in SELECTS:
    raise ConfigError(f'eval.select={e.select!r}: unknown; allowed: {", ".join(SELECTS)}')
  if e.select == 'val' and not (isinstance(e.every, int) and e.every >= 1):
    raise ConfigError(f'eval.every={e.every!r}: eval.select=\'val\' picks among the '
                      'periodic evaluations; set eval.every >= 1')
  if e.select == 'val' and not (isinstance(e.val_size, int) and e.val_size >= 1):
    raise ConfigError(f'eval.val_size={e.val_size!r}: eval.select=\'val\' needs held-out '
                      'training images; set eval.val_size >= 1')
  if not (isinstance(d.momentum, (int, float)) and 0 <= d.momentum < 1):
    raise ConfigError(f'distill.momentum={d.momentum!r}: must be in [0, 1) (0 = plain SGD)')
  if d.learn_momentum and not 0 < d.momentum < 1:
    raise ConfigError(f'distill.momentum={d.momentum!r}: distill.learn_momentum=True '
                      'starts from it and needs 0 < momentum < 1 (e.g. 0.5)')
  if not d.random_init and d.n_inits != 1:
    raise ConfigError(f'distill.n_inits={d.n_inits}: fixed init (distill.random_init='
                      'False) trains exactly one init; set n_inits=1')
  if d.get('shard', False):
    check_sharding(config, jax.device_count())
  if config.model.name not in models.REGISTRY:  # the zoo's nets carry batch statistics
    raise ConfigError(f'model.name={config.model.name!r}: distillation trains '
                      f'{", ".join(models.REGISTRY)} (nets without batch norm)')
  if data_shape is not None:
    try:
      models.build(config.model.name, num_classes, data_shape, **config.model.kwargs)
    except models.ModelError as err:
      raise ConfigError(f'{err} (data.name={config.data.name!r})') from None


def check_sharding(config, num_devices):
  """Raises ConfigError if distill.shard=True cannot split the real batch over devices."""
  message = sharding_lib.indivisible('outer.batch_size', config.outer.batch_size,
                                     num_devices)
  if message:
    raise ConfigError(message)


# ------------------------------------------------------------------ training

# Distiller's real-batch chunk on CPU (images; `real_loss`): 64-128 were the fastest of
# 16-1024 for LeNet at batch 1024 on the 2-core CPU, 128 by ~5% in the real-batch pass
REAL_CHUNK = 128


def outer_step_compiler_options():
  """XLA options for the jitted outer step on CPU: {'xla_cpu_use_fusion_emitters': False}
  where this XLA knows the option, else None (and None off CPU).

  XLA:CPU's (default) MLIR fusion emitters held ~300 MB more at peak while compiling
  the LeNet outer step (peak RSS of benchmarks/distill_speed.py --headline-only: ~840-950
  vs ~530-590 MB; compiling the inner-loop meta-gradient alone: +183 vs +23 MB), and the
  program ran as fast without them (2-core CPU, 30 interleaved runs: the whole outer step
  1.01x; its real-batch part ~0.92x, its inner loop 1.09-1.12x). Same values up to float
  rounding.
  """
  return xla_options.cpu_only(xla_cpu_use_fusion_emitters=False)


class Distiller:
  """Everything about one distillation problem that does not change during a run."""

  def __init__(self, config, dataset):
    self.config = config
    d = config.distill
    self.data = dataset
    self.num_classes = dataset.num_classes
    self.model = models.build(config.model.name, dataset.num_classes, dataset.shape,
                              **config.model.kwargs)
    self.per_step = dataset.num_classes * d.images_per_class_per_step
    self.fixed_labels = jnp.asarray(
        step_labels(dataset.num_classes, d.images_per_class_per_step, d.steps))
    self.total_steps = d.steps * d.epochs
    o = config.outer
    schedule = optax.exponential_decay(o.lr, transition_steps=max(o.decay_every, 1),
                                       decay_rate=o.decay_factor, staircase=True)
    if o.decay_every <= 0:
      schedule = o.lr
    tx = optax.adam(schedule, b1=o.b1, b2=o.b2)
    if o.grad_clip > 0:
      tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
    self.tx = tx
    self.mesh = None  # set with distill.shard: the devices' 'data' mesh
    # the real batch through the trained nets REAL_CHUNK images at a time (`real_loss`) on
    # CPU, unsharded, for nets without XLA convolutions; whole (0) on accelerators, over a
    # mesh, and for nn.Conv nets (XLA:CPU ran them 2-50x slower inside the chunks' loop:
    # LeNet conv_impl='xla' 2x, ConvNet at batch 256 50x)
    self.real_chunk = (REAL_CHUNK if jax.default_backend() == 'cpu'
                       and not self._has_xla_convolution() else 0)
    self.outer_step = jax.jit(self._outer_step,
                              compiler_options=outer_step_compiler_options())
    if d.get('shard', False):
      self.mesh = sharding_lib.data_mesh()
      check_sharding(config, self.mesh.size)
      self.real_chunk = 0
      self.outer_step = self._sharded_outer_step()
    self._train_nets = jax.jit(jax.vmap(self._train_one,
                                        in_axes=(0, None, None, None, None)))
    # test-set forwards only: the same function, faster where a twin exists
    self._eval_model = models.inference_twin(self.model, dataset.shape)
    self._accuracy = jax.jit(self._accuracy_one)

  # -- pure functions
  def apply(self, params, x):
    return self.model.apply({'params': params}, x)

  def init_params(self, key):
    dummy = jnp.zeros((1,) + self.data.shape, jnp.float32)
    return self.model.init(key, dummy)['params']

  def _has_xla_convolution(self):
    """Whether the net's forward holds an XLA convolution (nn.Conv), not matmul convs."""
    params = jax.eval_shape(self.init_params, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1,) + tuple(self.data.shape), jnp.float32)
    return 'conv_general_dilated' in str(jax.make_jaxpr(self.apply)(params, x))

  def param_names(self):
    """'/'-joined paths of the param leaves, in the order of a (T, P) lr table."""
    shapes = jax.eval_shape(self.init_params, jax.random.key(0))
    return [ckpt_lib.path_name(path)
            for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]

  def init_state(self, key, x_train_norm, y_train):
    """The learned synthetic data, its optimiser state and (fixed init) the net init."""
    d = self.config.distill
    k_img, k_net = jax.random.split(key)
    shape = (d.steps, self.per_step) + self.data.shape
    if d.image_init == 'noise':
      x = jax.random.normal(k_img, shape, jnp.float32)
    else:  # 'real': random real images of each step's classes
      rng = np.random.default_rng(int(jax.random.randint(k_img, (), 0, 2**31 - 1)))
      labels = np.asarray(self.fixed_labels).reshape(-1)
      idx = [rng.choice(np.flatnonzero(y_train == c)) for c in labels]
      x = jnp.asarray(x_train_norm[np.asarray(idx)].reshape(shape))
    lr_shape = (self.total_steps,)
    if d.lr_per_layer:
      lr_shape += (len(self.param_names()),)
    learned = {'x': x,
               'raw_lr': jnp.full(lr_shape, inverse_softplus(d.init_lr), jnp.float32)}
    if d.learn_labels:
      learned['labels'] = d.label_init_scale * jax.nn.one_hot(self.fixed_labels,
                                                             self.num_classes)
    if d.learn_momentum:
      learned['raw_momentum'] = jnp.asarray(np.log(d.momentum / (1 - d.momentum)),
                                            jnp.float32)
    state = {'step': jnp.zeros((), jnp.int32), 'learned': learned,
             'opt': self.tx.init(learned)}
    if not d.random_init:
      state['init_params'] = jax.tree_util.tree_map(
          lambda a: a[None], self.init_params(k_net))
    return state

  def inits_for_step(self, state, key):
    d = self.config.distill
    if not d.random_init:
      return state['init_params']
    params0 = jax.vmap(self.init_params)(jax.random.split(key, d.n_inits))
    if self.mesh is not None and d.n_inits % self.mesh.size == 0:
      params0 = sharding_lib.constrain_leading(params0, self.mesh)  # inits split too
    return params0

  def loss_fn(self, learned, params0, real_x, real_y):
    d = self.config.distill
    return meta_loss(learned, params0, real_x, real_y, apply_fn=self.apply,
                     fixed_labels=self.fixed_labels, num_classes=self.num_classes,
                     remat=d.remat, truncate=d.truncate, momentum=d.momentum,
                     real_chunk=self.real_chunk)

  def _outer_step(self, state, real_x, real_y, key, params0=None):
    """One meta-gradient step. params0: the inits to train from (a leading axis over
    nets, e.g. pretrained nets sampled by the caller); None = the config's own inits."""
    if params0 is None:
      params0 = self.inits_for_step(state, key)
    (loss, acc), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
        state['learned'], params0, real_x, real_y)
    updates, opt = self.tx.update(grads, state['opt'], state['learned'])
    new = dict(state, step=state['step'] + 1, opt=opt,
               learned=optax.apply_updates(state['learned'], updates))
    metrics = {'meta_loss': loss, 'meta_acc': acc,
               'grad_norm': optax.global_norm(grads),
               'lr_mean': jnp.mean(jax.nn.softplus(state['learned']['raw_lr']))}
    if 'raw_momentum' in state['learned']:
      metrics['momentum'] = jax.nn.sigmoid(state['learned']['raw_momentum'])
    return new, metrics

  def _sharded_outer_step(self):
    """`_outer_step` jitted over the mesh: the real batch split along 'data', the
    learned state and key replicated; XLA reduces the loss and meta-gradient."""
    rep = sharding_lib.replicated(self.mesh)
    split = sharding_lib.split_leading(self.mesh)
    step = jax.jit(self._outer_step, in_shardings=(rep, split, split, rep),
                   out_shardings=(rep, rep))

    def outer_step(state, real_x, real_y, key):
      # the batch actually drawn (EpochBatches caps it at the training set's size)
      message = sharding_lib.indivisible('outer.batch_size', len(real_x), self.mesh.size)
      if message:
        raise ConfigError(message)
      # each process hands over its own rows of the batch; the key goes to jit as it is
      # (device_put cannot place a PRNG key on the devices of several processes)
      return step(jax.device_put(state, rep), sharding_lib.put_batch(real_x, self.mesh),
                  sharding_lib.put_batch(real_y, self.mesh), key)

    outer_step.jitted = step  # for tests: its compile cache
    return outer_step

  def _train_one(self, params0, xs, ys, lrs, momentum):
    return inner_sgd(self.apply, params0, xs, ys, lrs, momentum=momentum)

  def _accuracy_one(self, params, x, y):
    logits = self._eval_model.apply({'params': params}, x)
    return jnp.sum(jnp.argmax(logits, -1) == y)

  # -- evaluation
  def accuracy(self, params, x, y, batch_size=1000):
    """Accuracy of one net on (x, y), in batches."""
    return metrics_lib.accuracy_in_batches(
        lambda xb, yb: self._accuracy(params, xb, yb), x, y, batch_size)

  def train_and_test(self, params0, xs, ys, lrs, x_test, y_test, momentum=None):
    """Trains each of params0 (leading axis) on (xs, ys, lrs); test accuracy of each."""
    return self.train_and_test_sets(params0, xs, ys, lrs, [(x_test, y_test)],
                                    momentum)[0]

  def train_nets(self, params0, xs, ys, lrs, momentum=None):
    """Each of params0 (leading axis over nets) trained on (xs, ys, lrs), in one vmap.

    With distill.shard (one process) the nets are split over the mesh's devices: the
    leading axis padded with copies of the first net to a multiple of the device count,
    the copies dropped after. Each net's training is the same computation either way.
    """
    n = jax.tree_util.tree_leaves(params0)[0].shape[0]
    if self.mesh is None or n == 1 or jax.process_count() > 1:
      return self._train_nets(params0, xs, ys, lrs, momentum)
    pad = -n % self.mesh.size
    if pad:
      params0 = jax.tree_util.tree_map(
          lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]), params0)
    params0 = jax.device_put(params0, sharding_lib.split_leading(self.mesh))
    trained = self._train_nets(params0, xs, ys, lrs, momentum)
    return jax.tree_util.tree_map(lambda a: a[:n], trained)

  def train_and_test_sets(self, params0, xs, ys, lrs, sets, momentum=None):
    """Trains the nets once; [accuracy of each net on (x, y)] for each (x, y) in sets.

    momentum: None (plain SGD) or the inner momentum beta (see inner_sgd).
    """
    trained = self.train_nets(params0, xs, ys, lrs, momentum)
    n = jax.tree_util.tree_leaves(trained)[0].shape[0]
    nets = [jax.tree_util.tree_map(lambda a, i=i: a[i], trained) for i in range(n)]
    return [np.array([self.accuracy(p, x, y) for p in nets]) for x, y in sets]

  def eval_inits(self, state, num, seed):
    """Inits for evaluation: the fixed init, or `num` fresh ones from `seed`.

    Distillation draws its inits from config.seed; evaluation from eval.seed, a
    different random stream, so these inits were never seen in distillation.
    """
    if not self.config.distill.random_init:
      return state['init_params']
    return jax.vmap(self.init_params)(jax.random.split(jax.random.key(seed), num))




# ------------------------------------------------------- the distilled set

def save_distilled(path, distiller, state, extra=None):
  """Writes a self-describing .npz of the distilled set (loads with `load_distilled`)."""
  learned = state['learned']
  d = distiller.config.distill
  ys = np.asarray(targets_of(learned, distiller.fixed_labels, distiller.num_classes))
  x = np.asarray(learned['x'])
  payload = dict(
      images=distiller.data.denormalize(x),              # (S, n, H, W, C) pixels, ~[0,1], unclipped
      images_normalized=x,                               # what the net saw
      targets=ys,                                        # (S, n, K) target distributions
      hard_labels=np.asarray(distiller.fixed_labels),    # (S, n) class of each image
      label_encoding=np.array('soft:softmax(learned logits)' if d.learn_labels
                              else 'one-hot'),
      lrs=np.asarray(jax.nn.softplus(learned['raw_lr'])),  # (T,) or (T, P): lr of step t
      lr_params=np.array(distiller.param_names()),       # (P,) param of each lrs column
      step_order=np.arange(distiller.total_steps) % d.steps,  # batch used at step t
      mean=np.asarray(distiller.data.mean, np.float32),
      std=np.asarray(distiller.data.std, np.float32),
      normalization=np.array('x_normalized = (pixels - mean) / std'),
      dataset=np.array(distiller.data.name), model=np.array(distiller.config.model.name),
      model_kwargs=np.array(json.dumps(distiller.config.model.kwargs.to_dict())),
      loss=np.array('softmax cross-entropy against targets, mean over batch'),
  )
  beta = momentum_of(learned, d.momentum)
  if beta is not None:  # absent = plain SGD (sets written before momentum existed too)
    payload['momentum'] = np.asarray(beta, np.float32)
    payload['inner_optimizer'] = np.array('SGD with momentum: v = momentum * v + g, '
                                          'p -= lr * v, v starts at 0')
  if 'init_params' in state:  # a fixed-init set only works from its own init: store it
    payload.update(ckpt_lib.flatten_tree(
        jax.tree_util.tree_map(lambda a: a[0], state['init_params']), 'init/'))
  payload.update(extra or {})
  tmp = path + '.tmp.npz'
  np.savez(tmp, **payload)
  os.replace(tmp, path)


def split_val(n, val_size, seed):
  """(val_idx, rest_idx): the held-out split, the same one baselines tune their lr on."""
  perm = np.random.default_rng(seed).permutation(n)
  return perm[:val_size], perm[val_size:]



# ------------------------------------------------------- evaluating a saved set

SCHEDULES = ('distilled', 'minibatch')


def train_on_distilled(z, key, num_nets, schedule='distilled', lr=0.01, epochs=3,
                       batch_size=10):
  """Trains `num_nets` fresh nets on a loaded distilled set `z` (see load_distilled).

  schedule='distilled': its own step order and learned lrs (what it was made for);
  'minibatch': plain SGD with a fixed `lr`, `epochs` passes over the images shuffled
  into batches of `batch_size`, targets as stored (no momentum).
  Returns (model, trained params with a leading axis of num_nets).
  """
  if schedule not in SCHEDULES:
    raise ConfigError(f'eval.schedule={schedule!r}: unknown; allowed: {", ".join(SCHEDULES)}')
  xs, ys = jnp.asarray(z['images_normalized']), jnp.asarray(z['targets'])
  num_classes = ys.shape[-1]
  model = models.build(str(z['model']), num_classes, xs.shape[2:],
                       **json.loads(str(z['model_kwargs'])))
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  stored = stored_init(z)
  if stored is not None:  # a fixed-init set: every net starts from its stored init
    params0 = jax.tree_util.tree_map(
        lambda a: jnp.broadcast_to(a, (num_nets,) + a.shape), stored)
  else:
    # the same inits as Distiller.eval_inits for the same key: a saved set reproduces
    # its run's evaluation
    params0 = jax.vmap(lambda k: model.init(k, jnp.zeros_like(xs[0, :1]))['params'])(
        jax.random.split(key, num_nets))
  k_order = jax.random.fold_in(key, 1_000_003)
  momentum = None
  if schedule == 'distilled':
    lrs = jnp.asarray(z['lrs'])
    if 'momentum' in z:
      momentum = jnp.asarray(z['momentum'])
  else:
    flat_x = xs.reshape((-1,) + xs.shape[2:])
    flat_y = ys.reshape((-1, num_classes))
    n = flat_x.shape[0]
    per_epoch = max(n // batch_size, 1)
    order = jnp.concatenate([jax.random.permutation(jax.random.fold_in(k_order, e), n)
                             [:per_epoch * batch_size] for e in range(epochs)])
    xs = flat_x[order].reshape((epochs * per_epoch, batch_size) + flat_x.shape[1:])
    ys = flat_y[order].reshape((epochs * per_epoch, batch_size, num_classes))
    lrs = jnp.full((epochs * per_epoch,), lr, jnp.float32)
  train = jax.jit(jax.vmap(lambda p: inner_sgd(apply_fn, p, xs, ys, lrs,
                                               momentum=momentum)))
  return model, train(params0)


def stored_init(z):
  """The init params tree stored in a fixed-init set's npz ('init/<path>' keys), or None."""
  tree = ckpt_lib.unflatten_tree(z, 'init/')
  return None if tree is None else jax.tree_util.tree_map(jnp.asarray, tree)
