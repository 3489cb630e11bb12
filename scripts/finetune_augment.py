"""Tuli et al. 2021, Fig. 7 at CIFAR scale: fine-tune finished classify runs (a ResNet, a
ViT) for a few epochs with each training augmentation and compare their shape bias and
test accuracy before and after.

For every run (a finished classify workdir: results.json, config.json, params.npz) and
every augmentation (`none`: fine-tuning without extra augmentation, the control; `all`:
the six of awesome_jax/augment.py together; else one of rotation, color, blur, sobel,
noise, cutout), the classify task runs in this process with the run's own config.json
(fields it predates take configs/classify.py's defaults) and init_from=RUN_DIR (its final
weights, a fresh optimizer), train.extra_augment=<augmentation>, train.epochs=--epochs,
train.lr = the run's lr x --lr-scale, no warm-up, train.max_steps=0, no progress bar, then
the --set FIELD=VALUE overrides; into OUT/<label>_s<seed>/<augmentation>/ (label and seed
of the run's results.json). A finished fine-tune (results.json with its cue-conflict
section) is skipped and reused; an interrupted one resumes from its checkpoints; one
started (checkpoints or results there) with another config stops the script in one line
(give another --out, or delete it). Every config is checked, and the cue-conflict folders
read, before anything trains.

Then writes OUT/finetune.md (per run and augmentation: test accuracy and shape bias,
with its bootstrap interval, before -> after; and the means over seeds per model
label), OUT/finetune.json (the same numbers, strict JSON: undefined as null) and
OUT/finetune.png (Fig. 7: per model label, a bar per augmentation of the shape bias after
fine-tuning, mean over seeds, the seeds as dots, a dashed line at the shape bias before
fine-tuning; below, the same for the test accuracy); prints the markdown table.

The experiment (the runs of configs/classify.py's resnet20_cifar and vit_cifar, seeds 0
and 1, evaluated on the cue-conflict stimuli):

  python scripts/finetune_augment.py --runs /tmp/runs/cnn_vit/resnet20_s0 \\
    /tmp/runs/cnn_vit/resnet20_s1 /tmp/runs/cnn_vit/vit_s0 /tmp/runs/cnn_vit/vit_s1 \\
    --out /tmp/runs/cnn_vit/finetune \\
    --set cue_conflict.stimuli_root=../shared/data/cue_conflict \\
    --set cue_conflict.humans_root=../shared/data/human_decisions

  (a quick try of the whole pipeline: --augmentations none,sobel --set train.max_steps=20
  --out /tmp/runs/cnn_vit/finetune_try; the real run needs another --out)

Cost: each fine-tune is --epochs x 390 steps (batch 128) plus a test evaluation per epoch
and the cue-conflict evaluation; at ~0.85 s/step for ResNet-20 on 2 CPU cores, 3 epochs
are ~17 min (the augmentations add some: rotation and blur most; the ViT costs about what
ResNet-20 does, configs/classify.py), so the 8 augmentations x 4 runs above (32
fine-tunes) take ~9-10 hours. Killed, the same command picks up where it stopped.
"""
import argparse
import ast
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
import ml_collections
import numpy as np

from awesome_jax import augment
from awesome_jax import metrics as metrics_lib
from configs import classify as classify_configs
# pylint: enable=wrong-import-position

SINGLE = augment.ORDER  # rotation, color, blur, sobel, noise, cutout
AUGMENTATIONS = ('none',) + SINGLE + ('all',)
# a model's kwargs are replaced whole by the run's (a ViT's are not a ResNet's + more)
REPLACED_SECTIONS = ('model.kwargs',)


class FinetuneError(ValueError):
  """A run, an augmentation, an override or an output folder the script cannot use."""


def extra_augment(name):
  """train.extra_augment for augmentation `name`: '' for none, all six for all."""
  if name == 'none':
    return ''
  if name == 'all':
    return ','.join(SINGLE)
  return name


