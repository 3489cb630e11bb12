"""Supervised training of any Flax classifier: edge-popup supermasks, dense baselines, the
CIFAR ResNets and ViTs of the classify task.

State is a plain dict: step, params (what the optimizer trains: scores for masked
layers, weights for dense ones), opt, and when the model has them 'frozen' (the random
weights of masked layers, never updated) and 'batch_stats'. One jit-compiled
`train_step(state, x, y, key) -> (state, metrics)`.

Devices: with train.shard=True the same step is one jit over a 'data' mesh of all devices
(awesome_jax/sharding.py): the batch split over them, the state replicated. XLA then sums
the gradient and the batch-norm statistics over the devices, so a step computes what it
computes on one device for the whole (global) batch, up to float32 summation order.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from awesome_jax import metrics as metrics_lib
from awesome_jax import sharding as sharding_lib


class TrainConfigError(ValueError):
  """A training config field has an impossible value."""


OPTIMIZERS = ('sgd', 'adam', 'adamw')


def option(t, name, default):
  """Field `name` of the train config `t`, or `default` where it has none: label_smoothing,
  grad_clip, decay_1d_params and shard are optional; configs without them train as before."""
  return t[name] if name in t else default


def check_train_config(t):
  if t.optimizer not in OPTIMIZERS:
    raise TrainConfigError(f'train.optimizer={t.optimizer!r}: unknown; allowed: '
                           f'{", ".join(OPTIMIZERS)}')
  for name in ('lr', 'batch_size', 'epochs'):
    if not t[name] > 0:
      raise TrainConfigError(f'train.{name}={t[name]!r}: must be > 0')
  if t.weight_decay < 0:
    raise TrainConfigError(f'train.weight_decay={t.weight_decay!r}: must be >= 0')
  smoothing = option(t, 'label_smoothing', 0.0)
  if not 0 <= smoothing < 1:
    raise TrainConfigError(f'train.label_smoothing={smoothing!r}: must be in [0, 1)')
  clip = option(t, 'grad_clip', 0.0)
  if clip < 0:
    raise TrainConfigError(f'train.grad_clip={clip!r}: must be >= 0 (0 = no clipping)')
  if option(t, 'shard', False):
    check_sharding(t.batch_size, jax.device_count())


def check_sharding(batch_size, num_devices):
  """Raises TrainConfigError if train.shard=True cannot split the batch over the devices."""
  message = sharding_lib.indivisible('train.batch_size', batch_size, num_devices,
                                     'train.shard')
  if message:
    raise TrainConfigError(message)


def make_schedule(lr, total_steps, warmup_steps=0):
  """Cosine decay from `lr` to 0 over `total_steps`; with `warmup_steps`, a linear ramp
  from 0 first (the cosine then spans the remaining steps)."""
  if not warmup_steps:
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps,
                                            max(total_steps, warmup_steps + 1))


def decay_mask(params):
  """True for the weight matrices and kernels, False for biases and norm scales (1-D)."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(t, total_steps, warmup_steps=0):
  """SGD (momentum) or Adam with weight decay added to the gradient before momentum (as
  torch.optim.SGD does), or AdamW (decoupled decay; train.decay_1d_params=False spares
  biases and norm scales); cosine lr decay to 0 over `total_steps` after `warmup_steps`
  of linear warm-up; train.grad_clip > 0 clips the gradient's global norm first."""
  schedule = make_schedule(t.lr, total_steps, warmup_steps)
  if t.optimizer == 'adamw':
    mask = None if option(t, 'decay_1d_params', True) else decay_mask
    tx = optax.adamw(schedule, weight_decay=t.weight_decay, mask=mask)
  else:
    opt = (optax.sgd(schedule, momentum=t.momentum or None) if t.optimizer == 'sgd'
           else optax.adam(schedule))
    tx = optax.chain(optax.add_decayed_weights(t.weight_decay), opt)
  clip = option(t, 'grad_clip', 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx


def augment(key, x, pad=4):
  """Random crop with `pad` zero padding, and random horizontal flip, per image."""
  k_crop, k_flip = jax.random.split(key)
  n, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)
  crop = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))
  x = crop(padded, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (n,))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)


def cross_entropy(logits, labels, label_smoothing=0.0):
  """Mean cross-entropy with integer labels; `label_smoothing` s puts 1 - s on the label
  and s spread evenly over all classes."""
  logp = jax.nn.log_softmax(logits)
  if not label_smoothing:
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], -1))
  nll = -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0]
  return jnp.mean((1 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, -1))


def uses_dropout(model):
  """Whether `model` (a Flax module) has a dropout rate > 0, so needs a 'dropout' rng."""
  return any(getattr(model, f, 0) for f in ('dropout_rate', 'attention_dropout_rate'))


