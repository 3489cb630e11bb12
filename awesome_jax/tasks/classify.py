"""The classify task: train a classifier of the model registry from scratch (or fine-tune).

`run(config, workdir)` trains `models.build(config.model.name, **config.model.kwargs)` on
config.data with `train.Trainer` (random crop + flip, SGD + momentum or AdamW, linear
warm-up then cosine decay, weight decay, label smoothing), evaluates the test accuracy every
epoch (metrics.jsonl + TensorBoard), checkpoints every epoch and every
`config.checkpoint_every` steps, and resumes from the newest checkpoint: a killed run
restarted with the same command ends with the same weights as an uninterrupted one.

Outputs in the workdir: results.json (test accuracy, epochs, wall time, images/s, parameter
count), model.json (how to build the model) and params.npz (its final variables, keys
'params/...' and 'batch_stats/...'). `load_trained(workdir)` gives back (model, variables)
for `model.apply(variables, x)`; `config.init_from=WORKDIR` starts a run from another run's
final weights (fresh optimizer state), e.g. to fine-tune with other augmentations.

Cue-conflict evaluation (Tuli et al. 2021): at the end of a CIFAR-10 run the trained model
decides among the 7 cue-conflict categories that are CIFAR-10 classes
(`awesome_jax.cifar_cue_conflict`); results.json gets a 'cue_conflict' section (shape bias
with its bootstrap interval, shape/texture accuracy, edges/silhouettes accuracy, kappa and
JS distances vs the humans, per-class numbers) and the workdir shape_bias.png and
decisions_<label>_<condition>.csv. The stimuli folders (or the download, for
cue_conflict.stimuli_root='') are checked at the start, before training. Run again on a
finished workdir (results.json written, the last checkpoint at the last step), the task
trains nothing: it keeps the run's results and re-runs only this evaluation (and the
extra tests below).

Several CIFAR-10 folders (Geirhos et al. 2019 at CIFAR scale: stylized CIFAR-10 written by
the stylize task, the original, both): `data.extra_train_dirs='DIR,DIR2'` appends the
train splits of those folders to data.data_dir's (SIN + IN; the test split, mean and std
stay data.data_dir's); `data.extra_test='stylized=DIR,name2=DIR2'` tests the final model
on those folders' test splits, normalised as the training data, into results.json
('extra_test': {name: accuracy}; on a finished workdir too). The folders are read at
the start: a missing one, or an extra train folder whose classes differ from
data.data_dir's, stops the run before training, in one line.

Image folders of any size (ImageNet, Stylized-ImageNet: configs/classify.py:resnet50_sin):
`data.name='folder'` streams data.data_dir/train/<class>/<image> from disk
(awesome_jax/folder_stream.py: only the file lists in memory, images decoded in a thread
pool while the step runs, the next batches ahead), random-resized crop + flip to
data.image_size, ImageNet's mean/std; the test accuracy (every evaluation, and on the
test splits of data.extra_test folders) streamed from val/ (or validation/, test/) with
resize + centre crop. The folder pipeline has its own crop + flip: it replaces the
trainer's (train.augment must be False). data.extra_train_dirs appends other folders'
train splits (the same class names). Batches depend on (seed, step) only, so a killed
run resumes as for arrays. Several processes (train.shard=True on several hosts): each
decodes only its own rows of every training batch; evaluation decodes every chunk on
every process. No cue-conflict evaluation (results.json says why): it reads the logits of
a CIFAR-10 classifier.
"""

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax import augment as augment_lib
from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import cifar_cue_conflict as cc_lib
from awesome_jax import data as data_lib
from awesome_jax import distributed
from awesome_jax import folder_stream
from awesome_jax import metrics as metrics_lib
from awesome_jax import models
from awesome_jax import shape_bias as sb
from awesome_jax import sharding as sharding_lib
from awesome_jax import train as train_lib
from awesome_jax import xla_options

PARAMS_FILE = 'params.npz'
MODEL_FILE = 'model.json'
COLLECTIONS = ('params', 'batch_stats')
# image shape (HWC) of each dataset data.load reads; 'synthetic' takes data.synthetic_shape
DATA_SHAPES = {'cifar10': (32, 32, 3), 'mnist': (28, 28, 1), 'usps': (16, 16, 1),
               'digits': (8, 8, 1)}
SYNTHETIC_CLASSES = 4


def extra_augment_fn(t, mean, std):
  """fn(key, x) -> x for train.extra_augment (applied after crop + flip, to normalised
  images: awesome_jax/augment.py works on [0, 1] pixels, so it is wrapped with the data's
  mean/std) with train.extra_augment_params; None for ''."""
  if not t.extra_augment.strip():
    return None
  fn = augment_lib.build(t.extra_augment, **parse_augment_params(t.get('extra_augment_params', '')))
  return augment_lib.for_normalized(fn, mean, std)