def parse_augmentations(text):
  """The augmentation names of 'none,sobel' (each once, in the given order)."""
  names = []
  for name in (n.strip() for n in text.split(',')):
    if not name:
      continue
    if name not in AUGMENTATIONS:
      raise FinetuneError(f'--augmentations: {name!r}: unknown; allowed: '
                          f'{", ".join(AUGMENTATIONS)}')
    if name not in names:
      names.append(name)
  if not names:
    raise FinetuneError(f'--augmentations={text!r}: none given; allowed: '
                        f'{", ".join(AUGMENTATIONS)}')
  return names


def _read_json(path, what):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise FinetuneError(f'{path}: not a readable {what} ({e})') from None


def read_run(run_dir):
  """{'workdir' (absolute), 'label', 'seed', 'results', 'config' (its config.json dict)}
  of a finished classify run."""
  workdir = os.path.abspath(run_dir)
  if not os.path.isfile(os.path.join(workdir, 'results.json')):
    raise FinetuneError(f'{run_dir}: no results.json (not a finished classify run)')
  results = _read_json(os.path.join(workdir, 'results.json'), 'results.json')
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise FinetuneError(f'{run_dir}: no config.json (the config the run ran with)')
  config = _read_json(os.path.join(workdir, 'config.json'), 'config.json')
  if config.get('task') != 'classify':
    raise FinetuneError(f'{run_dir}: a {config.get("task")!r} run, not a classify one')
  label = results.get('label') or results.get('model') or config['model'].get('name')
  seed = results.get('seed', config.get('seed'))
  return {'workdir': workdir, 'label': label, 'seed': seed, 'results': results,
          'config': config}


def run_name(label, seed):
  """The output folder of a run's fine-tunes: '<label>_s<seed>'."""
  return f'{label}_s{seed}'


def _tuples(value):
  """JSON lists as tuples (the configs' sequences are tuples), recursively."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _merged(defaults, ran, path=''):
  """`defaults` (a plain dict) with the values of `ran` (a config.json dict): sections
  merged field by field, except REPLACED_SECTIONS, taken whole."""
  out = dict(defaults)
  for key, value in ran.items():
    name = f'{path}{key}'
    if (isinstance(value, dict) and isinstance(out.get(key), dict) and
        name not in REPLACED_SECTIONS):
      out[key] = _merged(out[key], value, name + '.')
    else:
      out[key] = _tuples(value)
  return out


def _parse_value(field, text, current):
  """`text` as a value of the type of the field's `current` value."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError
      return text.lower() in ('true', '1')
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text)
      if not isinstance(value, (tuple, list)):
        raise ValueError
      return tuple(value)
    if isinstance(current, str):
      return text
    try:  # None or another type: a Python literal, else the text
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  except (ValueError, SyntaxError):
    raise FinetuneError(f'--set {field}={text}: not a {type(current).__name__} (the '
                        f'field is {current!r})') from None


def apply_override(config, item):
  """Sets FIELD=VALUE (a dotted field of `config`, e.g. cue_conflict.stimuli_root=DIR;
  the value read as the field's type) in `config`."""
  field, eq, text = item.partition('=')
  field = field.strip().removeprefix('config.')
  if not eq or not field:
    raise FinetuneError(f'--set {item!r}: not FIELD=VALUE (e.g. train.max_steps=20)')
  *parents, key = field.split('.')
  section = config
  for name in parents:
    section = section.get(name) if isinstance(section, ml_collections.ConfigDict) else None
  if not isinstance(section, ml_collections.ConfigDict) or key not in section:
    raise FinetuneError(f'--set {field}: no such config field')
  if isinstance(section[key], ml_collections.ConfigDict):
    raise FinetuneError(f'--set {field}: a section, not a field')
  section[key] = _parse_value(field, text, section[key])


def finetune_config(run, augmentation, epochs=3, lr_scale=0.1, overrides=()):
  """The classify ConfigDict that fine-tunes `run` (read_run) with `augmentation`."""
  c = _merged(classify_configs.get_config().to_dict(), run['config'])
  c['init_from'] = run['workdir']
  c['progress_bar'] = False
  t = c['train']
  t['extra_augment'] = extra_augment(augmentation)
  t['epochs'] = int(epochs) if float(epochs).is_integer() else float(epochs)
  t['lr'] = float(t['lr']) * lr_scale
  t['warmup_epochs'] = 0.0
  t['max_steps'] = 0
  config = ml_collections.ConfigDict(c)
  for item in overrides:
    apply_override(config, item)
  return config


