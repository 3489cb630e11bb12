"""What the notebooks in colabs/ call besides the tasks: figures inline, tiny inputs.

`show(path)` prints a PNG's path and, inside a notebook (an IPython kernel), shows it;
`tiny_cue_conflict(root)` writes a small generated stand-in for the cue-conflict
stimuli and human decisions, and `colour_model` is a fake model that answers by colour:
together they run the shape-bias task end to end in seconds, without the real data.
For the stylization study: `tiny_shapes` (generated content images), `as_content` (a
data.Dataset split as the arrays `stylize.write_stylized` takes), `image_folder` (arrays
written as <split>/<class>/*.png), `image_grid` and `before_after` (figures).
"""

import os

import numpy as np

from awesome_jax import metrics as metrics_lib
from awesome_jax import shape_bias as sb
from awesome_jax import stylize

# texture class -> the colour of its generated stimuli (cat textures red, ...)
TINY_COLOURS = {'cat': (220, 30, 30), 'dog': (30, 30, 220), 'car': (30, 200, 30)}


def show(path):
  """Prints the path of the image at `path`; inside a notebook also shows it inline."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such figure')
  print(f'figure: {path}')
  try:
    import IPython  # pylint: disable=g-import-not-at-top
    from IPython import display  # pylint: disable=g-import-not-at-top
  except ImportError:  # IPython not installed: the path is all there is
    return
  if IPython.get_ipython() is None:  # installed, but a plain Python process
    return
  display.display(display.Image(filename=path))


def tiny_cue_conflict(root, per_pair=2, size=32):
  """Writes a tiny cue-conflict set under `root`; returns (stimuli_root, humans_root).

  Stimuli: every (shape, texture) pair of TINY_COLOURS' classes, `per_pair` images
  each, size x size PNGs in the texture's colour, named as the real ones
  (stimuli/<shape>/<shape><n>-<texture><n>.png). Humans: two observers answering by
  shape, in the model-vs-human CSV format (humans/cue-conflict/subject-0N.csv).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  stimuli = os.path.join(root, 'cue_conflict', 'stimuli')
  names, shapes = [], []
  for shape in TINY_COLOURS:
    os.makedirs(os.path.join(stimuli, shape), exist_ok=True)
    for texture, colour in TINY_COLOURS.items():
      for i in range(per_pair):
        name = f'{shape}{i + 1}-{texture}{i + 1}.png'
        pixels = np.full((size, size, 3), colour, np.uint8)
        Image.fromarray(pixels).save(os.path.join(stimuli, shape, name))
        names.append(name)
        shapes.append(shape)
  humans = os.path.join(root, 'humans')
  os.makedirs(os.path.join(humans, 'cue-conflict'), exist_ok=True)
  for subject in ('subject-01', 'subject-02'):
    trials = sb.Trials.from_decisions(subject, names, shapes)
    sb.write_decisions_csv(os.path.join(humans, 'cue-conflict', f'{subject}.csv'), trials)
  return os.path.join(root, 'cue_conflict'), humans


def colour_model(mapping=None):
  """A fake ImageNet model for tiny_cue_conflict's stimuli: (N, H, W, 3) uint8 ->
  (N, 1000) logits that pick the class whose colour is nearest the mean colour (a
  pure texture observer: shape bias 0)."""
  mapping = sb.load_mapping() if mapping is None else mapping
  names = list(TINY_COLOURS)
  colours = np.asarray([TINY_COLOURS[n] for n in names], np.float32)

  def logits(x):
    mean = np.asarray(x, np.float32).mean(axis=(1, 2))
    nearest = np.argmin(((mean[:, None] - colours[None]) ** 2).sum(-1), axis=1)
    out = np.zeros((len(x), 1000), np.float32)
    out[np.arange(len(x)), [mapping[names[k]][0] for k in nearest]] = 20.0
    return out

  return logits


TINY_SHAPES = ('disc', 'square', 'triangle')


def tiny_shapes(n=12, size=32, seed=0):
  """Generated content images: one shape of TINY_SHAPES per image (image i of class
  i % 3) in one colour on a background of another, its position and size drawn from
  (seed, i). Returns {'x': uint8 (n, size, size, 3), 'y': int32 (n,), 'classes'}, the
  arrays `stylize.write_stylized` and `image_folder` take."""
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  x = np.empty((n, size, size, 3), np.uint8)
  y = np.arange(n, dtype=np.int32) % len(TINY_SHAPES)
  for i in range(n):
    rng = np.random.default_rng([seed, i])
    r = rng.uniform(0.22, 0.34) * size
    cy, cx = rng.uniform(r, size - r, 2)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    if TINY_SHAPES[y[i]] == 'disc':
      inside = dy ** 2 + dx ** 2 <= 1
    elif TINY_SHAPES[y[i]] == 'square':
      inside = np.maximum(abs(dy), abs(dx)) <= 0.8
    else:  # apex up, base at dy = 0.8
      inside = (dy <= 0.8) & (abs(dx) <= (dy + 1) / 1.8 * 0.9)
    dark, light = rng.uniform(0, 90, 3), rng.uniform(150, 255, 3)
    background, shape = (dark, light) if rng.random() < 0.5 else (light, dark)
    x[i] = np.where(inside[..., None], shape, background).round().astype(np.uint8)
  return {'x': x, 'y': y, 'classes': TINY_SHAPES}