def parse_augment_params(text):
  """{'rotation_degrees': 30.0} of 'rotation_degrees=30,noise_std=0.1' ('' = {})."""
  out = {}
  for item in (i.strip() for i in text.split(',')):
    if not item:
      continue
    key, eq, value = item.partition('=')
    try:
      if not eq:
        raise ValueError
      out[key.strip()] = float(value)
    except ValueError:
      raise ClassifyConfigError(
          f'train.extra_augment_params={text!r}: {item!r} is not NAME=NUMBER '
          "(e.g. 'rotation_degrees=30,noise_std=0.1')") from None
  return out


class ClassifyConfigError(train_lib.TrainConfigError):
  """A classify config field has an impossible value."""


def data_shape(d):
  """(H, W, C) of the images of data config `d`, without reading them."""
  if d.name == 'synthetic':
    return tuple(int(s) for s in d.synthetic_shape)
  if d.name == folder_stream.NAME:
    return (int(d.image_size), int(d.image_size), 3)
  return DATA_SHAPES[d.name]


# the class count the data-free checks build a folder's model with (a run takes the
# number of class subfolders)
FOLDER_CHECK_CLASSES = 1000


def num_classes(d):
  """The number of classes of data config `d` (a folder's: FOLDER_CHECK_CLASSES, as it
  is not listed here)."""
  if d.name == folder_stream.NAME:
    return FOLDER_CHECK_CLASSES
  return int(d.get('synthetic_classes', SYNTHETIC_CLASSES)) if d.name == 'synthetic' else 10


def extra_train_dirs(d):
  """The folders of data.extra_train_dirs (a comma-separated string, or a sequence)."""
  return data_lib.split_list(d.get('extra_train_dirs', ''))


def extra_test_dirs(d):
  """{name: folder} of data.extra_test ('name=DIR,name2=DIR2', or a dict)."""
  try:
    return data_lib.parse_named_dirs(d.get('extra_test', ''), 'data.extra_test')
  except data_lib.DataError as e:
    raise ClassifyConfigError(str(e)) from None


def load_data(d):
  """The Dataset of data config `d` (synthetic: Gaussian blobs of data.synthetic_shape),
  with the train splits of data.extra_train_dirs appended to its train split; for
  data.name=folder a folder_stream.FolderData (file lists only)."""
  if d.name == folder_stream.NAME:
    dataset = folder_stream.open_folder(d.data_dir, d.image_size, extra_train_dirs(d))
    print(dataset.describe())
    return dataset
  if d.name == 'synthetic':
    return data_lib.make_synthetic(num_classes(d), data_shape(d))
  dataset = data_lib.load(d.name, d.source, d.data_dir, d.tfds_data_dir)
  if extra_train_dirs(d):
    dataset = data_lib.with_extra_train(dataset, extra_train_dirs(d))
  return dataset


def load_extra_test(d, dataset=None):
  """{name: (x_test, y_test)} of the folders of data.extra_test (their test splits); for
  data.name=folder {name: folder_stream.Split} labelled by `dataset`'s classes."""
  out = {}
  for name, folder in extra_test_dirs(d).items():
    if d.name == folder_stream.NAME:
      out[name] = folder_stream.open_test(folder, dataset.classes, f'data.extra_test {name}')
      continue
    other = data_lib.load_cifar10_folder(folder, f'data.extra_test {name}')
    if other.shape != data_shape(d):
      raise data_lib.DataError(f'data.extra_test {name}: {folder}: images of shape '
                               f'{other.shape}, not {data_shape(d)}')
    out[name] = (other.x_test, other.y_test)
  return out


def correct_counter(model, variables):
  """fn(x, y) -> the number of the (normalised) images `x` that `model` labels `y`."""
  correct = jax.jit(lambda v, xb, yb: jnp.sum(
      jnp.argmax(model.apply(v, xb, train=False), -1) == yb))
  return lambda xb, yb: correct(variables, xb, yb)


def accuracy(model, variables, x, y, batch_size=500):
  """Top-1 accuracy of `model` on the (normalised) images `x` with labels `y`."""
  return metrics_lib.accuracy_in_batches(correct_counter(model, variables), x, y, batch_size)


