"""The CIFAR-scale cue-conflict benchmark (Tuli et al. 2021): the 7 cue-conflict
categories that are CIFAR-10 classes, judged by a 10-way CIFAR classifier.

Stimuli: those whose shape AND texture class are among the 7 (airplane, bird, boat, car,
cat, dog, truck). On the standard set that is 245 of the 1,280 cue-conflict stimuli
(210 with shape != texture) and 70 each of the 160 edges and 160 silhouettes.

Rules (written into every report):
* images are resized with antialiasing (PIL bilinear, whose filter widens with the
  downscale factor) from 224x224 to `size` (32 by default; 64 for 64x64 models), uint8
  NHWC;
* decision = argmax of the 10 CIFAR logits restricted to the 7 classes
  (airplane 0, automobile 1, bird 2, cat 3, dog 5, ship 8, truck 9), named by its
  cue-conflict category (automobile -> car, ship -> boat);
* shape bias as in `shape_bias`: over trials with shape != texture class; the interval
  is a percentile bootstrap over stimuli;
* humans: their 16-way responses on the same stimuli, as recorded; a response outside
  the 7 counts as neither shape nor texture (and as an error for kappa);
* Tuli's class-wise / inter-class JS distances over the 7 classes; the inter-class
  matrix keeps only errors that chose one of the 7, the only ones a model can make.
"""

import os

import numpy as np

from awesome_jax import shape_bias as sb
from awesome_jax.tasks import shape_bias as task

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
# cue-conflict category -> CIFAR-10 class index
CIFAR_INDEX = {'airplane': 0, 'bird': 2, 'boat': 8, 'car': 1, 'cat': 3, 'dog': 5,
               'truck': 9}
CATEGORIES = tuple(c for c in sb.CATEGORIES if c in CIFAR_INDEX)  # the 7, in sb order
CONDITIONS = task.CONDITIONS  # condition -> (stimuli folder, human CSV folder)
RULES = ('7-class choice: argmax of the 10 CIFAR logits over airplane, automobile (car), '
         'bird, cat, dog, ship (boat), truck; stimuli whose shape and texture class are '
         'both among the 7, resized with antialiasing; shape bias over trials with shape '
         '!= texture class, interval = percentile bootstrap over stimuli; human responses '
         'outside the 7 count as neither shape nor texture')


def select(stimuli_root, condition='cue-conflict'):
  """Sorted (path, key, shape, texture) of the stimuli of `condition` whose shape and
  texture class are both among the 7; `stimuli_root` holds stimuli/, edges/,
  silhouettes/ (each <shape class>/<name>.png)."""
  if condition not in CONDITIONS:
    raise sb.StimulusError(f'condition {condition!r}: unknown; allowed: '
                           f'{", ".join(CONDITIONS)}')
  folder = os.path.join(stimuli_root, CONDITIONS[condition][0])
  return [s for s in sb.list_stimuli(folder) if s[2] in CIFAR_INDEX and s[3] in CIFAR_INDEX]


