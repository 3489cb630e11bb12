"""edge-popup (Ramanujan et al. 2020): subnetworks of randomly weighted networks.

Each masked layer holds frozen random weights (Flax collection 'frozen': never in the
optimizer state, never changed) and a learned score per weight ('params'). The forward
pass uses the weights whose |score| is among the top `keep_fraction` of the layer
(exactly round(keep_fraction * n) of them); the backward pass sends the gradient straight
through the top-k to the scores: d loss / d score = sign(score) * w * d loss / d w_eff,
as in the authors' code, which ranks |score| and differentiates through the abs.

`keep_fraction` is the fraction of weights KEPT (used), in (0, 1]; the original code's
`prune_rate` meant kept in one layer type and removed in another.
"""

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax.models.small import conv_fast

WEIGHT_INITS = ('kaiming_normal', 'signed_constant', 'scaled_signed_constant')


class SupermaskConfigError(ValueError):
  """keep_fraction outside (0, 1] or an unknown weight init."""


def check_keep_fraction(keep_fraction, field='model.keep_fraction'):
  if not 0 < keep_fraction <= 1:
    raise SupermaskConfigError(f'{field}={keep_fraction!r}: must be in (0, 1] '
                               '(the fraction of weights kept)')


def check_weight_init(name, field='model.weight_init'):
  if name not in WEIGHT_INITS:
    raise SupermaskConfigError(f'{field}={name!r}: unknown; allowed: {", ".join(WEIGHT_INITS)}')


def check_masking(mode, keep_fraction, weight_init):
  """model.mode, and for masked nets model.keep_fraction / model.weight_init."""
  if mode not in ('masked', 'dense'):
    raise SupermaskConfigError(f'model.mode={mode!r}: allowed: masked, dense')
  if mode == 'masked':
    check_keep_fraction(keep_fraction)
    check_weight_init(weight_init)


def num_kept(n, keep_fraction):
  return int(round(keep_fraction * n))


def topk_mask(scores, keep_fraction):
  """1.0 at the round(keep_fraction * n) entries of largest |score|, 0.0 elsewhere.

  The smallest kept |score| t is found exactly by a binary search on the float bits
  (|score| >= 0, so its int32 bit pattern orders like the value): 31 counting passes,
  much cheaper on CPU than sorting a 2M-weight layer. Everything above t is kept, and of
  the entries equal to t the first ones (by index) until exactly round(k n) are.
  """
  a = jnp.abs(scores).ravel()
  n = a.size
  keep = num_kept(n, keep_fraction)
  if keep >= n:
    return jnp.ones_like(scores)
  if keep == 0:
    return jnp.zeros_like(scores)
  threshold = kth_largest(a, keep)
  above = a > threshold
  tie = a == threshold
  mask = above | (tie & (jnp.cumsum(tie) <= keep - jnp.sum(above)))
  return mask.astype(scores.dtype).reshape(scores.shape)


def kth_largest(a, k):
  """The k-th largest entry of a non-negative float32 vector (k >= 1), exactly."""
  bits = jax.lax.bitcast_convert_type(a.astype(jnp.float32), jnp.int32)

  def halve(_, bounds):  # invariant: #(bits >= lo) >= k > #(bits >= hi)
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(bits >= mid) >= k
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  lo, _ = jax.lax.fori_loop(0, 32, halve, (jnp.int32(0), jnp.int32(0x7F800001)))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def ste_mask(scores, keep_fraction):
  """topk_mask in the forward pass; the identity on |scores| in the backward pass."""
  a = jnp.abs(scores)
  return a + jax.lax.stop_gradient(topk_mask(scores, keep_fraction) - a)


def init_weights(key, shape, fan_in, weight_init, keep_fraction=1.0):
  """Frozen weights: kaiming normal (std = sqrt(2 / fan_in)), signed constant (+/- std),
  or scaled signed constant (+/- std / sqrt(keep_fraction))."""
  check_weight_init(weight_init)
  std = np.sqrt(2.0 / fan_in)
  normal = jax.random.normal(key, shape, jnp.float32)
  if weight_init == 'kaiming_normal':
    return std * normal
  if weight_init == 'signed_constant':
    return std * jnp.sign(normal)
  return std / np.sqrt(keep_fraction) * jnp.sign(normal)


def score_init(fan_in):
  """torch's default kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class MaskedConv(nn.Module):
  """Convolution with frozen random weights and a learned top-k score mask (no bias)."""
  features: int
  kernel_size: tuple = (3, 3)
  keep_fraction: float = 0.5
  weight_init: str = 'signed_constant'
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    fan_in = int(np.prod(shape[:-1]))
    w = self.variable('frozen', 'kernel', lambda: init_weights(
        self.make_rng('params'), shape, fan_in, self.weight_init, self.keep_fraction)).value
    scores = self.param('scores', score_init(fan_in), shape)
    w_eff = w * ste_mask(scores, self.keep_fraction)
    # 'SAME' padding for odd kernels; matmul form: 4x faster to differentiate on XLA:CPU,
    # a few images at a time on CPU (conv_fast)
    return conv_fast(x, w_eff, self.kernel_size[0] // 2, self.stride)


class MaskedDense(nn.Module):
  """Dense layer with frozen random weights and a learned top-k score mask (no bias)."""
  features: int
  keep_fraction: float = 0.5
  weight_init: str = 'signed_constant'

  @nn.compact
  def __call__(self, x):
    shape = (x.shape[-1], self.features)
    w = self.variable('frozen', 'kernel', lambda: init_weights(
        self.make_rng('params'), shape, shape[0], self.weight_init, self.keep_fraction)).value
    scores = self.param('scores', score_init(shape[0]), shape)
    return x @ (w * ste_mask(scores, self.keep_fraction))


def layer_masks(params, keep_fraction):
  """{layer path: 0/1 mask} for every 'scores' leaf of a params tree (one compiled
  program for the whole tree: op by op, each layer's 32-pass search compiled on its own)."""
  return _layer_masks(params, keep_fraction)


@functools.partial(jax.jit, static_argnums=1)
def _layer_masks(params, keep_fraction):
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if path[-1].key == 'scores':
      out['/'.join(p.key for p in path[:-1])] = topk_mask(leaf, keep_fraction)
  return out


def kept_fraction_per_layer(params, keep_fraction):
  """{layer: fraction of its weights in the subnetwork}."""
  return {k: float(m.mean()) for k, m in layer_masks(params, keep_fraction).items()}


def export_dense(params, frozen, keep_fraction):
  """The found subnetwork as plain weights: {layer: {'kernel': w * mask}}, a tree the
  dense model of the same architecture (mode='dense') loads as its 'params'."""
  masks = layer_masks(params, keep_fraction)
  out = {}
  for path, w in jax.tree_util.tree_leaves_with_path(frozen):
    layer = '/'.join(p.key for p in path[:-1])
    node = out
    for p in path[:-1]:
      node = node.setdefault(p.key, {})
    node['kernel'] = w * masks[layer]
  return out
