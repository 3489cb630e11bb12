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

`evaluate` runs the benchmark for one model (the classify task calls it at the end of a
CIFAR-10 run); `compare_runs` (scripts/compare_cnn_vit.py) reads several classify runs'
results.json, groups them by model label (mean and spread over seeds) and draws one
figure of all the models beside the humans, with a kappa / JS table (markdown + JSON);
`compare_groups` does the same for runs grouped by any names, with any columns
(scripts/compare_stylized.py: runs named by their training data, accuracies on the
extra test sets).
"""

import json
import os

import numpy as np

from awesome_jax import metrics as metrics_lib
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
  if not len(biases):  # no shape or texture hit at all: the bias itself is undefined
    low = high = float('nan')
  else:
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
             conditions=tuple(CONDITIONS), resamples=1000, seed=0, out_dir='', title=''):
  """The benchmark for `logits_fn` (uint8 (B, size, size, 3) -> (B, 10) CIFAR logits).

  Returns {'model', 'size', 'rules', 'shape_bias', 'shape_bias_interval', 'shape_acc',
  'texture_acc', '<condition>_accuracy', 'human_shape_bias', 'kappa_vs_humans',
  'js_class_errors', 'js_interclass_errors', 'human_human_kappa', 'conditions':
  {condition: summarize(...)}}; human fields only with `humans_root`. Human responses
  outside the 7 classes count as neither shape nor texture.
  `out_dir`: also writes there decisions_<name>_<condition>.csv (the model-vs-human
  format) and, for cue-conflict, shape_bias.png (the model beside the humans; `title`).
  """
  out = {'model': name, 'size': size, 'rules': RULES, 'conditions': {}}
  for cond in conditions:
    stimuli = select(stimuli_root, cond)
    trials = classify(logits_fn, stimuli, size, batch, name)
    humans = read_humans(humans_root, cond, trials.key) if humans_root else None
    out['conditions'][cond] = r = summarize(trials, humans, resamples, seed)
    r['stimuli'] = len(stimuli)
    out[f'{cond}_accuracy'] = r['accuracy']
    if out_dir:
      sb.write_decisions_csv(os.path.join(out_dir, f'decisions_{name}_{cond}.csv'), trials)
    if cond == 'cue-conflict':
      out.update({k: r[k] for k in ('shape_bias', 'shape_bias_interval', 'shape_acc',
                                    'texture_acc') if k in r})
      if humans:
        out['human_shape_bias'] = r['humans']['pooled']['shape_bias']
        out['kappa_vs_humans'] = r['vs_humans']['kappa_mean']
        out['js_class_errors'] = r['vs_humans']['js_class_errors']
        out['js_interclass_errors'] = r['vs_humans']['js_interclass_errors']
        out['human_human_kappa'] = r['humans']['human_human_kappa_mean']
      if out_dir:
        plot_shape_bias(os.path.join(out_dir, 'shape_bias.png'), {name: trials}, humans,
                        title=title)
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


# ----------------------------------------------- several classify runs, grouped by model

# results.json['cue_conflict'] fields averaged over the seeds of a model (test_acc: the
# run's top level; EXTRA_TEST + NAME: its accuracy on the extra test set NAME), with their
# column names in the markdown table
EXTRA_TEST = 'extra_test/'
COMPARED = (('test_acc', 'test acc'), ('shape_bias', 'shape bias'), ('shape_acc', 'shape acc'),
            ('texture_acc', 'texture acc'), ('kappa_vs_humans', 'kappa vs humans'),
            ('js_class_errors', 'JS class-wise'), ('js_interclass_errors', 'JS inter-class'),
            ('edge_accuracy', 'edges acc'), ('silhouette_accuracy', 'silhouettes acc'))


class RunError(ValueError):
  """A classify workdir cannot be compared (no results.json, no cue-conflict results)."""


def read_run(workdir):
  """{'workdir', 'label', 'seed', 'results'} of a finished classify run whose results.json
  holds a cue-conflict evaluation (the seed from results.json, else from config.json)."""
  path = os.path.join(workdir, 'results.json')
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f'{path}: not a readable results.json ({e})') from None
  cue = results.get('cue_conflict') or {}
  if not cue.get('evaluated'):
    why = cue.get('reason', 'no cue_conflict section (a run from before the evaluation)')
    raise RunError(f'{workdir}: no cue-conflict results ({why}); re-run its command with '
                   '--config.cue_conflict.stimuli_root set (it only evaluates)')
  seed = results.get('seed')
  if seed is None and os.path.exists(os.path.join(workdir, 'config.json')):
    with open(os.path.join(workdir, 'config.json')) as f:
      seed = json.load(f).get('seed')
  return {'workdir': workdir, 'label': results.get('label') or results.get('model'),
          'seed': seed, 'results': results}


def run_value(results, key):
  """The number `key` of a run's results.json (see COMPARED), None where it has none."""
  if key == 'test_acc':
    return results.get('test_acc')
  if key.startswith(EXTRA_TEST):
    return (results.get('extra_test') or {}).get(key[len(EXTRA_TEST):])
  return results['cue_conflict'].get(key)


