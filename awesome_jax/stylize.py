"""Stylized datasets (Geirhos et al. 2019): style images, two stylizers, a resumable writer.

* `textures(n, size, seed)`: class-free procedural style images (fractal value noise,
  oriented gratings, coloured blobs); image i depends only on (seed, i).
  `Textures(n, seed)`: the same, made at each content image's size as the writer needs
  them (their detail scales with the size they are made at; see `Textures`).
* `fourier_swap(content, style, alpha)`: the weight-free baseline: each channel keeps the
  content's Fourier phase and takes the amplitude (1 - alpha) |F content| + alpha |F style|.
* `write_stylized(...)`: stylizes each image of `split/<class>/*` (or of arrays) exactly
  once, with AdaIN (`models.adain`) or the Fourier swap, into `out/split/<class>/<name>.png`.
  The style of image i is drawn from (seed, i) alone, so a resumed run makes the same
  choice; files are written under a temporary name and renamed, so one that exists is
  complete and is skipped.
* Content may also be a TFDS dataset, `tfds:NAME` (e.g. `tfds:imagenet2012`,
  `tfds:cifar10`), streamed one example at a time in the split's stored order
  (`open_tfds`): example i becomes `out/<split>/<class>/<i:08d>.png`, the class from the
  dataset's label feature.

  python -m awesome_jax.stylize dataset --content data/train --style styles --out out \\
      --method adain --vgg vgg_normalised.pth --decoder decoder.pth --size 224 --tar
  python -m awesome_jax.stylize dataset --content tfds:imagenet2012 --split validation \\
      --style paintings --out out --method adain --vgg vgg_normalised.pth \\
      --decoder decoder.pth --size 224
  python -m awesome_jax.stylize textures --out styles --n 1000 --size 256
  python -m awesome_jax.stylize train-decoder --content data/train --style '' \\
      --encoder efficientnet_lite0 --workdir runs/dec --steps 1000 --size 64
  python -m awesome_jax.stylize dataset --content data/train --style styles --out out \\
      --method adain --decoder_ckpt runs/dec --size 64

`train-decoder` (awesome_jax/stylize_train.py) trains the decoder for a frozen encoder:
VGG-19 from `vgg_normalised.pth`, or EfficientNet-Lite0's early blocks.
"""

import argparse
import functools
import importlib.util
import os
import re
import sys
import tarfile

import numpy as np
from PIL import Image
from tqdm import tqdm

from awesome_jax import data as data_lib

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff')
METHODS = ('adain', 'fourier')
TFDS_PREFIX = 'tfds:'
_TMP = '.tmp'
_INDEX_PNG = re.compile(r'[0-9]{8}\.png')


def check_alpha(alpha):
  if not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}')


# --- procedural textures ----------------------------------------------------------------

def _value_noise(rng, size, res):
  """(size, size) smooth noise in [0, 1]: random values on a (res+1)^2 grid, smoothstep
  interpolation between them."""
  grid = rng.random((res + 1, res + 1))
  t = np.arange(size) * res / size
  i = t.astype(int)
  f = t - i
  f = f * f * (3 - 2 * f)
  rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
  return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def _fractal(rng, size):
  """Octaves of value noise (persistence 0.4-0.7) per channel, mixed by a random colour
  matrix."""
  persistence = rng.uniform(0.4, 0.7)
  base = int(rng.integers(1, 4))
  channels = []
  for _ in range(3):
    total, res, amp = np.zeros((size, size)), base, 1.0
    while res <= max(size // 2, 1):
      total += amp * _value_noise(rng, size, res)
      res, amp = res * 2, amp * persistence
    channels.append(total)
  x = np.stack(channels, -1)
  return x @ rng.normal(size=(3, 3))


def _gratings(rng, size):
  """A sum of 1-3 oriented sine (or square) gratings between two random colours."""
  yy, xx = np.mgrid[0:size, 0:size] / size
  g = np.zeros((size, size))
  for _ in range(int(rng.integers(1, 4))):
    theta = rng.uniform(0, np.pi)
    cycles = rng.uniform(2, max(size / 4, 3))
    wave = np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) +
                  rng.uniform(0, 2 * np.pi))
    g += np.sign(wave) if rng.random() < 0.3 else wave
  g = (g - g.min()) / (np.ptp(g) + 1e-8)
  c0, c1 = rng.random(3), rng.random(3)
  return c0 + (c1 - c0) * g[..., None]


