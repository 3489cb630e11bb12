"""The augmentation switches on small generated images (each function compiled once)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import augment

RANDOM = ('rotation', 'color', 'blur', 'noise', 'cutout')
# rbg keys compile several times faster than threefry on CPU; the code takes either
KEY, KEY2 = jax.random.key(0, impl='rbg'), jax.random.key(1, impl='rbg')


@functools.lru_cache(maxsize=None)
def compiled(names, **params):
  return jax.jit(augment.build(names, **params))


def images(n=8, size=12, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, size, size, 3))


def max_diff(a, b):
  return float(jnp.abs(a - b).max())


@pytest.mark.parametrize('name', augment.ORDER)
def test_shape_range_key_and_examples(name):
  x = images()
  fn = compiled(name)
  y = fn(KEY, x)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  np.testing.assert_array_equal(y, fn(KEY, x))  # same key, same output
  assert max_diff(y, x) > 0.05                  # it does something
  if name == 'sobel':
    np.testing.assert_array_equal(y, fn(KEY2, x))  # no randomness
    return
  assert max_diff(y, fn(KEY2, x)) > 1e-3
  same = jnp.broadcast_to(x[:1], x.shape)  # one image 8 times: 8 different draws
  out = fn(KEY, same)
  assert float(jnp.abs(out[1:] - out[:1]).reshape(len(x) - 1, -1).max(axis=1).min()) > 0
  # example i's draw does not depend on the other examples in the batch
  mixed = fn(KEY, jnp.concatenate([x[:3], images(5, seed=1)]))
  np.testing.assert_array_equal(mixed[:3], y[:3])


def test_draws_do_not_depend_on_the_batch_size():
  x = images()
  fn = compiled('noise')
  np.testing.assert_array_equal(fn(KEY, x[:3]), fn(KEY, x)[:3])


def test_identity_cases():
  x = images()
  fn = compiled('rotation,color,blur,noise,cutout', rotation_degrees=0.0, noise_std=0.0,
                cutout_size=0, blur_sigma_min=0.0, blur_sigma_max=0.01, color_brightness=0.0,
                color_contrast=0.0, color_saturation=0.0, color_hue=0.0,
                color_p_jitter=1.0, color_p_gray=0.0)
  np.testing.assert_allclose(fn(KEY, x), x, atol=2e-6)  # colour: an RGB-HSV-RGB round trip
  np.testing.assert_array_equal(augment.build('')(KEY, x), x)


def test_sobel():
  fn = compiled('sobel')
  step = jnp.zeros((8, 12, 12, 3)).at[:, :, 6:].set(1.0)  # vertical edge between cols 5, 6
  e = fn(KEY, step.at[1:].set(0.6))                       # images 1..7: constant 0.6
  np.testing.assert_array_equal(e[1:], 0)
  np.testing.assert_allclose(e[0, :, 5:7], 1.0)
  np.testing.assert_allclose(e[0, :, :4], 0.0)
  np.testing.assert_allclose(e[0, :, 8:], 0.0)
  np.testing.assert_array_equal(e[..., 0], e[..., 2])
  g = jax.jit(jax.grad(lambda x: augment.sobel(KEY, x).sum()))(jnp.full((1, 4, 4, 3), 0.6))
  assert bool(jnp.isfinite(g).all())


def test_rotation_geometry():
  size = 12
  yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
  blob = np.exp(-(yy ** 2 + xx ** 2) / 8)  # smooth and centred: rotates into itself
  bar = np.zeros((size, size))
  bar[6, 7:11] = 1.0                       # off-centre, to the right
  x = jnp.asarray(np.stack([blob] * 4 + [bar] * 4)[..., None].repeat(3, -1), jnp.float32)
  y = compiled('rotation', rotation_degrees=90.0)(KEY, x)
  assert max_diff(y[:4], x[:4]) < 0.05
  moved = jnp.abs(y[4:] - x[4:]).sum((1, 2, 3))
  assert float(moved.max()) > 1.0
  np.testing.assert_allclose(y[4:].sum((1, 2, 3)), x[4:].sum((1, 2, 3)), rtol=0.3)


def test_cutout_is_a_zero_square():
  x = jnp.ones((16, 16, 16, 3))
  y = np.asarray(compiled('cutout', cutout_size=4)(KEY, x))
  zero = y[..., 0] == 0
  assert ((y == 0).all(-1) == zero).all()  # all channels or none
  counts = zero.reshape(16, -1).sum(1)
  assert counts.min() >= 4 and counts.max() == 16
  for z in zero:
    rows, cols = np.where(z.any(1))[0], np.where(z.any(0))[0]
    assert z.sum() == len(rows) * len(cols)  # a rectangle, cropped at the border


def test_blur_smooths_and_keeps_constants():
  x = images(8, 16).at[4:].set(0.3)
  y = compiled('blur', blur_sigma_min=1.0, blur_sigma_max=2.0)(KEY, x)
  assert float(y[:4].var()) < 0.5 * float(x[:4].var())
  np.testing.assert_allclose(y[4:], 0.3, atol=1e-6)


def test_color_grayscale_and_hue():
  x = images()
  g = compiled('color', color_p_jitter=0.0, color_p_gray=1.0)(KEY, x)
  np.testing.assert_allclose(g[..., 0], g[..., 1], atol=1e-6)
  np.testing.assert_allclose(g[..., 0], x @ jnp.array([0.299, 0.587, 0.114]), atol=1e-6)
  hue = compiled('color', color_brightness=0.0, color_contrast=0.0, color_saturation=0.0,
                 color_hue=0.5, color_p_jitter=1.0, color_p_gray=0.0)(KEY, x)
  # a hue shift keeps each pixel's largest and smallest channel (value and chroma)
  np.testing.assert_allclose(hue.max(-1), x.max(-1), atol=1e-5)
  np.testing.assert_allclose(hue.min(-1), x.min(-1), atol=1e-5)
  assert max_diff(hue, x) > 0.1
  with pytest.raises(ValueError, match='needs RGB'):
    augment.color(KEY, x[..., :1])


def test_noise_std_and_clipping():
  x = jnp.full((8, 32, 32, 3), 0.5).at[4:].set(1.0)
  y = compiled('noise', noise_std=0.1)(KEY, x)
  assert float((y[:4] - x[:4]).std()) == pytest.approx(0.1, rel=0.1)
  assert float(y.max()) <= 1 and float(y[4:].min()) < 1


def test_build_order_and_errors():
  x = images()
  # ORDER puts sobel before noise whatever the string says: noisy edges, so the
  # channels differ (edges alone are equal in every channel)
  a = compiled('noise,sobel')(KEY, x)
  assert max_diff(a[..., 0], a[..., 1]) > 0.01
  assert augment.parse(' noise,rotation , sobel,') == ['rotation', 'sobel', 'noise']
  with pytest.raises(ValueError) as e:
    augment.build('rotation,flip')
  assert str(e.value) == ("augmentation 'flip': unknown; allowed: rotation, color, blur, "
                          'sobel, noise, cutout')
  with pytest.raises(ValueError, match="'rotation_angle': unknown; allowed: rotation_degrees"):
    augment.build('rotation', rotation_angle=10)
  augment.build('cutout', noise_std=0.3)  # a parameter of one not chosen: accepted, unused


def test_for_normalized():
  mean, std = jnp.array([0.5, 0.4, 0.3]), jnp.array([0.2, 0.25, 0.3])
  x = (images() - mean) / std
  fn = jax.jit(augment.for_normalized(augment.build('cutout'), mean, std))
  y = fn(KEY, x)
  assert bool(jnp.isclose(y, -mean / std, atol=1e-5).all(-1).any())  # black pixels
  untouched = ~jnp.isclose(y, -mean / std, atol=1e-5).all(-1)
  np.testing.assert_allclose(jnp.where(untouched[..., None], y, x), x, atol=1e-5)
