"""models.norms: BatchNorm, LayerNorm and softmax are flax's / jax's with their sums as
products: the same variables, values, running averages and gradients (float64, to
rounding)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax.models import norms


def _apply(module, variables, x, train, w):
  if not train:
    return jnp.sum(jnp.sin(module.apply(variables, x)) * w), {}
  y, updates = module.apply(variables, x, mutable=['batch_stats'])
  return jnp.sum(jnp.sin(y) * w), updates


@pytest.mark.parametrize('affine', [True, False])
@pytest.mark.parametrize('train', [True, False])
def test_same_function_as_flax_batch_norm(affine, train):
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(2.0, 3.0, (4, 5, 5, 6)))
    w = jnp.asarray(rng.normal(size=x.shape))
    kw = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_scale=affine,
              use_bias=affine)
    ours, theirs = norms.BatchNorm(**kw), nn.BatchNorm(**kw)
    shapes = [jax.tree.map(jnp.shape, m.init(jax.random.key(0), x)) for m in (ours, theirs)]
    assert shapes[0] == shapes[1]
    variables = jax.tree.map(lambda a: jnp.asarray(rng.normal(1.0, 0.3, a.shape)),
                             theirs.init(jax.random.key(0), x))
    variables['batch_stats']['var'] = jnp.abs(variables['batch_stats']['var'])
    results = [jax.value_and_grad(_apply, argnums=(1, 2), has_aux=True)(m, variables, x,
                                                                          train, w)
               for m in (ours, theirs)]
  (loss0, updates0), grads0 = results[0]
  (loss1, updates1), grads1 = results[1]
  assert abs(float(loss0 - loss1)) <= 1e-12 * abs(float(loss1))
  assert jax.tree.structure(grads0) == jax.tree.structure(grads1)
  for a, b in zip(jax.tree.leaves((grads0, updates0)), jax.tree.leaves((grads1, updates1))):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  if train:  # the running averages moved towards the batch's statistics
    assert float(jnp.abs(updates0['batch_stats']['mean']
                         - variables['batch_stats']['mean']).max()) > 1e-3


def test_mean_and_variance_outputs_have_their_gradients():
  # normalize_batch also returns the batch mean and variance; their own cotangents
  # reach x like those of jnp.mean / jnp.var
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(0.5, 2.0, (3, 4, 5)))
    ones, zeros = jnp.ones(5), jnp.zeros(5)

    def ours(x):
      y, mean, var = norms.normalize_batch(x, ones, zeros, 1e-5)
      return jnp.sum(y ** 3) + jnp.sum(jnp.cos(mean)) + jnp.sum(var ** 2)

    def reference(x):
      mean, var = jnp.mean(x, (0, 1)), jnp.var(x, (0, 1))
      y = (x - mean) / jnp.sqrt(var + 1e-5)
      return jnp.sum(y ** 3) + jnp.sum(jnp.cos(mean)) + jnp.sum(var ** 2)

    np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(reference)(x), rtol=1e-9,
                               atol=1e-12)


def test_layer_norm_same_function_as_flax():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(2.0, 3.0, (4, 7, 16)))
    w = jnp.asarray(rng.normal(size=x.shape))
    ours, theirs = norms.LayerNorm(epsilon=1e-6), nn.LayerNorm(epsilon=1e-6)
    variables = theirs.init(jax.random.key(0), x)
    assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x))
            == jax.tree.map(jnp.shape, variables))
    variables = jax.tree.map(lambda a: jnp.asarray(rng.normal(1.0, 0.3, a.shape)), variables)
    loss = lambda m, v, x: jnp.sum(jnp.sin(m.apply(v, x)) * w)
    results = [jax.value_and_grad(loss, argnums=(1, 2))(m, variables, x)
               for m in (ours, theirs)]
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_softmax_same_function_as_jax():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(0.0, 4.0, (2, 3, 5, 9)))
    w = jnp.asarray(rng.normal(size=x.shape))
    loss = lambda f, x: jnp.sum(jnp.sin(f(x)) * w)
    ours = jax.value_and_grad(loss, argnums=1)(norms.softmax, x)
    theirs = jax.value_and_grad(loss, argnums=1)(lambda x: jax.nn.softmax(x, axis=-1), x)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  assert bool(jnp.all(jnp.isfinite(norms.softmax(jnp.array([[1e4, 0.0, -1e4]])))))


def test_second_order_gradients_match_flax():
  # distillation differentiates through training steps: the custom VJPs must be
  # differentiable again (grad of a gradient norm)
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(1.0, 2.0, (6, 3, 3, 4)))
    kw = dict(use_running_average=False, momentum=0.9, epsilon=1e-5)
    ours, theirs = norms.BatchNorm(**kw), nn.BatchNorm(**kw)
    variables = jax.tree.map(lambda a: jnp.asarray(rng.normal(1.0, 0.3, a.shape)),
                             theirs.init(jax.random.key(0), x))

    def outer(m):
      def inner(params, x):
        y, _ = m.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
        return jnp.sum(jnp.tanh(y) ** 2)
      def grad_norm(x):
        g = jax.grad(inner)(variables['params'], x)
        return sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g))
      return jax.grad(grad_norm)(x)

    np.testing.assert_allclose(outer(ours), outer(theirs), rtol=1e-9, atol=1e-12)
