"""Batch norm, layer norm and softmax whose sums are matrix-vector products, forward and
backward.

The same functions as `flax.linen.BatchNorm`, `flax.linen.LayerNorm` (their variables,
their fast variance E[x^2] - E[x]^2 clipped at 0, the running-average update, the usual
gradients, flax's order of operations) and `jax.nn.softmax`, written so that XLA:CPU does
not turn the sums (over N*H*W rows per channel, or over a token's features) into its tree of
reduce-windows: every sum is a product with a ones vector, and the backward passes are
custom VJPs whose sums are products too (reverse mode only, to any order: the backward
rules are plain jax). On a 2-core CPU this took the ResNet-20 training step (batch 128)
from 159 to 175 images/s, the CIFAR ViT's from 143 to 167 (RESULTS.md, "Training speed of
the CIFAR models beside PyTorch"). Over a sharded batch the products are reduced over the
devices like any sum.
"""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn


def _channel_sums(*arrays):
  """Each (..., C) array summed over all axes but the last, one axis at a time (leading
  first), each step a (1, k) @ (k, rest) product with ones: every partial sum adds at
  most max(axis size) terms, as accurate as a pairwise tree for these sizes, where one
  product over all N*H*W rows would add 100,000+ terms in a row."""
  out = []
  for a in arrays:
    while a.ndim > 1:
      k = a.shape[0]
      a = (jnp.ones((1, k), a.dtype) @ a.reshape(k, -1)).reshape(a.shape[1:])
    out.append(a)
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_batch(x, scale, bias, eps):
  """(x - mean) / sqrt(var + eps) * scale + bias over all axes but the last;
  returns (y, mean, var)."""
  return _forward(x, scale, bias, eps)[0]


def _forward(x, scale, bias, eps):
  n = x.size // x.shape[-1]
  s1, s2 = _channel_sums(x, x * x)
  mean = s1 / n
  var = jnp.maximum(s2 / n - mean * mean, 0.0)
  inv = jax.lax.rsqrt(var + eps)
  centred = x - mean
  y = centred * (inv * scale) + bias   # flax's order of operations
  return (y, mean, var), (centred * inv, inv, scale)


def _backward(eps, res, g):
  del eps
  xhat, inv, scale = res
  dy, dmean, dvar = g
  n = dy.size // dy.shape[-1]
  dbias, dscale = _channel_sums(dy, dy * xhat)
  # d/dx of the normalised output through the batch mean and variance
  dx = (scale * inv) * (dy - (dbias + xhat * dscale) / n)
  # the mean and variance outputs' own cotangents (zero unless something reads them
  # differentiably; the running averages are updated outside the gradient)
  centred = xhat / inv
  dx = dx + dmean / n + dvar * 2.0 * centred / n
  return dx, dscale, dbias


normalize_batch.defvjp(_forward, _backward)


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm(axis=-1)`'s variables and values, the sums as products.

  use_scale / use_bias False: fixed 1 / 0 (no parameter), as in flax."""
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    scale = (self.param('scale', nn.initializers.ones, (c,), jnp.float32)
             if self.use_scale else jnp.ones((c,), x.dtype))
    bias = (self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
            if self.use_bias else jnp.zeros((c,), x.dtype))
    if self.use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return (x - ra_mean.value) * (inv * scale) + bias
    y, mean, var = normalize_batch(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
      ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_rows(x, scale, bias, eps):
  """Layer norm over the last axis: (x - mean) / sqrt(var + eps) * scale + bias, each
  row's mean and fast variance by a product with a ones vector."""
  return _forward_rows(x, scale, bias, eps)[0]


def _row_means(*arrays):
  d = arrays[0].shape[-1]
  ones = jnp.full((d, 1), 1.0 / d, arrays[0].dtype)
  return [a @ ones for a in arrays]


def _forward_rows(x, scale, bias, eps):
  mean, sq = _row_means(x, x * x)
  var = jnp.maximum(sq - mean * mean, 0.0)
  inv = jax.lax.rsqrt(var + eps)
  centred = x - mean
  y = centred * (inv * scale) + bias   # flax's order of operations
  return y, (centred * inv, inv, scale)


def _backward_rows(eps, res, dy):
  del eps
  xhat, inv, scale = res
  dbias, dscale = _channel_sums(dy, dy * xhat)
  g = dy * scale
  g_mean, gx_mean = _row_means(g, g * xhat)
  return inv * (g - g_mean - xhat * gx_mean), dscale, dbias


normalize_rows.defvjp(_forward_rows, _backward_rows)


class LayerNorm(nn.Module):
  """`flax.linen.LayerNorm()` (last axis, scale and bias) with its sums as products."""
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (d,), jnp.float32)
    return normalize_rows(x, scale, bias, self.epsilon)


@jax.custom_vjp
def softmax(x):
  """`jax.nn.softmax(x, axis=-1)`, the sums over the last axis as products with ones."""
  return _forward_softmax(x)[0]


def _last_axis_sum(a):
  return a @ jnp.ones((a.shape[-1], 1), a.dtype)


def _forward_softmax(x):
  e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True)))
  y = e / _last_axis_sum(e)
  return y, y


def _backward_softmax(y, g):
  return (y * (g - _last_axis_sum(g * y)),)


softmax.defvjp(_forward_softmax, _backward_softmax)
