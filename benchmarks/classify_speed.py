"""Training speed of the classify task's CIFAR models: images/s of one training step.

  python benchmarks/classify_speed.py [--models resnet20_cifar,vit_cifar] [--steps 10]
      [--rounds 3] [--threads N] [--reference] [--reference-python PY]
      [--ours-compiler-options JSON] [--torch-layouts contiguous,channels_last]
      [--torch-optimizer fused]

Ours: `awesome_jax.train.Trainer` built from the preset of configs/classify.py exactly as
the classify task builds it (`tasks/classify.py`: the model of `models.build`, the train
config, its total and warm-up steps, `init_state(fast_rng_compile=True)`), stepped as
`train_and_test` steps it: `trainer.train_step(state, x, y, fold_in(key, step))` on a
float32 NHWC numpy batch of the preset's size (128 for the CIFAR presets; random
normalised pixels and labels: the cost does not depend on the values, and no data set is
read). The step holds the random crop (pad 4) + horizontal flip, the forward and
backward pass, the optimizer update and the loss / accuracy metrics; each timed step
blocks until the new state is ready. The jit is the Trainer's own, with whatever XLA
options it gives its step (reported: its `compiler_options` attribute where it has one);
--ours-compiler-options JSON re-jits the step with exactly these options instead
(`{}`: XLA's defaults), e.g. '{"xla_cpu_experimental_ynn_fusion_type": ""}'. XLA_FLAGS
in the environment reaches the children too. Ours runs on the CPU (JAX_PLATFORMS=cpu).

--reference: the PyTorch twin of each model in the same run (benchmarks/
torch_cifar_models.py: the same layers and exactly the same parameter count, asserted)
with the same batch, the same optimizer kind and hyper-parameters (ResNet: SGD, momentum
0.9, weight decay added to the gradient; ViT: AdamW with decoupled decay, gradient-norm
clipping, label smoothing), the same warm-up + cosine lr schedule (LambdaLR), and the
same augmentation *included*: random crop (pad 4) + flip per image in torch ops on each
batch, then forward, cross-entropy, backward, optimizer and scheduler steps, the batch
accuracy. Float32, eager mode (no torch.compile), on the CPU, torch.set_num_threads
(--threads). Its optimizer runs torch's fused CPU kernel by default (--torch-optimizer;
on CPU torch otherwise picks its per-tensor loop, several times slower). Every layout of
--torch-layouts is timed (NCHW contiguous and channels_last, model and batch); the table
reports the faster one and names it. `--reference-python`: the interpreter with torch
(default: this one); ours always runs under this one.

Threads: --threads N (default: the cores this process may use). With fewer than those,
every child, ours and the reference, is pinned to the first N of them
(os.sched_setaffinity, before jax or torch start their threads): XLA:CPU sizes its
thread pool by the cores it may use, torch gets N threads.

Each configuration (model x code x layout x round) runs in its own process (its peak
RSS is its own). The first step (ours: the jit compilation; torch: its warm-up) is
reported apart; images/s is batch / the median of the --steps steps after it. --rounds
R runs ours, then the reference, R times in turns (the load of a shared machine drifts):
the table gives the medians over rounds, and ours/reference time is the median of the
per-round ratios. The last line printed is the whole result as JSON.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

from child import load_config, run_child, timed

PRESETS = ('resnet20_cifar', 'vit_cifar')
# training images of each data set of the presets: steps per epoch, hence the schedule
TRAIN_SIZES = {'cifar10': 50000, 'synthetic': 512}
LAYOUTS = ('contiguous', 'channels_last')
TORCH_OPTIMIZERS = ('fused', 'foreach', 'for-loop')


def pin(cpus):
  """Runs this process on `cpus` (before jax or torch start their threads)."""
  if cpus:
    os.sched_setaffinity(0, set(cpus))


def peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(preset, steps, cpus=(), compiler_options=None):
  """Times the classify task's training step of `preset`; returns the result and the spec
  the reference needs (model, shapes, train config, schedule, parameter count)."""
  pin(cpus)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from awesome_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from awesome_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from awesome_jax import xla_options  # pylint: disable=g-import-not-at-top
  from awesome_jax.tasks import classify  # pylint: disable=g-import-not-at-top
  c = load_config('classify', preset)
  t, m, d = c.train, c.model, c.data
  shape, classes = classify.data_shape(d), classify.num_classes(d)
  kwargs = m.kwargs.to_dict()
  model = classify.build_model(m.name, kwargs, classes, shape)
  # classify.run / train_and_test: the schedule over the whole run, the warm-up its share
  per_epoch = TRAIN_SIZES[d.name] // t.batch_size
  total = int(round(t.epochs * per_epoch))
  if t.max_steps:
    total = min(total, t.max_steps)
  warmup = int(round(total * t.warmup_epochs / t.epochs))
  trainer = train_lib.Trainer(model, t, shape, total, warmup_steps=warmup,
                              extra_augment=classify.extra_augment_fn(
                                  t, *data_lib.STATS.get(d.name, ((0.0,), (1.0,)))),
                              compiler_options=xla_options.no_ynn())
  step_fn = trainer.train_step
  if compiler_options is not None:
    if trainer.mesh is not None:
      raise SystemExit('--ours-compiler-options: not with train.shard=True')
    step_fn = jax.jit(trainer._train_step,  # pylint: disable=protected-access
                      compiler_options=compiler_options or None)
    options = dict(compiler_options)
  else:
    options = getattr(trainer, 'compiler_options', None)
  state = trainer.init_state(jax.random.key(c.seed), fast_rng_compile=True)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((t.batch_size,) + shape).astype(np.float32)
  y = rng.integers(0, classes, t.batch_size).astype(np.int32)
  aug_key = jax.random.key(c.seed + 1)
  box = {'state': state, 'step': 0, 'loss': None}

  def call():
    s, met = step_fn(box['state'], x, y, jax.random.fold_in(aug_key, box['step']))
    jax.block_until_ready((s, met))
    box.update(state=s, step=box['step'] + 1, loss=met['loss'])

  first, med = timed(call, steps)
  loss = float(box['loss'])
  if not np.isfinite(loss):
    raise SystemExit(f'{preset}: loss {loss} after {box["step"]} steps')
  return {
      'code': 'ours', 'preset': preset, 'model': m.name, 'model_kwargs': kwargs,
      'num_classes': classes, 'input_shape': list(shape), 'batch': t.batch_size,
      'params': classify.count_params(state['params']),
      'train': {'optimizer': t.optimizer, 'lr': t.lr, 'momentum': t.momentum,
                'weight_decay': t.weight_decay,
                'decay_1d_params': train_lib.option(t, 'decay_1d_params', True),
                'label_smoothing': train_lib.option(t, 'label_smoothing', 0.0),
                'grad_clip': train_lib.option(t, 'grad_clip', 0.0), 'augment': t.augment,
                'extra_augment': t.extra_augment, 'total_steps': total,
                'warmup_steps': warmup},
      'steps': steps, 'first_s': first, 'median_s': med, 'images_per_s': t.batch_size / med,
      'loss': loss, 'compiler_options': options, 'device': jax.devices()[0].platform,
      'jax': jax.__version__, 'cores': len(os.sched_getaffinity(0)),
      'peak_rss_mb': peak_rss_mb()}


def torch_augment(x, gen, pad=4):
  """Random crop with `pad` zero padding and random horizontal flip, per image, of an
  NCHW batch: `awesome_jax.train.augment` in torch ops."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  n, c, h, w = x.shape
  padded = F.pad(x, (pad, pad, pad, pad))
  offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
  rows = (offsets[:, :1] + torch.arange(h))[:, None, :, None]
  cols = (offsets[:, 1:] + torch.arange(w))[:, None, None, :]
  x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
             rows, cols]
  flip = torch.rand(n, generator=gen) < 0.5
  return torch.where(flip[:, None, None, None], x.flip(3), x)