def _differences(ran, wanted, path=''):
  """The dotted fields whose values differ between two config dicts."""
  out = []
  for key in sorted(set(ran) | set(wanted)):
    a, b = ran.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f'{path}{key}.')
    elif a != b:
      out.append(f'{path}{key}: {a!r} there, {b!r} here')
  return out


def _finished(workdir):
  """results.json of a finished fine-tune (cue-conflict evaluation included), or None."""
  path = os.path.join(workdir, 'results.json')
  if not os.path.isfile(path):
    return None
  results = _read_json(path, 'results.json')
  return results if 'cue_conflict' in results else None


def _checkpoint_steps(workdir):
  folder = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(folder):
    return []
  return sorted(int(s) for s in os.listdir(folder) if s.isdigit())


def plan(runs, out, augmentations, epochs=3, lr_scale=0.1, overrides=()):
  """[(name 'label_sSEED/aug', workdir, config, run)] of every (run, augmentation), each
  config checked (classify.check) and compared with a fine-tune already started there."""
  from awesome_jax.tasks import classify  # pylint: disable=g-import-not-at-top
  if not runs:
    raise FinetuneError('--runs: no runs given')
  if not lr_scale > 0:
    raise FinetuneError(f'--lr-scale={lr_scale!r}: must be > 0')
  if not epochs > 0:
    raise FinetuneError(f'--epochs={epochs!r}: must be > 0')
  if isinstance(augmentations, str):
    augmentations = parse_augmentations(augmentations)
  if not augmentations:
    raise FinetuneError(f'--augmentations: none given; allowed: {", ".join(AUGMENTATIONS)}')
  for name in augmentations:
    if name not in AUGMENTATIONS:
      raise FinetuneError(f'--augmentations: {name!r}: unknown; allowed: '
                          f'{", ".join(AUGMENTATIONS)}')
  read = [read_run(r) for r in runs]
  seen = {}
  for run in read:
    name = run_name(run['label'], run['seed'])
    if name in seen:
      raise FinetuneError(f'{seen[name]} and {run["workdir"]}: both {name} (model label '
                          f'{run["label"]!r}, seed {run["seed"]!r})')
    seen[name] = run['workdir']
  jobs = []
  for run in read:
    for aug in augmentations:
      name = f'{run_name(run["label"], run["seed"])}/{aug}'
      workdir = os.path.join(out, name)
      config = finetune_config(run, aug, epochs, lr_scale, overrides)
      try:
        classify.check(config)
      except classify.train_lib.TrainConfigError as e:
        raise FinetuneError(f'{name}: {e}') from None
      path = os.path.join(workdir, 'config.json')
      started = (os.path.isfile(os.path.join(workdir, 'results.json')) or
                 _checkpoint_steps(workdir))
      if started and os.path.isfile(path):  # it goes on with the same config only
        ran = _read_json(path, 'config.json')
        wanted = json.loads(config.to_json_best_effort())
        diff = _differences(ran, wanted)
        if diff:
          raise FinetuneError(f'{workdir}: started with another config ({"; ".join(diff)}); '
                              'give another --out or delete that folder')
      jobs.append((name, workdir, config, run))
    # the stimuli folders (or their download) now, not after the first fine-tunes
    classify.cue_conflict_inputs(jobs[-1][2])
  return jobs


