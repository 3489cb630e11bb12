"""Supervised training of any Flax classifier: edge-popup supermasks and dense baselines.

State is a plain dict: step, params (what the optimizer trains: scores for masked
layers, weights for dense ones), opt, and when the model has them 'frozen' (the random
weights of masked layers, never updated) and 'batch_stats'. One jit-compiled
`train_step(state, x, y, key) -> (state, metrics)`.
"""

import contextlib

import jax
import jax.numpy as jnp
import optax

from awesome_jax import metrics as metrics_lib


class TrainConfigError(ValueError):
  """A training config field has an impossible value."""


OPTIMIZERS = ('sgd', 'adam')


def check_train_config(t):
  if t.optimizer not in OPTIMIZERS:
    raise TrainConfigError(f'train.optimizer={t.optimizer!r}: unknown; allowed: '
                           f'{", ".join(OPTIMIZERS)}')
  for name in ('lr', 'batch_size', 'epochs'):
    if not t[name] > 0:
      raise TrainConfigError(f'train.{name}={t[name]!r}: must be > 0')
  if t.weight_decay < 0:
    raise TrainConfigError(f'train.weight_decay={t.weight_decay!r}: must be >= 0')


def make_optimizer(t, total_steps):
  """SGD (momentum) or Adam with cosine lr decay to 0 over `total_steps`; weight decay
  added to the gradient before momentum (as torch.optim.SGD does)."""
  schedule = optax.cosine_decay_schedule(t.lr, max(total_steps, 1))
  opt = (optax.sgd(schedule, momentum=t.momentum or None) if t.optimizer == 'sgd'
         else optax.adam(schedule))
  return optax.chain(optax.add_decayed_weights(t.weight_decay), opt)


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


def cross_entropy(logits, labels):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1))


class Trainer:
  """Trains `model` (a Flax module taking (x, train)) with config section `t`."""

  def __init__(self, model, t, input_shape, total_steps):
    self.model, self.t, self.input_shape = model, t, tuple(input_shape)
    self.tx = make_optimizer(t, total_steps)
    self.train_step = jax.jit(self._train_step)
    self._correct = jax.jit(self._correct_fn)

  def init_state(self, key):
    init = jax.jit(lambda k: self.model.init({'params': k}, jnp.zeros((1,) + self.input_shape),
                                             train=False))
    # XLA:CPU takes ~2.5 s to compile each partitionable-threefry draw (jax 0.10): a
    # ResNet init (2 draws per layer) would compile for minutes. The classic threefry
    # stream compiles 7x faster; it is a different (equally good) random stream.
    stream = (jax.threefry_partitionable(False)
              if getattr(self.model, 'fast_rng_compile', False) else contextlib.nullcontext())
    with stream:
      variables = init(key)
    state = {'step': jnp.zeros((), jnp.int32), 'params': variables['params'],
             'opt': self.tx.init(variables['params'])}
    for extra in ('frozen', 'batch_stats'):
      if extra in variables:
        state[extra] = variables[extra]
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

    def loss_fn(params):
      v = self.variables(state, params)
      if 'batch_stats' in state:
        logits, updates = self.model.apply(v, x, train=True, mutable=['batch_stats'])
      else:
        logits, updates = self.model.apply(v, x, train=True), {}
      return cross_entropy(logits, y), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'])
    upd, opt = self.tx.update(grads, state['opt'], state['params'])
    new = dict(state, step=state['step'] + 1, opt=opt,
               params=optax.apply_updates(state['params'], upd))
    if 'batch_stats' in updates:
      new['batch_stats'] = updates['batch_stats']
    metrics = {'loss': loss, 'acc': jnp.mean(jnp.argmax(logits, -1) == y)}
    return new, metrics

  def _correct_fn(self, variables, x, y):
    return jnp.sum(jnp.argmax(self.model.apply(variables, x, train=False), -1) == y)

  def accuracy(self, variables, x, y, batch_size=500):
    return metrics_lib.accuracy_in_batches(
        lambda xb, yb: self._correct(variables, xb, yb), x, y, batch_size)
