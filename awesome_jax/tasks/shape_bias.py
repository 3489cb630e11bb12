"""The shape-bias task: evaluate a model on the cue-conflict stimuli against humans.

`run(config, workdir)` writes to workdir, for each condition (cue-conflict, edge,
silhouette): decisions_<model>_<condition>.csv (model-vs-human format); and
results.json (shape bias, shape/texture accuracy, per-class shape bias, kappa vs each
human, JS distances of the error distributions, the human reference numbers, the rules
and preprocessing used), shape_bias.png (the Geirhos figure) and kappa.png.

A model is a zoo model with its weight file, or a finished classify run: weights that
name a classify workdir (model.json and params.npz; awesome_jax/tasks/classify.py) load
its model with `classify.load_trained`, preprocessed as its training data (image folders:
ImageNet mean/std at its input size, the stimulus resized whole); the model's name is
then a label (any name but another architecture's), its architecture model.json's.

Every input (stimulus files, human CSVs, the mapping) is read and checked before the
model runs; a bad one raises `shape_bias.StimulusError` with one line naming it. An empty
data.stimuli_root or data.humans_root reads the published files, fetched once into the
cache folder (`awesome_jax.download_cue_conflict`); a configured folder that does not
exist is an error, never a reason to download.

Several processes (awesome_jax/distributed.py): every process evaluates every stimulus
(the same numbers), only process 0 writes the files above. The published files are
fetched by process 0 first; the others then find them in the cache folder (a process on
another host fetches its own copy).
"""

import functools
import json
import math
import os
import textwrap
import time

import jax
import numpy as np

from awesome_jax import distributed
from awesome_jax import metrics as metrics_lib
from awesome_jax import shape_bias as sb


def load_images(paths, size=224):
  """uint8 (N, size, size, 3); stimuli are 224x224 already (resized if not)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = []
  for p in paths:
    try:
      img = Image.open(p).convert('RGB')
    except (OSError, SyntaxError, ValueError) as e:  # changed since run() checked it
      raise sb.StimulusError(f'{p}: not a readable image ({e})') from None
    if img.size != (size, size):
      img = img.resize((size, size), Image.BILINEAR)
    out.append(np.asarray(img))
  return np.stack(out)


def check(config):
  """The 'shape_bias' task's config checks that need no data (see main --dry_run)."""
  conditions = check_conditions(config)
  check_model(config)
  return conditions


def check_conditions(config):
  """The names in config.conditions, each checked (and config.batch_size)."""
  conditions = [c.strip() for c in config.conditions.split(',') if c.strip()]
  if not conditions:
    raise sb.StimulusError(f'conditions: empty; allowed: {", ".join(CONDITIONS)}')
  for cond in conditions:
    if cond not in CONDITIONS:
      raise sb.StimulusError(f'conditions: {cond!r} unknown; allowed: {", ".join(CONDITIONS)}')
  if not isinstance(config.batch_size, int) or config.batch_size < 1:
    raise sb.StimulusError(f'batch_size={config.batch_size!r}: must be a positive integer')
  return conditions


def model_specs(config):
  """[(name, weights)] of the models to evaluate: config.models ('name[=weights],...'),
  else config.model.name with config.model.weights. Weights that name a folder are a
  finished classify run (`check_classify_run`): its name is a label, its architecture
  the one in its model.json."""
  from awesome_jax import models  # pylint: disable=g-import-not-at-top
  listed = [m.strip() for m in config.get('models', '').split(',') if m.strip()]
  if not listed:
    return [(config.model.name, config.model.weights)]
  specs = [tuple(m.split('=', 1)) if '=' in m else (m, '') for m in listed]
  names = [n for n, _ in specs]
  if len(set(names)) != len(names):
    raise models.ModelError(f'models={config.models!r}: a model is listed twice')
  return specs