def evaluate_extra_test(model, variables, dataset, extra_test, label, chunk=256):
  """{name: accuracy} on the test splits `extra_test` {name: (x, y)}, normalised as
  `dataset` (the training data) is; folder Splits streamed `chunk` images at a time."""
  out = {}
  for name, test in extra_test.items():
    if isinstance(test, folder_stream.Split):
      n = len(test)
      out[name] = folder_stream.accuracy(correct_counter(model, variables), test,
                                         dataset.image_size, chunk, dataset.mean, dataset.std)
    else:
      x, y = test
      n = len(y)
      out[name] = accuracy(model, variables, dataset.normalize(x), y)
    print(f'{label}: {name} test acc {100 * out[name]:.2f} % ({n} images)')
  return out


# data.name values: data.load's datasets (arrays in memory) and streamed image folders
DATA_NAMES = data_lib.DATASETS + (folder_stream.NAME,)


def check_folder(config):
  """data.name=folder's fields: a folder named, a positive data.image_size, and the
  trainer's own crop + flip off (the folder pipeline crops and flips each image)."""
  d = config.data
  if not d.data_dir:
    raise ClassifyConfigError("data.data_dir='': data.name=folder reads the image folder "
                              'data_dir/train/<class>/<image> (and val/ or test/); set it')
  if not isinstance(d.image_size, int) or d.image_size < 1:
    raise ClassifyConfigError(f'data.image_size={d.image_size!r}: must be a positive integer')
  if config.train.augment:
    raise ClassifyConfigError(
        'train.augment=True: data.name=folder has its own random-resized crop + flip '
        "(folder_stream), the trainer's pad-4 crop + flip would add to it; set "
        'train.augment=False')


def model_names():
  """Every name models.build takes: the small nets and the zoo."""
  from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
  return list(models.REGISTRY) + list(zoo.entries())


def build_model(name, kwargs, classes, shape):
  """models.build with a model-config error in one line naming model.kwargs."""
  try:
    return models.build(name, classes, shape, **kwargs)
  except TypeError as e:  # an unknown keyword
    raise ClassifyConfigError(
        f'model.kwargs of {name}: {data_lib.first_line(e, with_type=False)}') from None


def _model_kwargs(m):
  return m.kwargs.to_dict() if hasattr(m.kwargs, 'to_dict') else dict(m.kwargs)


def check(config):
  """The 'classify' task's config checks that need no data (see main --dry_run)."""
  t, d, m = config.train, config.data, config.model
  train_lib.check_train_config(t)
  try:  # names and parameters (their values are checked when the step is built)
    augment_lib.build(t.extra_augment, **parse_augment_params(t.get('extra_augment_params', '')))
  except ValueError as e:
    field = ('train.extra_augment_params' if 'parameter' in str(e)
             else 'train.extra_augment')
    message = data_lib.first_line(e, with_type=False).removeprefix('augmentation ')
    message = message.removeprefix('parameter ')
    raise ClassifyConfigError(f'{field}={t[field.split(".")[1]]!r}: {message}') from None
  if not 0 <= t.warmup_epochs < t.epochs:
    raise ClassifyConfigError(f'train.warmup_epochs={t.warmup_epochs!r}: must be in '
                              f'[0, train.epochs={t.epochs!r})')
  if t.max_steps < 0:
    raise ClassifyConfigError(f'train.max_steps={t.max_steps!r}: must be >= 0')
  for name in ('eval_every', 'checkpoint_every'):
    if config[name] < 0:
      raise ClassifyConfigError(f'{name}={config[name]!r}: must be >= 0')
  if config.log_every < 1:
    raise ClassifyConfigError(f'log_every={config.log_every!r}: must be > 0')
  if d.name not in DATA_NAMES:
    raise ClassifyConfigError(f'data.name={d.name!r}: unknown; allowed: '
                              f'{", ".join(DATA_NAMES)}')
  if d.source not in data_lib.SOURCES:
    raise ClassifyConfigError(f'data.source={d.source!r}: unknown; allowed: '
                              f'{", ".join(data_lib.SOURCES)}')
  if d.name == 'synthetic' and (len(d.synthetic_shape) != 3 or min(d.synthetic_shape) < 1):
    raise ClassifyConfigError(f'data.synthetic_shape={tuple(d.synthetic_shape)!r}: must be '
                              '(H, W, C) with sizes >= 1')
  if d.name == 'synthetic' and num_classes(d) < 2:
    raise ClassifyConfigError(f'data.synthetic_classes={d.synthetic_classes!r}: must be >= 2')
  for field, given in (('extra_train_dirs', extra_train_dirs(d)),
                       ('extra_test', extra_test_dirs(d))):
    if given and d.name not in ('cifar10', folder_stream.NAME):
      raise ClassifyConfigError(f'data.{field}: CIFAR-10 folders, for data.name=cifar10 '
                                f'(not {d.name}), or image folders for data.name=folder')
  if d.name == folder_stream.NAME:
    check_folder(config)
  names = model_names()
  if m.name not in names:
    raise ClassifyConfigError(f'model.name={m.name!r}: unknown; allowed: {", ".join(names)}')
  shape = data_shape(d)
  model = build_model(m.name, _model_kwargs(m), num_classes(d), shape)
  try:  # shapes only: catches kwargs the model cannot be built with
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape)))
  except (TypeError, ValueError) as e:
    raise ClassifyConfigError(f'model.kwargs of {m.name} on {d.name} {shape}: '
                              f'{data_lib.first_line(e, with_type=False)}') from None
  check_cue_conflict(config, model, shape)


