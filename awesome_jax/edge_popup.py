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
from awesome_jax import metrics as metrics_lib
from awesome_jax import supermask
from awesome_jax import train as train_lib
from awesome_jax.models import conv_n


def build_model(m, num_classes):
  conv_n.check(m.depth, m.mode, m.keep_fraction, m.weight_init, m.norm)
  return conv_n.ConvN(depth=m.depth, num_classes=num_classes, width=m.width, mode=m.mode,
                      keep_fraction=m.keep_fraction, weight_init=m.weight_init, norm=m.norm)


def save_subnetwork(path, params, frozen, keep_fraction):
  dense = supermask.export_dense(params, frozen, keep_fraction)
  flat = {'/'.join(p.key for p in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(dense)}
  np.savez(path, **flat)


def load_subnetwork(path):
  """subnetwork.npz -> the nested params tree of the dense model."""
  out = {}
  with np.load(path) as z:
    for k in z.files:
      node = out
      *parents, leaf = k.split('/')
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = z[k]
  return out


def run(config, workdir):
  """Trains and evaluates; returns the results dict."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  train_lib.check_train_config(config.train)
  m = config.model
  conv_n.check(m.depth, m.mode, m.keep_fraction, m.weight_init, m.norm)
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
  bar = tqdm(range(start, total), initial=start, total=total, desc=f'{m.mode} conv{m.depth}',
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
      'model': f'conv{m.depth}', 'mode': m.mode, 'width': m.width, 'norm': m.norm,
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
    save_subnetwork(os.path.join(workdir, 'subnetwork.npz'), state['params'],
                    state['frozen'], m.keep_fraction)
  writer.write(total, {'final/test_acc': results['test_acc']})
  writer.close()
  checkpointer.close()
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  print(f'conv{m.depth} {m.mode}: test acc {100 * results["test_acc"]:.2f} %' +
        (f' (random mask of the same keep_fraction: '
         f'{100 * results["random_mask_test_acc"]:.2f} %)' if m.mode == 'masked' else ''))
  return results