def _blobs(rng, size):
  """5-40 soft coloured Gaussian blobs over a random background colour."""
  yy, xx = np.mgrid[0:size, 0:size]
  x = np.ones((size, size, 3)) * rng.random(3)
  for _ in range(int(rng.integers(5, 41))):
    cy, cx = rng.uniform(0, size, 2)
    r = rng.uniform(size / 30, size / 5)
    w = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    x = x * (1 - w) + rng.random(3) * w
  return x


TEXTURE_KINDS = (_fractal, _gratings, _blobs)


def texture(seed, index, size):
  """Texture `index` of `seed`: (size, size, 3) uint8; its kind is drawn from the seed."""
  rng = np.random.default_rng([seed, index])
  x = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))](rng, size)
  x = (x - x.min()) / (np.ptp(x) + 1e-8)
  return np.round(x * 255).astype(np.uint8)


def textures(n, size, seed):
  """(n, size, size, 3) uint8 class-free style images, deterministic under seed."""
  return np.stack([texture(seed, i, size) for i in range(n)]) if n else (
      np.zeros((0, size, size, 3), np.uint8))


class Textures:
  """n procedural style images made at each content image's size: no resampling.

  Style k for an H x W content image is the centre H x W of texture(seed, k, max(H, W)).
  The generators scale their detail to the size they are made at (fractal octaves up to
  size/2 cells, gratings of 2 to size/4 cycles, blob radii size/30 to size/5), so all of
  it lies below the content's Nyquist frequency. A texture made larger and resized down
  to the content loses what lies above it, which the downscale's antialiasing averages
  away: a 256 px grating of more than 16 cycles is near flat at 32 px, and so is the
  Fourier swap that takes its amplitude (its per-channel std is the style's, Parseval).
  Textures made at one size are kept (the last 1024), as a dataset of one image size
  asks for each of them many times.
  """

  def __init__(self, n, seed):
    if int(n) < 1:
      raise ValueError(f'Textures: n={n}: at least one texture is needed')
    self.n, self.seed = int(n), int(seed)
    self._made = functools.lru_cache(maxsize=1024)(self._make)

  def __len__(self):
    return self.n

  def _make(self, k, size):
    x = texture(self.seed, k, size)
    x.flags.writeable = False  # kept and shared: callers get views of it
    return x

  def __repr__(self):
    return f'Textures(n={self.n}, seed={self.seed})'

  def fit(self, k, height, width):
    """(height, width, 3) uint8: texture k made at max(height, width), its centre."""
    if not 0 <= k < self.n:
      raise ValueError(f'Textures: texture {k} outside [0, {self.n})')
    x = self._made(int(k), max(height, width))
    top, left = (x.shape[0] - height) // 2, (x.shape[1] - width) // 2
    return x[top:top + height, left:left + width]


def write_textures(folder, n, size, seed, progress=True):
  """Writes texture(seed, i, size) for i < n as folder/texture_<seed>_<i:06d>.png (those
  already there are kept); returns their n paths, in order."""
  os.makedirs(folder, exist_ok=True)
  paths = [os.path.join(folder, f'texture_{seed}_{i:06d}.png') for i in range(n)]
  for i in tqdm(range(n), unit='img', desc='textures', disable=not progress):
    if not os.path.exists(paths[i]):
      _write_png(paths[i], texture(seed, i, size))
  return paths


# --- Fourier amplitude swap -------------------------------------------------------------

def fourier_swap(content, style, alpha=1.0):
  """(..., H, W, C) float: per channel, the content's Fourier phase with the amplitude
  (1 - alpha) |F content| + alpha |F style|. Style of the same H, W (it broadcasts over
  leading axes). Float64 out, not clipped."""
  check_alpha(alpha)
  content = np.asarray(content, np.float64)
  style = np.asarray(style, np.float64)
  if content.shape[-3:] != style.shape[-3:]:
    raise ValueError(f'fourier_swap: content {content.shape[-3:]} and style '
                     f'{style.shape[-3:]} differ in (H, W, C)')
  axes = (-3, -2)
  fc = np.fft.rfft2(content, axes=axes)
  fs = np.fft.rfft2(style, axes=axes)
  amp = (1 - alpha) * np.abs(fc) + alpha * np.abs(fs)
  return np.fft.irfft2(amp * np.exp(1j * np.angle(fc)), s=content.shape[-3:-1], axes=axes)