# -------------------------------------------------------- the cue-conflict evaluation

NONE = 'none'  # cue_conflict.stimuli_root: no evaluation; humans_root: no human comparison


def cue_conflict_skip_reason(config):
  """Why the run has no cue-conflict evaluation, or '' when it has one."""
  cue, d = config.get('cue_conflict'), config.data
  if cue is None:
    return 'the config has no cue_conflict section'
  if cue.stimuli_root == NONE:
    return f"cue_conflict.stimuli_root='{NONE}'"
  if d.name == 'synthetic' and num_classes(d) == len(cc_lib.CIFAR10_CLASSES):
    return ''  # a stand-in for CIFAR-10 (tests, notebooks)
  if d.name != 'cifar10':
    extra = f' with {num_classes(d)} classes' if d.name == 'synthetic' else ''
    return (f'data.name={d.name}{extra}: the 7-class benchmark reads the logits of a '
            'CIFAR-10 classifier')
  return ''


def check_cue_conflict(config, model, shape):
  """The cue_conflict fields (no folder read): types, and that the model takes
  size x size RGB images."""
  cue = config.get('cue_conflict')
  if cue is None:
    return
  for field in ('stimuli_root', 'humans_root'):
    if not isinstance(cue[field], str):
      raise ClassifyConfigError(f'cue_conflict.{field}={cue[field]!r}: must be a folder, '
                                f"'' (fetch the published files) or '{NONE}'")
  for field in ('size', 'resamples'):
    if not isinstance(cue[field], int) or cue[field] < 1:
      raise ClassifyConfigError(f'cue_conflict.{field}={cue[field]!r}: must be a positive '
                                'integer')
  if cue_conflict_skip_reason(config):
    return
  if shape[-1] != 3:
    raise ClassifyConfigError(f'cue_conflict: the stimuli are RGB, the model takes {shape} '
                              f"images (set cue_conflict.stimuli_root='{NONE}')")
  if cue.size != shape[0] or cue.size != shape[1]:
    try:
      jax.eval_shape(lambda: model.apply(
          model.init(jax.random.key(0), jnp.zeros((1,) + shape)),
          jnp.zeros((1, cue.size, cue.size, 3)), train=False))
    except (TypeError, ValueError) as e:
      raise ClassifyConfigError(
          f'cue_conflict.size={cue.size}: the model, trained on {shape[0]}x{shape[1]} '
          f'images, does not take {cue.size}x{cue.size} ones '
          f'({data_lib.first_line(e, with_type=False)})') from None


