"""What the notebooks in colabs/ call besides the tasks: figures inline, tiny inputs.

`show(path)` prints a PNG's path and, inside a notebook (an IPython kernel), shows it;
`tiny_cue_conflict(root)` writes a small generated stand-in for the cue-conflict
stimuli and human decisions, and `colour_model` is a fake model that answers by colour:
together they run the shape-bias task end to end in seconds, without the real data.
"""

import os

import numpy as np

from awesome_jax import shape_bias as sb

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