# --- stylized-dataset writer ------------------------------------------------------------

def _is_image(name):
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def list_styles(style_dir):
  """Sorted paths of the images in style_dir (any layout below it)."""
  if not os.path.isdir(style_dir):
    raise ValueError(f'style folder {style_dir} does not exist or is not a folder')
  paths = []
  for root, dirs, files in os.walk(style_dir, onerror=_raise):
    dirs.sort()
    paths += [os.path.join(root, f) for f in sorted(files) if _is_image(f)]
  if not paths:
    raise ValueError(f'style folder {style_dir} holds no images '
                     f'({" ".join(IMAGE_EXTENSIONS)})')
  return paths


def _raise(error):
  raise ValueError(f'style folder {error.filename}: unreadable ({error.strerror})')


def list_content(content_dir):
  """[(class, path)] of content_dir/<class>/*, sorted by class then file name."""
  if not os.path.isdir(content_dir):
    raise ValueError(f'content folder {content_dir} does not exist or is not a folder')
  classes = sorted(d for d in os.listdir(content_dir)
                   if os.path.isdir(os.path.join(content_dir, d)) and not d.startswith('.'))
  if not classes:
    raise ValueError(f'content folder {content_dir} has no class subfolders '
                     f'(expected {content_dir}/<class>/<image>)')
  items = [(c, os.path.join(content_dir, c, f)) for c in classes
           for f in sorted(os.listdir(os.path.join(content_dir, c))) if _is_image(f)]
  if not items:
    raise ValueError(f'content folder {content_dir}: its class subfolders hold no images')
  return items


def read_rgb(path, what='image'):
  """(H, W, 3) uint8 of an image file; a one-line ValueError if it cannot be decoded."""
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert('RGB'))
  except (OSError, ValueError) as e:
    raise ValueError(f'{what} {path}: unreadable ({e})') from None


def is_tfds(content):
  """Whether `content` names a TFDS dataset: 'tfds:NAME'."""
  return isinstance(content, str) and content.startswith(TFDS_PREFIX)


def split_folder(split):
  """The output folder of a split: its name, with a TFDS slice spelled for file systems
  and tar (':' -> '-', '%' -> 'pct', other characters -> '_'): 'train[:10%]' ->
  'train_-10pct'."""
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', split.replace(':', '-').replace('%', 'pct'))
  return name.strip('_') or 'split'


def _has_tensorflow():
  return importlib.util.find_spec('tensorflow') is not None


def tfds_reader():
  """The reader `open_tfds` uses here: 'tfds.load' (TensorFlow installed) or
  'tfds.data_source'. A split begun with one is resumed with the same one."""
  return 'tfds.load' if _has_tensorflow() else 'tfds.data_source'


def _rgb(image, where):
  """(H, W, 3) uint8 of a decoded TFDS image (grey and RGBA ones converted)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.dtype != np.uint8:
    raise ValueError(f'{where}: not a uint8 (H, W, 1|3|4) image (got {image.dtype} '
                     f'{image.shape})')
  return np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]


def open_tfds(name, split='train', data_dir=None):
  """(examples, count, classes, reader) of a TFDS split, read one example at a time.

  name: a `tfds.load` name ('cifar10', 'imagenet2012', 'imagenet2012:5.1.0'); split: a
  TFDS split ('train', 'validation', 'train[:10000]'). With TensorFlow installed the
  reader is `tfds.load(..., shuffle_files=False)` (one file at a time, in order) +
  `tfds.as_numpy`; without it `tfds.data_source` (TFDS's array_record files, random
  access, no TensorFlow). Each gives the examples in the split's stored order (its
  files in turn), the same on every call. TFDS prepares (downloads) the dataset first
  if it can.

  examples(start): iterator of (index, image uint8 (H, W, 3), label int) from example
  `start` on. count: the number of examples (None if TFDS does not say). classes: the
  names of the label feature (None: it has none; the labels are used as names).
  A bad name, split or data folder raises a one-line ValueError.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  where = f'content {TFDS_PREFIX}{name} split {split!r}'
  tf = _has_tensorflow()
  try:
    if tf:
      ds, info = tfds.load(name, split=split, shuffle_files=False, with_info=True,
                           data_dir=data_dir or None,
                           read_config=tfds.ReadConfig(interleave_cycle_length=1))
      try:
        count = int(info.splits[split].num_examples)
      except Exception:  # pylint: disable=broad-except
        count = None
    else:
      source = tfds.data_source(name, split=split, data_dir=data_dir or None)
      info, count = source.dataset_info, len(source)
  except Exception as e:  # tfds raises many types (unknown name or split, no data, network)
    hint = ''
    if not tf and (isinstance(e, NotImplementedError) or 'format' in str(e)):
      hint = ('; without TensorFlow, TFDS reads only data prepared in a random-access '
              'format (array_record); or pip install tensorflow')
    raise ValueError(f'{where}: {data_lib.first_line(e)}{hint}') from None
  keys = info.supervised_keys
  if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str)
                                                             for k in keys)):
    keys = ('image', 'label')
  image_key, label_key = keys
  if image_key not in info.features or label_key not in info.features:
    raise ValueError(f'{where}: no {image_key!r} and {label_key!r} features (has '
                     f'{", ".join(info.features)})')
  names = getattr(info.features[label_key], 'names', None)
  classes = [str(n) for n in names] if names else None

  def read(start):
    if tf:
      stream = tfds.as_numpy(ds.skip(start) if start else ds)
      return enumerate(stream, start)
    return ((i, source[i]) for i in range(start, count))

  def examples(start=0):
    stream = None
    while True:
      try:
        if stream is None:
          stream = iter(read(start))
        i, example = next(stream)
      except StopIteration:
        return
      except Exception as e:  # a read error mid-split (tf.data, array_record, decoding)
        raise ValueError(f'{where}: reading failed ({data_lib.first_line(e)})') from None
      yield i, _rgb(example[image_key], f'{where} example {i}'), int(example[label_key])
  return examples, count, classes, tfds_reader()