def cue_conflict_inputs(config):
  """(stimuli_root, humans_root, conditions) the evaluation will read, or None when it is
  skipped. Called at the start of a run: a configured folder that does not exist (or lacks
  a condition's human CSVs) stops the run before training; an empty root fetches the
  published files into the cache folder (awesome_jax.download_cue_conflict; several
  processes: process 0 first, distributed.writer_first). Conditions: those whose stimuli
  folder is there (cue-conflict must be)."""
  if cue_conflict_skip_reason(config):
    return None
  cue = config.cue_conflict
  roots = {'stimuli': cue.stimuli_root, 'humans': cue.humans_root}
  for part, root in roots.items():
    if root and root != NONE and not os.path.isdir(root):
      raise sb.StimulusError(f'cue_conflict.{part}_root={root}: not a directory')
  parts = [part for part, root in roots.items() if not root]
  if parts:
    from awesome_jax import download_cue_conflict  # pylint: disable=g-import-not-at-top
    fetched = distributed.writer_first(  # process 0 first: the others find its files
        lambda: download_cue_conflict.ensure(tuple(cc_lib.CONDITIONS), parts,
                                             progress=config.progress_bar),
        ' and '.join(f'cue_conflict.{part}_root' for part in parts), sb.StimulusError)
    print(fetched.describe())
    roots.update({part: getattr(fetched, f'{part}_root') for part in parts})
  stimuli_root = roots['stimuli']
  humans_root = '' if roots['humans'] == NONE else roots['humans']
  conditions = [c for c, (folder, _) in cc_lib.CONDITIONS.items()
                if os.path.isdir(os.path.join(stimuli_root, folder))]
  if 'cue-conflict' not in conditions:
    raise sb.StimulusError(f'cue_conflict.stimuli_root={stimuli_root}: no stimuli/ folder '
                           f'(expected {stimuli_root}/stimuli/<shape class>/<name>.png)')
  for cond in conditions:
    if humans_root and not os.path.isdir(os.path.join(humans_root, cc_lib.CONDITIONS[cond][1])):
      raise sb.StimulusError(
          f'cue_conflict.humans_root={humans_root}: no {cc_lib.CONDITIONS[cond][1]}/ folder '
          f"for condition {cond!r} (its stimuli are there); '{NONE}' skips the humans")
  for cond in conditions:
    stimuli = cc_lib.select(stimuli_root, cond)
    if not stimuli:
      raise sb.StimulusError(f'cue_conflict.stimuli_root={stimuli_root}: no {cond} stimulus '
                             f'of the 7 classes ({", ".join(cc_lib.CATEGORIES)})')
    sb.check_images([s[0] for s in stimuli])
    if humans_root:  # read now: a bad CSV fails before training, not after it
      cc_lib.read_humans(humans_root, cond, [s[1] for s in stimuli])
  return stimuli_root, humans_root, tuple(conditions)


def cue_conflict_logits_fn(model, variables, mean, std):
  """uint8 (B, H, W, 3) images -> (B, classes) logits, normalised as in training."""
  forward = jax.jit(lambda v, x: model.apply(
      v, (x / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32),
      train=False))
  return lambda x: np.asarray(forward(variables, jnp.asarray(x, jnp.float32)))


def evaluate_cue_conflict(config, inputs, logits_fn, label, workdir, write=True, title=''):
  """results.json's 'cue_conflict' section: {'evaluated': False, 'reason'} for a skipped
  run; else cifar_cue_conflict.evaluate's results with the roots, size and resamples used
  (and, with `write`, the decisions CSVs and shape_bias.png in `workdir`)."""
  if inputs is None:
    reason = cue_conflict_skip_reason(config)
    print(f'{label}: no cue-conflict evaluation ({reason})')
    return {'evaluated': False, 'reason': reason}
  cue = config.cue_conflict
  stimuli_root, humans_root, conditions = inputs
  t0 = time.time()
  r = cc_lib.evaluate(logits_fn, stimuli_root, humans_root, size=cue.size, name=label,
                      conditions=conditions, resamples=cue.resamples,
                      out_dir=workdir if write else '', title=title)
  out = {'evaluated': True, 'stimuli_root': stimuli_root, 'humans_root': humans_root,
         'resamples': cue.resamples, 'seconds': time.time() - t0, **r}
  interval = r.get('shape_bias_interval', {})
  print(f'{label}: cue-conflict shape bias {r.get("shape_bias", float("nan")):.3f} '
        f'[{interval.get("low", float("nan")):.3f}, {interval.get("high", float("nan")):.3f}]'
        f' (shape acc {r.get("shape_acc", float("nan")):.3f}, texture acc '
        f'{r.get("texture_acc", float("nan")):.3f}, {conditions[0]} stimuli '
        f'{r["conditions"]["cue-conflict"]["stimuli"]})' +
        (f'; kappa vs humans {r["kappa_vs_humans"]:.3f}, human shape bias '
         f'{r["human_shape_bias"]:.3f}' if 'kappa_vs_humans' in r else ''))
  return out


def finished_results(workdir, total, config, checkpointer):
  """The results.json of a run in `workdir` that trained the same model on the same data
  for the same `total` steps (its params.npz there; its newest checkpoint, if any are
  left, at `total`), else None."""
  path = os.path.join(workdir, 'results.json')
  if not (os.path.exists(path) and os.path.exists(os.path.join(workdir, PARAMS_FILE))
          and checkpointer.latest_step() in (None, total)):
    return None
  with open(path) as f:
    results = json.load(f)
  kwargs = json.loads(json.dumps(_model_kwargs(config.model)))  # tuples as lists
  same = (results.get('train_steps') == total and results.get('model') == config.model.name
          and results.get('model_kwargs') == kwargs and
          results.get('data') == config.data.name and
          results.get('extra_train_dirs', []) == extra_train_dirs(config.data))
  if same:  # the weights are those of this config: else re-running would only re-test them
    changed = [f'{k}={v!r} (this config: {w!r})' for k, v, w in trained_with_diff(
        results, config)]
    if changed:
      raise ClassifyConfigError(
          f'{workdir} holds a finished run trained with {", ".join(changed)}: use a new '
          '--workdir (or the same config to re-run only the evaluation)')
  return results if same else None


