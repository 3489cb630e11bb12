"""Image folders streamed from disk: the classify task's input for ImageNet-size data.

A folder ROOT/<split>/<class>/<image> (ImageNet's ILSVRC2012 train/ and val/ sorted into
class subfolders, or Stylized-ImageNet as configs/stylize.py:imagenet writes it) is far
too large for data.py's in-memory arrays (1.28 M images: ~770 GB as float32 at 224x224).
Here only the file lists are held in memory; images are decoded when a batch asks for
them, in a thread pool, while the previous step runs.

* Splits: `train/`; the test split is the first of `val/`, `validation/`, `test/` that
  exists. Classes are the sorted names of the train split's subfolders; any image PIL
  reads (IMAGE_EXTENSIONS, any size), converted to RGB. Several folders' train splits
  can be combined (SIN + IN); they must have the same class names.
* Training (`FolderBatches`, the interface of data.EpochBatches): batch `step` is a slice
  of its epoch's permutation, drawn from (seed, epoch) only; each image gets a random
  resized crop (area 8-100 %, aspect 3/4-4/3, as torchvision's RandomResizedCrop) to
  image_size x image_size and a random horizontal flip, drawn from (seed, step, row)
  only. So batch `step` is the same array whenever it is asked for: a resumed run sees
  exactly the batches an uninterrupted one would, and with several processes each
  decodes only its own rows of the global batch (`rows`).
* Testing (`accuracy`): the shorter side resized to round(image_size * 256 / 224), the
  centre image_size x image_size crop; the split streamed in chunks, the next chunk
  decoding while the current one is scored.
* Pixels normalised with ImageNet's mean / std (MEAN, STD), as Geirhos et al. 2019 did for
  both ImageNet and Stylized-ImageNet.

Errors are `FolderError` (a data.DataError) with one line naming the folder or file: a
missing folder or split, a split without class subfolders, a class folder without
images, an image that cannot be decoded (found when it is read), train folders whose
classes differ.
"""

import concurrent.futures
import dataclasses
import functools
import math
import os

import numpy as np
from PIL import Image

from awesome_jax import data as data_lib

NAME = 'folder'                   # classify's data.name for an image folder
TRAIN_SPLIT = 'train'
TEST_SPLITS = ('val', 'validation', 'test')  # the first that exists is the test split
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff',
                    '.ppm', '.pgm')
MEAN = (0.485, 0.456, 0.406)      # ImageNet's, of [0, 1] RGB pixels
STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)               # random-resized crop: fraction of the image's area
RATIO = (3 / 4, 4 / 3)            # ... and aspect ratio (width / height) of the crop
TEST_RESIZE = 256 / 224           # test: shorter side to image_size * this, centre crop
PREFETCH = 2                      # training batches decoded ahead of the one asked for


class FolderError(data_lib.DataError):
  """An image folder, or an image in it, is missing or unreadable (one line)."""


@dataclasses.dataclass(frozen=True)
class Split:
  """The images of one split of one or more folders: paths and int32 labels (indices
  into `classes`). `where` names the folder(s) in messages."""
  where: str
  classes: tuple
  files: tuple
  labels: np.ndarray

  def __len__(self):
    return len(self.files)


@dataclasses.dataclass(frozen=True)
class FolderData:
  """What classify needs of a folder dataset (data.Dataset's fields, but no arrays)."""
  train: Split
  test: Split
  image_size: int
  mean: tuple = MEAN
  std: tuple = STD
  name: str = NAME

  @property
  def shape(self):
    return (self.image_size, self.image_size, 3)

  @property
  def num_classes(self):
    return len(self.train.classes)

  @property
  def classes(self):
    return self.train.classes

  def describe(self):
    return (f'{self.name}: {len(self.train):,} train images of {self.num_classes} classes '
            f'in {self.train.where}; {len(self.test):,} test images in {self.test.where}')


# ------------------------------------------------------------------------ listing


def _is_image(name):
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def _subfolders(root):
  with os.scandir(root) as entries:
    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith('.'))


def _images(folder):
  with os.scandir(folder) as entries:
    return sorted(e.name for e in entries if e.is_file() and _is_image(e.name))


def list_split(root, field, classes=None):
  """The Split of the folder `root` = <folder>/<split> (its class subfolders, each with
  images). `classes`: the class names labels index (the training classes: a subfolder
  not among them is an error); None: `root`'s own subfolders. `field` starts messages."""
  names = _subfolders(root)
  if not names:
    raise FolderError(f'{field}: {root} has no class subfolders (expected '
                      f'{root}/<class>/<image>)')
  classes = tuple(names) if classes is None else tuple(classes)
  index = {c: i for i, c in enumerate(classes)}
  files, labels = [], []
  for name in names:
    if name not in index:
      raise FolderError(f'{field}: {root}/{name}: a class the training data does not have '
                        f'({len(classes)} classes, from {classes[0]!r} to {classes[-1]!r})')
    images = _images(os.path.join(root, name))
    if not images:
      raise FolderError(f'{field}: {root}/{name} holds no images '
                        f'({" ".join(IMAGE_EXTENSIONS)})')
    files += [os.path.join(root, name, f) for f in images]
    labels += [index[name]] * len(images)
  return Split(root, classes, tuple(files), np.asarray(labels, np.int32))