def _resize(x, height, width):
  if x.shape[:2] == (height, width):
    return x
  return np.asarray(Image.fromarray(x).resize((width, height), Image.BILINEAR))


def style_index(seed, index, n_styles):
  """The style of content image `index`: a function of (seed, index) alone."""
  return int(np.random.default_rng([seed, index, 1]).integers(n_styles))


def _to_uint8(x):
  return np.round(np.clip(np.asarray(x, np.float64), 0, 1) * 255).astype(np.uint8)


def make_stylizer(method, alpha=1.0, variables=None, net=None):
  """f(content uint8 (H, W, 3), style uint8 (H, W, 3)) -> uint8 (H, W, 3). net: the
  models.adain.AdainNet of `variables` (None: the VGG-19 networks of models.adain)."""
  check_alpha(alpha)
  if method == 'fourier':
    return lambda c, s: _to_uint8(fourier_swap(c / 255.0, s / 255.0, alpha))
  if method != 'adain':
    raise ValueError(f'method must be one of {METHODS}, got {method!r}')
  if variables is None:
    raise ValueError('method adain needs variables=(encoder, decoder), e.g. from '
                     'models.adain.from_torch(vgg_path, decoder_path)')
  from awesome_jax.models import adain  # pylint: disable=import-outside-toplevel
  enc_vars, dec_vars = variables

  def run(c, s):
    h, w = c.shape[:2]
    c, s = c[None] / np.float32(255), s[None] / np.float32(255)
    if net is None:
      out = adain.stylize(enc_vars, dec_vars, c, s, alpha)
    else:
      out = adain.net_stylize(net, enc_vars, dec_vars, c, s, alpha)
    return _to_uint8(out[0, :h, :w])
  return run


def _write_png(path, image):
  """Writes under a temporary name, then renames: a file at `path` is always complete."""
  tmp = os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + _TMP)
  Image.fromarray(image).save(tmp, format='PNG')
  os.replace(tmp, path)


def _write_tar(folder, split):
  """folder/<split>.tar of folder/<split>, entries sorted, times and owners zeroed, so
  the same images give the same bytes."""
  path = os.path.join(folder, split + '.tar')

  def clean(info):
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, '', ''
    return info
  tmp = path + _TMP
  with tarfile.open(tmp, 'w', format=tarfile.PAX_FORMAT) as tar:
    root = os.path.join(folder, split)
    tar.add(root, split, recursive=False, filter=clean)
    for c in sorted(os.listdir(root)):
      tar.add(os.path.join(root, c), f'{split}/{c}', recursive=False, filter=clean)
      for f in sorted(os.listdir(os.path.join(root, c))):
        if not f.startswith('.'):
          tar.add(os.path.join(root, c, f), f'{split}/{c}/{f}', filter=clean)
  os.replace(tmp, path)
  return path


