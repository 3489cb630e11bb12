"""Evaluation speed of zoo models: images/s of the forward pass at batch 64, 224x224.

  python benchmarks/zoo_speed.py [--models resnet50,vit_b16,efficientnet_lite0]
      [--batch 64] [--batches 3] [--reference] [--threads N] [--xla_defaults] [--rounds R]

Ours: the Flax module (`zoo.jit`: jit with the zoo's XLA options, `zoo.compiler_options()`;
random weights: speed does not depend on the values) on float32 NHWC inputs;
--xla_defaults: plain jax.jit instead (XLA:CPU's YNNPACK fusions on). --reference: also
the PyTorch reference of each model in the same run (torchvision ResNet-50, timm
ViT-B/16, efficientnet-lite-pytorch EfficientNet-Lite0; `pip install -e '.[reference]'
torchvision timm`), eval mode, inference_mode, float32 NCHW,
torch.set_num_threads(--threads). Each configuration runs in its own process (its
peak RSS is its own); compile / first-call time is reported apart from the median.
--rounds R: ours then the reference, R times in turns (a row each), and the median of
the R per-round time ratios: on a machine whose speed drifts between minutes, the ratio
of neighbouring runs is steadier than either run's time.
"""

import argparse
import json
import os
import resource
import sys

import numpy as np

from child import run_child, timed

REFERENCES = {'resnet50': 'torchvision', 'vit_b16': 'timm',
              'efficientnet_lite0': 'efficientnet-lite-pytorch'}


def ours(name, batch, batches, xla_defaults=False):
  import jax  # pylint: disable=g-import-not-at-top
  from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
  model, variables, _ = zoo.load(name, 'random')
  f = jax.jit(model.apply) if xla_defaults else zoo.jit(model.apply)
  x = np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32)
  first, med = timed(lambda: jax.block_until_ready(f(variables, x)), batches)
  return {'first_s': first, 'median_s': med, 'device': jax.devices()[0].platform,
          'compiler_options': None if xla_defaults else zoo.compiler_options()}


def reference(name, batch, batches, threads):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  if name == 'resnet50':
    import torchvision  # pylint: disable=g-import-not-at-top
    net = torchvision.models.resnet50()
  elif name == 'vit_b16':
    import timm  # pylint: disable=g-import-not-at-top
    net = timm.create_model('vit_base_patch16_224', pretrained=False)
  elif name == 'efficientnet_lite0':
    from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
    net = EfficientNet.from_name('efficientnet-lite0')
  else:
    raise SystemExit(f'--reference: no PyTorch reference for {name}; have {", ".join(REFERENCES)}')
  net.eval()
  x = torch.from_numpy(
      np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
  def call():
    with torch.inference_mode():
      net(x)
  first, med = timed(call, batches)
  return {'first_s': first, 'median_s': med, 'device': 'cpu', 'torch': torch.__version__,
          'threads': threads}


def child_main(kw):
  if kw['code'] == 'ours':
    r = ours(kw['name'], kw['batch'], kw['batches'], kw.get('xla_defaults', False))
  else:
    r = reference(kw['name'], kw['batch'], kw['batches'], kw['threads'])
  r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps(r))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--models', default='resnet50,vit_b16,efficientnet_lite0')
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--batches', type=int, default=3)
  ap.add_argument('--reference', action='store_true', help='also time the PyTorch models')
  ap.add_argument('--threads', type=int, default=os.cpu_count(),
                  help="torch's thread count for --reference (XLA uses every core)")
  ap.add_argument('--xla_defaults', action='store_true',
                  help="ours with plain jax.jit, without the zoo's compiler options")
  ap.add_argument('--rounds', type=int, default=1,
                  help='ours then the reference, this many times in turns')
  args = ap.parse_args()
  if args.rounds < 1:
    raise SystemExit(f'--rounds {args.rounds}: must be at least 1')
  print(f'| model | code | images/s | s/batch (median of {args.batches}) | first call s '
        '| peak RSS MB | ours / reference time |')
  print('|---|---|---|---|---|---|---|')
  options, summary = set(), []
  for name in args.models.split(','):
    kw = dict(name=name, batch=args.batch, batches=args.batches, threads=args.threads,
              xla_defaults=args.xla_defaults)
    ratios = []
    for r_i in range(args.rounds):
      tag = f' (round {r_i + 1})' if args.rounds > 1 else ''
      rows = [('ours (Flax, jit)' + tag, run_child(__file__, '--one', dict(kw, code='ours')))]
      if args.reference:
        rows.append((REFERENCES.get(name, '?') + tag,
                     run_child(__file__, '--one', dict(kw, code='reference'))))
        ratios.append(rows[0][1]['median_s'] / rows[1][1]['median_s'])
      options.add(f'{rows[0][1]["device"]}, XLA options {rows[0][1]["compiler_options"]}')
      for i, (code, r) in enumerate(rows):
        ratio = f'{ratios[-1]:.2f}x' if i else ''
        print(f'| {name} | {code} | {args.batch / r["median_s"]:.1f} | {r["median_s"]:.2f} | '
              f'{r["first_s"]:.1f} | {r["peak_rss_mb"]:.0f} | {ratio} |', flush=True)
    if len(ratios) > 1:
      summary.append(f'{name}: ours / reference time per round '
                     f'{", ".join(f"{x:.2f}" for x in ratios)}; median '
                     f'{float(np.median(ratios)):.2f}x')
  print(f'\nours: {"; ".join(sorted(options))}')
  for line in summary:
    print(line)


if __name__ == '__main__':
  if len(sys.argv) == 3 and sys.argv[1] == '--one':
    child_main(json.loads(sys.argv[2]))
  else:
    main()