# train.* fields that do not change what is trained
NOT_TRAINING = ('shard',)


def trained_with(config):
  """What results.json records of the training settings (results['trained_with'])."""
  t = config.train.to_dict() if hasattr(config.train, 'to_dict') else dict(config.train)
  out = {f'train.{k}': v for k, v in t.items() if k not in NOT_TRAINING}
  out.update({'seed': config.seed, 'init_from': config.init_from})
  return json.loads(json.dumps(out))  # tuples as lists


def trained_with_diff(results, config):
  """[(field, recorded, this config's)] where a finished run's results.json says it was
  trained otherwise (runs from before results.json recorded it: none)."""
  recorded = results.get('trained_with')
  if not recorded:
    return []
  now = trained_with(config)
  return [(k, recorded[k], now.get(k)) for k in sorted(recorded) if recorded[k] != now.get(k)]


def count_params(params):
  """The number of scalars in a params tree (arrays or shape structs)."""
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


def save_trained(workdir, model_spec, variables):
  """Writes model.json (name, kwargs, num_classes, input_shape) and params.npz."""
  with open(os.path.join(workdir, MODEL_FILE), 'w') as f:
    json.dump(model_spec, f, indent=2)
  flat = {}
  for col in COLLECTIONS:
    if col in variables:
      flat.update(ckpt_lib.flatten_tree(variables[col], prefix=f'{col}/'))
  tmp = os.path.join(workdir, 'params.tmp.npz')
  np.savez(tmp, **flat)
  os.replace(tmp, os.path.join(workdir, PARAMS_FILE))


def load_variables(workdir):
  """The variables {'params', 'batch_stats'?} of params.npz in `workdir`."""
  path = os.path.join(workdir, PARAMS_FILE)
  if not os.path.exists(path):
    raise ClassifyConfigError(f'{path}: no such file (not a finished classify run)')
  with np.load(path) as z:
    flat = {k: z[k] for k in z.files}
  out = {}
  for col in COLLECTIONS:
    tree = ckpt_lib.unflatten_tree(flat, prefix=f'{col}/')
    if tree is not None:
      out[col] = jax.tree_util.tree_map(jnp.asarray, tree)
  return out


def load_trained(workdir):
  """(model, variables) of the finished classify run in `workdir`:
  `model.apply(variables, x)` gives the logits of images normalised as in training
  (`data.load(...).normalize(x)`)."""
  with open(os.path.join(workdir, MODEL_FILE)) as f:
    spec = json.load(f)
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec['kwargs'].items()}
  model = build_model(spec['name'], kwargs, spec['num_classes'], tuple(spec['input_shape']))
  return model, load_variables(workdir)


def init_from_run(state, trainer, init_from):
  """`state` with the params (and batch stats) of the run in `init_from` and a fresh
  optimizer state; the trees must have the same keys and shapes."""
  loaded = load_variables(init_from)
  for col in COLLECTIONS:
    if (col in state) != (col in loaded):
      raise ClassifyConfigError(f'init_from={init_from!r}: {col} present in only one of '
                                'that run and this model')
    if col not in state:
      continue
    ours = dict(jax.tree_util.tree_leaves_with_path(state[col]))
    theirs = dict(jax.tree_util.tree_leaves_with_path(loaded[col]))
    for path in sorted(set(ours) | set(theirs), key=str):
      a, b = ours.get(path), theirs.get(path)
      if a is None or b is None or a.shape != b.shape:
        raise ClassifyConfigError(
            f'init_from={init_from!r}: {col}/{ckpt_lib.path_name(path)} is '
            f'{None if a is None else a.shape} here but '
            f'{None if b is None else b.shape} there')
    state = dict(state, **{col: loaded[col]})
  return dict(state, opt=trainer.tx.init(state['params']))