def reference(spec, steps, threads, cpus=(), layout='channels_last', optimizer='fused'):
  """Times the PyTorch twin's training step for `spec` (the dict `ours` returns)."""
  pin(cpus)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  import torch_cifar_models as tcm  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  net = tcm.build(spec['model'], spec['model_kwargs'], spec['num_classes'],
                  spec['input_shape'])
  params = tcm.count_params(net)
  if params != spec['params']:
    raise SystemExit(f'{spec["preset"]}: the PyTorch twin has {params:,} parameters, ours '
                     f'{spec["params"]:,}')
  fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
  net = net.to(memory_format=fmt).train()
  tr = spec['train']
  impl = {'fused': {'fused': True}, 'foreach': {'foreach': True},
          'for-loop': {'foreach': False}}[optimizer]
  if tr['optimizer'] == 'adamw' and not tr['decay_1d_params']:
    groups = [{'params': [p for p in net.parameters() if p.ndim > 1]},
              {'params': [p for p in net.parameters() if p.ndim <= 1], 'weight_decay': 0.0}]
  else:
    groups = list(net.parameters())
  if tr['optimizer'] == 'sgd':
    opt = torch.optim.SGD(groups, lr=tr['lr'], momentum=tr['momentum'] or 0.0,
                          weight_decay=tr['weight_decay'], **impl)
  elif tr['optimizer'] == 'adam':  # L2 added to the gradient, as optax's chain
    opt = torch.optim.Adam(groups, lr=tr['lr'], weight_decay=tr['weight_decay'], **impl)
  else:
    opt = torch.optim.AdamW(groups, lr=tr['lr'], weight_decay=tr['weight_decay'], **impl)
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, tcm.warmup_cosine(tr['total_steps'], tr['warmup_steps']))
  if tr['extra_augment']:
    raise SystemExit(f'train.extra_augment={tr["extra_augment"]!r}: no torch twin')
  rng = np.random.default_rng(0)
  h, w, c = spec['input_shape']
  x = torch.from_numpy(rng.standard_normal((spec['batch'], c, h, w)).astype(np.float32))
  y = torch.from_numpy(rng.integers(0, spec['num_classes'], spec['batch']).astype(np.int64))
  gen = torch.Generator().manual_seed(1)
  box = {'loss': None}

  def call():
    xb = torch_augment(x, gen) if tr['augment'] else x
    logits = net(xb.contiguous(memory_format=fmt))
    loss = F.cross_entropy(logits, y, label_smoothing=tr['label_smoothing'])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if tr['grad_clip']:
      torch.nn.utils.clip_grad_norm_(net.parameters(), tr['grad_clip'])
    opt.step()
    sched.step()
    box['acc'] = (logits.detach().argmax(-1) == y).float().mean()
    box['loss'] = loss.detach()

  first, med = timed(call, steps)
  loss = float(box['loss'])
  if not np.isfinite(loss):
    raise SystemExit(f'{spec["preset"]}: torch loss {loss}')
  return {'code': 'reference', 'preset': spec['preset'], 'params': params, 'layout': layout,
          'optimizer_impl': optimizer, 'steps': steps, 'first_s': first, 'median_s': med,
          'images_per_s': spec['batch'] / med, 'loss': loss, 'threads': threads,
          'torch': torch.__version__, 'peak_rss_mb': peak_rss_mb()}