def _is_accuracy(key):
  """Whether column `key` is a test accuracy (shown in % in the markdown table)."""
  return key == 'test_acc' or key.startswith(EXTRA_TEST)


def _stats(values):
  """mean, std over seeds (sample std, ddof 1; None with one value), min, max, n of the
  defined (not None / NaN) `values`."""
  v = np.array([x for x in values if x is not None and not np.isnan(x)], np.float64)
  if not len(v):
    return {'mean': None, 'std': None, 'min': None, 'max': None, 'n': 0}
  return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if len(v) > 1 else None,
          'min': float(v.min()), 'max': float(v.max()), 'n': int(len(v))}


def compare_runs(workdirs, out_dir, title=''):
  """Groups classify runs by model label (their seeds) and writes `compare_groups`'s
  figure and tables into `out_dir`; returns the comparison.json dict."""
  groups = {}
  for r in (read_run(w) for w in workdirs):
    groups.setdefault(r['label'], []).append(r)
  return compare_groups(groups, out_dir, title)


def print_comparison(out_dir):
  """Prints the comparison.md that `compare_groups` wrote into `out_dir`, and its figure's
  path (what the compare scripts show)."""
  with open(os.path.join(out_dir, 'comparison.md')) as f:
    print(f.read(), end='')
  print(f'figure: {os.path.join(out_dir, "shape_bias.png")}')


def compare_groups(groups, out_dir, title='', columns=COMPARED):
  """Compares groups of classify runs {name: [read_run(...), ...]} (a group: one model,
  its seeds) and writes into `out_dir`: shape_bias.png (per-class shape bias, each
  group's mean over seeds with the seeds' standard deviation as error bars, its mean
  shape bias as a vertical line; the humans as red circles), comparison.md and
  comparison.json (the `columns` numbers per group: mean, std, min, max over seeds; each
  run's shape-bias interval; the humans' shape bias and human-human kappa). Returns the
  comparison.json dict. The runs must share the cue-conflict stimuli."""
  runs = [r for group in groups.values() for r in group]
  if not runs:
    raise RunError('no runs to compare')
  stimuli = {}
  for name, group in groups.items():
    seen = {}
    for r in group:
      if r['seed'] in seen:
        raise RunError(f'{r["workdir"]} and {seen[r["seed"]]}: both model {name!r} with '
                       f'seed {r["seed"]!r} (give each seed its own --config.seed)')
      seen[r['seed']] = r['workdir']
      cue = r['results']['cue_conflict']['conditions']['cue-conflict']
      stimuli[r['workdir']] = cue['stimuli']
  if len(set(stimuli.values())) > 1:
    raise RunError('runs evaluated on different cue-conflict stimuli: ' +
                   ', '.join(f'{w}: {n}' for w, n in stimuli.items()))
  models = {}
  for name, group in groups.items():
    group = sorted(group, key=lambda r: (r['seed'] is None, r['seed']))
    cues = [r['results']['cue_conflict'] for r in group]
    row = {'seeds': [r['seed'] for r in group], 'workdirs': [r['workdir'] for r in group],
           'size': sorted({c['size'] for c in cues}),
           'shape_bias_interval': [c.get('shape_bias_interval') for c in cues]}
    for key, _ in columns:
      row[key] = _stats([run_value(r['results'], key) for r in group])
    per_class = [c['conditions']['cue-conflict']['per_class_shape_bias'] for c in cues]
    row['per_class_shape_bias'] = {k: _stats([p.get(k) for p in per_class])
                                   for k in CATEGORIES}
    models[name] = row
  humans = None
  for r in runs:
    h = r['results']['cue_conflict']['conditions']['cue-conflict'].get('humans')
    if h:
      humans = {'shape_bias': h['pooled']['shape_bias'],
                'shape_bias_interval': h.get('shape_bias_interval'),
                'human_human_kappa': h['human_human_kappa_mean'],
                'subjects': len(h['per_subject_shape_bias']),
                'per_class_shape_bias': h['per_class_shape_bias']}
      break
  table = {'columns': [list(c) for c in columns], 'models': models, 'humans': humans,
           'stimuli': next(iter(stimuli.values())), 'rules': RULES}
  os.makedirs(out_dir, exist_ok=True)
  plot_comparison(os.path.join(out_dir, 'shape_bias.png'), table, title)
  with open(os.path.join(out_dir, 'comparison.json'), 'w') as f:
    json.dump(table, f, indent=2, allow_nan=False)
  with open(os.path.join(out_dir, 'comparison.md'), 'w') as f:
    f.write(comparison_markdown(table))
  return table