class Trainer:
  """Trains `model` (a Flax module taking (x, train)) with config section `t`.

  `warmup_steps`: linear lr warm-up before the cosine decay. `extra_augment(key, x) -> x`:
  applied to each training batch after the crop + flip of `t.augment` (None: nothing).
  `t.shard` (optional, default False): data-parallel over all devices (module docstring).
  `compiler_options`: XLA options of the jitted training and evaluation steps (e.g.
  `xla_options.no_ynn()`; None: XLA's defaults).
  """

  def __init__(self, model, t, input_shape, total_steps, warmup_steps=0, extra_augment=None,
               compiler_options=None):
    self.model, self.t, self.input_shape = model, t, tuple(input_shape)
    self.compiler_options = compiler_options
    self.lr_schedule = make_schedule(t.lr, total_steps, warmup_steps)
    self.tx = make_optimizer(t, total_steps, warmup_steps)
    self.extra_augment = extra_augment
    self.label_smoothing = option(t, 'label_smoothing', 0.0)
    self.dropout = uses_dropout(model)
    self.mesh = None  # set with train.shard: the devices' 'data' mesh
    self.train_step = jax.jit(self._train_step, compiler_options=compiler_options)
    self._correct = jax.jit(self._correct_fn, compiler_options=compiler_options)
    if option(t, 'shard', False):
      self.mesh = sharding_lib.data_mesh()
      check_sharding(t.batch_size, self.mesh.size)
      self.train_step = self._sharded_train_step()
      self._correct = self._sharded_correct()
    elif jax.process_count() > 1:
      raise TrainConfigError(f'train.shard=False with {jax.process_count()} processes: each '
                             'would train its own copy; set train.shard=True')

  def init_state(self, key, fast_rng_compile=None):
    """The initial state; `fast_rng_compile` (default: the model's attribute of that
    name) draws the init with the classic threefry stream (see below)."""
    init = jax.jit(lambda k: self.model.init({'params': k}, jnp.zeros((1,) + self.input_shape),
                                             train=False))
    # XLA:CPU takes ~2.5 s to compile each partitionable-threefry draw (jax 0.10): a
    # ResNet init (2 draws per layer) would compile for minutes. The classic threefry
    # stream compiles 7x faster; it is a different (equally good) random stream.
    if fast_rng_compile is None:
      fast_rng_compile = getattr(self.model, 'fast_rng_compile', False)
    stream = (jax.threefry_partitionable(False) if fast_rng_compile
              else contextlib.nullcontext())
    with stream:
      variables = init(key)
    state = {'step': jnp.zeros((), jnp.int32), 'params': variables['params'],
             'opt': self.tx.init(variables['params'])}
    for extra in ('frozen', 'batch_stats'):
      if extra in variables:
        state[extra] = variables[extra]
    if self.mesh is not None:  # a copy on every device (of every process)
      state = jax.device_put(state, sharding_lib.replicated(self.mesh))
    return state

  @staticmethod
  def variables(state, params=None):
    v = {'params': state['params'] if params is None else params}
    for extra in ('frozen', 'batch_stats'):
      if extra in state:
        v[extra] = state[extra]
    return v

  def _train_step(self, state, x, y, key):
    if self.t.augment:
      x = augment(key, x)
    if self.extra_augment is not None:
      x = self.extra_augment(jax.random.fold_in(key, 2), x)
    rngs = {'dropout': jax.random.fold_in(key, 1)} if self.dropout else {}

    def loss_fn(params):
      v = self.variables(state, params)
      if 'batch_stats' in state:
        logits, updates = self.model.apply(v, x, train=True, mutable=['batch_stats'],
                                           rngs=rngs)
      else:
        logits, updates = self.model.apply(v, x, train=True, rngs=rngs), {}
      return cross_entropy(logits, y, self.label_smoothing), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'])
    upd, opt = self.tx.update(grads, state['opt'], state['params'])
    new = dict(state, step=state['step'] + 1, opt=opt,
               params=optax.apply_updates(state['params'], upd))
    if 'batch_stats' in updates:
      new['batch_stats'] = updates['batch_stats']
    metrics = {'loss': loss, 'acc': jnp.mean(jnp.argmax(logits, -1) == y)}
    return new, metrics

  def _sharded_train_step(self):
    """`_train_step` jitted over the mesh: the batch split along 'data', the state and
    key replicated (and so is the new state)."""
    rep = sharding_lib.replicated(self.mesh)
    split = sharding_lib.split_leading(self.mesh)
    step = jax.jit(self._train_step, in_shardings=(rep, split, split, rep),
                   out_shardings=(rep, rep), compiler_options=self.compiler_options)

    def train_step(state, x, y, key):
      check_sharding(len(x), self.mesh.size)  # the batch drawn (capped at the set's size)
      return step(state, sharding_lib.put_batch(x, self.mesh),
                  sharding_lib.put_batch(y, self.mesh), key)

    train_step.jitted = step  # for tests: its compile cache
    return train_step

  def _correct_fn(self, variables, x, y):
    return jnp.sum(jnp.argmax(self.model.apply(variables, x, train=False), -1) == y)

  def _sharded_correct(self):
    """`_correct_fn` over the mesh; a batch that does not divide over the devices is
    padded with rows of label -1, which never count as correct."""
    rep = sharding_lib.replicated(self.mesh)
    split = sharding_lib.split_leading(self.mesh)
    correct = jax.jit(self._correct_fn, in_shardings=(rep, split, split), out_shardings=rep,
                      compiler_options=self.compiler_options)

    def count(variables, x, y):
      x, y = np.asarray(x), np.asarray(y, np.int32)
      pad = -len(x) % self.mesh.size
      if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.full(pad, -1, np.int32)])
      return correct(variables, sharding_lib.put_batch(x, self.mesh),
                     sharding_lib.put_batch(y, self.mesh))

    return count

  def accuracy(self, variables, x, y, batch_size=500):
    if self.mesh is not None:  # a multiple of the device count
      batch_size = -(-batch_size // self.mesh.size) * self.mesh.size
    return metrics_lib.accuracy_in_batches(
        lambda xb, yb: self._correct(variables, xb, yb), x, y, batch_size)