def write_stylized(content, style, out, method='fourier', split=None, seed=0, alpha=1.0,
                   size=None, variables=None, tar=False, limit=None, progress=True,
                   net=None, tfds_data_dir=None):
  """Stylizes every content image once into out/<split>/<class>/<name>.png.

  content: a folder <split>/<class>/<image> (split defaults to its base name), or a dict
    {'x': uint8 (N, H, W, 3), 'y': (N,) int, optional 'classes': names} (names
    <index:06d>.png; split defaults to 'train'), or 'tfds:NAME', a TFDS dataset streamed
    one example at a time (`open_tfds`; split: the TFDS split read, default 'train',
    written to out/<split_folder(split)>; names <index:08d>.png, the class from the
    label feature's names; tfds_data_dir: TFDS's data folder, None for its default).
  style: a folder of images (any layout), a list of image paths, a uint8 array
    (M, h, w, 3) (e.g. `textures(...)`), or `Textures(n, seed)`. An image of a folder,
    list or array is resized, whole, to its content image's size (a painting keeps its
    composition, at the content's scale); `Textures` are made at the content's size
    instead, as procedural textures made larger lose their fine detail to the resize
    (see `Textures`). Both methods get the same style image: AdaIN takes its feature
    statistics, the Fourier swap its amplitude spectrum.
  method: 'adain' (needs variables=(encoder, decoder) of models.adain; net: their
    models.adain.AdainNet, None for VGG-19, e.g. from stylize_train.load_trained) or
    'fourier'.
  size: resize content images to size x size first (None: keep their size; adain then
    compiles once per distinct image size).
  limit: stop after writing this many new images (as if killed); a later call resumes.
  tar: at the end, also out/<split>.tar. Returns {'total', 'written', 'skipped', 'tar'}.
  """
  check_alpha(alpha)
  stylizer = make_stylizer(method, alpha, variables, net)
  n_styles, get_style = _style_source(style)

  def stylized(i, c):
    if size:
      c = _resize(c, size, size)
    return stylizer(c, get_style(style_index(seed, i, n_styles), *c.shape[:2]))

  if is_tfds(content):
    return _write_tfds(content[len(TFDS_PREFIX):], split or 'train', tfds_data_dir, out,
                       stylized, f'{method} ', tar, limit, progress)
  if isinstance(content, (str, os.PathLike)):
    items = list_content(content)
    split = split or os.path.basename(os.path.normpath(content))
    entries = [(c, os.path.splitext(os.path.basename(p))[0] + '.png') for c, p in items]
    get_content = lambda i: read_rgb(items[i][1], 'content image')
  else:
    x, y = np.asarray(content['x']), np.asarray(content['y'])
    names = content.get('classes')
    names = [str(k) for k in range(int(y.max()) + 1)] if names is None else list(names)
    split = split or 'train'
    entries = [(names[int(label)], f'{i:06d}.png') for i, label in enumerate(y)]
    get_content = lambda i: x[i]
  dupes = len(entries) - len(set(entries))
  if dupes:
    raise ValueError(f'{dupes} content images share an output name with another '
                     '(same class, same file name apart from the extension)')

  paths = [os.path.join(out, split, c, name) for c, name in entries]
  for d in sorted({os.path.dirname(p) for p in paths}):
    os.makedirs(d, exist_ok=True)
    _remove_leftovers(d)
  pending = [i for i, p in enumerate(paths) if not os.path.exists(p)]
  written = 0
  with tqdm(total=len(paths), initial=len(paths) - len(pending), unit='img',
            desc=f'{method} {split}', disable=not progress) as bar:
    for i in pending:
      if limit is not None and written >= limit:
        break
      _write_png(paths[i], stylized(i, get_content(i)))
      written += 1
      bar.update(1)
  done = len(paths) - len(pending) + written == len(paths)
  tar_path = _write_tar(out, split) if tar and done else None
  return {'total': len(paths), 'written': written, 'skipped': len(paths) - len(pending),
          'tar': tar_path}