def run(config, workdir):
  """Trains, tests, runs the cue-conflict evaluation and tests on data.extra_test; returns
  the results dict. On a finished workdir (see `finished_results`) it only re-runs the
  cue-conflict evaluation and the extra tests."""
  check(config)
  cue_inputs = cue_conflict_inputs(config)  # a bad folder or download fails before training
  m = config.model
  label = m.label or m.name
  dataset = load_data(config.data)
  extra_test = load_extra_test(config.data, dataset)
  kwargs = _model_kwargs(m)
  model = build_model(m.name, kwargs, dataset.num_classes, dataset.shape)
  batches = train_batches(config, dataset)
  total = int(round(config.train.epochs * batches.per_epoch))
  if config.train.max_steps:
    total = min(total, config.train.max_steps)
  if isinstance(batches, folder_stream.FolderBatches):
    batches.stop = total  # nothing decoded past the last step
  os.makedirs(workdir, exist_ok=True)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  results = finished_results(workdir, total, config, checkpointer)
  if results is not None:
    checkpointer.close()
    print(f'{label}: finished in {workdir} ({total} steps, test acc '
          f'{100 * results["test_acc"]:.2f} %): nothing to train; cue-conflict evaluation only'
          + (' (and the data.extra_test accuracies)' if extra_test else ''))
    variables = load_variables(workdir)
  else:
    try:
      results, variables = train_and_test(config, workdir, dataset, model, batches, total,
                                          checkpointer)
    finally:
      if isinstance(batches, folder_stream.FolderBatches):
        batches.close()  # its decoding threads
    spec = {'name': m.name, 'kwargs': kwargs, 'num_classes': dataset.num_classes,
            'input_shape': list(dataset.shape)}
    if distributed.is_writer():
      save_trained(workdir, spec, jax.device_get(variables))
      write_results(workdir, results)
    print(f'{label}: test acc {100 * results["test_acc"]:.2f} % after '
          f'{results["epochs"]:g} epochs ({results["params"]:,} params)')
  results.setdefault('seed', config.seed)  # runs from before results.json had it
  # every process evaluates (the same numbers), process 0 writes
  variables = jax.device_get(variables)
  logits_fn, title = None, ''
  if cue_inputs is not None:
    logits_fn = cue_conflict_logits_fn(model, variables, dataset.mean, dataset.std)
    size = config.cue_conflict.size
    title = (f'{label} (test acc {100 * results["test_acc"]:.2f} %), stimuli at {size}x{size}; '
             '7-class choice among the CIFAR-10 logits')
  results['cue_conflict'] = evaluate_cue_conflict(config, cue_inputs, logits_fn, label,
                                                  workdir, distributed.is_writer(), title)
  if extra_test:  # else a finished run keeps the accuracies it has
    results['extra_test'] = evaluate_extra_test(model, variables, dataset, extra_test, label,
                                                config.train.batch_size)
    results['extra_test_dirs'] = extra_test_dirs(config.data)
  if distributed.is_writer():
    write_results(workdir, results)
  return results


def train_batches(config, dataset):
  """data.EpochBatches of an in-memory dataset (normalised), or folder_stream's
  FolderBatches (same interface) of a FolderData's train split."""
  if isinstance(dataset, folder_stream.FolderData):
    return folder_stream.FolderBatches(dataset.train, config.train.batch_size, config.seed,
                                       dataset.image_size, dataset.mean, dataset.std)
  return data_lib.EpochBatches(dataset.normalize(dataset.x_train), dataset.y_train,
                               config.train.batch_size, config.seed)


def accuracy_on_test_split(trainer, dataset, chunk):
  """variables -> the trainer's accuracy on `dataset`'s test split (a FolderData's
  streamed `chunk` images at a time)."""
  if isinstance(dataset, folder_stream.FolderData):
    def hits(variables, x, y):  # trainer.accuracy of one chunk, as a count
      return round(trainer.accuracy(variables, x, y) * len(y))
    return lambda v: folder_stream.accuracy(functools.partial(hits, v), dataset.test,
                                            dataset.image_size, chunk, dataset.mean,
                                            dataset.std)
  x_test, y_test = dataset.normalize(dataset.x_test), dataset.y_test
  return lambda v: trainer.accuracy(v, x_test, y_test)


def feed_own_rows(batches, trainer):
  """With train.shard, a FolderBatches decodes only the rows of each global batch that
  this process's devices hold (all of them with one process): put_batch takes no other."""
  if isinstance(batches, folder_stream.FolderBatches) and trainer.mesh is not None:
    batches.rows = sharding_lib.process_rows(sharding_lib.split_leading(trainer.mesh),
                                             batches.batch_size)


def write_results(workdir, results):
  """results.json, strict JSON (an undefined number, e.g. the shape bias of edges, as null)."""
  from awesome_jax.tasks import shape_bias as shape_bias_task  # pylint: disable=g-import-not-at-top
  tmp = os.path.join(workdir, 'results.tmp.json')
  with open(tmp, 'w') as f:
    json.dump(shape_bias_task.json_ready(results), f, indent=2, allow_nan=False)
  os.replace(tmp, os.path.join(workdir, 'results.json'))


