"""Reading distilled sets: our own distilled.npz, a plain npz from elsewhere, or the
`results.pth` of the original PyTorch code (SsnL/dataset-distillation), without torch.

`load_any(path, fmt)` returns the dict `load_distilled` returns, which
`distill.train_on_distilled` trains on. With S batches of n images, K classes, T steps:

  images_normalized (S, n, H, W, C)  what the net sees; images: the same in pixels
  targets (S, n, K)   target distributions; hard_labels (S, n) their argmax
  lrs (T,) or (T, P)  lr of inner step t (P: one per param leaf, named by lr_params)
  step_order (T,)     batch of step t: always t % S (another order is unrolled, S = T)
  mean, std (C,)      x_normalized = (pixels - mean) / std
  dataset, model, model_kwargs (JSON)  what to train and test on
  label_encoding, normalization, loss  descriptions
  momentum            optional: heavy-ball inner SGD (absent: plain SGD)
  init/<param path>   optional: the fixed init of a fixed-init set (awesome_jax only)

Layouts (`fmt`; 'auto' tells them apart by content):

'awesome_jax': the distilled.npz a distill run writes (`distill.save_distilled`).

'plain_npz': an npz from any codebase, with the arrays
  images       (N, H, W, C): one batch, trained on at every step (S = 1); or
               (S, n, H, W, C): S batches of n images
  labels       int classes (N,) / (S, n), or soft targets (N, K) / (S, n, K) whose
               rows sum to 1
  lrs          (T,) lr of each inner step, or a scalar: one step per batch (T = S)
  image_space  optional, 'normalized' (default: images as the net sees them) or
               'pixels' (in [0, 1]; normalised here with mean and std)
  mean, std    (C,) or scalars, the normalisation (pixels - mean) / std: needed to test
               on real images; from the keywords (eval.mean, eval.std) when absent
  step_order   optional (T,) ints: batch of step t (default t % S)
  momentum     optional scalar: heavy-ball momentum of the inner SGD
  dataset      optional name (data.name); from the keyword when absent
  model        optional name (model.name), model_kwargs optional JSON (model.kwargs)

'torch': the results.pth the original code saves (its utils/io.py save_results), a
  list of T = distill_steps * distill_epochs tuples (data, label, lr), one per inner
  step in order: data (n, C, H, W) float32 normalised images, label (n,) int64 classes,
  lr a (1,) tensor; every epoch repeats the same S data tensors. Read as
  (S, n, H, W, C) images, one-hot targets, step_order t % S. The file names neither
  dataset nor model: they come from the keywords (original names such as 'MNIST' or
  'LeNet' are accepted); mean/std default to the original's normalisation of the
  dataset (ORIGINAL_NORMALIZATION). Sets distilled for a fixed init (known_init) do
  not store it, so they are tested from fresh inits here.

Keywords only fill in what a file lacks. Every problem is one DistilledFileError line
naming the file and the missing key or the config field to set.
"""

import json
import os
import zipfile
import zlib

import numpy as np

from awesome_jax import pretrained

FORMATS = ('auto', 'awesome_jax', 'plain_npz', 'torch')

ACCEPTED = ("accepted: a distilled.npz written by awesome_jax, a plain npz with images, "
            "labels, lrs, or the original PyTorch code's results.pth")

# the config field that supplies a value a file lacks
CONFIG_FIELDS = {'dataset': 'data.name', 'model': 'model.name', 'mean': 'eval.mean',
                 'std': 'eval.std'}

