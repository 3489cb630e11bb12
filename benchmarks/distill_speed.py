"""Speed and peak memory of one distillation outer iteration (MNIST LeNet shapes).

Each configuration runs in its own subprocess so that its peak RSS (ru_maxrss) is its
own. Inputs are random arrays of MNIST's shape (the cost does not depend on pixel
values; no dataset in memory), so peak RSS = JAX + the computation.

  python benchmarks/distill_speed.py            # the table of the issue
  python benchmarks/distill_speed.py --quick    # fewer iterations
  python benchmarks/distill_speed.py --cifar    # AlexCifarNet (CIFAR-10 shapes), batch 256
  python benchmarks/distill_speed.py --headline-only --reference PATH [--rounds 3]
  python benchmarks/distill_speed.py --parts    # the outer step's pieces, interleaved

--reference PATH: also time the authors' PyTorch code (a checkout of
SsnL/dataset-distillation at PATH; needs torch, six, tqdm, matplotlib) on the headline
row, on the same machine and thread count: its Trainer's forward + backward +
accumulate_grad + Adam step for one random-init net, as its train loop runs them, with
its defaults (LeNet, xavier init, 10 steps x 3 epochs, 1 image per class per step,
distill_lr 0.02, Adam lr 0.01). Data loading is not timed (random arrays, as ours).
Its torchvision import (used only for datasets and ImageNet-pretrained inits) is
replaced by an empty module, since a CPU build of torchvision is not on PyPI.
--reference-python: the interpreter that runs it (one with torch; default: this one).
--cpus 1 (a list, e.g. 0,1): every child, ours and the reference, runs pinned to these
cores (torch with one thread per core): on a loaded machine torch's threads on cores that
other jobs use slowed it 10-30x, which says nothing about either code.
--parts: the real-batch forward + backward (batch 1024) whole and in chunks of 32-256
images (`distill.real_loss`), and the inner loop's meta-gradient, timed interleaved in
one process; ratios to the first row of each table.

Rows: (1) the headline: random init, 10 steps x 3 epochs, 100 images, real batch 1024;
(2) peak memory vs unroll length T = 30, 100, 300 with and without jax.checkpoint.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from child import load_config, run_child


def pin(cpus):
  """Runs this process on `cpus` (before jax or torch start their threads)."""
  if cpus:
    os.sched_setaffinity(0, set(cpus))


def one(steps, epochs, remat, batch, iters, n_inits, conv_impl='matmul', preset='mnist',
        cpus=()):
  pin(cpus)
  import jax
  import numpy as np
  from awesome_jax import data, distill
  c = load_config('distill', preset)
  c.distill.steps, c.distill.epochs, c.distill.remat = steps, epochs, remat
  c.distill.n_inits = n_inits
  c.outer.batch_size = batch
  c.model.kwargs.conv_impl = conv_impl
  rng = np.random.default_rng(0)
  shape = (32, 32, 3) if preset == 'cifar10' else (28, 28, 1)
  fake = data.Dataset(c.data.name, rng.normal(size=(batch,) + shape).astype(np.float32),
                      rng.integers(0, 10, batch), np.zeros((1,) + shape, np.float32),
                      np.zeros(1, np.int32), 10, (0.0,) * shape[-1], (1.0,) * shape[-1])
  d = distill.Distiller(c, fake)
  state = d.init_state(jax.random.key(0), fake.x_train, fake.y_train)
  x, y = jax.numpy.asarray(fake.x_train), jax.numpy.asarray(fake.y_train)
  t = time.perf_counter()
  state, _ = d.outer_step(state, x, y, jax.random.key(0))
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  times = []
  for i in range(iters):
    t = time.perf_counter()
    state, _ = d.outer_step(state, x, y, jax.random.key(i + 1))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({'median_s': float(np.median(times)), 'compile_s': compile_s,
                    'peak_rss_mb': peak_mb}))


def one_reference(repo, steps, epochs, batch, iters, threads, cpus=()):
  pin(cpus)
  import types
  import numpy as np
  import torch
  torch.set_num_threads(threads)
  stub = types.ModuleType('torchvision')  # see the module docstring
  stub.datasets = stub.transforms = stub.models = types.ModuleType('torchvision.stub')
  sys.modules['torchvision'] = stub
  sys.path.insert(0, repo)
  import networks  # pylint: disable=g-import-not-at-top  # the authors' package
  import train_distilled_image  # pylint: disable=g-import-not-at-top
  state = types.SimpleNamespace(  # their base_options defaults for MNIST
      arch='LeNet', nc=1, input_size=28, num_classes=10, dropout=False, init='xavier',
      init_param=1.0, device=torch.device('cpu'), distill_steps=steps,
      distill_epochs=epochs, distilled_images_per_class_per_step=1, distill_lr=0.02,
      lr=0.01, decay_epochs=40, decay_factor=0.5, distributed=False, mode='distill_basic',
      train_nets_type='unknown_init', local_n_nets=1, local_sample_n_nets=1,
      sample_n_nets=1)
  torch.manual_seed(0)
  model = networks.get_networks(state, N=1)[0]
  trainer = train_distilled_image.Trainer(state, [model])
  rdata = torch.randn(batch, 1, 28, 28)
  rlabel = torch.randint(0, 10, (batch,))
  times = []
  for i in range(iters + 2):  # 2 warm-up iterations
    t = time.perf_counter()
    # the body of their Trainer.train loop, one net; zero_grad zeroes in place as in the
    # torch of 2018 (today's default sets grads to None, which their accumulate_grad can't add to)
    trainer.optimizer.zero_grad(set_to_none=False)
    model.reset(state)
    steps_ = trainer.get_steps()
    l, saved = trainer.forward(model, rdata, rlabel, steps_)
    trainer.accumulate_grad([trainer.backward(model, rdata, rlabel, steps_, saved)])
    trainer.optimizer.step()
    if i >= 2:
      times.append(time.perf_counter() - t)
  assert torch.isfinite(l), l
  print(json.dumps({'median_s': float(np.median(times)), 'compile_s': 0.0,
                    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_sub(flag='--one', **kw):
  return run_child(__file__, flag, kw)


def run_reference(python, **kw):
  """The --one_reference child under `python` (the interpreter with torch)."""
  out = subprocess.run([python, os.path.abspath(__file__), '--one_reference', json.dumps(kw)],
                       capture_output=True, text=True)
  if out.returncode:
    sys.exit(f'--one_reference {json.dumps(kw)} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(fns, rounds):
  """{name: median seconds} of the jitted no-argument `fns`, timed in turns."""
  import jax
  import numpy as np
  for f in fns.values():
    jax.block_until_ready(f())
  times = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(f())
      times[k].append(time.perf_counter() - t)
  return {k: float(np.median(v)) for k, v in times.items()}


def parts(rounds, cpus=()):
  """The outer step's pieces (MNIST LeNet, batch 1024, T = 30), each variant timed in
  turns with the others in one process, so that load on the machine hits all alike."""
  pin(cpus)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from awesome_jax import distill, models
  rng = np.random.default_rng(0)
  model = models.build('lenet', 10, (28, 28, 1))
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  x = jnp.asarray(rng.normal(size=(1024, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 1024), jnp.int32)
  options = distill.outer_step_compiler_options()

  def real(chunk):
    f = jax.jit(jax.value_and_grad(
        lambda p: distill.real_loss(apply_fn, p, x, y, chunk)[0]), compiler_options=options)
    return lambda: f(params)

  fns = {f'real batch 1024, chunk {c or "none (whole)"}': real(c) for c in (0, 32, 64, 128, 256)}
  print('| real-batch forward + backward | s (median) | / whole |\n|---|---|---|')
  r = interleaved(fns, rounds)
  first = next(iter(r.values()))
  for k, v in r.items():
    print(f'| {k} | {v:.4f} | {v / first:.2f} |', flush=True)
  xs = jnp.asarray(rng.normal(size=(10, 10, 28, 28, 1)), jnp.float32)
  ys = jax.nn.one_hot(jnp.tile(jnp.arange(10), (10, 1)), 10)
  lrs = jnp.full((30,), 0.02)

  def inner(remat, opts):
    loss = lambda xs, p: sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(
        distill.inner_sgd(apply_fn, p, xs, ys, lrs, remat=remat)))
    f = jax.jit(jax.grad(loss), compiler_options=opts)
    return lambda: f(xs, params)

  fns = {'inner loop, T = 30': inner(False, options),
         'same, jax.checkpoint (remat)': inner(True, options),
         'same, XLA fusion emitters on': inner(False, None)}
  print('\n| inner-loop meta-gradient (10 images/step) | s (median) | / first |\n|---|---|---|')
  r = interleaved(fns, rounds)
  first = next(iter(r.values()))
  for k, v in r.items():
    print(f'| {k} | {v:.4f} | {v / first:.2f} |', flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--one', default='')
  ap.add_argument('--quick', action='store_true')
  ap.add_argument('--headline-only', action='store_true')
  ap.add_argument('--cifar', action='store_true')
  ap.add_argument('--reference', default='',
                  help='a checkout of SsnL/dataset-distillation: time its code too')
  ap.add_argument('--reference-python', default=sys.executable,
                  help='the Python (with torch) that runs the --reference code')
  ap.add_argument('--threads', type=int, default=None,
                  help="torch's thread count for --reference (XLA uses every core it may); "
                       'default: the number of cores (of --cpus if given)')
  ap.add_argument('--cpus', default='',
                  help='comma-separated cores to pin every child to, e.g. 1')
  ap.add_argument('--parts', action='store_true')
  ap.add_argument('--rounds', type=int, default=1,
                  help='with --reference: time ours and the reference this many times in '
                       'turns and report the median ratio (the load of a shared machine '
                       'drifts between runs)')
  ap.add_argument('--one_reference', default='')
  args = ap.parse_args()
  if args.one:
    return one(**json.loads(args.one))
  if args.one_reference:
    return one_reference(**json.loads(args.one_reference))
  cpus = [int(c) for c in args.cpus.split(',') if c.strip()]
  threads = args.threads or len(cpus) or os.cpu_count()
  if args.parts:
    return parts(5 if args.quick else 15, cpus)
  if args.reference and not os.path.exists(os.path.join(args.reference,
                                                        'train_distilled_image.py')):
    sys.exit(f'--reference={args.reference!r}: not a checkout of SsnL/dataset-distillation '
             '(no train_distilled_image.py)')
  iters = 5 if args.quick else 20
  if args.cifar:
    print('| AlexCifarNet, random init, 100 images, T=30, batch 256 | s / outer iter (median) '
          '| compile s | peak RSS MB |')
    print('|---|---|---|---|')
    for impl, what in (('matmul', 'slices + matmul conv, slice max-pool (default)'),
                       ('xla', 'direct port (nn.Conv + nn.max_pool)')):
      r = run_sub(steps=10, epochs=3, remat=False, batch=256, iters=3, n_inits=1,
                  conv_impl=impl, preset='cifar10', cpus=cpus)
      print(f'| {what} | {r["median_s"]:.2f} | {r["compile_s"]:.1f} | '
            f'{r["peak_rss_mb"]:.0f} |', flush=True)
    return
  print('| what | T | remat | s / outer iter (median) | compile s | peak RSS MB |')
  print('|---|---|---|---|---|---|')
  r = r_head = run_sub(steps=10, epochs=3, remat=False, batch=1024, iters=iters, n_inits=1,
                       cpus=cpus)
  print(f'| headline: random init, 100 images, batch 1024 | 30 | no | {r["median_s"]:.3f} '
        f'| {r["compile_s"]:.1f} | {r["peak_rss_mb"]:.0f} |', flush=True)
  r = run_sub(steps=10, epochs=3, remat=False, batch=1024, iters=iters, n_inits=1,
              conv_impl='xla', cpus=cpus)
  print(f'| same, direct port (nn.Conv + nn.max_pool) | 30 | no | {r["median_s"]:.3f} '
        f'| {r["compile_s"]:.1f} | {r["peak_rss_mb"]:.0f} |', flush=True)
  if args.reference:
    ratios, rss = [], []
    for k in range(args.rounds):
      if k:  # later rounds: ours again, then the reference, so that both see the same load
        r_head = run_sub(steps=10, epochs=3, remat=False, batch=1024, iters=iters,
                         n_inits=1, cpus=cpus)
        print(f'| round {k + 1}: awesome_jax | 30 | no | {r_head["median_s"]:.3f} '
              f'| {r_head["compile_s"]:.1f} | {r_head["peak_rss_mb"]:.0f} |', flush=True)
      r = run_reference(args.reference_python, repo=os.path.abspath(args.reference), steps=10,
                        epochs=3, batch=1024, iters=iters, threads=threads, cpus=cpus)
      print(f'| {f"round {k + 1}: " if k else "same, "}the authors\' PyTorch code '
            f'({threads} threads) | 30 | no | {r["median_s"]:.3f} | - '
            f'| {r["peak_rss_mb"]:.0f} |', flush=True)
      ratios.append(r_head['median_s'] / r['median_s'])
      rss.append(r_head['peak_rss_mb'] / r['peak_rss_mb'])
    spread = (f' (rounds: {", ".join(f"{x:.2f}" for x in ratios)}; median)'
              if len(ratios) > 1 else '')
    print(f'awesome_jax outer iteration / authors\' = {statistics.median(ratios):.2f}'
          f'{spread}, peak RSS {statistics.median(rss):.2f}')
  if args.headline_only:
    return
  for steps, epochs in ((10, 3), (10, 10), (10, 30)):
    for remat in (False, True):
      r = run_sub(steps=steps, epochs=epochs, remat=remat, batch=1024,
                  iters=max(iters // 4, 2), n_inits=1, cpus=cpus)
      print(f'| unroll | {steps * epochs} | {"yes" if remat else "no"} | {r["median_s"]:.3f} '
            f'| {r["compile_s"]:.1f} | {r["peak_rss_mb"]:.0f} |', flush=True)


if __name__ == '__main__':
  main()