def child_main(kw):
  kw = dict(kw)
  if kw.pop('code') == 'ours':
    r = ours(**kw)
  else:
    r = reference(**kw)
  print(json.dumps(r))


def run_reference(python, kw):
  """The reference child under `python` (the interpreter with torch)."""
  out = subprocess.run([python, os.path.abspath(__file__), '--one', json.dumps(kw)],
                       capture_output=True, text=True)
  if out.returncode:
    sys.exit(f'reference {kw["spec"]["preset"]} {kw["layout"]} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def median(rows, key):
  return statistics.median(r[key] for r in rows)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--models', default=','.join(PRESETS),
                  help='presets of configs/classify.py, comma-separated')
  ap.add_argument('--steps', type=int, default=10,
                  help='timed steps after the first (median)')
  ap.add_argument('--rounds', type=int, default=1,
                  help='ours then the reference, this many times in turns')
  ap.add_argument('--threads', type=int, default=None,
                  help="torch's threads; fewer than this process's cores pins every child "
                       'to that many (default: all of them)')
  ap.add_argument('--reference', action='store_true', help='also time the PyTorch twins')
  ap.add_argument('--reference-python', default=sys.executable,
                  help='the Python (with torch) that runs the reference')
  ap.add_argument('--torch-layouts', default=','.join(LAYOUTS),
                  help=f'memory formats to time the reference in: {", ".join(LAYOUTS)}')
  ap.add_argument('--torch-optimizer', default='fused', choices=TORCH_OPTIMIZERS,
                  help="the reference optimizer's implementation")
  ap.add_argument('--ours-compiler-options', default=None,
                  help='JSON dict: jit our step with exactly these XLA compiler options '
                       "({} = XLA's defaults) instead of the Trainer's own")
  ap.add_argument('--one', default='')
  args = ap.parse_args()
  if args.one:
    return child_main(json.loads(args.one))
  presets = [p for p in args.models.split(',') if p]
  layouts = [l for l in args.torch_layouts.split(',') if l]
  for l in layouts:
    if l not in LAYOUTS:
      sys.exit(f'--torch-layouts: {l!r} unknown; allowed: {", ".join(LAYOUTS)}')
  options = None
  if args.ours_compiler_options is not None:
    options = json.loads(args.ours_compiler_options)
    if not isinstance(options, dict):
      sys.exit('--ours-compiler-options: a JSON object, e.g. {"option": "value"}')
  cores = sorted(os.sched_getaffinity(0))
  threads = args.threads or len(cores)
  cpus = cores[:threads] if threads < len(cores) else []
  env = {'JAX_PLATFORMS': 'cpu'}
  print(f'| model | round | code | images/s | s/step (median of {args.steps}) | first step s '
        '| peak RSS MB |')
  print('|---|---|---|---|---|---|---|')
  results = {}
  for preset in presets:
    rows = {'ours': []}
    rows.update({l: [] for l in (layouts if args.reference else ())})
    for k in range(args.rounds):
      r = run_child(__file__, '--one', dict(code='ours', preset=preset, steps=args.steps,
                                            cpus=cpus, compiler_options=options), env=env)
      rows['ours'].append(r)
      runs = [('ours (Flax, jit)', r)]
      for layout in [l for l in rows if l != 'ours']:
        ref = run_reference(args.reference_python, dict(
            code='reference', spec=r, steps=args.steps, threads=threads, cpus=cpus,
            layout=layout, optimizer=args.torch_optimizer))
        rows[layout].append(ref)
        runs.append((f'PyTorch {ref["torch"]}, {layout}', ref))
      for code, x in runs:
        print(f'| {preset} | {k + 1} | {code} | {x["images_per_s"]:.1f} | {x["median_s"]:.3f} '
              f'| {x["first_s"]:.1f} | {x["peak_rss_mb"]:.0f} |', flush=True)
    results[preset] = summarize(rows)
  print()
  print('| model | ours images/s | reference images/s | ours/reference time '
        '| compile s (ours / ref. first step) | peak RSS MB (ours / ref.) |')
  print('|---|---|---|---|---|---|')
  for preset, s in results.items():
    ref = s.get('reference')
    params = (f'{s["params"]:,} params' + (f', torch {ref["params"]:,}' if ref else ''))
    if ref:
      print(f'| {preset} ({params}) | {s["images_per_s"]:.1f} | {ref["images_per_s"]:.1f} '
            f'({ref["layout"]}) | {s["time_ratio"]:.2f}x | {s["first_s"]:.1f} / '
            f'{ref["first_s"]:.1f} | {s["peak_rss_mb"]:.0f} / {ref["peak_rss_mb"]:.0f} |')
    else:
      print(f'| {preset} ({params}) | {s["images_per_s"]:.1f} | - | - | {s["first_s"]:.1f} '
            f'| {s["peak_rss_mb"]:.0f} |')
  first = next(iter(results.values()))['ours_run']
  shape = 'x'.join(map(str, first['input_shape']))
  print(f'\nbatch {first["batch"]} ({shape}), {args.steps} timed steps after the first, '
        f'{args.rounds} round(s), medians over rounds; {threads} threads '
        f'({"cores " + ",".join(map(str, cpus)) if cpus else f"all {len(cores)} cores"}); '
        f'crop + flip included on both sides.')
  used = first['compiler_options']
  print(f'ours: jax {first["jax"]} on {first["device"]}, XLA options '
        f'{"none (jax.jit defaults)" if used is None else used}'
        f'{" (--ours-compiler-options)" if options is not None else ""}')
  for preset, s in results.items():
    if s.get('reference'):
      each = ', '.join(f'{l} {v["images_per_s"]:.1f}' for l, v in s['layouts'].items())
      print(f'reference {preset}: torch {s["reference"]["torch"]}, {args.torch_optimizer} '
            f'optimizer, eager; images/s by layout: {each}; faster: '
            f'{s["reference"]["layout"]}; per-round time ratios: '
            f'{", ".join(f"{x:.2f}" for x in s["ratios"])}')
  for s in results.values():
    s.pop('ours_run')
  print(json.dumps({'benchmark': 'classify_speed', 'steps': args.steps, 'rounds': args.rounds,
                    'threads': threads, 'cpus': cpus or cores, 'reference': args.reference,
                    'torch_optimizer': args.torch_optimizer if args.reference else None,
                    'ours_compiler_options': options, 'models': results}))


