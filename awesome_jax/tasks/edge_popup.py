"""The edge-popup task: train a supermask (or the dense baseline) of a Conv-N net.

`run(config, workdir)` trains config.model with config.train, resuming from the newest
checkpoint in workdir, and writes results.json: final test accuracy, the accuracy of a
random mask with the same keep_fraction (the untrained scores), the fraction of weights
kept per layer; and, for masked runs, subnetwork.npz: the found subnetwork as plain dense
weights (w * mask) that the dense model of the same architecture loads.
"""

import json
import os
import time

import jax
import numpy as np

from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import data as data_lib
from awesome_jax import distributed
from awesome_jax import metrics as metrics_lib
from awesome_jax import supermask
from awesome_jax import train as train_lib
from awesome_jax.models import conv_n
from awesome_jax.models import resnet


def model_name(m):
  """'conv4', 'resnet18', ... for the model config `m`."""
  return f'conv{m.depth}' if m.arch == 'conv' else m.arch


def check_model(m):
  """Raises SupermaskConfigError naming the model field that is impossible."""
  if m.arch == 'conv':
    conv_n.check(m.depth, m.mode, m.keep_fraction, m.weight_init, m.norm)
  else:
    resnet.check(m.arch, m.mode, m.keep_fraction, m.weight_init, m.stem)


def check(config):
  """The 'edge_popup' task's config checks that need no data (see main --dry_run)."""
  train_lib.check_train_config(config.train)
  check_model(config.model)


def sweep_grid(config):
  """(keep_fractions, weight_inits) of config.sweep, each value checked."""
  ks = [float(k) for k in config.sweep.keep_fractions.split(',') if k.strip()]
  inits = [i.strip() for i in config.sweep.weight_inits.split(',') if i.strip()]
  for k in ks:
    supermask.check_keep_fraction(k, 'sweep.keep_fractions')
  for i in inits:
    supermask.check_weight_init(i, 'sweep.weight_inits')
  return ks, inits


def check_sweep(config):
  check(config)
  sweep_grid(config)


def build_model(m, num_classes):
  check_model(m)
  if m.arch == 'conv':
    return conv_n.ConvN(depth=m.depth, num_classes=num_classes, width=m.width, mode=m.mode,
                        keep_fraction=m.keep_fraction, weight_init=m.weight_init,
                        norm=m.norm)
  return resnet.ResNet(arch=m.arch, num_classes=num_classes, width=m.width, mode=m.mode,
                       keep_fraction=m.keep_fraction, weight_init=m.weight_init,
                       bn_affine=m.bn_affine, stem=m.stem)


def save_subnetwork(path, params, frozen, keep_fraction):
  np.savez(path, **ckpt_lib.flatten_tree(
      supermask.export_dense(params, frozen, keep_fraction)))


def load_subnetwork(path):
  """subnetwork.npz -> the nested params tree of the dense model."""
  with np.load(path) as z:
    return ckpt_lib.unflatten_tree({k: z[k] for k in z.files})


