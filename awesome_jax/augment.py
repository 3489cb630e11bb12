"""Training augmentations as config switches: rotation, cutout, Sobel edges, Gaussian
blur, colour distortion, Gaussian noise.

Every function takes (key, x) with x float32 NHWC pixels in [0, 1] (not normalised;
see `for_normalized`) and returns the same shape, clipped to [0, 1]. Each example draws
its own randomness, from `jax.random.fold_in(key, i)`; all are jit-compilable.

`build('rotation,cutout', rotation_degrees=30)` chains the named ones in the fixed
order of ORDER; parameters are `<name>_<parameter>` (see PARAMS for the defaults).
"""

import functools
import math

import jax
import jax.numpy as jnp

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as PIL's convert('L')


def _per_example(fn):
  """Lifts fn(key, image (H, W, C), **params) to (key, x (N, H, W, C), **params);
  example i draws from fold_in(key, i), whatever the batch size."""
  @functools.wraps(fn)
  def batched(key, x, **params):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    return jax.vmap(lambda k, img: fn(k, img, **params))(keys, x)
  return batched


def _gray(img):
  """Luminance (H, W) of an RGB image; the channel itself for one channel."""
  if img.shape[-1] == 1:
    return img[..., 0]
  return img @ jnp.asarray(_LUMA, img.dtype)


@_per_example
def rotation(key, img, degrees=15.0):
  """Rotation about the centre by an angle uniform in [-degrees, degrees]; bilinear,
  corners filled with 0."""
  angle = jnp.deg2rad(jax.random.uniform(key, (), minval=-degrees, maxval=degrees))
  h, w, c = img.shape
  cy, cx = (h - 1) / 2, (w - 1) / 2
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                        jnp.arange(w, dtype=jnp.float32) - cx, indexing='ij')
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_y = cos * yy - sin * xx + cy  # the output pixel's place in the input
  src_x = sin * yy + cos * xx + cx
  sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [src_y, src_x], order=1,
                                                        mode='constant', cval=0.0)
  out = jnp.stack([sample(img[..., i]) for i in range(c)], axis=-1)
  return jnp.clip(out, 0, 1)


@_per_example
def cutout(key, img, size=8):
  """Zeros a size x size square (all channels) centred on a uniform random pixel,
  cropped at the border (DeVries & Taylor 2017)."""
  h, w, _ = img.shape
  cy, cx = jax.random.randint(key, (2,), 0, jnp.array([h, w]))
  y0, x0 = cy - size // 2, cx - size // 2
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = (rows >= y0) & (rows < y0 + size) & (cols >= x0) & (cols < x0 + size)
  return jnp.where(inside[..., None], 0.0, img).astype(img.dtype)


def sobel(key, x):
  """Sobel edge magnitude of the luminance, / 4 (a full-contrast step edge is 1),
  clipped, replicated to every channel; borders padded by replication. No randomness
  (`key` is unused)."""
  del key
  g = jax.vmap(_gray)(x)
  p = jnp.pad(g, ((0, 0), (1, 1), (1, 1)), mode='edge')
  h, w = g.shape[1:]
  tap = lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  gx = (tap(-1, 1) + 2 * tap(0, 1) + tap(1, 1)) - (tap(-1, -1) + 2 * tap(0, -1) + tap(1, -1))
  gy = (tap(1, -1) + 2 * tap(1, 0) + tap(1, 1)) - (tap(-1, -1) + 2 * tap(-1, 0) + tap(-1, 1))
  sq = gx ** 2 + gy ** 2
  mag = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)  # finite gradient at 0
  edges = jnp.clip(mag / 4, 0, 1)
  return jnp.broadcast_to(edges[..., None], x.shape).astype(x.dtype)


@_per_example
def blur(key, img, sigma_min=0.1, sigma_max=1.0):
  """Gaussian blur, sigma uniform in [sigma_min, sigma_max] pixels; kernel radius
  ceil(3 sigma_max); borders padded by replication."""
  sigma = jax.random.uniform(key, (), minval=sigma_min, maxval=sigma_max)
  r = max(1, math.ceil(3 * sigma_max))
  taps = jnp.arange(-r, r + 1, dtype=jnp.float32)
  k = jnp.exp(-taps ** 2 / (2 * jnp.maximum(sigma, 1e-3) ** 2))
  k = k / k.sum()
  h, w, _ = img.shape
  p = jnp.pad(img, ((r, r), (r, r), (0, 0)), mode='edge')
  p = sum(k[i] * p[i:i + h] for i in range(2 * r + 1))           # vertical
  out = sum(k[i] * p[:, i:i + w] for i in range(2 * r + 1))      # horizontal
  return jnp.clip(out, 0, 1)


