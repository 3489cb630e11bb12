"""One step on 1 device vs the same step sharded over 8 devices.

  python benchmarks/multidevice_speed.py            # 1 vs 8 forced CPU devices
  python benchmarks/multidevice_speed.py --iters 5 --devices 4

Rows: (1) an outer iteration of MNIST distillation (configs/distill.py:paper: LeNet,
random init, T = 30, real batch 1024) with distill.n_inits = 8, and with
distill.shard=True on the sharded side (the real batch and the 8 inits split over the
devices); (2) a supervised train step of ResNet-20 (configs/classify.py) at batch 128,
with train.shard=True on the sharded side (batch split, state replicated, batch-norm
statistics over the global batch); crop + flip off, so that a batch in another row order
is the same step. Inputs are random arrays of the datasets' shapes (the cost does not
depend on pixel values), the same in every run.

Each run is its own subprocess: jax fixes the device count at start
(XLA_FLAGS=--xla_force_host_platform_device_count=N; on a CPU these "devices" share the
same cores, so this measures the sharding's overhead and checks its result, not a
speed-up; on 8 GPUs or a TPU slice the same code runs with real devices). The last two
columns: the largest |difference| between the 1-device and the sharded run's learned tree
/ params + batch_stats after all 1 + iters steps, and for scale the same between the
1-device run and a 1-device run on the same batch with its rows permuted (the same steps
in exact arithmetic: only the float32 summation order differs, as with 8 devices).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from child import load_config, run_child


def timed(step, state, args_of, iters):
  """Runs `state = step(state, *args_of(i))` 1 + iters times; (state, compile s, median s)."""
  import jax  # pylint: disable=g-import-not-at-top
  times = []
  for i in range(iters + 1):
    t = time.perf_counter()
    state, _ = step(state, *args_of(i))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  return state, times[0], float(np.median(times[1:]))


def run_twice(make_state, step, x, y, iters, out, permuted_out):
  """Times `step` from `make_state()` on the batch (x, y); saves the final state's
  arrays (`step(...)[0]` through `arrays`) to `out`; with `permuted_out`, runs the same
  steps again on the batch with its rows permuted and saves those too."""
  perm = np.random.default_rng(1).permutation(len(x))
  result = None
  for xs, ys, path in ((x, y, out), (x[perm], y[perm], permuted_out)):
    if path:
      state, compile_s, median_s = timed(
          step, make_state(), lambda i, xs=xs, ys=ys: (xs, ys, jax_key(i)), iters)
      np.savez(path, **arrays(state))
      result = result or {'median_s': median_s, 'compile_s': compile_s}
  return result


def jax_key(i):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.random.key(i)


def arrays(state):
  """The learned tree (distillation) or params + batch_stats, flat, as numpy."""
  import jax  # pylint: disable=g-import-not-at-top
  from awesome_jax import checkpoint  # pylint: disable=g-import-not-at-top
  keep = ('learned',) if 'learned' in state else ('params', 'batch_stats')
  return checkpoint.flatten_tree(jax.device_get({k: state[k] for k in keep}))


def distill_step(devices, iters, out, permuted_out=''):
  import jax  # pylint: disable=g-import-not-at-top
  from awesome_jax import data, distill  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == devices, jax.devices()
  c = load_config('distill', 'paper')
  c.distill.n_inits = 8
  c.distill.shard = devices > 1
  batch, shape = c.outer.batch_size, (28, 28, 1)
  rng = np.random.default_rng(0)
  fake = data.Dataset(c.data.name, rng.normal(size=(batch,) + shape).astype(np.float32),
                      rng.integers(0, 10, batch), np.zeros((1,) + shape, np.float32),
                      np.zeros(1, np.int32), 10, (0.0,), (1.0,))
  d = distill.Distiller(c, fake)
  return run_twice(lambda: d.init_state(jax.random.key(0), fake.x_train, fake.y_train),
                   d.outer_step, fake.x_train, fake.y_train, iters, out, permuted_out)


def train_step(devices, iters, out, permuted_out=''):
  import jax  # pylint: disable=g-import-not-at-top
  from awesome_jax import train  # pylint: disable=g-import-not-at-top
  from awesome_jax.tasks import classify  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == devices, jax.devices()
  c = load_config('classify', 'resnet20_cifar')
  c.train.shard = devices > 1
  c.train.augment = False  # per-row random crops: a permuted batch would be another step
  shape = (32, 32, 3)
  model = classify.build_model(c.model.name, c.model.kwargs.to_dict(), 10, shape)
  trainer = train.Trainer(model, c.train, shape, total_steps=1000)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(c.train.batch_size,) + shape).astype(np.float32)
  y = rng.integers(0, 10, c.train.batch_size)
  return run_twice(lambda: trainer.init_state(jax.random.key(0), fast_rng_compile=True),
                   trainer.train_step, x, y, iters, out, permuted_out)


STEPS = {'distill': ('MNIST distillation outer iteration (LeNet, T=30, batch 1024, '
                     'n_inits=8)', distill_step),
         'train': ('ResNet-20 train step (batch 128, batch norm)', train_step)}


def max_diff(a, b):
  with np.load(a) as za, np.load(b) as zb:
    assert sorted(za.files) == sorted(zb.files)
    return max(float(np.max(np.abs(za[k] - zb[k]))) for k in za.files)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--one', default='')
  ap.add_argument('--iters', type=int, default=3, help='timed steps after the compiling one')
  ap.add_argument('--devices', type=int, default=8, help='the sharded side (forced devices)')
  args = ap.parse_args()
  if args.one:
    kw = json.loads(args.one)
    print(json.dumps(STEPS[kw.pop('step')][1](**kw)))
    return
  import jax  # pylint: disable=g-import-not-at-top
  print(f'{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, '
        f'{time.strftime("%Y-%m-%d")}; median of {args.iters} steps after the compiling one\n')
  print('| step | devices | s / step | compile s | vs 1 device | max abs diff vs 1 device '
        '| max abs diff, 1 device, rows permuted |')
  print('|---|---|---|---|---|---|---|')
  with tempfile.TemporaryDirectory() as tmp:
    for name, (what, _) in STEPS.items():
      rows = []
      for devices in (1, args.devices):
        out = os.path.join(tmp, f'{name}_{devices}.npz')
        permuted = os.path.join(tmp, f'{name}_permuted.npz') if devices == 1 else ''
        env = {'JAX_PLATFORMS': 'cpu',
               'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
        r = run_child(__file__, '--one', {'step': name, 'devices': devices,
                                          'iters': args.iters, 'out': out,
                                          'permuted_out': permuted}, env=env)
        rows.append((devices, r, out, permuted))
      base = rows[0][1]['median_s']
      for devices, r, out, permuted in rows:
        sharded = 'shard' if devices > 1 else 'one device'
        diff = '-' if devices == 1 else f'{max_diff(rows[0][2], out):.2e}'
        noise = f'{max_diff(out, permuted):.2e}' if permuted else '-'
        print(f'| {what} | {devices} ({sharded}) | {r["median_s"]:.3f} | '
              f'{r["compile_s"]:.1f} | {r["median_s"] / base:.2f}x | {diff} | {noise} |',
              flush=True)


def cpu_name():
  """The CPU's model name (Linux), else the platform's."""
  try:
    with open('/proc/cpuinfo') as f:
      return next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()

if __name__ == '__main__':
  sys.exit(main())