def finetune_all(runs, out, augmentations=AUGMENTATIONS, epochs=3, lr_scale=0.1,
                 overrides=(), log=print):
  """Fine-tunes every run of `runs` (workdirs) with every augmentation into
  OUT/<label>_s<seed>/<augmentation>/ (see the module docstring); skips finished ones,
  resumes interrupted ones. Returns {name 'label_sSEED/aug': 'trained' | 'skipped'}."""
  from awesome_jax.tasks import classify  # pylint: disable=g-import-not-at-top
  jobs = plan(runs, out, augmentations, epochs, lr_scale, overrides)
  done = {}
  for name, workdir, config, run in jobs:
    results = _finished(workdir)
    if results is not None:
      cue = results.get('cue_conflict') or {}
      log(f'skip {name}: finished in {workdir} (test acc {100 * results["test_acc"]:.2f} %'
          + (f', shape bias {_number(cue.get("shape_bias"))}' if cue.get('evaluated') else '')
          + ')')
      done[name] = 'skipped'
      continue
    steps = _checkpoint_steps(workdir)
    t = config.train
    log(('resume' if steps else 'start') + f' {name}: ' +
        (f'from its step {steps[-1]}, ' if steps else '') +
        f'{t.epochs:g} epoch{"s" * (t.epochs != 1)} from {run["workdir"]} at lr '
        f'{t.lr:g}, extra_augment {t.extra_augment!r} -> {workdir}')
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'config.json')
    if os.path.exists(path):  # as main does: keep the config the run last ran with
      os.replace(path, os.path.join(workdir, 'config.prev.json'))
    with open(path, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    classify.run(config, workdir)
    done[name] = 'trained'
  return done


# -------------------------------------------------------------------------- the summary


def _value(x):
  """A number, or None for a missing or undefined (NaN) one."""
  if x is None:
    return None
  x = float(x)
  return None if np.isnan(x) else x


def _number(x, scale=1.0, digits=3):
  x = _value(x)
  return '-' if x is None else f'{scale * x:.{digits}f}'


def _mean(values):
  v = [x for x in (_value(x) for x in values) if x is not None]
  return float(np.mean(v)) if v else None


def _numbers(results):
  """{'test_acc', 'shape_bias', 'shape_bias_interval'} of a classify results.json."""
  cue = results.get('cue_conflict') or {}
  interval = cue.get('shape_bias_interval') if cue.get('evaluated') else None
  if interval:
    interval = {'low': _value(interval.get('low')), 'high': _value(interval.get('high'))}
  return {'test_acc': _value(results.get('test_acc')),
          'shape_bias': _value(cue.get('shape_bias')) if cue.get('evaluated') else None,
          'shape_bias_interval': interval or None}


def _order(name):
  return AUGMENTATIONS.index(name) if name in AUGMENTATIONS else len(AUGMENTATIONS)


def collect(out):
  """One row per finished fine-tune under `out`: {'label', 'seed', 'augmentation',
  'extra_augment', 'run', 'workdir', 'epochs', 'train_steps', 'lr', 'before', 'after'}
  (before/after: _numbers of the run's and the fine-tune's results.json), ordered by
  label, seed, then augmentation as in AUGMENTATIONS."""
  rows = []
  groups = sorted(os.listdir(out)) if os.path.isdir(out) else []
  for group in (g for g in groups if os.path.isdir(os.path.join(out, g))):
    for aug in sorted(os.listdir(os.path.join(out, group)), key=_order):
      workdir = os.path.join(out, group, aug)
      results = _finished(workdir) if aug in AUGMENTATIONS else None
      if results is None:
        continue
      config = _read_json(os.path.join(workdir, 'config.json'), 'config.json')
      source = config.get('init_from') or results.get('init_from')
      if not source:
        raise FinetuneError(f'{workdir}: no init_from in its config.json (not a fine-tune)')
      before = _read_json(os.path.join(source, 'results.json'), 'results.json')
      rows.append({
          'label': results.get('label'), 'seed': results.get('seed'), 'augmentation': aug,
          'extra_augment': config['train']['extra_augment'], 'run': source,
          'workdir': workdir, 'epochs': results.get('epochs'),
          'train_steps': results.get('train_steps'), 'lr': config['train']['lr'],
          'before': _numbers(before), 'after': _numbers(results)})
  rows.sort(key=lambda r: (str(r['label']), r['seed'] is None, r['seed'],
                           _order(r['augmentation'])))
  return rows


def means(rows):
  """Per (label, augmentation): the seeds and the means over them of the before and
  after numbers (undefined values left out; None when none is defined)."""
  groups = {}
  for r in rows:
    groups.setdefault((r['label'], r['augmentation']), []).append(r)
  out = []
  for (label, aug), group in groups.items():
    row = {'label': label, 'augmentation': aug, 'seeds': [r['seed'] for r in group]}
    for when in ('before', 'after'):
      row[when] = {k: _mean([r[when][k] for r in group]) for k in ('test_acc', 'shape_bias')}
    b, a = row['before']['shape_bias'], row['after']['shape_bias']
    row['shape_bias_change'] = None if a is None or b is None else a - b
    out.append(row)
  return out


def _interval(interval):
  if not interval or interval.get('low') is None or interval.get('high') is None:
    return ''
  return f' [{interval["low"]:.3f}, {interval["high"]:.3f}]'


def markdown(table):
  """finetune.md: a row per (run, augmentation), then the means over seeds per label."""
  lines = ['| model | seed | augmentation | test acc (%) before -> after | '
           'shape bias before -> after |', '|---|---|---|---|---|']
  for r in table['runs']:
    b, a = r['before'], r['after']
    lines.append(
        f'| {r["label"]} | {r["seed"]} | {r["augmentation"]} | '
        f'{_number(b["test_acc"], 100, 2)} -> {_number(a["test_acc"], 100, 2)} | '
        f'{_number(b["shape_bias"])}{_interval(b["shape_bias_interval"])} -> '
        f'{_number(a["shape_bias"])}{_interval(a["shape_bias_interval"])} |')
  lines += ['', 'Mean over seeds:', '',
            '| model | seeds | augmentation | test acc (%) before -> after | '
            'shape bias before -> after | shape bias change |', '|---|---|---|---|---|---|']
  for m in table['means']:
    b, a = m['before'], m['after']
    change = m['shape_bias_change']
    lines.append(
        f'| {m["label"]} | {len(m["seeds"])} | {m["augmentation"]} | '
        f'{_number(b["test_acc"], 100, 2)} -> {_number(a["test_acc"], 100, 2)} | '
        f'{_number(b["shape_bias"])} -> {_number(a["shape_bias"])} | '
        + ('-' if change is None else f'{change:+.3f}') + ' |')
  epochs = sorted({r['epochs'] for r in table['runs'] if r['epochs'] is not None})
  notes = [
      'Each run fine-tuned from its final weights (fresh optimizer, no warm-up, cosine to '
      '0) for ' + ', '.join(f'{e:g}' for e in epochs) + ' epochs, with train.extra_augment '
      '= the augmentation after crop + flip (none: the control; all: '
      f'{extra_augment("all")}).',
      '[low, high]: the 95 % bootstrap interval of the shape bias over the cue-conflict '
      'stimuli; -: not evaluated or undefined.']
  return '\n'.join(lines) + '\n\n' + '\n'.join(notes) + '\n'


def plot(path, table, title=''):
  """Fig. 7: per model label, a bar per augmentation (mean over seeds, seeds as dots) of
  the shape bias after fine-tuning, a dashed line at its shape bias before; below, the
  test accuracy the same way."""
  labels = list(dict.fromkeys(m['label'] for m in table['means']))
  augs = sorted({m['augmentation'] for m in table['means']}, key=_order)
  fig = metrics_lib.figure((max(6.0, 0.45 * len(labels) * (len(augs) + 1) + 1.5), 7))
  axes = fig.subplots(2, 1)
  width = len(augs) + 1  # a gap of one bar between the models
  for ax, key, scale, name in ((axes[0], 'shape_bias', 1.0, 'shape bias'),
                               (axes[1], 'test_acc', 100.0, 'test accuracy (%)')):
    shown = set()
    for g, label in enumerate(labels):
      base = g * width
      for i, aug in enumerate(augs):
        m = next((m for m in table['means']
                  if m['label'] == label and m['augmentation'] == aug), None)
        if m is None:
          continue
        if m['after'][key] is not None:
          ax.bar(base + i, scale * m['after'][key], 0.8,
                 color=f'C{AUGMENTATIONS.index(aug) % 10}',
                 label=None if aug in shown else aug)
          shown.add(aug)
        seeds = [r['after'][key] for r in table['runs'] if r['label'] == label and
                 r['augmentation'] == aug and r['after'][key] is not None]
        ax.scatter([base + i] * len(seeds), [scale * s for s in seeds], color='k', s=12,
                   zorder=3, label=None if 'seeds' in shown else 'seeds')
        shown.add('seeds')
      # before: the mean over the label's runs (each once, whatever it was fine-tuned with)
      runs = {r['run']: r['before'][key] for r in table['runs'] if r['label'] == label}
      before = _mean(runs.values())
      if before is not None:
        ax.hlines(scale * before, base - 0.5, base + len(augs) - 0.5, colors='k',
                  linestyles='--', lw=1.2,
                  label=None if 'before' in shown else 'before fine-tuning')
        shown.add('before')
    ax.set_xticks([g * width + (len(augs) - 1) / 2 for g in range(len(labels))])
    ax.set_xticklabels(labels)
    ax.set_ylabel(name)
    if key == 'shape_bias':
      ax.set_ylim(0, 1.05)
    else:  # accuracies differ by a few %: the axis starts below the lowest one
      values = [scale * v for r in table['runs'] for v in (r['before'][key], r['after'][key])
                if v is not None]
      if values:
        ax.set_ylim(max(0.0, 10 * np.floor((min(values) - 5) / 10)),
                    min(100.0, 10 * np.ceil((max(values) + 2) / 10)))
    ax.grid(axis='y', alpha=0.3)
  handles, names = axes[0].get_legend_handles_labels()
  fig.suptitle(title or 'Fine-tuned with each augmentation\n(bars: mean over seeds; '
               'dots: seeds; dashed: before fine-tuning)', fontsize=9)
  fig.legend(handles, names, fontsize=7, ncol=min(len(names), 6), loc='upper center',
             bbox_to_anchor=(0.5, 0.935), frameon=False)
  fig.tight_layout(rect=(0, 0, 1, 0.89))
  fig.savefig(path, dpi=120)


def summarize(out, title=''):
  """Writes OUT/finetune.md, finetune.json and finetune.png of the finished fine-tunes
  under `out`; returns the finetune.json dict {'runs': [...], 'means': [...]}."""
  rows = collect(out)
  if not rows:
    raise FinetuneError(f'{out}: no finished fine-tune to summarize')
  table = {'runs': rows, 'means': means(rows), 'augmentations': {
      aug: extra_augment(aug) for aug in AUGMENTATIONS}}
  with open(os.path.join(out, 'finetune.json'), 'w') as f:
    json.dump(table, f, indent=2, allow_nan=False)
  with open(os.path.join(out, 'finetune.md'), 'w') as f:
    f.write(markdown(table))
  plot(os.path.join(out, 'finetune.png'), table, title)
  return table


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--runs', nargs='+', required=True, help='finished classify workdirs')
  ap.add_argument('--out', required=True, help='folder for the fine-tunes and the summary')
  ap.add_argument('--augmentations', default=','.join(AUGMENTATIONS),
                  help=f'comma-separated, of: {", ".join(AUGMENTATIONS)}')
  ap.add_argument('--epochs', type=float, default=3, help='fine-tuning epochs')
  ap.add_argument('--lr-scale', type=float, default=0.1,
                  help="the fine-tuning lr: the run's train.lr times this")
  ap.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                  help='a config override, e.g. cue_conflict.stimuli_root=DIR (repeatable)')
  args = ap.parse_args()
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from awesome_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  try:
    finetune_all(args.runs, args.out, parse_augmentations(args.augmentations),
                 args.epochs, args.lr_scale, args.set)
    summarize(args.out)
  except (FinetuneError,) + main_lib.user_errors() as e:
    sys.exit(f'error: {e}')
  with open(os.path.join(args.out, 'finetune.md')) as f:
    print(f.read(), end='')
  print(f'figure: {os.path.join(args.out, "finetune.png")}')


if __name__ == '__main__':
  main()