# SsnL/dataset-distillation's normalisation of the datasets we also have (under our names)
ORIGINAL_NORMALIZATION = {
    'mnist': ((0.1307,), (0.3081,)),
    'usps': ((0.15972736477851868,), (0.25726667046546936,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
}
# its dataset and architecture names -> ours
ORIGINAL_NAMES = {'MNIST': 'mnist', 'USPS': 'usps', 'Cifar10': 'cifar10',
                  'LeNet': 'lenet', 'AlexCifarNet': 'alexcifarnet'}

# what a distilled.npz written by awesome_jax must hold (the rest can be derived)
OWN_REQUIRED = ('images_normalized', 'targets', 'lrs', 'mean', 'std', 'dataset', 'model',
                'model_kwargs')
PLAIN_REQUIRED = ('images', 'labels', 'lrs')
PLAIN_KEYS = ('images, labels, lrs[, image_space, mean, std, step_order, momentum, '
              'dataset, model, model_kwargs]')


class DistilledFileError(ValueError):
  """A distilled-set file that is missing, unreadable, or lacks what its layout needs."""


def _fail(path, problem, hint=ACCEPTED):
  raise DistilledFileError(f'{path}: {problem}; {hint}')


def _check_file(path):
  if os.path.isdir(path):
    _fail(path, 'is a directory, not a file')
  if not os.path.isfile(path):
    _fail(path, 'no such file')


# ---------------------------------------------------------------- which layout


def detect_format(path):
  """'awesome_jax', 'plain_npz' or 'torch': the layout of the file at `path`, by content."""
  _check_file(path)
  if zipfile.is_zipfile(path):
    try:
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
      _fail(path, f'a corrupt zip ({pretrained.one_line(e)})')
    if any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
      return 'torch'
    arrays = {n[:-len('.npy')] for n in names if n.endswith('.npy')}
    if not arrays:
      _fail(path, 'a zip holding neither .npy arrays nor a data.pkl')
    if 'images_normalized' in arrays or 'targets' in arrays:
      return 'awesome_jax'
    if 'images' in arrays or 'labels' in arrays:
      return 'plain_npz'
    _fail(path, "an npz with no 'images_normalized' (awesome_jax) nor 'images' (plain npz) "
                f'array; it holds {", ".join(sorted(arrays)[:8])}')
  with open(path, 'rb') as f:
    head = f.read(2)
  if head == b'PK':  # a zip's local header without a readable central directory
    _fail(path, 'a corrupt or truncated zip (npz) file')
  if head[:1] == b'\x80':  # a pickle's PROTO opcode: torch's legacy (< 1.6) format
    return 'torch'
  _fail(path, 'neither an npz nor a PyTorch file')


def _read_npz(path):
  """{name: array} of an npz, refusing pickled (object) arrays."""
  _check_file(path)
  if not zipfile.is_zipfile(path):
    _fail(path, 'not an npz (zip) file')
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except ValueError as e:
    if 'allow_pickle' in str(e):
      _fail(path, 'holds pickled (object) arrays, which are not read')
    _fail(path, f'a corrupt npz ({pretrained.one_line(e)})')
  except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as e:
    _fail(path, f'a corrupt npz ({pretrained.one_line(e)})')


def _text(value, key, path):
  a = np.asarray(value)
  if a.size != 1 or a.dtype.kind not in 'USO':
    _fail(path, f"'{key}' is not a string (dtype {a.dtype}, shape {a.shape})")
  v = a.reshape(-1)[0]
  return v.decode() if isinstance(v, bytes) else str(v)


def _present(value):
  return value is not None and not (isinstance(value, (str, tuple, list)) and not value)


# -------------------------------------------------------- checks common to all


def _numbers(value, key, path):
  """`value` as a float32 array, or a DistilledFileError naming `key`."""
  a = np.asarray(value)
  if a.dtype.kind not in 'biuf':
    _fail(path, f"'{key}' holds {a.dtype} values, not numbers")
  return a.astype(np.float32)


def _channel_stats(value, channels, key, path):
  a = _numbers(value, key, path).reshape(-1)
  if a.size == 1:
    a = np.full((channels,), a[0], np.float32)
  if a.size != channels:
    _fail(path, f"'{key}' has {a.size} values for {channels} image channels")
  if not np.all(np.isfinite(a)) or (key == 'std' and np.any(a <= 0)):
    _fail(path, f"'{key}' = {a.tolist()} is not a usable normalisation")
  return a


def _complete(z, path):
  """Checks the shapes of a loaded set, fills the keys derivable from the others and
  unrolls a step order other than t % S (train_on_distilled steps through t % S)."""
  z = dict(z)
  xn = _numbers(z['images_normalized'], 'images_normalized', path)
  if xn.ndim != 5:
    _fail(path, f"'images_normalized' has shape {xn.shape}, expected (S, n, H, W, C)")
  num_batches, n, channels = xn.shape[0], xn.shape[1], xn.shape[-1]
  ys = _numbers(z['targets'], 'targets', path)
  if ys.ndim != 3 or ys.shape[:2] != (num_batches, n):
    _fail(path, f"'targets' has shape {ys.shape}, expected (S, n, K) with "
                f'(S, n) = {(num_batches, n)} as in the images')
  lrs = _numbers(z['lrs'], 'lrs', path)
  if lrs.ndim not in (1, 2) or len(lrs) == 0:
    _fail(path, f"'lrs' has shape {lrs.shape}, expected (T,) or (T, P) with T >= 1")
  if not np.all(np.isfinite(lrs)):
    _fail(path, "'lrs' holds a non-finite learning rate")
  total = len(lrs)
  periodic = np.arange(total) % num_batches
  order = z.get('step_order')
  if order is None:
    order = periodic
  order = np.asarray(order)
  if (order.shape != (total,) or (order.size and order.dtype.kind not in 'iu') or
      np.any(order < 0) or np.any(order >= num_batches)):
    _fail(path, f"'step_order' must be {total} ints in [0, {num_batches}), one per lr; "
                f'got shape {order.shape}, dtype {order.dtype}')
  for key in ('mean', 'std'):
    z[key] = _channel_stats(z[key], channels, key, path)
  for key in ('dataset', 'model'):
    z[key] = np.array(_text(z[key], key, path))
  try:
    kwargs = json.loads(_text(z['model_kwargs'], 'model_kwargs', path))
  except json.JSONDecodeError:
    kwargs = None
  if not isinstance(kwargs, dict):
    _fail(path, "'model_kwargs' is not a JSON object")
  if 'images' not in z:
    z['images'] = xn * z['std'] + z['mean']
  if np.shape(z['images']) != xn.shape:
    _fail(path, f"'images' has shape {np.shape(z['images'])}, 'images_normalized' {xn.shape}")
  if 'hard_labels' not in z:
    z['hard_labels'] = np.argmax(ys, axis=-1).astype(np.int32)
  if np.shape(z['hard_labels']) != (num_batches, n):
    _fail(path, f"'hard_labels' has shape {np.shape(z['hard_labels'])}, "
                f'expected {(num_batches, n)}')
  z.setdefault('label_encoding', np.array(
      'one-hot' if np.all(np.max(ys, -1) == 1) else 'soft: given target distributions'))
  z.setdefault('lr_params', np.array([], dtype=str))
  z.setdefault('normalization', np.array('x_normalized = (pixels - mean) / std'))
  z.setdefault('loss', np.array('softmax cross-entropy against targets, mean over batch'))
  if not np.array_equal(order, periodic):
    for key in ('images', 'images_normalized', 'targets', 'hard_labels'):
      z[key] = np.asarray(z[key])[order]
    order = np.arange(total)
  z['step_order'] = order
  return z


# ------------------------------------------------------------------ the layouts


def load_distilled(path):
  """Reads a distilled.npz written by `distill.save_distilled` into a dict of arrays."""
  z = _read_npz(path)
  missing = [k for k in OWN_REQUIRED if k not in z]
  if missing:
    _fail(path, f"no '{missing[0]}' array, so not a distilled.npz written by awesome_jax")
  return _complete(z, path)


def _from_file_or_keyword(z, key, keywords, path, layout):
  if key in z:
    return z[key]
  if _present(keywords.get(key)):
    return keywords[key]
  _fail(path, f"no '{key}' in this {layout}", f'set {CONFIG_FIELDS[key]}')


def _model_kwargs_json(z, keywords, path):
  if 'model_kwargs' in z:
    return _text(z['model_kwargs'], 'model_kwargs', path)
  value = keywords.get('model_kwargs')
  if isinstance(value, str):
    return value or '{}'
  if hasattr(value, 'to_dict'):  # an ml_collections ConfigDict
    value = value.to_dict()
  return json.dumps(dict(value or {}))


def _targets_of(labels, batch_dims, num_classes, path):
  """(targets (..., K) float32, label_encoding) from int labels or soft targets."""
  if labels.ndim == batch_dims:  # classes
    if labels.dtype.kind == 'f' and np.all(np.isfinite(labels)):
      if np.any(labels != np.round(labels)):
        _fail(path, "'labels' of shape (N,) / (S, n) must be integer classes")
      labels = labels.astype(np.int64)
    if labels.dtype.kind not in 'iu' or (labels.size and labels.min() < 0):
      _fail(path, f"'labels' must be classes >= 0, got dtype {labels.dtype}")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.size and labels.max() >= k:
      _fail(path, f"'labels' holds class {int(labels.max())} but num_classes is {k}")
    return np.eye(k, dtype=np.float32)[labels], 'one-hot'
  if labels.ndim == batch_dims + 1 and labels.dtype.kind == 'f':  # distributions
    sums = labels.sum(-1)
    if np.any(labels < 0) or not np.allclose(sums, 1, atol=1e-3):
      _fail(path, "soft 'labels' must be distributions (>= 0, rows summing to 1), not "
                  'logits')
    if num_classes is not None and labels.shape[-1] != num_classes:
      _fail(path, f"soft 'labels' have {labels.shape[-1]} classes, not {num_classes}")
    return labels.astype(np.float32), 'soft: given target distributions'
  _fail(path, f"'labels' has shape {labels.shape}, dtype {labels.dtype}: expected int "
              'classes shaped like the images\' leading axes, or float targets with one '
              'more axis')


def _from_plain(z, path, keywords):
  layout = 'plain npz'
  missing = [k for k in PLAIN_REQUIRED if k not in z]
  if missing:
    _fail(path, f"no '{missing[0]}' array (a plain npz holds {PLAIN_KEYS})")
  x = _numbers(z['images'], 'images', path)
  if x.ndim == 4:
    x = x[None]
  if x.ndim != 5:
    _fail(path, f"'images' has shape {x.shape}, expected (N, H, W, C) or (S, n, H, W, C)")
  if x.size == 0:
    _fail(path, f"'images' has shape {x.shape}: no images")
  batch_dims = np.ndim(z['images']) - 3
  labels = np.asarray(z['labels'])
  if labels.shape[:batch_dims] != np.shape(z['images'])[:batch_dims]:
    _fail(path, f"'labels' has shape {labels.shape} for images of shape "
                f"{np.shape(z['images'])}")
  targets, encoding = _targets_of(labels, batch_dims, keywords.get('num_classes'), path)
  if batch_dims == 1:
    targets = targets[None]
  space = _text(z['image_space'], 'image_space', path) if 'image_space' in z else 'normalized'
  if space not in ('normalized', 'pixels'):
    _fail(path, f"'image_space' is {space!r}, expected 'normalized' or 'pixels'")
  channels = x.shape[-1]
  mean = _channel_stats(_from_file_or_keyword(z, 'mean', keywords, path, layout),
                        channels, 'mean', path)
  std = _channel_stats(_from_file_or_keyword(z, 'std', keywords, path, layout),
                       channels, 'std', path)
  if space == 'pixels':
    x = (x - mean) / std
  lrs = _numbers(z['lrs'], 'lrs', path)
  if lrs.ndim == 0:
    steps = np.size(z['step_order']) if 'step_order' in z else x.shape[0]
    lrs = np.full((steps,), lrs, np.float32)
  out = dict(
      images_normalized=x, targets=targets, lrs=lrs, mean=mean, std=std,
      dataset=_from_file_or_keyword(z, 'dataset', keywords, path, layout),
      model=_from_file_or_keyword(z, 'model', keywords, path, layout),
      model_kwargs=np.array(_model_kwargs_json(z, keywords, path)),
      label_encoding=np.array(encoding))
  if 'step_order' in z:
    out['step_order'] = z['step_order']
  if 'momentum' in z:
    out.update(_momentum(z['momentum'], path))
  return _complete(out, path)


def _momentum(value, path):
  beta = _numbers(value, 'momentum', path)
  if beta.size != 1 or not 0 <= float(beta.reshape(-1)[0]) < 1:
    _fail(path, f"'momentum' must be one number in [0, 1), got {beta.tolist()}")
  return {'momentum': beta.reshape(()),
          'inner_optimizer': np.array('SGD with momentum: v = momentum * v + g, '
                                      'p -= lr * v, v starts at 0')}


def _torch_steps(obj, path):
  """The checked list of (data, label, lr) of the original's results.pth."""
  if isinstance(obj, dict):
    _fail(path, f'holds a dict (keys {", ".join(map(str, list(obj)[:5]))}), not the list '
                "of (data, label, lr) steps of the original code's results.pth")
  if not isinstance(obj, (list, tuple)) or not obj:
    _fail(path, f'holds {type(obj).__name__} {obj!r:.40}, not a list of (data, label, lr) '
                'steps')
  for t, step in enumerate(obj):
    if not (isinstance(step, (list, tuple)) and len(step) == 3):
      what = (f'{len(step)} items' if isinstance(step, (list, tuple)) else
              f'a {type(step).__name__}')
      _fail(path, f'step {t} is {what}, not a (data, label, lr) tuple')
    data, label, lr = step
    if not (isinstance(data, np.ndarray) and data.ndim == 4 and data.dtype.kind == 'f'):
      _fail(path, f"step {t}: 'data' is not an (n, C, H, W) float tensor")
    if not (isinstance(label, np.ndarray) and label.shape == data.shape[:1] and
            label.dtype.kind in 'iu'):
      _fail(path, f"step {t}: 'label' is not ({len(data)},) int classes")
    one_lr = (isinstance(lr, (np.ndarray, float, int)) and np.size(lr) == 1 and
              np.asarray(lr).dtype.kind in 'fiu' and np.isfinite(lr).all())
    if not one_lr:
      _fail(path, f"step {t}: 'lr' is {lr!r:.40}, not one learning rate")
    if data.shape != obj[0][0].shape:
      _fail(path, f"step {t}: 'data' has shape {data.shape}, step 0 {obj[0][0].shape}")
  return obj


def _period(steps):
  """The fewest distinct batches S (dividing T) such that step t repeats step t % S."""
  total = len(steps)
  for num in range(1, total + 1):
    if total % num == 0 and all(
        np.array_equal(steps[t][0], steps[t % num][0]) and
        np.array_equal(steps[t][1], steps[t % num][1]) for t in range(num, total)):
      return num
  return total


def _from_torch(path, keywords):
  layout = "original code's results.pth"
  _check_file(path)
  try:
    obj = pretrained.read_torch_object(path)
  except pretrained.CheckpointFormatError as e:
    raise DistilledFileError(f'{pretrained.one_line(e)}; {ACCEPTED}') from None
  steps = _torch_steps(obj, path)
  num_batches = _period(steps)
  x = np.stack([np.transpose(d, (0, 2, 3, 1)) for d, _, _ in steps[:num_batches]])
  labels = np.stack([l for _, l, _ in steps[:num_batches]])
  targets, _ = _targets_of(labels, 2, keywords.get('num_classes'), path)
  dataset = str(_from_file_or_keyword({}, 'dataset', keywords, path, layout))
  dataset = ORIGINAL_NAMES.get(dataset, dataset)
  model = str(_from_file_or_keyword({}, 'model', keywords, path, layout))
  model = ORIGINAL_NAMES.get(model, model)
  stats = {}
  for i, key in enumerate(('mean', 'std')):
    if _present(keywords.get(key)):
      stats[key] = keywords[key]
    elif dataset in ORIGINAL_NORMALIZATION:
      stats[key] = ORIGINAL_NORMALIZATION[dataset][i]
    else:
      _fail(path, f"no '{key}' in the {layout}, and the original's normalisation of "
                  f'{dataset!r} is not known here', f'set {CONFIG_FIELDS[key]}')
  out = dict(
      images_normalized=x.astype(np.float32), targets=targets,
      lrs=np.array([float(np.reshape(lr, -1)[0]) for _, _, lr in steps], np.float32),
      mean=stats['mean'], std=stats['std'], dataset=np.array(dataset),
      model=np.array(model), model_kwargs=np.array(_model_kwargs_json({}, keywords, path)),
      label_encoding=np.array('one-hot'))
  return _complete(out, path)


def load_any(path, fmt='auto', *, dataset=None, model=None, model_kwargs=None, mean=None,
             std=None, num_classes=None):
  """A distilled set in any accepted layout, as the dict `load_distilled` returns.

  fmt: 'auto' (by content), 'awesome_jax', 'plain_npz' or 'torch' (see the module doc).
  dataset, model (names), model_kwargs (dict or JSON), mean, std ((C,) or scalars):
  used only where the file lacks them. num_classes: K of the one-hot targets made from
  int labels (default: largest label + 1).
  Raises DistilledFileError (one line, naming the file) for anything unreadable.
  """
  if fmt not in FORMATS:
    raise DistilledFileError(f'eval.format={fmt!r}: unknown; allowed: {", ".join(FORMATS)}')
  keywords = dict(dataset=dataset, model=model, model_kwargs=model_kwargs, mean=mean,
                  std=std, num_classes=num_classes)
  if fmt == 'auto':
    fmt = detect_format(path)
  if fmt == 'awesome_jax':
    return load_distilled(path)
  if fmt == 'plain_npz':
    return _from_plain(_read_npz(path), path, keywords)
  return _from_torch(path, keywords)
