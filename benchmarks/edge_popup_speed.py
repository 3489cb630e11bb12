"""edge-popup training speed: images/s and peak memory of one train step, batch 128,
for Conv4 and Conv6, masked (keep 50 %) and dense, on 32x32x3 inputs.

Each configuration runs in its own subprocess (its own peak RSS). Random inputs of
CIFAR-10's shape (cost does not depend on values). Compile time reported apart.

  python benchmarks/edge_popup_speed.py [--steps 10]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def one(depth, mode, steps, batch, pipelined=False):
  """pipelined: time `steps` steps dispatched back to back with one block at the end (as
  the training loop runs; scripts/gpu_session.py sizes its epochs with it), not each."""
  import jax
  import ml_collections
  import numpy as np
  from awesome_jax import train as train_lib
  from awesome_jax.models import conv_n
  t = ml_collections.ConfigDict(dict(optimizer='sgd', lr=0.1, momentum=0.9,
                                     weight_decay=1e-4, augment=True))
  model = conv_n.ConvN(depth=depth, mode=mode, keep_fraction=0.5)
  trainer = train_lib.Trainer(model, t, (32, 32, 3), total_steps=1000)
  state = trainer.init_state(jax.random.key(0))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, batch)
  t0 = time.perf_counter()
  state, _ = trainer.train_step(state, x, y, jax.random.key(0))
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  times = []
  t_all = time.perf_counter()
  for i in range(steps):
    t0 = time.perf_counter()
    state, _ = trainer.train_step(state, x, y, jax.random.key(i + 1))
    if not pipelined:
      jax.block_until_ready(state)
      times.append(time.perf_counter() - t0)
  jax.block_until_ready(state)
  med = (time.perf_counter() - t_all) / steps if pipelined else float(np.median(times))
  print(json.dumps({'images_per_s': batch / med, 'step_s': med, 'compile_s': compile_s,
                    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--one', default='')
  ap.add_argument('--steps', type=int, default=10)
  ap.add_argument('--batch', type=int, default=128)
  args = ap.parse_args()
  if args.one:
    return one(**json.loads(args.one))
  print('| net | mode | images/s | s/step (median) | compile s | peak RSS MB |')
  print('|---|---|---|---|---|---|')
  rows = {}
  for depth in (4, 6):
    for mode in ('masked', 'dense'):
      kw = dict(depth=depth, mode=mode, steps=args.steps, batch=args.batch)
      out = subprocess.run([sys.executable, os.path.abspath(__file__), '--one', json.dumps(kw)],
                           capture_output=True, text=True, check=True)
      r = json.loads(out.stdout.strip().splitlines()[-1])
      rows[depth, mode] = r
      print(f'| conv{depth} | {mode} | {r["images_per_s"]:.1f} | {r["step_s"]:.3f} | '
            f'{r["compile_s"]:.1f} | {r["peak_rss_mb"]:.0f} |', flush=True)
  for depth in (4, 6):
    ratio = rows[depth, 'masked']['step_s'] / rows[depth, 'dense']['step_s']
    print(f'conv{depth}: masked step costs {ratio:.2f}x the dense step')


if __name__ == '__main__':
  main()