def _cell(s, scale=1.0, digits=3):
  if s['mean'] is None:
    return '-'
  mean = f'{scale * s["mean"]:.{digits}f}'
  return mean if s['std'] is None else f'{mean} ± {scale * s["std"]:.{digits}f}'


def _interval(interval):
  """' [low, high]' of a bootstrap interval dict, '' for none."""
  if not interval or interval.get('low') is None or np.isnan(interval['low']):
    return ''
  return f' [{interval["low"]:.3f}, {interval["high"]:.3f}]'


def comparison_markdown(table):
  """The comparison as a markdown table: per model mean ± std over seeds (one seed: the
  shape bias with its bootstrap interval); the humans."""
  columns = table.get('columns', COMPARED)
  head = ['model', 'seeds'] + [name + (' (%)' if _is_accuracy(key) else '')
                               for key, name in columns]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  keys = [key for key, _ in columns]
  intervals = False  # any shown
  for label, row in table['models'].items():
    cells = [_cell(row[key], 100, 2) if _is_accuracy(key) else _cell(row[key])
             for key in keys]
    if ('shape_bias' in keys and len(row['seeds']) == 1 and
        row['shape_bias']['mean'] is not None):
      shown = _interval((row.get('shape_bias_interval') or [None])[0])
      cells[keys.index('shape_bias')] += shown
      intervals |= bool(shown)
    lines.append(f'| {label} | {len(row["seeds"])} | ' + ' | '.join(cells) + ' |')
  h = table['humans']
  if h:
    cells = {'shape_bias': h['shape_bias'], 'kappa_vs_humans': h['human_human_kappa']}
    cells = {k: '-' if v is None else f'{v:.3f}' for k, v in cells.items()}
    if cells['shape_bias'] != '-':
      shown = _interval(h.get('shape_bias_interval'))
      cells['shape_bias'] += shown
      intervals |= bool(shown)
    lines.append(f'| humans | {h["subjects"]} subjects | ' + ' | '.join(
        cells.get(key, '-') for key in keys) + ' |')
  notes = [f'{table["stimuli"]} cue-conflict stimuli of the 7 classes; mean ± standard '
           'deviation over seeds (ddof 1).']
  if intervals:
    notes.append('[low, high]: the 95 % bootstrap interval of the shape bias over stimuli '
                 '(a model of one seed; the pooled humans).')
  if h and 'kappa_vs_humans' in keys:
    notes.append("The humans' kappa column is their mean human-human kappa.")
  notes.append(f'Rules: {table["rules"]}.')
  return '\n'.join(lines) + '\n\n' + '\n'.join(notes) + '\n'


def plot_comparison(path, table, title=''):
  """Geirhos et al.'s figure for several models (a comparison.json dict): per class, each
  model's mean shape bias over seeds (error bars: their std), its mean shape bias as a
  vertical line (band: the std); the humans as red circles and line."""
  markers = ['s', 'D', '^', 'v', 'P', 'X', '*']
  fig = metrics_lib.figure((5, 7))
  ax = fig.subplots()
  ys = np.arange(len(CATEGORIES))[::-1].astype(float)
  n = len(table['models'])
  h = table['humans']
  if h:
    per = [h['per_class_shape_bias'].get(c) for c in CATEGORIES]
    ax.scatter([np.nan if v is None else v for v in per], ys, marker='o', s=60,
               facecolors='none', edgecolors='red',
               label=f'humans ({h["subjects"]} subjects)')
    if h['shape_bias'] is not None:
      ax.axvline(h['shape_bias'], color='red', lw=1.5, alpha=0.7)
  for i, (label, row) in enumerate(table['models'].items()):
    color = f'C{i}'
    offset = 0.12 * (i - (n - 1) / 2)  # models side by side within a class's row
    means = np.array([np.nan if s['mean'] is None else s['mean'] for s in
                      (row['per_class_shape_bias'][c] for c in CATEGORIES)])
    stds = np.array([s['std'] or 0.0 for s in
                     (row['per_class_shape_bias'][c] for c in CATEGORIES)])
    # the bars stop at 0 and 1, the ends of the scale
    xerr = np.nan_to_num([np.minimum(stds, means), np.minimum(stds, 1 - means)])
    ax.errorbar(means, ys + offset, xerr=xerr, fmt=markers[i % len(markers)],
                color=color, ms=6, capsize=2, lw=1,
                label=f'{label} ({len(row["seeds"])} seed{"s" * (len(row["seeds"]) > 1)})')
    sb_ = row['shape_bias']
    if sb_['mean'] is not None:
      ax.axvline(sb_['mean'], color=color, lw=1.5, alpha=0.7)
      if sb_['std']:
        ax.axvspan(sb_['mean'] - sb_['std'], sb_['mean'] + sb_['std'], color=color,
                   alpha=0.1, lw=0)
  task.shape_bias_axes(ax, ys, CATEGORIES, title, ncol=2, title_size=7)
  ax.set_ylim(-0.5, len(CATEGORIES) - 0.5)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