def _rgb_to_hsv(rgb):
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1), 0)
  d = jnp.where(delta > 0, delta, 1)
  h = jnp.where(v == r, (g - b) / d, jnp.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
  h = jnp.where(delta > 0, (h / 6) % 1, 0)
  return h, s, v


def _hsv_to_rgb(h, s, v):
  i = jnp.floor(h * 6)
  f = h * 6 - i
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  i = i.astype(jnp.int32) % 6
  pick = lambda *c: jnp.select([i == j for j in range(6)], c)
  return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p),
                    pick(p, p, t, v, v, q)], axis=-1)


@_per_example
def color(key, img, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p_jitter=0.8,
          p_gray=0.2):
  """SimCLR-style colour distortion of an RGB image: with probability p_jitter, jitter
  brightness (x f), contrast (blend with the mean luminance), saturation (blend with the
  luminance), each f uniform in [1 - s, 1 + s], and hue (shift uniform in [-hue, hue]
  of the full circle), in that order; then grayscale with probability p_gray. The
  defaults are SimCLR's at strength 0.5."""
  if img.shape[-1] != 3:
    raise ValueError(f'color: needs RGB images, got {img.shape[-1]} channel(s)')
  u = jax.random.uniform(key, (6,))  # one draw: compiles faster than six
  factor = lambda ui, s: max(0.0, 1 - s) + (1 + s - max(0.0, 1 - s)) * ui
  x = jnp.clip(img * factor(u[0], brightness), 0, 1)
  f = factor(u[1], contrast)
  x = jnp.clip(f * x + (1 - f) * _gray(x).mean(), 0, 1)
  f = factor(u[2], saturation)
  x = jnp.clip(f * x + (1 - f) * _gray(x)[..., None], 0, 1)
  h, s, v = _rgb_to_hsv(x)
  x = _hsv_to_rgb((h + hue * (2 * u[3] - 1)) % 1, s, v)
  x = jnp.where(u[4] < p_jitter, x, img)
  gray = jnp.broadcast_to(_gray(x)[..., None], x.shape)
  x = jnp.where(u[5] < p_gray, gray, x)
  return jnp.clip(x, 0, 1)


@_per_example
def noise(key, img, std=0.05):
  """Adds Gaussian noise of standard deviation `std` (in [0, 1] pixel units)."""
  return jnp.clip(img + std * jax.random.normal(key, img.shape, img.dtype), 0, 1)


AUGMENTATIONS = {'rotation': rotation, 'color': color, 'blur': blur, 'sobel': sobel,
                 'noise': noise, 'cutout': cutout}
ORDER = tuple(AUGMENTATIONS)  # geometry, photometry, edges, noise, then the cut square
PARAMS = {  # defaults; build() takes them as <name>_<parameter>
    'rotation': {'degrees': 15.0},
    'color': {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.1,
              'p_jitter': 0.8, 'p_gray': 0.2},
    'blur': {'sigma_min': 0.1, 'sigma_max': 1.0},
    'sobel': {},
    'noise': {'std': 0.05},
    'cutout': {'size': 8},
}


def parse(names):
  """The augmentation names of a 'rotation,cutout' string, in ORDER; ValueError (one
  line) for an unknown one."""
  listed = [n.strip() for n in names.split(',') if n.strip()]
  for n in listed:
    if n not in AUGMENTATIONS:
      raise ValueError(f'augmentation {n!r}: unknown; allowed: {", ".join(ORDER)}')
  return [n for n in ORDER if n in listed]


def build(names, **params):
  """fn(key, x) -> x applying the augmentations in `names` ('' = none) in ORDER, the
  i-th of ORDER with key fold_in(key, i). `params`: <name>_<parameter> overrides of
  PARAMS (those of augmentations not in `names` are accepted and unused)."""
  chosen = parse(names)
  allowed = {f'{n}_{p}': (n, p) for n in ORDER for p in PARAMS[n]}
  for k in params:
    if k not in allowed:
      raise ValueError(f'augmentation parameter {k!r}: unknown; allowed: '
                       f'{", ".join(allowed)}')
  settings = {n: dict(PARAMS[n]) for n in chosen}
  for k, v in params.items():
    n, p = allowed[k]
    if n in settings:
      settings[n][p] = v

  def apply(key, x):
    for n in chosen:
      x = AUGMENTATIONS[n](jax.random.fold_in(key, ORDER.index(n)), x, **settings[n])
    return x
  return apply


def for_normalized(fn, mean, std):
  """fn on pixels, wrapped to take and return normalised images (x - mean) / std."""
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  return lambda key, x: (fn(key, x * std + mean) - mean) / std