def load(stimuli, size=32):
  """uint8 (N, size, size, 3) of the (path, ...) `stimuli`, resized with antialiasing."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = []
  for s in stimuli:
    try:
      img = Image.open(s[0]).convert('RGB')
    except (OSError, SyntaxError, ValueError) as e:
      raise sb.StimulusError(f'{s[0]}: not a readable image ({e})') from None
    if img.size != (size, size):
      img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    out.append(np.asarray(img))
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def decide(logits10):
  """(N, 10) CIFAR-10 logits -> N cue-conflict category names: the argmax over the 7."""
  logits10 = np.asarray(logits10)
  if logits10.ndim != 2 or logits10.shape[1] != len(CIFAR10_CLASSES):
    raise ValueError(f'logits of shape {logits10.shape}: expected (N, 10) CIFAR-10 logits')
  idx = [CIFAR_INDEX[c] for c in CATEGORIES]
  return np.array(CATEGORIES)[np.argmax(logits10[:, idx], axis=1)]


def classify(logits_fn, stimuli, size=32, batch=256, name='model'):
  """Trials of `logits_fn` (uint8 (B, size, size, 3) -> (B, 10) logits) on `stimuli`."""
  responses = []
  for i in range(0, len(stimuli), batch):
    responses.extend(decide(logits_fn(load(stimuli[i:i + batch], size))))
  return sb.Trials.from_decisions(name, [s[1] for s in stimuli], responses)


def read_humans(humans_root, condition, keys):
  """{subject: Trials} of the human CSVs of `condition`, only the trials on `keys`."""
  folder = os.path.join(humans_root, CONDITIONS[condition][1])
  keys = set(keys)
  out = {}
  for h, t in sb.read_observers(folder).items():
    sel = np.isin(t.key, list(keys))
    if sel.any():
      out[h] = sb.Trials(h, t.key[sel], t.shape[sel], t.texture[sel], t.response[sel])
  if not out:
    raise sb.StimulusError(f'{folder}: no observer saw any of the {len(keys)} stimuli')
  return out


def bootstrap_shape_bias(trials, resamples=1000, level=0.95, seed=0):
  """Percentile bootstrap interval of the shape bias, resampling stimuli (all trials on
  a stimulus go together, so pooled observers work too); seeded."""
  conflict = trials.shape != trials.texture
  keys, inverse = np.unique(trials.key[conflict], return_inverse=True)
  if not len(keys):
    return {'low': float('nan'), 'high': float('nan'), 'level': level,
            'resamples': resamples, 'seed': seed}
  r = trials.response[conflict]
  shape = np.bincount(inverse, r == trials.shape[conflict], len(keys))
  texture = np.bincount(inverse, r == trials.texture[conflict], len(keys))
  draw = np.random.default_rng(seed).integers(0, len(keys), (resamples, len(keys)))
  s, t = shape[draw].sum(1), texture[draw].sum(1)
  biases = s[s + t > 0] / (s + t)[s + t > 0]  # a resample with no hit has no bias
  low, high = np.quantile(biases, [(1 - level) / 2, (1 + level) / 2])
  return {'low': float(low), 'high': float(high), 'level': level, 'resamples': resamples,
          'seed': seed}


def _mean_defined(values):
  defined = [v for v in values if not np.isnan(v)]
  return float(np.mean(defined)) if defined else float('nan')


def compare_to_humans(model, humans):
  """Kappa vs each human on shared trials (the mean over those where it is defined:
  not when either observer is always right), and Tuli's JS distances over the 7
  classes."""
  pooled = sb.pool(humans.values(), 'humans')
  kappas = {h: sb.error_consistency(model, t)['kappa'] for h, t in humans.items()}
  return {
      'kappa_per_human': kappas,
      'kappa_mean': _mean_defined(kappas.values()),
      'js_class_errors': sb.jensen_shannon_distance(
          sb.class_error_distribution(model, CATEGORIES),
          sb.class_error_distribution(pooled, CATEGORIES)),
      'js_interclass_errors': sb.jensen_shannon_distance(
          sb.confusion_error_distribution(model, CATEGORIES),
          sb.confusion_error_distribution(pooled, CATEGORIES)),
  }


def summarize(trials, humans=None, resamples=1000, seed=0):
  """Results of one observer's Trials on one condition (and vs `humans`, if given)."""
  r = {**sb.shape_bias(trials),
       'per_class_shape_bias': sb.shape_bias_per_class(trials, CATEGORIES)}
  if r['conflict_trials']:
    r['shape_bias_interval'] = bootstrap_shape_bias(trials, resamples, seed=seed)
  if humans:
    pooled = sb.pool(humans.values(), 'humans')
    r['humans'] = sb.human_summary(humans)
    r['humans']['per_class_shape_bias'] = sb.shape_bias_per_class(pooled, CATEGORIES)
    if r['conflict_trials']:
      r['humans']['shape_bias_interval'] = bootstrap_shape_bias(pooled, resamples, seed=seed)
    r['vs_humans'] = compare_to_humans(trials, humans)
  return r


def evaluate(logits_fn, stimuli_root, humans_root='', size=32, batch=256, name='model',
             conditions=tuple(CONDITIONS), resamples=1000, seed=0):
  """The benchmark for `logits_fn` (uint8 (B, size, size, 3) -> (B, 10) CIFAR logits).

  Returns {'model', 'size', 'rules', 'shape_bias', 'shape_bias_interval', 'shape_acc',
  'texture_acc', '<condition>_accuracy', 'human_shape_bias', 'conditions': {condition:
  summarize(...)}}; human fields only with `humans_root`. Human responses outside the
  7 classes count as neither shape nor texture.
  """
  out = {'model': name, 'size': size, 'rules': RULES, 'conditions': {}}
  for cond in conditions:
    stimuli = select(stimuli_root, cond)
    trials = classify(logits_fn, stimuli, size, batch, name)
    humans = read_humans(humans_root, cond, trials.key) if humans_root else None
    out['conditions'][cond] = r = summarize(trials, humans, resamples, seed)
    r['stimuli'] = len(stimuli)
    out[f'{cond}_accuracy'] = r['accuracy']
    if cond == 'cue-conflict':
      out.update({k: r[k] for k in ('shape_bias', 'shape_bias_interval', 'shape_acc',
                                    'texture_acc')})
      if humans:
        out['human_shape_bias'] = r['humans']['pooled']['shape_bias']
        out['kappa_vs_humans'] = r['vs_humans']['kappa_mean']
  return out


def plot_shape_bias(path, models, humans=None, title=''):
  """Geirhos et al.'s figure on the 7 classes: `models` {name: cue-conflict Trials};
  `humans` {subject: Trials} (restricted to the models' stimuli here)."""
  keys = {k for t in models.values() for k in t.key}
  if humans:
    humans = {h: sb.Trials(h, *(getattr(t, f)[np.isin(t.key, list(keys))]
                                for f in ('key', 'shape', 'texture', 'response')))
              for h, t in humans.items()}
  task.plot_shape_bias(path, models, humans or {}, categories=CATEGORIES, title=title)
