"""edge-popup training speed: images/s and peak memory of one train step, batch 128,
for Conv4 and Conv6, masked (keep 50 %) and dense, on 32x32x3 inputs.

Each configuration runs in its own subprocess (its own peak RSS). Random inputs of
CIFAR-10's shape (cost does not depend on values). Compile time reported apart.

  python benchmarks/edge_popup_speed.py [--steps 10] [--reference PATH]
  python benchmarks/edge_popup_speed.py --layers   # each conv layer's three forms

--reference PATH: also time the authors' PyTorch code (a checkout of
allenai/hidden-networks at PATH; needs torch and pyyaml) on the same machine, the same
nets, batch and thread count, built from its own configs (conv{4,6}_usc_unsigned with
--prune-rate 0.5; the conv{4,6}_sgd_baseline dense nets): forward, cross-entropy, backward,
SGD step, as its trainer runs them. Its data augmentation runs in DataLoader workers and
is not timed; ours is inside the timed step.
"""

import argparse
import json
import os
import resource
import sys
import time

from child import run_child


def one(depth, mode, steps, batch, pipelined=False):
  """pipelined: time `steps` steps dispatched back to back with one block at the end (as
  the training loop runs, so the time per step predicts an epoch's), not each."""
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


def layers(steps, batch):
  """--layers: forward and forward+backward (input and kernel gradients) of each 3x3 conv
  shape of Conv-N at `batch`, for the three forms: XLA's convolution, the whole-batch patch
  matrix + one matmul (`conv_as_matmul`) and the same a few images at a time
  (`conv_chunked`, what `conv_fast` runs on CPU)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from awesome_jax.models.small import MAX_PATCH_BYTES, chunk_size, conv_as_matmul, conv_chunked

  def native(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  def median_s(f, *a):
    jax.block_until_ready(f(*a))
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      jax.block_until_ready(f(*a))
      times.append(time.perf_counter() - t)
    return float(np.median(times))

  forms = (('XLA conv', native), ('patch matrix + matmul', lambda x, k: conv_as_matmul(x, k, 1)),
           ('chunked', lambda x, k: conv_chunked(x, k, 1)))
  print('| layer (batch %d) | chunk | ' % batch
        + ' | '.join(f'{n} fwd s | {n} fwd+bwd s' for n, _ in forms) + ' |')
  print('|---|---|' + '---|---|' * len(forms))
  rng = np.random.default_rng(0)
  for size, cin, cout in ((32, 3, 64), (32, 64, 64), (16, 64, 128), (16, 128, 128),
                          (8, 128, 256), (8, 256, 256), (4, 256, 512), (4, 512, 512)):
    x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.05, jnp.float32)
    cells = []
    for _, f in forms:
      loss = lambda x, k, f=f: 0.5 * jnp.sum(f(x, k) ** 2)
      cells += [median_s(jax.jit(f), x, k),
                median_s(jax.jit(jax.grad(loss, argnums=(0, 1))), x, k)]
    chunk = chunk_size(x.shape, k.shape, 1, MAX_PATCH_BYTES)
    print(f'| {size}x{size} {cin}->{cout} | {chunk} | '
          + ' | '.join(f'{c:.3f}' for c in cells) + ' |', flush=True)


OURS, THEIRS = 'awesome_jax', 'authors (PyTorch)'  # the table's "code" column
REFERENCE_CONFIGS = {
    'masked': 'configs/smallscale/conv{d}/conv{d}_usc_unsigned.yml',
    'dense': 'configs/smallscale_baselines/dense/conv{d}/conv{d}_sgd_baseline.yml'}


def one_reference(repo, depth, mode, steps, batch, threads):
  """The authors' code: its args module parses sys.argv at import, so set it first."""
  import numpy as np
  import torch
  torch.set_num_threads(threads)
  config = os.path.join(repo, REFERENCE_CONFIGS[mode].format(d=depth))
  sys.argv = ['main.py', '--config', config] + (['--prune-rate', '0.5'] if mode == 'masked'
                                                else [])
  sys.path.insert(0, repo)
  import models  # pylint: disable=g-import-not-at-top  # the authors' package
  from args import args  # pylint: disable=g-import-not-at-top
  from utils import net_utils  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = models.__dict__[args.arch]()  # as their main.get_model
  if args.conv_type == 'SubnetConv':
    net_utils.set_model_prune_rate(model, prune_rate=args.prune_rate)
  if args.freeze_weights:
    net_utils.freeze_model_weights(model)
  opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], args.lr,
                        momentum=args.momentum, weight_decay=args.weight_decay)
  model.train()
  x = torch.randn(batch, 3, 32, 32)
  y = torch.randint(0, 10, (batch,))
  loss_fn = torch.nn.CrossEntropyLoss()
  times = []
  for i in range(steps + 2):  # 2 warm-up steps
    t0 = time.perf_counter()
    loss = loss_fn(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i >= 2:
      times.append(time.perf_counter() - t0)
  med = float(np.median(times))
  print(json.dumps({'images_per_s': batch / med, 'step_s': med, 'compile_s': 0.0,
                    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    'conv_type': args.conv_type, 'init': args.init}))


def run_one(kw, flag='--one'):
  return run_child(__file__, flag, kw)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--one', default='')
  ap.add_argument('--steps', type=int, default=10)
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--reference', default='',
                  help='a checkout of allenai/hidden-networks: time its code too')
  ap.add_argument('--threads', type=int, default=os.cpu_count(),
                  help="torch's thread count for --reference (XLA uses every core)")
  ap.add_argument('--one_reference', default='')
  ap.add_argument('--layers', action='store_true',
                  help="time each Conv-N conv layer's three forms instead of whole steps")
  args = ap.parse_args()
  if args.layers:
    return layers(args.steps, args.batch)
  if args.one:
    return one(**json.loads(args.one))
  if args.one_reference:
    return one_reference(**json.loads(args.one_reference))
  if args.reference and not os.path.exists(os.path.join(args.reference, 'models', 'frankle.py')):
    sys.exit(f'--reference={args.reference!r}: not a checkout of allenai/hidden-networks '
             '(no models/frankle.py)')
  code = [OURS] + ([THEIRS] if args.reference else [])
  print('| net | mode | code | images/s | s/step (median) | compile s | peak RSS MB |')
  print('|---|---|---|---|---|---|---|')
  rows = {}
  for depth in (4, 6):
    for mode in ('masked', 'dense'):
      kw = dict(depth=depth, mode=mode, steps=args.steps, batch=args.batch)
      for c in code:
        if c == OURS:
          r = run_one(kw)
        else:
          r = run_one(dict(kw, repo=os.path.abspath(args.reference), threads=args.threads),
                      '--one_reference')
        rows[depth, mode, c] = r
        print(f'| conv{depth} | {mode} | {c} | {r["images_per_s"]:.1f} | {r["step_s"]:.3f} | '
              f'{r["compile_s"]:.1f} | {r["peak_rss_mb"]:.0f} |', flush=True)
  for depth in (4, 6):
    for c in code:
      ratio = rows[depth, 'masked', c]['step_s'] / rows[depth, 'dense', c]['step_s']
      print(f'conv{depth} ({c}): masked step costs {ratio:.2f}x the dense step')
    if args.reference:
      for mode in ('masked', 'dense'):
        ratio = rows[depth, mode, OURS]['step_s'] / rows[depth, mode, THEIRS]['step_s']
        print(f'conv{depth} {mode}: awesome_jax step / authors\' step = {ratio:.2f}')


if __name__ == '__main__':
  main()
