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
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import data as data_lib
from awesome_jax import distributed
from awesome_jax import metrics as metrics_lib
from awesome_jax import models
from awesome_jax import train as train_lib

PARAMS_FILE = 'params.npz'
MODEL_FILE = 'model.json'
COLLECTIONS = ('params', 'batch_stats')
# image shape (HWC) of each dataset data.load reads; 'synthetic' takes data.synthetic_shape
DATA_SHAPES = {'cifar10': (32, 32, 3), 'mnist': (28, 28, 1), 'usps': (16, 16, 1),
               'digits': (8, 8, 1)}
SYNTHETIC_CLASSES = 4
# train.extra_augment -> fn(key, x) -> x applied after crop + flip: the hook for stronger
# augmentations ('' = none)
EXTRA_AUGMENTATIONS = {'': None}


class ClassifyConfigError(train_lib.TrainConfigError):
  """A classify config field has an impossible value."""


def _first_line(e):
  lines = str(e).strip().splitlines()
  return lines[0] if lines else type(e).__name__


def data_shape(d):
  """(H, W, C) of the images of data config `d`, without reading them."""
  if d.name == 'synthetic':
    return tuple(int(s) for s in d.synthetic_shape)
  return DATA_SHAPES[d.name]


def num_classes(d):
  """The number of classes of data config `d`."""
  return SYNTHETIC_CLASSES if d.name == 'synthetic' else 10


def load_data(d):
  """The Dataset of data config `d` (synthetic: Gaussian blobs of data.synthetic_shape)."""
  if d.name == 'synthetic':
    return data_lib.make_synthetic(SYNTHETIC_CLASSES, data_shape(d))
  return data_lib.load(d.name, d.source, d.data_dir, d.tfds_data_dir)


def model_names():
  """Every name models.build takes: the small nets and the zoo."""
  from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
  return list(models.REGISTRY) + list(zoo.entries())


def build_model(name, kwargs, classes, shape):
  """models.build with a model-config error in one line naming model.kwargs."""
  try:
    return models.build(name, classes, shape, **kwargs)
  except TypeError as e:  # an unknown keyword
    raise ClassifyConfigError(f'model.kwargs of {name}: {_first_line(e)}') from None


def _model_kwargs(m):
  return m.kwargs.to_dict() if hasattr(m.kwargs, 'to_dict') else dict(m.kwargs)


def check(config):
  """The 'classify' task's config checks that need no data (see main --dry_run)."""
  t, d, m = config.train, config.data, config.model
  train_lib.check_train_config(t)
  if t.extra_augment not in EXTRA_AUGMENTATIONS:
    raise ClassifyConfigError(f'train.extra_augment={t.extra_augment!r}: unknown; allowed: '
                              f'{", ".join(repr(a) for a in EXTRA_AUGMENTATIONS)}')
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
  if d.name not in data_lib.DATASETS:
    raise ClassifyConfigError(f'data.name={d.name!r}: unknown; allowed: '
                              f'{", ".join(data_lib.DATASETS)}')
  if d.source not in data_lib.SOURCES:
    raise ClassifyConfigError(f'data.source={d.source!r}: unknown; allowed: '
                              f'{", ".join(data_lib.SOURCES)}')
  if d.name == 'synthetic' and (len(d.synthetic_shape) != 3 or min(d.synthetic_shape) < 1):
    raise ClassifyConfigError(f'data.synthetic_shape={tuple(d.synthetic_shape)!r}: must be '
                              '(H, W, C) with sizes >= 1')
  names = model_names()
  if m.name not in names:
    raise ClassifyConfigError(f'model.name={m.name!r}: unknown; allowed: {", ".join(names)}')
  shape = data_shape(d)
  model = build_model(m.name, _model_kwargs(m), num_classes(d), shape)
  try:  # shapes only: catches kwargs the model cannot be built with
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape)))
  except (TypeError, ValueError) as e:
    raise ClassifyConfigError(f'model.kwargs of {m.name} on {d.name} {shape}: '
                              f'{_first_line(e)}') from None


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
  """Trains and evaluates; returns the results dict."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  check(config)
  t, m = config.train, config.model
  dataset = load_data(config.data)
  kwargs = _model_kwargs(m)
  model = build_model(m.name, kwargs, dataset.num_classes, dataset.shape)
  x_train, x_test = dataset.normalize(dataset.x_train), dataset.normalize(dataset.x_test)
  y_train, y_test = dataset.y_train, dataset.y_test
  batches = data_lib.EpochBatches(x_train, y_train, t.batch_size, config.seed)
  per_epoch = batches.per_epoch
  total = int(round(t.epochs * per_epoch))
  if t.max_steps:
    total = min(total, t.max_steps)
  # train.max_steps shortens the whole schedule: the warm-up keeps its share of it
  warmup = int(round(total * t.warmup_epochs / t.epochs))
  trainer = train_lib.Trainer(model, t, dataset.shape, total, warmup_steps=warmup,
                              extra_augment=EXTRA_AUGMENTATIONS[t.extra_augment])
  # the checkpoint: the trainer's state and the wall time spent training so far (the init
  # drawn with the classic threefry stream for every model: it compiles faster on CPU)
  saved = {'train': trainer.init_state(jax.random.key(config.seed), fast_rng_compile=True),
           'wall_seconds': np.zeros((), np.float32)}
  os.makedirs(workdir, exist_ok=True)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  writer = metrics_lib.MetricWriter(workdir)
  if checkpointer.latest_step() is not None:
    saved = checkpointer.restore(saved)
    print(f'Resumed from step {int(saved["train"]["step"])} in {workdir}')
  elif config.init_from:
    saved['train'] = init_from_run(saved['train'], trainer, config.init_from)
    init_acc = trainer.accuracy(trainer.variables(saved['train']), x_test, y_test)
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
      acc = trainer.accuracy(trainer.variables(state), x_test, y_test)
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
  label = m.label or m.name
  results = {
      'label': label, 'model': m.name, 'model_kwargs': kwargs, 'data': config.data.name,
      'params': count_params(state['params']),
      'test_acc': (test_acc if test_acc is not None
                   else trainer.accuracy(variables, x_test, y_test)),
      'train_steps': total, 'epochs': total / per_epoch, 'batch_size': batches.batch_size,
      'wall_seconds': wall_before + seconds,  # all runs of this workdir together
      'seconds_this_run': seconds,
      # training throughput of this run, without the first (compiling) step and evals
      'images_per_s': (steady_steps * batches.batch_size / train_seconds
                       if steady_steps and train_seconds else None),
      'init_from': config.init_from,
  }
  spec = {'name': m.name, 'kwargs': kwargs, 'num_classes': dataset.num_classes,
          'input_shape': list(dataset.shape)}
  writer.write(total, {'final/test_acc': results['test_acc']})
  writer.close()
  checkpointer.close()
  if distributed.is_writer():
    save_trained(workdir, spec, jax.device_get(variables))
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  print(f'{label}: test acc {100 * results["test_acc"]:.2f} % after '
        f'{results["epochs"]:g} epochs ({results["params"]:,} params)')
  return results