def check_model(config):
  """Every model named exists in the zoo, has weights where it needs them, and its
  preprocessing is known; every classify run named is one of a 1000-class model trained
  on an image folder (`check_classify_run`)."""
  from awesome_jax import models  # pylint: disable=g-import-not-at-top
  from awesome_jax.models import efficientnet_lite, zoo  # pylint: disable=g-import-not-at-top
  for name, weights in model_specs(config):
    if weights and weights != 'random' and not os.path.exists(weights):
      raise models.ModelError(f'model {name}: weights {weights!r}: no such file or folder')
    if is_classify_run(weights):
      check_classify_run(name, weights)
      continue
    entry = zoo.check_name(name)
    if not weights and entry.family != 'efficientnet_lite':
      raise models.ModelError(f'model {name}: no weight file; set --config.model.weights=PATH '
                              f'(or --config.models={name}=PATH; random for a random init)')
    zoo.preprocessing_for(entry, weights, config.model.get('preprocessing', ''))
  norm = config.model.normalization
  if norm not in efficientnet_lite.NORMALIZATION:
    raise models.ModelError(f'model.normalization={norm!r}: unknown; allowed: '
                            f'{", ".join(efficientnet_lite.NORMALIZATION)}')


# ------------------------------------------------------------ classify runs as models

IMAGENET_CLASSES = 1000  # what the 16-class decision rule maps (sb.load_mapping's indices)


def is_classify_run(weights):
  """Whether `weights` names a folder (a classify workdir), not a weight file."""
  return bool(weights) and weights != 'random' and os.path.isdir(weights)


def trained_data(workdir):
  """data.name of the classify run in `workdir` (its results.json, else config.json), or
  None when neither says."""
  from awesome_jax import models  # pylint: disable=g-import-not-at-top
  for file, read in (('results.json', lambda r: r.get('data')),
                     ('config.json', lambda c: c.get('data', {}).get('name'))):
    path = os.path.join(workdir, file)
    if os.path.isfile(path):
      try:
        with open(path) as f:
          name = read(json.load(f))
      except (ValueError, AttributeError) as e:
        raise models.ModelError(f'{path}: not a classify JSON file ({e})') from None
      if name:
        return name
  return None


def check_classify_run(name, workdir):
  """The model.json spec of the finished classify run in `workdir`, after checking (no
  weights loaded) that it is one, that its model builds and decides among the 1000
  ImageNet classes on square RGB images, and that it was trained on an image folder
  (whose preprocessing is known); models.ModelError in one line otherwise. `name` is the
  run's label: it may be anything but the name of another architecture."""
  from awesome_jax import folder_stream, models  # pylint: disable=g-import-not-at-top
  from awesome_jax.tasks import classify  # pylint: disable=g-import-not-at-top
  where = f'model {name}: weights {workdir!r}'
  missing = [f for f in (classify.MODEL_FILE, classify.PARAMS_FILE)
             if not os.path.isfile(os.path.join(workdir, f))]
  if missing:
    raise models.ModelError(f'{where}: a folder, but not a finished classify run (no '
                            f'{" and no ".join(missing)} there)')
  try:
    with open(os.path.join(workdir, classify.MODEL_FILE)) as f:
      spec = json.load(f)
    arch, classes = spec['name'], spec['num_classes']
    shape, kwargs = tuple(spec['input_shape']), spec.get('kwargs', {})
  except (ValueError, KeyError, TypeError) as e:
    raise models.ModelError(f'{where}: {classify.MODEL_FILE} is not a classify model file '
                            f'({type(e).__name__}: {e})') from None
  if name != arch and name in classify.model_names():
    raise models.ModelError(f'{where}: the run trained {arch}, not {name}; label it '
                            f'{arch} or a name that is no model\'s')
  if classes != IMAGENET_CLASSES:
    raise models.ModelError(f'{where}: {arch} has {classes} classes; the 16-class decision '
                            f'rule maps ImageNet\'s {IMAGENET_CLASSES}')
  if len(shape) != 3 or shape[2] != 3 or shape[0] != shape[1]:
    raise models.ModelError(f'{where}: input shape {shape}; the stimuli need square RGB '
                            'inputs')
  data = trained_data(workdir)
  if data != folder_stream.NAME:
    said = (f'trained on data.name={data}' if data else
            'no results.json or config.json saying its training data')
    raise models.ModelError(f'{where}: {said}; only the preprocessing of runs on an image '
                            f'folder (data.name={folder_stream.NAME}) is known')
  try:
    classify.build_model(arch, kwargs, classes, shape)
  except classify.ClassifyConfigError as e:
    raise models.ModelError(f'{where}: {e}') from None
  return spec