def _style_source(style):
  """(number of style images, (k, height, width) -> uint8 style image k at height x
  width) of a folder, path list, array (each resized) or `Textures` (made at that size)."""
  if isinstance(style, Textures):
    return len(style), style.fit
  if isinstance(style, (str, os.PathLike)):
    style = list_styles(style)
  if isinstance(style, (list, tuple)):
    if not style:
      raise ValueError('style images: the list of paths is empty')
    return len(style), lambda k, h, w: _resize(read_rgb(style[k], 'style image'), h, w)
  style = np.asarray(style)
  if style.ndim != 4 or not len(style):
    raise ValueError(f'style images must be a non-empty (M, h, w, 3) array, got shape '
                     f'{style.shape}')
  return len(style), lambda k, h, w: _resize(style[k], h, w)


def _remove_leftovers(folder):
  """Deletes the temporary files of a killed run in `folder`."""
  for f in os.listdir(folder):
    if f.startswith('.') and f.endswith(_TMP):
      os.remove(os.path.join(folder, f))


def _write_tfds(name, split, data_dir, out, stylized, desc, tar, limit, progress):
  """write_stylized for a TFDS split: example i -> out/<folder>/<class>/<i:08d>.png.

  The indices already written are read from the file names (any class folder), so a
  resumed run skips them; with tf.data it starts reading at the first one missing."""
  examples, count, classes, _ = open_tfds(name, split, data_dir)
  folder = split_folder(split)
  root = os.path.join(out, folder)
  os.makedirs(root, exist_ok=True)
  done = set()
  for c in sorted(os.listdir(root)):
    if os.path.isdir(os.path.join(root, c)):
      _remove_leftovers(os.path.join(root, c))
      done.update(int(f[:-4]) for f in os.listdir(os.path.join(root, c))
                  if _INDEX_PNG.fullmatch(f))
  start = 0
  while start in done:
    start += 1
  written, complete, made = 0, False, set()
  with tqdm(total=count, initial=len(done), unit='img', desc=desc + folder,
            disable=not progress) as bar:
    for i, image, label in examples(start):
      if i in done:
        continue
      if limit is not None and written >= limit:
        break
      if classes is not None and not 0 <= label < len(classes):
        raise ValueError(f'content {TFDS_PREFIX}{name} split {split!r} example {i}: label '
                         f'{label} outside [0, {len(classes)})')
      d = os.path.join(root, classes[label] if classes is not None else str(label))
      if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
      _write_png(os.path.join(d, f'{i:08d}.png'), stylized(i, image))
      written += 1
      bar.update(1)
    else:
      complete = True
  total = count if count is not None else len(done) + written if complete else None
  tar_path = _write_tar(out, folder) if tar and complete else None
  return {'total': total, 'written': written, 'skipped': len(done), 'tar': tar_path}


def _flagged(flag, fn, *args):
  """fn(*args), its ValueError prefixed with the flag that gave the value."""
  try:
    return fn(*args)
  except ValueError as e:
    raise ValueError(f'{flag}: {e}') from None


