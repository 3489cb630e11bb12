"""Datasets as in-memory arrays: TFDS, offline readers of the standard files, tiny sets.

Every loader returns a `Dataset`: images float32 NHWC in [0, 1], labels int32, and the
per-channel mean/std used to normalise them. Four ways in:

* `source='tfds'`: `tfds.load` (needs network on first use, and TensorFlow).
* `source='files'`: the datasets' own files in `data_dir` (no network):
  MNIST idx files (`train-images-idx3-ubyte[.gz]`, ...), CIFAR-10 python batches
  (`data_batch_1..5`, `test_batch`) or an image folder `train/<class>/*.jpg`
  (also inside a `.tar.gz`), USPS as `usps.npz` or the libsvm files `usps.bz2`,
  `usps.t.bz2`.
* `source='download'`: those files fetched once from their hosts into a cache folder
  (`awesome_jax.download`), then read as above.
* tiny sets made here for tests: `digits` (scikit-learn's 8x8 digits) and `synthetic`.

`with_extra_train` appends the train splits of more CIFAR-10 folders to a dataset's (e.g.
stylized + original CIFAR-10).

`source='auto'` reads `data_dir` if set, else tries TFDS, else downloads.

Errors name the file and what was expected, in one line (`DataError`).
"""

import bz2
import dataclasses
import gzip
import hashlib
import io
import math
import os
import pickle
import tarfile
import zlib

import numpy as np

DATASETS = ('mnist', 'cifar10', 'usps', 'digits', 'synthetic')
SOURCES = ('auto', 'tfds', 'files', 'download')