def classify_preprocessing(spec):
  """The zoo Preprocessing of a folder-trained classify model (model.json `spec`): its
  training data's ImageNet mean/std at its input size; a 224x224 stimulus is resized
  whole (antialiased) to another input size, never cropped."""
  from awesome_jax import folder_stream  # pylint: disable=g-import-not-at-top
  from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
  size = int(spec['input_shape'][0])
  return zoo.Preprocessing(folder_stream.NAME, size, size, folder_stream.MEAN,
                           folder_stream.STD)


# EfficientNet-Lite0's model.normalization as a zoo preprocessing (stimuli are 224x224)
def _lite0_preprocessing(normalization):
  from awesome_jax.models import efficientnet_lite, zoo  # pylint: disable=g-import-not-at-top
  if normalization == 'inception':
    return zoo.PREPROCESSING['efficientnet_lite']
  mean, std = efficientnet_lite.NORMALIZATION[normalization]
  return zoo.Preprocessing(normalization, 224, 224, tuple(m / 255 for m in mean),
                           tuple(v / 255 for v in std))


def model_fn(config, name, weights):
  """(fn: uint8 NHWC images -> ImageNet logits, Preprocessing, {option: value} of the
  model worth reporting, e.g. a ViT's GELU) of one zoo model, or of the classify run
  whose workdir `weights` names (preprocessed as its training data)."""
  from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
  override = config.model.get('preprocessing', '')
  if is_classify_run(weights):
    from awesome_jax.tasks import classify  # pylint: disable=g-import-not-at-top
    trained = check_classify_run(name, weights)
    model, variables = classify.load_trained(weights)
    spec = classify_preprocessing(trained)
    forward = zoo.jit(lambda v, x: model.apply(v, zoo.preprocess(x, spec)))
    return functools.partial(forward, variables), spec, {}
  model, variables, spec = zoo.load(name, weights, override)
  if name == 'efficientnet_lite0' and not override:
    spec = _lite0_preprocessing(config.model.normalization)
  # the weights as an argument, not captured: captured arrays become compile-time constants
  forward = zoo.jit(lambda v, x: model.apply(v, zoo.preprocess(x, spec)))
  options = {k: getattr(model, k) for k in ('gelu',) if hasattr(model, k)}
  return functools.partial(forward, variables), spec, options