def run(config, workdir):
  """Trains and evaluates; returns the results dict."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  check(config)
  m = config.model
  dataset = data_lib.load(config.data.name, config.data.source, config.data.data_dir,
                          config.data.tfds_data_dir)
  model = build_model(m, dataset.num_classes)
  x_train, x_test = dataset.normalize(dataset.x_train), dataset.normalize(dataset.x_test)
  y_train, y_test = dataset.y_train, dataset.y_test
  batches = data_lib.EpochBatches(x_train, y_train, config.train.batch_size, config.seed)
  total = int(config.train.epochs * batches.per_epoch)
  if config.train.max_steps:
    total = min(total, config.train.max_steps)
  trainer = train_lib.Trainer(model, config.train, dataset.shape, total)
  init_key = jax.random.key(config.seed)
  initial = trainer.init_state(init_key)
  state = initial
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    print(f'Resumed from step {int(state["step"])} in {workdir}')
  writer = metrics_lib.MetricWriter(workdir)
  aug_key = jax.random.key(config.seed + 1)
  eval_every = config.eval_every or batches.per_epoch
  t0 = time.time()
  start = int(state['step'])
  bar = tqdm(range(start, total), initial=start, total=total, desc=f'{m.mode} {model_name(m)}',
             disable=not config.progress_bar)
  for step in bar:
    x, y = batches(step)
    state, met = trainer.train_step(state, x, y, jax.random.fold_in(aug_key, step))
    done = step + 1
    if done % config.log_every == 0 or done == total:
      met = {k: float(v) for k, v in met.items()}
      writer.write(done, {f'train/{k}': v for k, v in met.items()})
      bar.set_postfix(loss=f'{met["loss"]:.3f}', acc=f'{met["acc"]:.3f}')
    if done % eval_every == 0 or done == total:
      acc = trainer.accuracy(trainer.variables(state), x_test, y_test)
      writer.write(done, {'eval/test_acc': acc})
      checkpointer.save(done, state)
  seconds = time.time() - t0

  results = {
      'model': model_name(m), 'mode': m.mode, 'width': m.width, 'norm': m.norm,
      'train_steps': total, 'epochs': total / batches.per_epoch,
      'test_acc': trainer.accuracy(trainer.variables(state), x_test, y_test),
      'seconds_this_run': seconds,
  }
  if m.mode == 'masked':
    results.update({
        'keep_fraction': m.keep_fraction, 'weight_init': m.weight_init,
        # the untrained scores pick a random subnetwork with the same keep_fraction
        'random_mask_test_acc': trainer.accuracy(trainer.variables(initial), x_test, y_test),
        'kept_fraction_per_layer': supermask.kept_fraction_per_layer(state['params'],
                                                                     m.keep_fraction),
    })
  writer.write(total, {'final/test_acc': results['test_acc']})
  writer.close()
  checkpointer.close()
  if distributed.is_writer():
    if m.mode == 'masked':
      save_subnetwork(os.path.join(workdir, 'subnetwork.npz'), state['params'],
                      state['frozen'], m.keep_fraction)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  print(f'{model_name(m)} {m.mode}: test acc {100 * results["test_acc"]:.2f} %' +
        (f' (random mask of the same keep_fraction: '
         f'{100 * results["random_mask_test_acc"]:.2f} %)' if m.mode == 'masked' else ''))
  return results


def sweep(config, workdir):
  """The 'edge_popup_sweep' task: one run per (keep_fraction, weight_init) plus the dense
  baseline, each in its own sub-workdir (resumable; finished runs are not redone).
  Writes sweep.csv and sweep.png (test accuracy vs % of weights kept, dense as a line)."""
  ks, inits = sweep_grid(config)

  def sub(name, **fields):
    path = os.path.join(workdir, name)
    done = os.path.join(path, 'results.json')
    if os.path.exists(done):
      with open(done) as f:
        return json.load(f)
    c = config.copy_and_resolve_references()
    for key, value in fields.items():
      section, field = key.split('.')
      c[section][field] = value
    os.makedirs(path, exist_ok=True)
    return run(c, path)

  rows = []
  dense = sub('dense', **{'model.mode': 'dense', 'train.lr': config.sweep.dense_lr})
  rows.append(('dense', '', 1.0, dense['test_acc'], ''))
  for init in inits:
    for k in ks:
      r = sub(f'k{k:g}_{init}', **{'model.mode': 'masked', 'model.keep_fraction': k,
                                   'model.weight_init': init})
      rows.append(('masked', init, k, r['test_acc'], r['random_mask_test_acc']))
  if distributed.is_writer():
    with open(os.path.join(workdir, 'sweep.csv'), 'w') as f:
      f.write('mode,weight_init,keep_fraction,test_acc,random_mask_test_acc\n')
      for row in rows:
        f.write(','.join(str(v) for v in row) + '\n')
    plot_sweep(os.path.join(workdir, 'sweep.png'), rows, model_name(config.model))
  return {'rows': rows}


def plot_sweep(path, rows, title):
  """Test accuracy vs % kept: one line per init (learned mask, solid; the random mask of
  the same k, dotted) and the dense net as a dashed line. `rows` as in sweep.csv."""
  fig = metrics_lib.figure((5, 3.5))
  ax = fig.subplots()
  for init in sorted({r[1] for r in rows if r[0] == 'masked'}):
    pts = sorted((r[2], r[3], r[4]) for r in rows if r[1] == init)
    kept = [100 * p[0] for p in pts]
    line, = ax.plot(kept, [100 * p[1] for p in pts], marker='o', label=init)
    # the untrained scores: a random mask of the same k, near chance
    ax.plot(kept, [100 * p[2] for p in pts], ls=':', marker='.', color=line.get_color(),
            alpha=0.6, label=f'{init}, random mask')
  for r in rows:
    if r[0] == 'dense':
      ax.axhline(100 * r[3], color='k', ls='--', label='dense (learned weights)')
  ax.set_xlabel('% of weights kept')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