def split_folder(data_dir, field, test=False):
  """<data_dir>/train, or for `test` the first of <data_dir>/{val,validation,test}."""
  if not data_dir or not os.path.isdir(data_dir):
    raise FolderError(f'{field}={data_dir!r}: not a directory')
  names = TEST_SPLITS if test else (TRAIN_SPLIT,)
  for name in names:
    if os.path.isdir(os.path.join(data_dir, name)):
      return os.path.join(data_dir, name)
  wanted = ', '.join(f'{n}/' for n in names[:-1])
  wanted = f'{wanted} or {names[-1]}/' if wanted else f'{names[-1]}/'
  raise FolderError(f'{field}={data_dir}: no {wanted} folder (expected '
                    f'{data_dir}/{names[0]}/<class>/<image>)')


def first_class_difference(a, b):
  """(a's, b's) class name at the first place the sorted name lists `a`, `b` differ
  ('none' past the end of the shorter), or None when they are the same."""
  for i in range(max(len(a), len(b))):
    x = a[i] if i < len(a) else 'none'
    y = b[i] if i < len(b) else 'none'
    if x != y:
      return x, y
  return None


def combine(main, others, field):
  """`main` with the images of the Splits `others` appended; each must have the same
  class names as `main` (else one line naming both folders and the first difference)."""
  for other in others:
    diff = first_class_difference(main.classes, other.classes)
    if diff:
      raise FolderError(f'{field}: {other.where} has class {diff[1]!r} where {main.where} has '
                        f'{diff[0]!r} (the train splits must have the same class folders)')
  if not others:
    return main
  parts = (main,) + tuple(others)
  return Split(' + '.join(p.where for p in parts), main.classes,
               sum((p.files for p in parts), ()), np.concatenate([p.labels for p in parts]))


def open_folder(data_dir, image_size, extra_train_dirs=(), field='data.data_dir',
                extra_field='data.extra_train_dirs'):
  """The FolderData of `data_dir` (its train split with the train splits of
  `extra_train_dirs` appended; its own test split): the folders are listed, no image is
  read."""
  train = list_split(split_folder(data_dir, field), field)
  test = list_split(split_folder(data_dir, field, test=True), field, train.classes)
  extra = [list_split(split_folder(d, extra_field), extra_field) for d in extra_train_dirs]
  return FolderData(combine(train, extra, extra_field), test, int(image_size))


def open_test(data_dir, classes, field):
  """The test split of another folder (data.extra_test), labelled by `classes`."""
  return list_split(split_folder(data_dir, field, test=True), field, classes)


# --------------------------------------------------------------------- transforms


def read_image(path):
  """The image file `path` as an RGB PIL image; one FolderError line naming it if PIL
  cannot decode it."""
  try:
    with Image.open(path) as im:
      return im.convert('RGB')
  except Exception as e:  # pylint: disable=broad-except  (PIL raises many types)
    raise FolderError(f'{path}: not a readable image ({data_lib.first_line(e)})') from None