def train_and_test(config, workdir, dataset, model, batches, total, checkpointer):
  """Trains `model` for `total` steps of `batches` (resuming from `checkpointer`), tests
  it every config.eval_every steps; returns (results dict, final variables)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  t, m = config.train, config.model
  per_epoch = batches.per_epoch
  # train.max_steps shortens the whole schedule: the warm-up keeps its share of it
  warmup = int(round(total * t.warmup_epochs / t.epochs))
  trainer = train_lib.Trainer(model, t, dataset.shape, total, warmup_steps=warmup,
                              extra_augment=extra_augment_fn(t, dataset.mean, dataset.std),
                              compiler_options=xla_options.no_ynn())
  test_accuracy = accuracy_on_test_split(trainer, dataset, t.batch_size)
  feed_own_rows(batches, trainer)
  # the checkpoint: the trainer's state and the wall time spent training so far (the init
  # drawn with the classic threefry stream for every model: it compiles faster on CPU)
  saved = {'train': trainer.init_state(jax.random.key(config.seed), fast_rng_compile=True),
           'wall_seconds': np.zeros((), np.float32)}
  writer = metrics_lib.MetricWriter(workdir)
  if checkpointer.latest_step() is not None:
    saved = checkpointer.restore(saved)
    print(f'Resumed from step {int(saved["train"]["step"])} in {workdir}')
  elif config.init_from:
    saved['train'] = init_from_run(saved['train'], trainer, config.init_from)
    init_acc = test_accuracy(trainer.variables(saved['train']))
    writer.write(0, {'init/test_acc': init_acc})
    print(f'Initialised from {config.init_from} (test acc {100 * init_acc:.2f} %)')
  state, wall_before = saved['train'], float(saved['wall_seconds'])

  aug_key = jax.random.key(config.seed + 1)
  eval_every = config.eval_every or per_epoch
  start = int(state['step'])
  t_start = time.time()
  t_steady, steady_from = None, None  # throughput clock, started after the first step
  train_seconds = 0.0                 # time in training steps since t_steady (no eval)
  test_acc = None                     # of the final weights
  bar = tqdm(range(start, total), initial=start, total=total, desc=m.label or m.name,
             disable=not config.progress_bar)
  for step in bar:
    x, y = batches(step)
    state, met = trainer.train_step(state, x, y, jax.random.fold_in(aug_key, step))
    done = step + 1
    if t_steady is None:  # the first step compiles: not part of images/s
      jax.block_until_ready(state['params'])
      t_steady, steady_from = time.time(), done
    log = done % config.log_every == 0 or done == total
    evaluate = done % eval_every == 0 or done == total
    save = evaluate or done % per_epoch == 0 or (
        config.checkpoint_every and done % config.checkpoint_every == 0)
    if log or evaluate or save:
      jax.block_until_ready(state['params'])
      train_seconds += time.time() - t_steady
    if log:
      met = {k: float(v) for k, v in met.items()}
      met['lr'] = float(trainer.lr_schedule(step))
      writer.write(done, {f'train/{k}': v for k, v in met.items()})
      bar.set_postfix(loss=f'{met["loss"]:.3f}', acc=f'{met["acc"]:.3f}')
    if evaluate:
      acc = test_accuracy(trainer.variables(state))
      writer.write(done, {'eval/test_acc': acc, 'eval/epoch': done / per_epoch})
      test_acc = acc if done == total else None
    if save:
      wall = wall_before + time.time() - t_start
      checkpointer.save(done, {'train': state, 'wall_seconds': np.float32(wall)})
    if log or evaluate or save:
      t_steady = time.time()
  seconds = time.time() - t_start
  steady_steps = total - steady_from if steady_from is not None else 0

  variables = trainer.variables(state)
  results = {
      'label': m.label or m.name, 'model': m.name, 'model_kwargs': _model_kwargs(m),
      'data': config.data.name, 'seed': config.seed,
      'extra_train_dirs': extra_train_dirs(config.data), 'train_images': len(batches.y),
      'params': count_params(state['params']),
      'test_acc': (test_acc if test_acc is not None
                   else test_accuracy(variables)),
      'train_steps': total, 'epochs': total / per_epoch, 'batch_size': batches.batch_size,
      'wall_seconds': wall_before + seconds,  # all runs of this workdir together
      'seconds_this_run': seconds,
      # training throughput of this run, without the first (compiling) step and evals
      'images_per_s': (steady_steps * batches.batch_size / train_seconds
                       if steady_steps and train_seconds else None),
      'init_from': config.init_from,
      'trained_with': trained_with(config),
  }
  writer.write(total, {'final/test_acc': results['test_acc']})
  writer.close()
  checkpointer.close()
  return results, variables
