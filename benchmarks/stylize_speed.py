"""Stylized-dataset writer speed: images/s of `stylize.write_stylized` per method and size.

  python benchmarks/stylize_speed.py [--sizes 32,224] [--n 16] [--batch 16]

Methods: the Fourier amplitude swap (numpy), AdaIN with the VGG-19 networks (random
weights: the speed does not depend on them) and AdaIN with EfficientNet-Lite0's cut
encoder + its mirror decoder (`models.adain.lite0_net`, random weights). Columns:
* writer: `write_stylized` end to end on --n in-memory content images (one image at a
  time, as it runs: stylize + PNG encode + write), after one warm-up image per shape;
* batched op: the stylizer alone on a batch of --batch images (jit, compiled before
  timing; for the Fourier swap the numpy call on the batch): what a batched writer
  could reach;
* compile: the first call's extra time (jit compilation), AdaIN only.
Prints a markdown table.
"""

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

from awesome_jax import stylize
from awesome_jax.models import adain
from child import timed


def _writer_rate(method, variables, net, size, n):
  """images/s of write_stylized on n content images of size x size (after a warm-up)."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n + 1, size, size, 3)).astype(np.uint8)
  styles = stylize.textures(4, size, 0)
  with tempfile.TemporaryDirectory() as out:
    warm = {'x': x[:1], 'y': np.zeros(1, int)}
    stylize.write_stylized(warm, styles, os.path.join(out, 'warm'), method,
                           variables=variables, net=net, progress=False)
    data = {'x': x[1:], 'y': np.arange(n) % 2}
    t = time.perf_counter()
    stylize.write_stylized(data, styles, os.path.join(out, 'run'), method,
                           variables=variables, net=net, progress=False)
    return n / (time.perf_counter() - t)


def _batched_rate(method, variables, net, size, batch, repeats=3):
  """(images/s of the stylizer alone on a batch, compile seconds or None)."""
  rng = np.random.default_rng(1)
  c = rng.random((batch, size, size, 3)).astype(np.float32)
  s = rng.random((batch, size, size, 3)).astype(np.float32)
  if method == 'fourier':
    f = lambda: stylize.fourier_swap(c, s)
  elif net is None:
    f = lambda: jax.block_until_ready(adain.stylize(*variables, c, s))
  else:
    f = lambda: jax.block_until_ready(adain.net_stylize(net, *variables, c, s))
  first, med = timed(f, repeats)
  return batch / med, (first - med if method != 'fourier' else None)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--sizes', default='32,224', help='comma-separated image sizes')
  ap.add_argument('--n', type=int, default=16, help='images through the writer per row '
                  '(at sizes >= 128: a quarter, at least 4)')
  ap.add_argument('--batch', type=int, default=16, help='batch of the batched-op column '
                  '(at sizes >= 128: a quarter, at least 4)')
  ap.add_argument('--methods', default='fourier,adain_vgg,adain_lite0')
  args = ap.parse_args(argv)
  vgg_vars = adain.init(0, gain=np.sqrt(6.0))
  lite0 = adain.lite0_net()
  lite0_enc = adain.init_encoder(lite0, 0)
  lite0_vars = (lite0_enc, adain.init_decoder(lite0, lite0_enc, 0))
  configs = {'fourier': ('fourier', None, None), 'adain_vgg': ('adain', vgg_vars, None),
             'adain_lite0': ('adain', lite0_vars, lite0)}
  print(f'{jax.devices()[0].device_kind}, jax {jax.__version__}; random weights')
  print()
  print('| method | size | writer img/s (n) | batched op img/s (batch) | compile s |')
  print('|---|---|---|---|---|')
  for size in (int(v) for v in args.sizes.split(',')):
    big = size >= 128
    n = max(4, args.n // 4) if big else args.n
    batch = max(4, args.batch // 4) if big else args.batch
    for name in args.methods.split(','):
      method, variables, net = configs[name]
      writer = _writer_rate(method, variables, net, size, n)
      op, compile_s = _batched_rate(method, variables, net, size, batch)
      compile_txt = '-' if compile_s is None else f'{compile_s:.1f}'
      print(f'| {name} | {size} | {writer:.1f} ({n}) | {op:.1f} ({batch}) | {compile_txt} |',
            flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