def _check_flags(args):
  """One-line errors for flag values out of range, before anything is read."""
  if getattr(args, 'alpha', None) is not None and not 0.0 <= args.alpha <= 1.0:
    raise ValueError(f'--alpha {args.alpha}: must be in [0, 1] (1: all style, 0: content)')
  if args.command == 'dataset' and args.method == 'adain':
    if args.decoder_ckpt and (args.vgg or args.decoder):
      raise ValueError('--decoder_ckpt: give either it or --vgg and --decoder, not both')
    if not args.decoder_ckpt and not (args.vgg and args.decoder):
      raise ValueError('--method adain needs --vgg and --decoder (pytorch-AdaIN files) or '
                       '--decoder_ckpt WORKDIR (of train-decoder)')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  d = sub.add_parser('dataset', help='write a stylized copy of an image folder')
  d.add_argument('--content', required=True, help='folder <split>/<class>/<image>, or '
                 'tfds:NAME: a TFDS dataset streamed one example at a time (e.g. '
                 'tfds:imagenet2012, tfds:cifar10; TensorFlow installed: tfds.load, else '
                 'tfds.data_source, which needs array_record data), written as '
                 '<split>/<class>/<index:08d>.png')
  d.add_argument('--split', default=None, help="tfds: the split read (default 'train'; "
                 "a slice such as 'train[:10000]' is written to a folder of its own); a "
                 "folder: its name in --out (default the folder's base name)")
  d.add_argument('--tfds_data_dir', default=None, help="tfds: TFDS's data folder "
                 '(default: its own)')
  d.add_argument('--style', required=True, help='folder of style images')
  d.add_argument('--out', required=True)
  d.add_argument('--method', default='adain', choices=METHODS)
  d.add_argument('--vgg', help="adain: pytorch-AdaIN's vgg_normalised.pth")
  d.add_argument('--decoder', help="adain: pytorch-AdaIN's decoder.pth")
  d.add_argument('--decoder_ckpt', help='adain: the --workdir of train-decoder (its '
                 'encoder and newest decoder checkpoint), instead of --vgg/--decoder')
  d.add_argument('--alpha', type=float, default=1.0)
  d.add_argument('--seed', type=int, default=0)
  d.add_argument('--size', type=int, default=None, help='resize content to size x size')
  d.add_argument('--tar', action='store_true', help='also write out/<split>.tar')
  t = sub.add_parser('textures', help='write procedural style images')
  t.add_argument('--out', required=True)
  t.add_argument('--n', type=int, default=1000)
  t.add_argument('--size', type=int, default=256)
  t.add_argument('--seed', type=int, default=0)
  r = sub.add_parser('train-decoder', help='train an AdaIN decoder for a frozen encoder '
                     '(awesome_jax/stylize_train.py)')
  r.add_argument('--content', required=True, help='folder <split>/<class>/<image>')
  r.add_argument('--style', default='', help="folder of style images; '': procedural "
                 'textures made on the fly (a stand-in for paintings)')
  r.add_argument('--encoder', default='efficientnet_lite0',
                 help='vgg:PATH | vgg:random | efficientnet_lite0[:PATH] | '
                 'efficientnet_lite0:random')
  r.add_argument('--workdir', required=True, help='checkpoints, metrics, figures; resumes')
  r.add_argument('--steps', type=int, default=1000)
  r.add_argument('--size', type=int, default=64, help='training crops size x size')
  r.add_argument('--batch', type=int, default=8)
  r.add_argument('--seed', type=int, default=0)
  r.add_argument('--lr', type=float, default=1e-4, help='Adam, decayed lr / (1 + '
                 'lr_decay * step)')
  r.add_argument('--lr_decay', type=float, default=5e-5)
  r.add_argument('--content_weight', type=float, default=1.0)
  r.add_argument('--style_weight', type=float, default=10.0)
  r.add_argument('--n_textures', type=int, default=1000, help='textures drawn from, '
                 'when no --style')
  r.add_argument('--ckpt_every', type=int, default=500)
  r.add_argument('--sample_every', type=int, default=500, help='loss curve and samples')
  args = parser.parse_args(argv)
  try:
    _check_flags(args)
    if args.command == 'textures':
      write_textures(args.out, args.n, args.size, args.seed)
      return 0
    if args.command == 'train-decoder':
      from awesome_jax import stylize_train  # pylint: disable=import-outside-toplevel
      # bad folders fail before the encoder loads
      if args.style:
        _flagged('--style', list_styles, args.style)
      _flagged('--content', list_content, args.content)
      net, enc_vars = stylize_train.load_encoder(args.encoder, args.seed)
      out = stylize_train.train_decoder(
          args.workdir, net, enc_vars, args.content, args.style, encoder=args.encoder,
          steps=args.steps, size=args.size, batch=args.batch, seed=args.seed, lr=args.lr,
          lr_decay=args.lr_decay, content_weight=args.content_weight,
          style_weight=args.style_weight, n_textures=args.n_textures,
          ckpt_every=args.ckpt_every, sample_every=args.sample_every,
          command=stylize_train.command_line(argv))
      print({'step': out['step'], 'resumed_at': out['start_step'], **out['metrics']})
      return 0
    _flagged('--style', list_styles, args.style)
    if not is_tfds(args.content):
      _flagged('--content', list_content, args.content)
    variables, net = None, None
    if args.method == 'adain':
      if args.decoder_ckpt:
        from awesome_jax import stylize_train  # pylint: disable=import-outside-toplevel
        net, enc_vars, dec_vars = stylize_train.load_trained(args.decoder_ckpt)
        variables = (enc_vars, dec_vars)
      else:
        from awesome_jax.models import adain  # pylint: disable=import-outside-toplevel
        variables = adain.from_torch(args.vgg, args.decoder)
    result = write_stylized(args.content, args.style, args.out, args.method,
                            split=args.split, seed=args.seed, alpha=args.alpha,
                            size=args.size, variables=variables, tar=args.tar, net=net,
                            tfds_data_dir=args.tfds_data_dir)
    print(result)
    return 0
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