def evaluate_model(logits_fn, stimuli, batch_size=64, progress=True):
  """Softmax probabilities of `logits_fn` on every stimulus, in batches."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  probs = []
  for i in tqdm(range(0, len(stimuli), batch_size), desc='cue-conflict', disable=not progress):
    x = load_images([s[0] for s in stimuli[i:i + batch_size]])
    probs.append(np.asarray(jax.nn.softmax(logits_fn(x), axis=-1)))
  return np.concatenate(probs)


# condition -> (stimuli folder under data.stimuli_root, CSV folder under data.humans_root)
CONDITIONS = {'cue-conflict': ('stimuli', 'cue-conflict'), 'edge': ('edges', 'edge'),
              'silhouette': ('silhouettes', 'silhouette')}


RULES = ('16-class forced choice by mean softmax probability over each category\'s '
         'ImageNet classes; shape bias over trials with shape != texture class; '
         'accuracy and kappa with correct = response is the shape class; kappa over '
         'the stimuli both observers saw')


def run(config, workdir, logits_fn=None):
  """Shape bias and human comparison of config.model, of every model in config.models,
  or of `logits_fn`, on each of config.conditions.

  One model: results.json holds its results. Several: results.json holds
  {'models': {name: results}}, and the figures draw them all beside the humans.
  """
  from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
  conditions = check(config) if logits_fn is None else check_conditions(config)
  inputs, mapping = read_inputs(config, conditions)
  os.makedirs(workdir, exist_ok=True)
  if logits_fn is None:
    specs = model_specs(config)
  else:
    specs = [(config.model.name, None)]
  per_model, cue_trials, kappas, humans_cue = {}, {}, {}, None
  for name, weights in specs:
    if logits_fn is None:
      fn, spec, options = model_fn(config, name, weights)
      prep = {'name': spec.name, 'resize': spec.resize, 'crop': spec.crop,
              'mean': list(spec.mean), 'std': list(spec.std), 'description': zoo.describe(spec)}
      if (name == 'efficientnet_lite0' and not config.model.get('preprocessing', '') and
          not is_classify_run(weights)):
        prep['normalization'] = config.model.normalization
      prep.update(options)
    else:
      fn, prep = logits_fn, {'description': 'given by the caller (logits_fn)'}
    results = {'model': name, 'weights': weights, 'preprocessing': prep, 'rules': RULES,
               'conditions': {}}
    if logits_fn is None and is_classify_run(weights):  # name is the run's label
      results['architecture'] = check_classify_run(name, weights)['name']
    kappas[name] = {}
    for cond, (stimuli, humans) in inputs.items():
      r, trials = evaluate_condition(fn, name, cond, stimuli, humans, mapping, config,
                                     workdir)
      results['conditions'][cond] = r
      if humans:
        kappas[name][cond] = (r['vs_humans'], r['humans']['human_human_kappa_mean'])
      if cond == 'cue-conflict':
        cue_trials[name] = trials
        humans_cue = humans
    per_model[name] = results
  title = '; '.join(f'{n}: {r["preprocessing"]["description"]}' for n, r in per_model.items())
  out = per_model[specs[0][0]] if len(specs) == 1 else {'models': per_model, 'rules': RULES}
  if not distributed.is_writer():  # every process has the numbers, process 0 writes them
    return out
  if cue_trials and humans_cue:
    plot_shape_bias(os.path.join(workdir, 'shape_bias.png'), cue_trials, humans_cue,
                    title=title)
  if any(kappas.values()):
    plot_kappa(os.path.join(workdir, 'kappa.png'), {n: k for n, k in kappas.items() if k},
               title=title)
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(json_ready(out), f, indent=2, allow_nan=False)
  return out


def evaluate_condition(fn, name, cond, stimuli, humans, mapping, config, workdir):
  """(results dict, Trials) of one model on one condition; writes its decisions CSV
  (process 0)."""
  t0 = time.time()
  probs = evaluate_model(fn, stimuli, config.batch_size, config.progress_bar)
  seconds = time.time() - t0
  trials = sb.Trials.from_decisions(name, [s[1] for s in stimuli],
                                    sb.decisions_from_probs(probs, mapping))
  if distributed.is_writer():
    sb.write_decisions_csv(os.path.join(workdir, f'decisions_{name}_{cond}.csv'), trials)
  r = {'stimuli': len(stimuli), **sb.shape_bias(trials),
       'per_class_shape_bias': sb.shape_bias_per_class(trials),
       'eval_seconds': seconds, 'images_per_second': len(stimuli) / seconds}
  if humans:
    r['vs_humans'] = sb.compare_to_humans(trials, humans)
    r['humans'] = sb.human_summary(humans)
  print(f'{name} / {cond}: accuracy {r["accuracy"]:.3f}' +
        (f', shape bias {r["shape_bias"]:.3f} (shape acc {r["shape_acc"]:.3f}, texture acc '
         f'{r["texture_acc"]:.3f}, {r["conflict_trials"]} conflict trials)'
         if r['conflict_trials'] else '') +
        (f'; kappa vs humans {r["vs_humans"]["kappa_mean"]:.3f} (human-human '
         f'{r["humans"]["human_human_kappa_mean"]:.3f}); JS distance class-wise / '
         f'inter-class errors {r["vs_humans"]["js_class_errors"]:.3f} / '
         f'{r["vs_humans"]["js_interclass_errors"]:.3f}' if humans else ''))
  return r, trials


def read_inputs(config, conditions):
  """({condition: (stimuli, humans)}, mapping), every file read and checked, so that a bad
  input fails in seconds with one line, not after the model has run."""
  stimuli_root, humans_root = data_roots(config, conditions)
  inputs = {}
  for cond in conditions:
    stim_dir, human_dir = CONDITIONS[cond]
    stim_folder = data_folder(stimuli_root, 'stimuli_root', stim_dir, cond,
                              f'{stim_dir}/<class>/<name>.png')
    stimuli = sb.list_stimuli(stim_folder)
    sb.check_images([s[0] for s in stimuli])
    humans = {}
    if humans_root:
      folder = data_folder(humans_root, 'humans_root', human_dir, cond, f'{human_dir}/*.csv')
      humans = sb.read_observers(folder, strict=config.get('strict_labels', False))
      keys = {s[1] for s in stimuli}
      for h, t in humans.items():
        if not keys.intersection(t.key):
          raise sb.StimulusError(f'{folder}: observer {h!r} saw none of the {len(keys)} '
                                 f'stimuli in {stim_folder} (a CSV of another condition?)')
    inputs[cond] = (stimuli, humans)
  source = f'mapping {config.mapping}' if config.mapping else 'mapping'
  mapping = sb.load_mapping(config.mapping or None)
  sb.check_mapping_classes(mapping, {c for stimuli, _ in inputs.values()
                                     for s in stimuli for c in s[2:]}, source)
  return inputs, mapping


NO_HUMANS = 'none'  # data.humans_root value that skips the human comparison


def data_roots(config, conditions):
  """(stimuli_root, humans_root) to read: the configured folders; for an empty field the
  published files, fetched once into the cache folder (awesome_jax.download_cue_conflict;
  one line says where they came from); humans_root '' for data.humans_root='none'.

  A configured folder is never replaced by a download, even when it does not exist.
  """
  roots = {'stimuli': config.data.stimuli_root, 'humans': config.data.humans_root}
  for part, root in roots.items():  # a typo fails before anything is downloaded
    if root and root != NO_HUMANS and not os.path.isdir(root):
      raise sb.StimulusError(f'data.{part}_root={root}: not a directory')
  parts = [part for part, root in roots.items() if not root]
  if parts:
    from awesome_jax import download_cue_conflict  # pylint: disable=g-import-not-at-top
    fetched = distributed.writer_first(
        lambda: download_cue_conflict.ensure(conditions, parts,
                                             progress=config.get('progress_bar', True)),
        ' and '.join(f'data.{part}_root' for part in parts), sb.StimulusError)
    print(fetched.describe())
    roots.update({part: getattr(fetched, f'{part}_root') for part in parts})
  return roots['stimuli'], '' if roots['humans'] == NO_HUMANS else roots['humans']


def data_folder(root, field, sub, cond, layout):
  """root/<sub> (root: what config.data.<field> names), or StimulusError saying which
  folder is missing."""
  if not os.path.isdir(root):
    raise sb.StimulusError(f'data.{field}={root}: not a directory')
  folder = os.path.join(root, sub)
  if not os.path.isdir(folder):
    found = sorted(f for f in os.listdir(root) if not f.startswith('.'))
    raise sb.StimulusError(
        f'data.{field}={root}: no {sub}/ folder for condition {cond!r} (expected '
        f'{root}/{layout}; found: {", ".join(found[:8]) or "nothing"}'
        f'{", ..." if len(found) > 8 else ""})' +
        (f"; '{NO_HUMANS}' skips the human comparison" if field == 'humans_root' else ''))
  return folder


def json_ready(obj):
  """`obj` with NaN/inf as None and numpy values as Python ones, for strict JSON."""
  if isinstance(obj, dict):
    return {str(k): json_ready(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [json_ready(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def plot_shape_bias(path, models, humans, categories=sb.CATEGORIES, title=''):
  """The Geirhos et al. figure: per-category fraction of shape decisions (bottom axis)
  vs texture decisions (top); humans as red circles, each model its own marker,
  averages as vertical lines."""
  markers = ['s', 'D', '^', 'v', 'P', 'X', '*']
  fig = metrics_lib.figure((5, 7))
  ax = fig.subplots()
  ys = np.arange(len(categories))[::-1]
  observers = [('humans', sb.pool(humans.values()), 'o', 'red')] if humans else []
  observers += [(n, t, markers[i % len(markers)], f'C{i}') for i, (n, t) in
                enumerate(models.items())]
  for name, trials, marker, color in observers:
    per = sb.shape_bias_per_class(trials, categories)
    ax.scatter([per[c] for c in categories], ys, marker=marker, s=50,
               facecolors='none' if name == 'humans' else color, edgecolors=color, label=name)
    ax.axvline(sb.shape_bias(trials)['shape_bias'], color=color, lw=1.5, alpha=0.7)
  shape_bias_axes(ax, ys, categories, title, ncol=3, title_size=6)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def shape_bias_axes(ax, ys, categories, title='', ncol=3, title_size=6):
  """The Geirhos-style axes: a class per row, shape decisions left to right (texture on
  the top axis), the legend below, the title wrapped."""
  ax.set_yticks(ys)
  ax.set_yticklabels(categories)
  ax.set_xlim(-0.02, 1.02)
  ax.set_xlabel('fraction of "shape" decisions')
  top = ax.secondary_xaxis('top', functions=(lambda v: 1 - v, lambda v: 1 - v))
  top.set_xlabel('fraction of "texture" decisions')
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.09), ncol=ncol, fontsize=8)
  ax.grid(axis='x', alpha=0.3)
  if title:
    ax.set_title(textwrap.fill(title, 70), fontsize=title_size)


def plot_kappa(path, kappas, title=''):
  """Bars per condition, one per model: its mean kappa vs the humans (black dots: each
  human; red dash: mean human-human kappa). `kappas`: {model: {condition: (vs_humans,
  human_human)}}."""
  models = list(kappas)
  conds = list(dict.fromkeys(c for k in kappas.values() for c in k))
  width = 0.8 / len(models)
  fig = metrics_lib.figure((1.5 + 1.3 * len(conds) * max(1, len(models) / 2), 4))
  ax = fig.subplots()
  for j, m in enumerate(models):
    for i, c in enumerate(conds):
      if c not in kappas[m]:
        continue
      vs, _ = kappas[m][c]
      x = i - 0.4 + width * (j + 0.5)
      ax.bar(x, vs['kappa_mean'], width=width * 0.9, color=f'C{j}', alpha=0.7,
             label=m if i == 0 else None)
      vals = list(vs['kappa_per_human'].values())
      ax.scatter(np.full(len(vals), x), vals, color='k', s=6, zorder=3)
  for i, c in enumerate(conds):
    hh = next(kappas[m][c][1] for m in models if c in kappas[m])
    ax.plot([i - 0.4, i + 0.4], [hh, hh], color='red', ls='--',
            label='human-human' if i == 0 else None)
  ax.legend(fontsize=7)
  ax.set_xticks(range(len(conds)))
  ax.set_xticklabels(conds)
  if title:
    ax.set_title(textwrap.fill(title, 70), fontsize=6)
  ax.set_ylabel("error consistency with humans (Cohen's kappa)")
  ax.axhline(0, color='gray', lw=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
