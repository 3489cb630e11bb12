"""The distillation tasks of `main`: `distill` (learn a set, evaluate it, baselines)
and `distill_eval` (train fresh nets on a saved set).

The method itself (inner SGD as lax.scan, meta-gradient, the distill_lib.Distiller) is
`awesome_jax.distill`; this module runs it: data, checkpoints and resume, periodic
evaluation, the held-out pick, outputs in the workdir.

Several processes (awesome_jax/distributed.py): with distill.shard the outer step is one
jit over all processes' devices; without it every process computes the same (the whole
batch, every init, every evaluation) and saves host copies of the state in the
checkpoints. Either way only process 0 writes the outputs.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from awesome_jax import baselines
from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import data as data_lib
from awesome_jax import distill as distill_lib
from awesome_jax import distilled_io
from awesome_jax import distributed
from awesome_jax import metrics as metrics_lib
from awesome_jax import models

ConfigError = distill_lib.ConfigError
check_config = distill_lib.check_config  # the 'distill' task's data-free check


def save_grid(path, images, hard_labels, lrs=None, lr_names=None, momentum=None):
  """PNG grid: one row per step, one column per image; optional lr plot below.

  lrs (T,) or (T, P) with `lr_names` (P,) naming each column's parameter; `momentum`
  (the inner SGD's, if any) is named in the lr plot's title.
  """
  steps, n = images.shape[:2]
  rows = steps + (1 if lrs is not None else 0)
  fig = metrics_lib.figure((max(n, 4) * 0.9, rows * 0.9 + (1.5 if lrs is not None else 0)))
  grid = fig.add_gridspec(rows, n, height_ratios=[1] * steps + ([2] if lrs is not None else []))
  for s in range(steps):
    for j in range(n):
      ax = fig.add_subplot(grid[s, j])
      img = np.clip(images[s, j], 0, 1)
      ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap='gray', vmin=0, vmax=1)
      ax.set_xticks([]), ax.set_yticks([])
      if s == 0:
        ax.set_title(str(int(hard_labels[s, j])), fontsize=7)
    fig.axes[-n].set_ylabel(f'step {s}', fontsize=6)
  if lrs is not None:
    ax = fig.add_subplot(grid[steps, :])
    lines = ax.plot(np.arange(len(lrs)), lrs, marker='.')
    if np.ndim(lrs) == 2 and lr_names is not None:
      for line, name in zip(lines, lr_names):
        line.set_label(str(name))
      ax.legend(fontsize=5, ncol=4)
    ax.set_xlabel('inner step'), ax.set_ylabel('learned lr')
    if momentum is not None:
      ax.set_title(f'inner SGD momentum {float(momentum):.3f}', fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)



def log_outer_step(writer, bar, step, metrics, prefix='train/', where='',
                   advice='lower outer.lr or distill.init_lr, or set outer.grad_clip'):
  """Writes an outer step's metrics and shows loss / accuracy on the progress bar;
  a non-finite meta-loss stops the run with one line (`where` says which run, `advice`
  which fields to change)."""
  m = {k: float(v) for k, v in metrics.items()}
  if not np.isfinite(m['meta_loss']):
    raise FloatingPointError(f'meta-loss is {m["meta_loss"]} at outer step {step}{where}; '
                             f'{advice}')
  writer.write(step, {f'{prefix}{k}': v for k, v in m.items()})
  bar.set_postfix(loss=f'{m["meta_loss"]:.3f}', acc=f'{m["meta_acc"]:.3f}')


def run(config: ml_collections.ConfigDict, workdir: str):
  """Distils a dataset; resumes from the newest checkpoint in `workdir` if any.

  Writes to workdir: checkpoints/, metrics.jsonl + TensorBoard events, distilled.npz,
  distilled.png, results.json. Returns the results dict.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  distill_lib.check_config(config)
  dataset = data_lib.load(config.data.name, config.data.source, config.data.data_dir,
                          config.data.tfds_data_dir)
  distill_lib.check_config(config, dataset.shape, dataset.num_classes)
  distiller = distill_lib.Distiller(config, dataset)
  x_train = dataset.normalize(dataset.x_train)
  x_test = dataset.normalize(dataset.x_test)
  y_train, y_test = dataset.y_train, dataset.y_test

  e = config.eval
  select_val = e.select == 'val'
  if select_val:  # hold out the baselines' validation split from the real batches
    if e.val_size >= len(x_train):
      raise ConfigError(f'eval.val_size={e.val_size}: must be below the '
                        f'{len(x_train)} training images')
    val_idx, pool_idx = distill_lib.split_val(len(x_train), e.val_size, config.seed)
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_pool, y_pool = x_train[pool_idx], y_train[pool_idx]
  else:
    x_pool, y_pool = x_train, y_train
  state = distiller.init_state(jax.random.key(config.seed), x_pool, y_pool)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    print(f'Resumed from step {int(state["step"])} in {workdir}')
  start = int(state['step'])
  batches = data_lib.EpochBatches(x_pool, y_pool, config.outer.batch_size, config.seed)
  best_path = os.path.join(workdir, 'best_val')
  best = load_best(best_path, start) if select_val else None
  writer = metrics_lib.MetricWriter(workdir)
  base_key = jax.random.key(config.seed + 1)

  t0 = time.time()
  bar = tqdm(range(start, config.outer.steps), initial=start, total=config.outer.steps,
             desc='distill', disable=not config.progress_bar)
  for step in bar:
    real_x, real_y = batches(step)
    state, m = distiller.outer_step(state, real_x, real_y, jax.random.fold_in(base_key, step))
    done = step + 1
    if done % config.log_every == 0 or done == config.outer.steps:
      log_outer_step(writer, bar, done, m)
    if config.eval.every and done % config.eval.every == 0 and done < config.outer.steps:
      sets = [(x_test, y_test)] + ([(x_val, y_val)] if select_val else [])
      accs, *val_accs = _evaluate_sets(distiller, state, e.every_num_inits, e.seed, sets)
      scalars = {'eval/acc_mean': accs.mean(), 'eval/acc_std': accs.std()}
      if select_val:
        val = val_accs[0].mean()
        scalars['eval/val_acc_mean'] = val
        if best is None or val > best['val_acc']:
          best = save_best(best_path, state['learned'], done, val)
      writer.write(done, scalars)
    if done % config.checkpoint_every == 0 or done == config.outer.steps:
      checkpointer.save(done, checkpointable(distiller, state))
  distill_seconds = time.time() - t0
  bar.close()
  print(f'evaluating: {e.num_inits} fresh nets trained on the distilled set'
        + (', then the same-budget baselines' if e.baselines else ''), flush=True)

  final = {}
  if select_val:  # the last set competes with the best periodic one, on validation
    val = _evaluate(distiller, state, x_val, y_val, e.every_num_inits, e.seed).mean()
    if best is None or val > best['val_acc']:
      best = save_best(best_path, state['learned'], config.outer.steps, val)
    last_accs = _evaluate(distiller, state, x_test, y_test, e.num_inits, e.seed)
    final = {'selected_by': 'val', 'selected_step': best['step'],
             'selected_val_acc': best['val_acc'],
             'last_test_acc_mean': float(last_accs.mean()),
             'last_test_acc_std': float(last_accs.std())}
    state = dict(state, learned=jax.tree_util.tree_map(jnp.asarray, best['learned']))
  if select_val and best['step'] == config.outer.steps:  # the last set won: same nets
    accs = last_accs
  else:
    accs = _evaluate(distiller, state, x_test, y_test, e.num_inits, e.seed)
  results = {
      'dataset': dataset.name, 'model': config.model.name,
      'images': int(distiller.per_step * config.distill.steps),
      'inner_steps': distiller.total_steps, 'outer_steps': config.outer.steps,
      'random_init': bool(config.distill.random_init),
      'learn_labels': bool(config.distill.learn_labels),
      'test_acc_mean': float(accs.mean()), 'test_acc_std': float(accs.std()),
      'test_acc_all': [float(a) for a in accs], 'eval_nets': int(len(accs)),
      'seconds_this_run': distill_seconds, **final,
  }
  beta = distill_lib.momentum_of(state['learned'], config.distill.momentum)
  if beta is not None:
    results['inner_momentum'] = float(beta)
  results['paper'] = paper_reference(results)
  if config.eval.baselines:
    results['baselines'] = baselines.evaluate_all(distiller, x_train, y_train, x_test,
                                                  y_test, config)
  writer.write(config.outer.steps, {'final/test_acc_mean': accs.mean(),
                                    'final/test_acc_std': accs.std()})
  writer.close()
  checkpointer.close()

  if distributed.is_writer():
    distill_lib.save_distilled(os.path.join(workdir, 'distilled.npz'), distiller, state)
    z = distill_lib.load_distilled(os.path.join(workdir, 'distilled.npz'))
    save_grid(os.path.join(workdir, 'distilled.png'), z['images'], z['hard_labels'],
              z['lrs'], z['lr_params'], z.get('momentum'))
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  print(_summary(results))
  return results


def checkpointable(distiller, state):
  """The state as orbax saves it: distill.shard's (global arrays over the mesh) as it is;
  unsharded, host (numpy) copies, which orbax takes from process 0 (it refuses each
  process's own host-local device arrays when there are several)."""
  return state if distiller.mesh is not None else ckpt_lib.host(state)


def save_best(folder, learned, step, val_acc):
  """Writes folder/STEP.npz (process 0 only), a new best-on-validation learned tree;
  returns it as a dict.

  One file per improvement (small), so that a run resumed from an earlier checkpoint
  can find the best set saved up to that checkpoint.
  """
  learned = jax.tree_util.tree_map(np.asarray, jax.device_get(learned))
  if distributed.is_writer():
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{int(step)}.npz')
    tmp = path + '.tmp.npz'
    np.savez(tmp, step=step, val_acc=val_acc, **ckpt_lib.flatten_tree(learned, 'learned/'))
    os.replace(tmp, path)
  return {'step': int(step), 'val_acc': float(val_acc), 'learned': learned}


def load_best(folder, resumed_step):
  """The best-on-validation set saved at or before `resumed_step` (None if none)."""
  if not os.path.isdir(folder):
    return None
  best = None
  for name in os.listdir(folder):
    stem = name[:-len('.npz')]
    if not (name.endswith('.npz') and stem.isdigit()) or int(stem) > resumed_step:
      continue
    with np.load(os.path.join(folder, name)) as z:
      flat = {k: z[k] for k in z.files}
    if best is None or float(flat['val_acc']) > best['val_acc']:
      best = {'step': int(flat['step']), 'val_acc': float(flat['val_acc']),
              'learned': ckpt_lib.unflatten_tree(flat, 'learned/')}
  return best


def _evaluate(distiller, state, x_test, y_test, num, seed):
  return _evaluate_sets(distiller, state, num, seed, [(x_test, y_test)])[0]


def _evaluate_sets(distiller, state, num, seed, sets):
  """The same `num` nets trained once on the learned set, tested on each of `sets`."""
  learned = state['learned']
  ys = distill_lib.targets_of(learned, distiller.fixed_labels, distiller.num_classes)
  params0 = distiller.eval_inits(state, num, seed)
  return distiller.train_and_test_sets(
      params0, learned['x'], ys, jax.nn.softplus(learned['raw_lr']), sets,
      distill_lib.momentum_of(learned, distiller.config.distill.momentum))


# The paper's numbers for the settings it reports (Wang et al. 2018): (dataset, random
# init, images, inner steps) -> (test accuracy mean, std or None), in %.
PAPER = {
    ('mnist', True, 100, 30): (79.5, 8.1),
    ('mnist', False, 10, 3): (93.8, None),
    ('cifar10', True, 100, 30): (36.8, 1.2),
}


def paper_reference(results):
  """The paper's {'test_acc_mean', 'test_acc_std', 'source'} for this run's setting, or None."""
  key = (results['dataset'], results['random_init'], results['images'],
         results['inner_steps'])
  if key not in PAPER:
    return None
  mean, std = PAPER[key]
  return {'test_acc_mean': mean / 100, 'test_acc_std': None if std is None else std / 100,
          'source': 'Wang et al. 2018, Dataset Distillation (same dataset, init, images, '
                    'inner steps)'}


def _summary(results):
  lines = []
  for name, b in results.get('baselines', {}).items():
    lines.append(f'  baseline {name:12s} (lr {b["lr"]:.3g}): {100 * b["test_acc_mean"]:.2f}'
                 f' +/- {100 * b["test_acc_std"]:.2f} %')
  init = 'random init' if results['random_init'] else 'fixed init'
  line = (f'{results["dataset"]}, {results["images"]} distilled images, '
          f'{results["inner_steps"]} inner steps, {init}: test acc '
          f'{100 * results["test_acc_mean"]:.2f} +/- {100 * results["test_acc_std"]:.2f} % '
          f'over {results["eval_nets"]} nets never seen in distillation')
  paper = results.get('paper')
  if paper:
    std = paper['test_acc_std']
    line += (f' (paper: {100 * paper["test_acc_mean"]:.1f}' +
             ('' if std is None else f' +/- {100 * std:.1f}') + ' %)')
  else:
    line += ' (the paper reports no number for this setting)'
  return '\n'.join(lines + [line])


def check_eval_config(config):
  """Raises ConfigError naming the field if the 'distill_eval' config is impossible."""
  e = config.eval
  if not e.npz:
    raise ConfigError("eval.npz='': give the distilled.npz to evaluate "
                      '(--config.eval.npz=DIR/distilled.npz)')
  if e.format not in distilled_io.FORMATS:
    raise ConfigError(f'eval.format={e.format!r}: unknown; allowed: '
                      f'{", ".join(distilled_io.FORMATS)}')
  for name in ('mean', 'std'):
    if not all(isinstance(v, (int, float)) for v in tuple(e[name])):
      raise ConfigError(f'eval.{name}={e[name]!r}: must be a tuple of numbers (one per '
                        'channel) or () to take it from the file')
  if e.schedule not in distill_lib.SCHEDULES:
    raise ConfigError(f'eval.schedule={e.schedule!r}: unknown; allowed: '
                      f'{", ".join(distill_lib.SCHEDULES)}')
  if not (isinstance(e.num_inits, int) and e.num_inits >= 1):
    raise ConfigError(f'eval.num_inits={e.num_inits!r}: must be an integer >= 1')


def evaluate_saved(config, workdir):
  """The 'distill_eval' task: test accuracy of fresh nets trained on config.eval.npz."""
  check_eval_config(config)
  e = config.eval
  fmt = distilled_io.detect_format(e.npz) if e.format == 'auto' else e.format
  # the file says what it was distilled from; the config fills in what it lacks
  z = distilled_io.load_any(e.npz, fmt, dataset=config.data.name,
                            model=config.model.name, model_kwargs=config.model.kwargs.to_dict(),
                            mean=tuple(e.mean) or None, std=tuple(e.std) or None)
  if str(z['dataset']) != config.data.name:
    raise ConfigError(f'data.name={config.data.name!r} but {e.npz} was distilled '
                      f'from {str(z["dataset"])!r}')
  dataset = data_lib.load(config.data.name, config.data.source, config.data.data_dir,
                          config.data.tfds_data_dir)
  shape, classes = tuple(z['images_normalized'].shape[2:]), z['targets'].shape[-1]
  if shape != tuple(dataset.shape) or classes > dataset.num_classes:
    raise distilled_io.DistilledFileError(
        f'{e.npz}: images {shape} with {classes} classes do not fit {dataset.name} '
        f'({tuple(dataset.shape)}, {dataset.num_classes} classes)')
  if classes < dataset.num_classes:  # int labels that never name the last classes
    z['targets'] = np.concatenate(
        [z['targets'], np.zeros(z['targets'].shape[:-1] + (dataset.num_classes - classes,),
                                z['targets'].dtype)], -1)
  mean, std = z['mean'], z['std']  # the set's own normalisation, not the loader's
  x_test = (dataset.x_test - mean) / std
  model, trained = distill_lib.train_on_distilled(
      z, jax.random.key(config.eval.seed), config.eval.num_inits, config.eval.schedule,
      config.eval.lr, config.eval.epochs, config.eval.batch_size)
  fast = models.inference_twin(model, x_test.shape[1:])
  correct = jax.jit(lambda p, x, y: jnp.sum(
      jnp.argmax(fast.apply({'params': p}, x), -1) == y))
  accs = []
  for i in range(config.eval.num_inits):
    p = jax.tree_util.tree_map(lambda a, i=i: a[i], trained)
    accs.append(metrics_lib.accuracy_in_batches(
        lambda xb, yb, p=p: correct(p, xb, yb), x_test, dataset.y_test))
  accs = np.array(accs)
  results = {'npz': config.eval.npz, 'format': fmt,
             'model': str(z['model']), 'schedule': config.eval.schedule,
             'init': 'fixed (stored in the npz)' if distill_lib.stored_init(z) is not None else
                     f'fresh (eval.seed={config.eval.seed})',
             'test_acc_mean': float(accs.mean()), 'test_acc_std': float(accs.std()),
             'test_acc_all': [float(a) for a in accs], 'eval_nets': len(accs)}
  if config.eval.schedule == 'minibatch':
    results.update(lr=config.eval.lr, epochs=config.eval.epochs,
                   batch_size=config.eval.batch_size)
  if distributed.is_writer():
    with open(os.path.join(workdir, 'eval_results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  print(f'{config.eval.npz} ({config.eval.schedule} schedule): test acc '
        f'{100 * accs.mean():.2f} +/- {100 * accs.std():.2f} % over {len(accs)} nets')
  return results
