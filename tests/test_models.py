"""The model registry, shapes, and the LRN layer against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import models
from awesome_jax.models.small import local_response_norm


@pytest.mark.parametrize('name,shape,n_params', [
    ('lenet', (28, 28, 1), 61706),        # the classic LeNet-5 count with 6/16 maps
    ('alexcifarnet', (32, 32, 3), None),
    ('convnet', (32, 32, 3), None),
    ('mlp', (8, 8, 1), 8 * 8 * 32 + 32 + 32 * 10 + 10),
])
def test_forward_shapes(name, shape, n_params):
  model = models.build(name, 10, shape)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1,) + shape))['params']
  out = jax.jit(model.apply)({'params': params}, jnp.ones((3,) + shape))
  assert out.shape == (3, 10) and bool(jnp.all(jnp.isfinite(out)))
  if n_params is not None:
    assert sum(p.size for p in jax.tree_util.tree_leaves(params)) == n_params


def test_alexcifarnet_layers():
  model = models.build('alexcifarnet', 10, (32, 32, 3))
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  shapes = [p.shape for p in jax.tree_util.tree_leaves(params) if p.ndim > 1]
  assert shapes == [(5, 5, 3, 64), (5, 5, 64, 64), (4096, 384), (384, 192), (192, 10)]


def test_biases_start_at_zero():
  params = models.build('lenet', 10, (28, 28, 1)).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  for layer in params.values():
    np.testing.assert_array_equal(layer['bias'], 0)


def test_shape_mismatch_and_unknown_name():
  with pytest.raises(models.ModelError, match=r"model.name='lenet' cannot take.*\(32, 32, 7\)"):
    models.build('lenet', 10, (32, 32, 7))
  with pytest.raises(models.ModelError, match="model.name='vgg'.*allowed: lenet"):
    models.build('vgg', 10, (28, 28, 1))
  with pytest.raises(models.ModelError, match='alexcifarnet'):
    models.build('alexcifarnet', 10, (28, 28, 1))


def test_local_response_norm_matches_definition():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 7)).astype(np.float32)
  size, alpha, beta, k = 4, 0.1, 0.75, 1.0
  want = np.empty_like(x)
  for c in range(7):  # torch: channels c - size//2 .. c + (size-1)//2
    lo, hi = max(0, c - size // 2), min(7, c + (size - 1) // 2 + 1)
    want[..., c] = x[..., c] / (k + alpha / size * (x[..., lo:hi] ** 2).sum(-1)) ** beta
  got = local_response_norm(jnp.asarray(x), size, alpha, beta, k)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize('padding', [0, 2])
def test_matmul_conv_equals_flax_conv(padding):
  import flax.linen as nn
  from awesome_jax.models.small import MatmulConv, max_pool_2x2
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
  ours = MatmulConv(4, (5, 5), padding=padding)
  params = ours.init(jax.random.key(1), x)
  ref = nn.Conv(4, (5, 5), padding=padding)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_max_pool_2x2_equals_flax_on_odd_sizes_and_in_gradient():
  # Conv-N pools 7x7 maps when given 28x28 inputs: the last row/column is dropped (VALID)
  import flax.linen as nn
  from awesome_jax.models.small import max_pool_2x2
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 3))  # no ties: same gradient too
  ref = lambda x: nn.max_pool(x, (2, 2), (2, 2))
  np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
  loss = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))
  np.testing.assert_array_equal(loss(max_pool_2x2)(x), loss(ref)(x))


def test_alexcifarnet_matmul_equals_xla_impl():
  """The fast conv/pool (slices + matmul) computes what nn.Conv + nn.max_pool do, and so
  do their gradients (distillation differentiates through them twice)."""
  import flax.linen as nn
  from awesome_jax.models.small import max_pool_3x3_s2
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  fast = models.build('alexcifarnet', 10, (32, 32, 3))
  ref = models.build('alexcifarnet', 10, (32, 32, 3), conv_impl='xla')
  # jitted (op by op, every op of init, forward and gradient compiles on its own: ~1 min)
  params = jax.jit(fast.init)(jax.random.key(1), x)
  np.testing.assert_allclose(jax.jit(fast.apply)(params, x), jax.jit(ref.apply)(params, x),
                             rtol=1e-4, atol=1e-5)
  loss = lambda m: (lambda p: jnp.sum(m.apply(p, x) ** 2))
  g_fast, g_ref = jax.jit(jax.grad(loss(fast)))(params), jax.jit(jax.grad(loss(ref)))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4)
  odd = jax.random.normal(jax.random.key(2), (1, 7, 9, 2))  # odd sizes: ceil(H / 2)
  np.testing.assert_array_equal(max_pool_3x3_s2(odd),
                                nn.max_pool(odd, (3, 3), (2, 2), ((1, 1), (1, 1))))


def test_inference_twin_is_xla_for_alexcifarnet_and_itself_otherwise():
  fast = models.build('alexcifarnet', 10, (32, 32, 3))
  twin = models.inference_twin(fast, (32, 32, 3))
  assert twin.conv_impl == 'xla' and fast.conv_impl == 'matmul'
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  params = jax.jit(fast.init)(jax.random.key(1), x)
  np.testing.assert_allclose(jax.jit(twin.apply)(params, x), jax.jit(fast.apply)(params, x),
                             rtol=1e-4, atol=1e-5)
  # LeNet's two impls name their params differently: no twin, the model itself
  lenet = models.build('lenet', 10, (28, 28, 1))
  assert models.inference_twin(lenet, (28, 28, 1)) is lenet
  mlp = models.build('mlp', 10, (8, 8, 1))
  assert models.inference_twin(mlp, (8, 8, 1)) is mlp


@pytest.mark.parametrize('k,padding,images_per_budget,chunk', [
    (3, 1, 1, 1), (3, 1, 3, 3), (5, 2, 2, 2), (3, 0, 100, 7), (5, 4, 0, 1)])
def test_chunked_conv_equals_matmul_conv_in_values_and_gradients(k, padding,
                                                                 images_per_budget, chunk):
  # a batch of 7 in chunks of 1, 3 (the last one zero-padded), 2, all 7, and 1 when not
  # even one image fits; float64 so the chunked sums of the kernel gradient match the
  # one-matmul sum closely
  from awesome_jax.models.small import chunk_size, conv_as_matmul, conv_chunked
  out_h, out_w = 12 + 2 * padding - k + 1, 13 + 2 * padding - k + 1
  # per image: the larger of the forward's patches (3 channels in) and the input
  # gradient's (4 channels out)
  max_patch_bytes = images_per_budget * out_h * out_w * k * k * 4 * 4
  with jax.enable_x64(True):
    rng = np.random.default_rng(k + padding)
    x, w = rng.normal(size=(7, 12, 13, 3)), rng.normal(size=(k, k, 3, 4))
    assert chunk_size(x.shape, w.shape, padding, max_patch_bytes) == chunk
    f = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    ours = lambda x, w: conv_chunked(x, w, padding, max_patch_bytes)
    ref = lambda x, w: conv_as_matmul(x, w, padding)
    np.testing.assert_allclose(jax.jit(ours)(x, w), jax.jit(ref)(x, w), rtol=1e-12,
                               atol=1e-12)
    got = jax.jit(jax.grad(f(ours), argnums=(0, 1)))(x, w)
    want = jax.jit(jax.grad(f(ref), argnums=(0, 1)))(x, w)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_chunk_size_and_padding_error():
  from awesome_jax.models.small import chunk_size, conv_chunked
  # 32x32 map, 3x3 conv from 64 channels: 2.36 MB of patches per image
  assert chunk_size((128, 32, 32, 64), (3, 3, 64, 64), 1, 5 << 20) == 2
  assert chunk_size((128, 32, 32, 64), (3, 3, 64, 64), 1, 1) == 1
  assert chunk_size((128, 4, 4, 512), (3, 3, 512, 512), 1, 1 << 40) == 128
  # Conv-N's first layer: its forward patches are 32x32x27 per image, but the input
  # gradient convolves a 64-channel map (32x32x576 patches), so 2 at a time again
  assert chunk_size((128, 32, 32, 3), (3, 3, 3, 64), 1, 5 << 20) == 2
  # 47 images of 32x32x27 fit where the output has as few channels as the input: 3 x 43
  assert chunk_size((128, 32, 32, 3), (3, 3, 3, 3), 1, 5 << 20) == 43
  with pytest.raises(ValueError, match='padding=3'):
    conv_chunked(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 1)), 3)