def as_content(dataset, split='train', classes=None):
  """The `split` ('train' or 'test') of a data.Dataset as {'x': uint8 (N, H, W, 3), 'y',
  'classes'} (grey images repeated to 3 channels; classes: the names of the labels,
  None: '0', '1', ...)."""
  x = np.asarray(getattr(dataset, f'x_{split}'))
  x = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, -1)
  if classes is None:
    classes = [str(k) for k in range(dataset.num_classes)]
  return {'x': x, 'y': np.asarray(getattr(dataset, f'y_{split}')), 'classes': tuple(classes)}


def image_folder(content, root, split='train', limit=None):
  """Writes content {'x': uint8 (N, H, W, 3), 'y', optional 'classes'} (its first `limit`
  images, None: all) as root/split/<class>/<index:06d>.png, the names write_stylized
  gives arrays; returns root/split. Files that exist are kept (each is written under a
  temporary name and renamed), so a second call only finishes what is missing."""
  x, y = np.asarray(content['x']), np.asarray(content['y'])
  n = len(x) if limit is None else min(limit, len(x))
  names = content.get('classes')
  names = [str(k) for k in range(int(y.max()) + 1)] if names is None else list(names)
  folder = os.path.join(root, split)
  for name in sorted({names[int(label)] for label in y[:n]}):
    os.makedirs(os.path.join(folder, name), exist_ok=True)
  for i in range(n):
    path = os.path.join(folder, names[int(y[i])], f'{i:06d}.png')
    if not os.path.exists(path):
      stylize._write_png(path, x[i])  # pylint: disable=protected-access
  return folder


def _displayable(image):
  """(H, W, 3) or (H, W) float in [0, 1] of a uint8 or float (H, W, 1|3) image."""
  image = np.asarray(image)
  image = image / 255.0 if image.dtype == np.uint8 else np.clip(image, 0, 1)
  return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def image_grid(path, rows, row_names=(), col_names=(), title='', scale=1.0):
  """A PNG at `path` of images in rows: each row a sequence of images (uint8 0-255 or
  float in [0, 1], clipped; (H, W, 3) or (H, W, 1); sizes may differ), row_names at the
  left, col_names above the first row. Returns path."""
  rows = [list(r) for r in rows]
  n_cols = max(len(r) for r in rows)
  fig = metrics_lib.figure((n_cols * 1.1 * scale + (0.6 if row_names else 0.2),
                            len(rows) * 1.1 * scale + (0.5 if title else 0.2)))
  axes = fig.subplots(len(rows), n_cols, squeeze=False)
  for i, row in enumerate(rows):
    for j in range(n_cols):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      if j >= len(row):
        ax.axis('off')
        continue
      ax.imshow(_displayable(row[j]), cmap='gray', vmin=0, vmax=1, interpolation='nearest')
      if i == 0 and j < len(col_names):
        ax.set_title(str(col_names[j]), fontsize=7)
      if j == 0 and i < len(row_names):
        ax.set_ylabel(str(row_names[i]), fontsize=7)
  if title:
    fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def before_after(path, content_dir, stylized, n=8, title=''):
  """A PNG at `path`: n content images of content_dir (<class>/*, taken from the classes
  in turn) in the first row and, below, their stylized copies: stylized maps a row name
  to a folder written by write_stylized from content_dir (<class>/<name>.png). Returns
  path; a ValueError names a copy that is missing."""
  by_class = {}
  for cls, p in stylize.list_content(content_dir):
    by_class.setdefault(cls, []).append(p)
  picked, k = [], 0
  while len(picked) < n and any(k < len(ps) for ps in by_class.values()):
    picked += [(c, ps[k]) for c, ps in by_class.items() if k < len(ps)]
    k += 1
  picked = picked[:n]
  rows = [[stylize.read_rgb(p, 'content image') for _, p in picked]]
  for folder in stylized.values():
    rows.append([stylize.read_rgb(
        os.path.join(folder, c, os.path.splitext(os.path.basename(p))[0] + '.png'),
        'stylized image') for c, p in picked])
  return image_grid(path, rows, ['content', *stylized], [c for c, _ in picked], title)