def random_resized_crop_box(rng, width, height, scale=SCALE, ratio=RATIO):
  """(left, top, w, h) of a crop of a width x height image, as torchvision's
  RandomResizedCrop draws it: 10 tries of an area fraction uniform in `scale` and a
  log-uniform aspect ratio in `ratio` that fits; else the whole image clipped to
  `ratio`, centred."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, w, h
  if width / height < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif width / height > max(ratio):
    w, h = int(round(height * max(ratio))), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def example_rng(seed, step, row):
  """The generator of the crop and flip of row `row` of training batch `step`."""
  return np.random.default_rng([seed, step, row])


def train_example(path, image_size, rng):
  """uint8 (image_size, image_size, 3): a random resized crop of the image at `path`
  (bilinear), flipped left-right with probability 1/2; the randomness from `rng`."""
  im = read_image(path)
  left, top, w, h = random_resized_crop_box(rng, *im.size)
  im = im.crop((left, top, left + w, top + h)).resize((image_size, image_size),
                                                      Image.BILINEAR)
  x = np.asarray(im)
  return x[:, ::-1] if rng.random() < 0.5 else x


def eval_example(path, image_size):
  """uint8 (image_size, image_size, 3): the image at `path` with its shorter side resized
  (bilinear) to round(image_size * 256 / 224), then its centre crop."""
  im = read_image(path)
  width, height = im.size
  short = int(round(image_size * TEST_RESIZE))
  if width <= height:
    size = (short, int(short * height / width))
  else:
    size = (int(short * width / height), short)
  x = np.asarray(im.resize(size, Image.BILINEAR))
  top = int(round((size[1] - image_size) / 2))
  left = int(round((size[0] - image_size) / 2))
  return x[top:top + image_size, left:left + image_size]


def normalize(x, mean=MEAN, std=STD):
  """float32 (x / 255 - mean) / std of uint8 pixels."""
  return ((np.asarray(x, np.float32) / 255 - np.asarray(mean, np.float32)) /
          np.asarray(std, np.float32))


def _fill(out, row, load, mean, std):
  out[row] = normalize(load(), mean, std)


def _pool(workers):
  return concurrent.futures.ThreadPoolExecutor(
      max_workers=workers or min(32, os.cpu_count() or 4), thread_name_prefix='folder_stream')


def _wait(futures):
  for f in futures:
    f.result()  # the first failure (a FolderError) is raised here


# ----------------------------------------------------------------------- training


class FolderBatches:
  """Deterministic training batches of a Split, decoded in a thread pool.

  `batches(step) -> (x, y)`: x float32 (batch_size, image_size, image_size, 3)
  normalised, y int32 (batch_size,); batch `step` is slice `step % per_epoch` of epoch
  `step // per_epoch`'s permutation (drawn from seed and epoch only: EpochBatches'
  order), each row augmented from (seed, step, row) only. Asking for step s also starts
  decoding s+1 .. s+PREFETCH (not `stop` or past it) in the background.

  `rows`: the rows of each batch this process decodes (None: all); the others stay 0 (a
  multi-process run: each process's devices hold only their rows of the global batch).
  `close()` (or `with`) cancels what is queued and stops the threads.
  """

  def __init__(self, split, batch_size, seed, image_size, mean=MEAN, std=STD, workers=None,
               prefetch=PREFETCH):
    self.split, self.seed, self.image_size = split, seed, int(image_size)
    self.mean, self.std = mean, std
    self.y = split.labels
    self.batch_size = min(batch_size, len(split))
    self.per_epoch = len(split) // self.batch_size
    self.rows = None
    self.stop = None              # steps >= stop are never prefetched (None: no limit)
    self.workers, self.prefetch = workers, prefetch
    self._pool, self._pending = None, {}
    self._epoch, self._perm = None, None

  def indices(self, step):
    """The indices into split.files of batch `step`."""
    epoch, i = divmod(step, self.per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
    return self._perm[i * self.batch_size:(i + 1) * self.batch_size]

  def _submit(self, step):
    if self._pool is None:
      self._pool = _pool(self.workers)
    idx = self.indices(step)
    s = self.image_size
    x = np.zeros((len(idx), s, s, 3), np.float32)
    rows = range(len(idx)) if self.rows is None else self.rows
    futures = [self._pool.submit(
        _fill, x, r, functools.partial(train_example, self.split.files[idx[r]], s,
                                       example_rng(self.seed, step, r)), self.mean, self.std)
               for r in rows]
    return x, self.split.labels[idx], futures

  def __call__(self, step):
    batch = self._pending.pop(step, None) or self._submit(step)
    ahead = range(step + 1, step + 1 + self.prefetch)
    for s in [s for s in self._pending if s not in ahead]:  # not asked for in order
      for f in self._pending.pop(s)[2]:
        f.cancel()
    for s in ahead:
      if s not in self._pending and (self.stop is None or s < self.stop):
        self._pending[s] = self._submit(s)
    x, y, futures = batch
    _wait(futures)
    return x, y

  def close(self):
    """Cancels the queued decoding and stops the threads (idempotent)."""
    for _, _, futures in self._pending.values():
      for f in futures:
        f.cancel()
    self._pending = {}
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ------------------------------------------------------------------------ testing


def eval_chunks(split, image_size, chunk, pool, mean=MEAN, std=STD):
  """(x, y) of split's images in order, `chunk` at a time (test transform, normalised);
  the next chunk is decoded in `pool` while the caller uses the current one."""
  def submit(start):
    files = split.files[start:start + chunk]
    x = np.zeros((len(files), image_size, image_size, 3), np.float32)
    futures = [pool.submit(_fill, x, r, functools.partial(eval_example, f, image_size),
                           mean, std) for r, f in enumerate(files)]
    return x, split.labels[start:start + chunk], futures

  starts = range(0, len(split), chunk)
  current = submit(0) if starts else None
  for nxt in list(starts[1:]) + [None]:
    following = submit(nxt) if nxt is not None else None
    x, y, futures = current
    _wait(futures)
    yield x, y
    current = following


def accuracy(count_correct, split, image_size, chunk=256, mean=MEAN, std=STD, workers=None):
  """Top-1 accuracy on `split` streamed in chunks: count_correct(x, y) -> the number of
  correct predictions of a chunk. At most two chunks are in memory."""
  if not len(split):
    raise FolderError(f'{split.where}: no images to test on')
  pool = _pool(workers)
  try:
    hits = sum(int(count_correct(x, y)) for x, y in
               eval_chunks(split, image_size, chunk, pool, mean, std))
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
  return hits / len(split)
