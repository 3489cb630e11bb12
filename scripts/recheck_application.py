"""Re-checks a distill_adapt / distill_attack result from its artifacts, without re-running.

Trains the saved test nets (`test_nets.npz`, a pool saved by the task) on the saved set
(`distilled.npz`, with its own schedule) and prints the 'distilled' row beside the one in
`results.json`; also the 'before' row (the test nets as they are).

  python scripts/recheck_application.py results/applications/usps_to_mnist_fixed \\
      --data_dir=../shared/data/mnist

DIR must hold distilled.npz, results.json and test_nets.npz. Exit code 1 if a re-checked
mean differs from results.json by more than --tolerance (default 0.001).
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax import applications as app
from awesome_jax import data as data_lib
from awesome_jax import distill as distill_lib
from awesome_jax import models


def recheck(folder, data_dir='', source='auto'):
  """{'before': metrics, 'distilled': metrics} (summarised) of the saved set and nets."""
  z = distill_lib.load_distilled(os.path.join(folder, 'distilled.npz'))
  with open(os.path.join(folder, 'results.json')) as f:
    results = json.load(f)
  pool, _ = app.load_pool(os.path.join(folder, 'test_nets.npz'))
  target = data_lib.load(results['target'], source, data_dir)
  xs = jnp.asarray(z['images_normalized'])
  x_test = target.x_test
  if tuple(target.shape) != tuple(xs.shape[2:]):  # USPS under MNIST-sized nets: 28x28
    x_test = data_lib.resize(x_test, xs.shape[2])
  x_test = (x_test - z['mean']) / z['std']
  model = models.build(str(z['model']), z['targets'].shape[-1], xs.shape[2:],
                       **json.loads(str(z['model_kwargs'])))
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  momentum = jnp.asarray(z['momentum']) if 'momentum' in z else None
  train = jax.jit(jax.vmap(lambda p: distill_lib.inner_sgd(
      apply_fn, p, xs, jnp.asarray(z['targets']), jnp.asarray(z['lrs']), momentum=momentum)))
  if results['task'] == 'distill_attack':
    a = results['attack']
    metric = lambda pred: app.attack_metrics(pred, target.y_test, a['attack_class'],
                                             a['target_class'])
  else:
    metric = lambda pred: app.accuracy_metrics(pred, target.y_test)
  return results, {
      'before': app.summarize(metric(app.predict(apply_fn, pool, x_test))),
      'distilled': app.summarize(metric(app.predict(apply_fn, train(pool), x_test))),
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('folder')
  ap.add_argument('--data_dir', default='', help="the target's standard files ('' = TFDS "
                  'or download)')
  ap.add_argument('--tolerance', type=float, default=0.001)
  args = ap.parse_args()
  results, again = recheck(args.folder, args.data_dir)
  worst = 0.0
  for row, metrics in again.items():
    for key, value in metrics.items():
      if key.endswith('_mean'):
        saved = results['rows'][row][key]
        worst = max(worst, abs(saved - value))
        print(f'{row:9s} {key[:-5]:17s} re-checked {100 * value:6.2f} %   '
              f'results.json {100 * saved:6.2f} %')
  print(f'largest difference {100 * worst:.3f} points')
  sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == '__main__':
  main()