# Per-channel statistics of the training sets (of the [0, 1] images).
STATS = {
    'mnist': ((0.1307,), (0.3081,)),
    'usps': ((0.2469,), (0.2989,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                   'horse', 'ship', 'truck')


class DataError(ValueError):
  """A dataset file is missing or not in the expected format."""


@dataclasses.dataclass
class Dataset:
  """Images NHWC float32 in [0, 1], labels int32 in [0, num_classes)."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple
  std: tuple

  @property
  def shape(self):
    return tuple(self.x_train.shape[1:])

  def normalize(self, x):
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

  def denormalize(self, x):
    return x * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)


def check_labels(y, num_classes, where):
  """Raises DataError naming `where` if a label is outside [0, num_classes)."""
  y = np.asarray(y)
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    bad = y[(y < 0) | (y >= num_classes)][0]
    raise DataError(f'{where}: label {int(bad)} outside [0, {num_classes})')


def _finish(name, x_train, y_train, x_test, y_test, num_classes, stats=None):
  for split, x, y in (('train', x_train, y_train), ('test', x_test, y_test)):
    if x.ndim != 4:
      raise DataError(f'{name} {split}: images must be NHWC, got shape {x.shape}')
    if len(x) != len(y):
      raise DataError(f'{name} {split}: {len(x)} images but {len(y)} labels')
    check_labels(y, num_classes, f'{name} {split} labels')
  if stats is None:
    stats = (tuple(float(m) for m in x_train.mean(axis=(0, 1, 2))),
             tuple(float(s) for s in x_train.std(axis=(0, 1, 2))))
  return Dataset(name, x_train.astype(np.float32), y_train.astype(np.int32),
                 x_test.astype(np.float32), y_test.astype(np.int32), num_classes,
                 tuple(stats[0]), tuple(stats[1]))


# ----------------------------------------------------------------------------- MNIST


def _open_maybe_gz(directory, stem):
  for fname in (stem, stem + '.gz'):
    path = os.path.join(directory, fname)
    if os.path.exists(path):
      with open(path, 'rb') as f:
        raw = f.read()
      if not fname.endswith('.gz'):
        return path, raw
      try:
        return path, gzip.decompress(raw)
      except (EOFError, OSError, zlib.error) as e:  # OSError covers gzip.BadGzipFile
        raise DataError(f'{path}: truncated or corrupt gzip file ({e})') from None
  raise DataError(f'{os.path.join(directory, stem)}[.gz]: file not found '
                  '(expected the MNIST idx files)')


def read_idx(path, raw):
  """Parses an idx file (the MNIST format): magic 0x0000080D with D dims, big-endian."""
  if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise DataError(f'{path}: not an idx file of unsigned bytes (bad magic number)')
  ndim = raw[3]
  start = 4 + 4 * ndim
  if len(raw) < start:
    raise DataError(f'{path}: idx header of {ndim} dimensions cut short '
                    f'({len(raw)} bytes)')
  dims = tuple(int(d) for d in np.frombuffer(raw, '>u4', count=ndim, offset=4))
  if len(raw) - start != math.prod(dims):
    raise DataError(f'{path}: header says shape {dims} '
                    f'but holds {len(raw) - start} bytes')
  return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def load_mnist_files(data_dir):
  arrays = {}
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    ipath, iraw = _open_maybe_gz(data_dir, f'{prefix}-images-idx3-ubyte')
    lpath, lraw = _open_maybe_gz(data_dir, f'{prefix}-labels-idx1-ubyte')
    images, labels = read_idx(ipath, iraw), read_idx(lpath, lraw)
    if images.ndim != 3 or labels.ndim != 1:
      raise DataError(f'{ipath}: expected images (N,28,28) and labels (N,), '
                      f'got {images.shape} and {labels.shape}')
    arrays[split] = (images[..., None] / 255.0, labels)
  return _finish('mnist', *arrays['train'], *arrays['test'], 10, STATS['mnist'])


# -------------------------------------------------------------------------- CIFAR-10


def _cifar_batches(data_dir):
  def read(fname):
    path = os.path.join(data_dir, fname)
    if not os.path.exists(path):
      raise DataError(f'{path}: file not found (expected a CIFAR-10 python batch)')
    try:
      with open(path, 'rb') as f:
        d = pickle.load(f, encoding='bytes')
    except Exception as e:  # pickle raises many types on bytes that are not a pickle
      raise DataError(f'{path}: not a CIFAR-10 python batch (unpickling failed: '
                      f'{type(e).__name__}: {e})') from None
    if not isinstance(d, dict) or b'data' not in d or b'labels' not in d:
      raise DataError(f"{path}: not a CIFAR-10 python batch (expected a dict with "
                      f"b'data' and b'labels', got {type(d).__name__})")
    try:
      x = np.asarray(d[b'data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      y = np.asarray(d[b'labels']).reshape(-1)
    except (ValueError, TypeError) as e:
      raise DataError(f'{path}: not a CIFAR-10 python batch ({e})') from None
    return x / 255.0, y
  parts = [read(f'data_batch_{i}') for i in range(1, 6)]
  x_test, y_test = read('test_batch')
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
          x_test, y_test)


def _decode_image(path, data):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
  except Exception as e:  # PIL raises many types
    raise DataError(f'{path}: not a readable image ({e})') from None


def read_image_folder(entries, classes, where):
  """`entries`: iterable of (split/class/name path, bytes). Returns {split: (x, y)}."""
  out = {'train': ([], []), 'test': ([], [])}
  index = {c: i for i, c in enumerate(classes)}
  for path, data in entries:
    parts = path.replace('\\', '/').split('/')
    if len(parts) < 3 or parts[-3] not in out:
      continue
    split, cls = parts[-3], parts[-2]
    if cls not in index:
      raise DataError(f'{where}/{path}: unknown class folder {cls!r}; '
                      f'allowed: {", ".join(classes)}')
    out[split][0].append(_decode_image(f'{where}/{path}', data))
    out[split][1].append(index[cls])
  for split in out:
    if not out[split][0]:
      raise DataError(f'{where}: no images under {split}/<class>/')
  return {s: (np.stack(x) / 255.0, np.asarray(y)) for s, (x, y) in out.items()}


def _cifar_image_folder(data_dir):
  tars = sorted(f for f in os.listdir(data_dir) if f.endswith(('.tar.gz', '.tgz', '.tar')))
  if os.path.isdir(os.path.join(data_dir, 'train')):
    def entries():
      for split in ('train', 'test'):
        for cls in sorted(os.listdir(os.path.join(data_dir, split))):
          folder = os.path.join(data_dir, split, cls)
          for fname in sorted(os.listdir(folder)):
            with open(os.path.join(folder, fname), 'rb') as f:
              yield f'{split}/{cls}/{fname}', f.read()
    where = data_dir
  elif tars:
    where = os.path.join(data_dir, tars[0])
    def entries():
      try:
        with tarfile.open(where) as tar:
          for member in tar:
            if member.isfile() and member.name.lower().endswith(('.jpg', '.jpeg', '.png')):
              yield member.name, tar.extractfile(member).read()
      except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f'{where}: not a readable tar archive ({e})') from None
  else:
    raise DataError(f'{data_dir}: expected CIFAR-10 python batches (data_batch_1..5, '
                    'test_batch), a folder train/<class>/*.jpg, or a .tar.gz of it')
  arrays = read_image_folder(entries(), CIFAR10_CLASSES, where)
  return (*arrays['train'], *arrays['test'])


def load_cifar10_files(data_dir, cache_dir=None):
  """CIFAR-10 from python batches or an image folder (decoded once, then cached; the
  cache is keyed by the folder's path and its files' names, sizes and mtimes, so a folder
  written again at the same path is decoded again)."""
  if os.path.exists(os.path.join(data_dir, 'data_batch_1')):
    arrays = _cifar_batches(data_dir)
  else:
    cache = _cache_path(cache_dir, 'cifar10', data_dir)
    arrays = None
    if os.path.exists(cache):
      try:
        with np.load(cache) as z:
          arrays = tuple(z[k] for k in ('x_train', 'y_train', 'x_test', 'y_test'))
        arrays = (arrays[0] / 255.0, arrays[1], arrays[2] / 255.0, arrays[3])
      except (OSError, ValueError, KeyError):  # removed meanwhile or unreadable: decode
        arrays = None
    if arrays is None:
      arrays = _cifar_image_folder(data_dir)
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      tmp = cache + '.tmp.npz'
      np.savez(tmp, x_train=np.round(arrays[0] * 255).astype(np.uint8), y_train=arrays[1],
               x_test=np.round(arrays[2] * 255).astype(np.uint8), y_test=arrays[3])
      os.replace(tmp, cache)
      _remove_stale_caches(cache)
  return _finish('cifar10', *arrays, 10, STATS['cifar10'])


def _folder_listing_key(data_dir):
  """A digest of the files an image folder is read from (train/ and test/, else the
  archives at its top): their relative paths, sizes and modification times."""
  digest = hashlib.sha1()
  def add(path):
    st = os.stat(path)
    digest.update(f'{os.path.relpath(path, data_dir)}\0{st.st_size}\0'
                  f'{st.st_mtime_ns}\n'.encode())
  if os.path.isdir(os.path.join(data_dir, 'train')):
    for split in ('train', 'test'):
      for root, dirs, files in os.walk(os.path.join(data_dir, split)):
        dirs.sort()
        for fname in sorted(files):
          add(os.path.join(root, fname))
  else:
    for fname in sorted(os.listdir(data_dir)):
      if fname.endswith(('.tar.gz', '.tgz', '.tar')):
        add(os.path.join(data_dir, fname))
  return digest.hexdigest()[:10]


def _cache_path(cache_dir, name, data_dir):
  """<cache>/<name>_<path key>_<listing key>.npz for the image folder `data_dir`."""
  from awesome_jax import download  # pylint: disable=g-import-not-at-top
  cache_dir = download.cache_root(cache_dir)
  key = hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:10]
  return os.path.join(cache_dir, f'{name}_{key}_{_folder_listing_key(data_dir)}.npz')


def _remove_stale_caches(cache):
  """Removes the other caches of the same folder path (older contents; or the caches
  keyed by the path alone, <name>_<path key>.npz)."""
  folder, fname = os.path.split(cache)
  prefix = fname.rsplit('_', 1)[0]
  for other in os.listdir(folder):
    if other != fname and (other == prefix + '.npz' or (
        other.startswith(prefix + '_') and other.endswith('.npz') and
        not other.endswith('.tmp.npz'))):
      try:
        os.remove(os.path.join(folder, other))
      except OSError:  # removed by another process meanwhile
        pass


# ----------------------------------------------- several CIFAR-10 folders (SIN + IN)


def split_list(value):
  """A comma-separated string (or a sequence) -> its non-empty items, stripped."""
  items = value.split(',') if isinstance(value, str) else list(value or ())
  return [str(v).strip() for v in items if str(v).strip()]


def parse_named_dirs(value, field):
  """'name=DIR,name2=DIR2' (or a dict) -> {name: DIR}; a malformed item or a repeated
  name raises DataError naming `field`."""
  if isinstance(value, dict) or hasattr(value, 'items'):
    pairs = [(str(k), str(v)) for k, v in value.items()]
  else:
    pairs = []
    for item in split_list(value):
      name, sep, folder = item.partition('=')
      if not sep or not name.strip() or not folder.strip():
        raise DataError(f'{field}: {item!r} is not NAME=DIR (e.g. stylized=runs/sin_cifar)')
      pairs.append((name.strip(), folder.strip()))
  out = {}
  for name, folder in pairs:
    if name in out:
      raise DataError(f'{field}: name {name!r} given twice')
    out[name] = folder
  return out


def load_cifar10_folder(data_dir, field, cache_dir=None):
  """CIFAR-10 in the folder `data_dir` of config field `field` (load_cifar10_files; a
  missing folder raises DataError naming the field)."""
  if not os.path.isdir(data_dir):
    raise DataError(f'{field}: {data_dir}: not a directory')
  return load_cifar10_files(data_dir, cache_dir)


def _class_names(y):
  return ', '.join(CIFAR10_CLASSES[i] for i in np.unique(y)) or 'none'


def with_extra_train(dataset, data_dirs, field='data.extra_train_dirs', cache_dir=None):
  """`dataset` (CIFAR-10) with the train splits of the CIFAR-10 folders `data_dirs`
  appended to its own (its test split, mean and std kept): SIN + IN. A folder must hold
  the same classes as `dataset`'s train split."""
  xs, ys = [dataset.x_train], [dataset.y_train]
  for data_dir in data_dirs:
    other = load_cifar10_folder(data_dir, field, cache_dir)
    if other.shape != dataset.shape:
      raise DataError(f'{field}: {data_dir}: images of shape {other.shape}, '
                      f'not {dataset.shape}')
    if set(np.unique(other.y_train)) != set(np.unique(dataset.y_train)):
      raise DataError(f'{field}: {data_dir}: its train classes ({_class_names(other.y_train)})'
                      f' differ from the main data\'s ({_class_names(dataset.y_train)})')
    xs.append(other.x_train)
    ys.append(other.y_train)
  return dataclasses.replace(dataset, x_train=np.concatenate(xs), y_train=np.concatenate(ys))


# ------------------------------------------------------------------------------ USPS


def read_usps_libsvm(path):
  """USPS in libsvm format (`label index:value ...`, labels 1..10, values in [-1, 1]).

  Returns images (N, 16, 16) in [0, 1] and labels 0..9.
  """
  images, labels = [], []
  try:
    with bz2.open(path, 'rt') as f:
      for line_no, line in enumerate(f, 1):
        fields = line.split()
        if not fields:
          continue
        try:
          label = int(float(fields[0]))
          pairs = np.array(' '.join(fields[1:]).replace(':', ' ').split(), float)
          index, value = pairs.reshape(-1, 2).T
        except ValueError:
          raise DataError(f'{path}, line {line_no}: not `label index:value ...` '
                          '(libsvm format)') from None
        if not 1 <= label <= 10:
          raise DataError(f'{path}, line {line_no}: label {label} outside 1..10')
        if index.size and (index.min() < 1 or index.max() > 256):
          raise DataError(f'{path}, line {line_no}: pixel index outside 1..256')
        pixels = np.zeros(256)  # a libsvm file may leave out zero values
        pixels[index.astype(int) - 1] = value
        images.append(pixels.reshape(16, 16))
        labels.append(label - 1)
  except (EOFError, OSError, UnicodeDecodeError) as e:  # OSError covers a bad bz2 stream
    raise DataError(f'{path}: truncated or corrupt bz2 file ({e})') from None
  if not images:
    raise DataError(f'{path}: no examples')
  return np.clip((np.stack(images) + 1) / 2, 0, 1), np.asarray(labels)


def load_usps_files(data_dir):
  """USPS from `usps.npz`, else from the libsvm files `usps.bz2` and `usps.t.bz2`."""
  path = os.path.join(data_dir, 'usps.npz')
  libsvm = [os.path.join(data_dir, f) for f in ('usps.bz2', 'usps.t.bz2')]
  if not os.path.exists(path) and all(os.path.exists(p) for p in libsvm):
    arrays = [*read_usps_libsvm(libsvm[0]), *read_usps_libsvm(libsvm[1])]
    return _finish('usps', arrays[0][..., None], arrays[1], arrays[2][..., None], arrays[3],
                   10, STATS['usps'])
  if not os.path.exists(path):
    raise DataError(f'{path}: file not found (expected usps.npz with x_train, y_train, '
                    'x_test, y_test, or the libsvm files usps.bz2 and usps.t.bz2)')
  try:
    with np.load(path) as z:
      missing = {'x_train', 'y_train', 'x_test', 'y_test'} - set(z.files)
      if missing:
        raise DataError(f'{path}: missing arrays {sorted(missing)}')
      arrays = [z['x_train'], z['y_train'], z['x_test'], z['y_test']]
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: not a readable npz ({e})') from None
  for i in (0, 2):
    if arrays[i].ndim == 3:
      arrays[i] = arrays[i][..., None]
  return _finish('usps', *arrays, 10, STATS['usps'])


# ------------------------------------------------------------------------ tiny sets


def load_digits(test_fraction=0.2, seed=0):
  """scikit-learn's 1,797 8x8 digits (ships with scikit-learn), as 8x8x1 in [0, 1]."""
  from sklearn.datasets import load_digits as sk_digits  # pylint: disable=g-import-not-at-top
  d = sk_digits()
  x = (d.images / 16.0)[..., None]
  perm = np.random.default_rng(seed).permutation(len(x))
  n_test = int(len(x) * test_fraction)
  te, tr = perm[:n_test], perm[n_test:]
  return _finish('digits', x[tr], d.target[tr], x[te], d.target[te], 10)


def make_synthetic(num_classes=4, shape=(8, 8, 1), n_train=512, n_test=256, noise=0.3,
                   seed=0):
  """Gaussian blobs around one random prototype image per class, clipped to [0, 1]."""
  rng = np.random.default_rng(seed)
  protos = rng.uniform(size=(num_classes,) + tuple(shape))
  def draw(n):
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    return np.clip(protos[y] + noise * rng.normal(size=(n,) + tuple(shape)), 0, 1), y
  return _finish('synthetic', *draw(n_train), *draw(n_test), num_classes)


# ------------------------------------------------------------------------------ TFDS


def first_line(e, with_type=True):
  """The first line of an exception's message for a one-line error, after its type's name
  (`with_type`), or the type's name alone when the message is empty."""
  lines = str(e).strip().splitlines()
  if not lines:
    return type(e).__name__
  return f'{type(e).__name__}: {lines[0]}' if with_type else lines[0]


def _tfds_arrays(name, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  splits = tfds.load(name, split=['train', 'test'], batch_size=-1, as_supervised=True,
                     data_dir=data_dir or None)
  return tfds.as_numpy(splits)


def load_tfds(name, data_dir=None):
  """`tfds.load` of the whole train/test splits as arrays (needs TensorFlow)."""
  try:
    (xtr, ytr), (xte, yte) = _tfds_arrays(name, data_dir)
  except Exception as e:  # tfds raises many types (network, missing TF, ...)
    raise DataError(f'tfds.load({name!r}) failed: {first_line(e)}. Offline, set '
                    'config.data.data_dir to a folder of the standard files') from None
  return _finish(name, xtr / 255.0, ytr, xte / 255.0, yte, 10, STATS.get(name))


# --------------------------------------------------------------------------- entry


def load_files(name, data_dir, cache_dir=None):
  """Reads dataset `name` from the folder `data_dir` of its standard files."""
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f'data.data_dir={data_dir!r}: not a directory')
  if name == 'mnist':
    return load_mnist_files(data_dir)
  if name == 'cifar10':
    return load_cifar10_files(data_dir, cache_dir)
  return load_usps_files(data_dir)


def load_download(name, data_dir='', cache_dir=None, why=''):
  """Downloads `name`'s standard files (once) and reads them; prints where from.

  The files go to `data_dir` if set, else to `download.cache_root(cache_dir)/name`.
  """
  from awesome_jax import download  # pylint: disable=g-import-not-at-top
  folder = download.download(name, cache_dir=cache_dir, folder=data_dir or None)
  dataset = load_files(name, folder, cache_dir)
  why = f'; {why}' if why else ''
  print(f"{name}: read the standard files in {folder} (downloaded once from the dataset's "
        f'hosts{why})')
  return dataset


def load(name, source='auto', data_dir='', tfds_data_dir='', cache_dir=None):
  """Loads dataset `name` ('mnist', 'cifar10', 'usps', 'digits', 'synthetic').

  `source='auto'` reads the standard files when `data_dir` is set, else uses TFDS, and
  if TFDS cannot load, downloads the standard files into the cache folder
  (`awesome_jax.download`). `source='download'` downloads into `data_dir` if set, else
  into the cache folder. `cache_dir` overrides the cache folder.
  """
  if name not in DATASETS:
    raise DataError(f'data.name={name!r}: unknown; allowed: {", ".join(DATASETS)}')
  if source not in SOURCES:
    raise DataError(f'data.source={source!r}: unknown; allowed: {", ".join(SOURCES)}')
  if name == 'digits':
    return load_digits()
  if name == 'synthetic':
    return make_synthetic()
  if source == 'files' or (source == 'auto' and data_dir):
    return load_files(name, data_dir, cache_dir)
  if source == 'tfds':
    return load_tfds(name, tfds_data_dir)
  if source == 'download':
    return load_download(name, data_dir, cache_dir)
  try:
    (xtr, ytr), (xte, yte) = _tfds_arrays(name, tfds_data_dir)
  except Exception as e:  # any failure (TFDS or TensorFlow missing, no network): download
    tfds_failure = f'TFDS: {first_line(e)}'
  else:
    return _finish(name, xtr / 255.0, ytr, xte / 255.0, yte, 10, STATS.get(name))
  try:
    return load_download(name, cache_dir=cache_dir, why=tfds_failure)
  except DataError as e:
    raise DataError(f'{e}; {tfds_failure}. Offline, set config.data.data_dir to a folder '
                    'of the standard files') from None


class EpochBatches:
  """Deterministic batches: batch `step` is a slice of its epoch's permutation.

  The permutation of epoch e is drawn from `seed` and e only, so a resumed run sees
  exactly the batches an uninterrupted run would.
  """

  def __init__(self, x, y, batch_size, seed):
    self.x, self.y, self.batch_size, self.seed = x, y, min(batch_size, len(x)), seed
    self.per_epoch = len(x) // self.batch_size
    self._epoch, self._perm = None, None

  def __call__(self, step):
    epoch, i = divmod(step, self.per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
    idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
    return self.x[idx], self.y[idx]


def resize(x, size):
  """Bilinear resize of NHWC images to (size, size) (e.g. USPS 16x16 -> 28x28)."""
  import jax  # pylint: disable=g-import-not-at-top
  n, _, _, c = x.shape
  return np.asarray(jax.image.resize(x, (n, size, size, c), 'bilinear'), np.float32)