def summarize(rows):
  """Medians over rounds of ours and of each reference layout; the faster layout's
  per-round time ratios."""
  o = rows['ours']
  s = {'params': o[0]['params'], 'batch': o[0]['batch'],
       'images_per_s': o[0]['batch'] / median(o, 'median_s'), 'median_s': median(o, 'median_s'),
       'first_s': median(o, 'first_s'), 'peak_rss_mb': max(r['peak_rss_mb'] for r in o),
       'compiler_options': o[0]['compiler_options'], 'train': o[0]['train'], 'ours_run': o[0]}
  layouts = {l: {'images_per_s': o[0]['batch'] / median(v, 'median_s'),
                 'median_s': median(v, 'median_s'), 'first_s': median(v, 'first_s'),
                 'peak_rss_mb': max(r['peak_rss_mb'] for r in v), 'params': v[0]['params'],
                 'torch': v[0]['torch'], 'layout': l}
             for l, v in rows.items() if l != 'ours'}
  if layouts:
    best = min(layouts, key=lambda l: layouts[l]['median_s'])
    s['layouts'] = layouts
    s['reference'] = layouts[best]
    s['ratios'] = [a['median_s'] / b['median_s'] for a, b in zip(o, rows[best])]
    s['time_ratio'] = statistics.median(s['ratios'])
  return s


if __name__ == '__main__':
  main()
