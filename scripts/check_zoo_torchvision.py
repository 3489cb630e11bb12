"""Parity of the zoo's torchvision CNNs with torchvision itself, on random weights.

For each model: torchvision builds it with its random init, in eval mode (`--randomize
all`, the default, also draws the batch norm weights, running means and variances and all
biases at random: torchvision's init leaves them 1, 0, 1, 0, where a swapped mapping would
go unseen), saves its state dict with torch.save (zip format; vgg16_bn and alexnet in the
legacy format, so both readers are exercised) and its logits on a random batch, in float32
and in float64. Then our converter reads the file without torch and the Flax model runs the
same batch in float32 (`--x64`: float64); the script prints max |logit difference| to
torch's float32 logits (absolute, and relative to max |logit|) and, against float64 torch,
ours and torch's float32 errors: where they are of a size, a difference is accumulation
order (with `--x64` ours must vanish, ~1e-12: the conversion itself is exact).

The torch side runs in a subprocess of `--torch_python` (an interpreter with torch and
torchvision; this one by default), the JAX side here, so the two need not share an
environment:

  python scripts/check_zoo_torchvision.py --torch_python /path/to/venv_with_torchvision/bin/python
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

MODELS = ('resnet18', 'resnet34', 'resnet50', 'vgg16', 'vgg16_bn', 'alexnet')
LEGACY = ('vgg16_bn', 'alexnet')   # saved with torch's pre-1.6 serialization


def import_torchvision():
  """torchvision, after placeholder definitions of any `torchvision::` operator that the
  installed torch lacks (PyPI's CUDA torchvision wheels on a +cpu torch fail on
  `torchvision::nms` at import; the classification models never call those ops)."""
  import torch  # pylint: disable=import-outside-toplevel
  library = None
  for _ in range(32):
    try:
      import torchvision  # pylint: disable=import-outside-toplevel
      return torch, torchvision
    except RuntimeError as e:
      missing = re.search(r'operator torchvision::(\w+) does not exist', str(e))
      if not missing:
        raise
      library = library or torch.library.Library('torchvision', 'FRAGMENT')
      library.define(f'{missing.group(1)}(Tensor x) -> Tensor')
      print(f'  (placeholder for the missing op torchvision::{missing.group(1)})',
            flush=True)
      for name in [m for m in sys.modules if m.split('.')[0] == 'torchvision']:
        del sys.modules[name]
  raise RuntimeError('torchvision: too many missing operators')


def torch_side(args):
  """Writes <model>.pth, <model>_logits.npy and x.npy into args.workdir."""
  torch, torchvision = import_torchvision()
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  x = torch.from_numpy(np.random.default_rng(args.seed).normal(
      size=(args.batch, 3, args.size, args.size)).astype(np.float32))
  np.save(os.path.join(args.workdir, 'x.npy'), x.numpy())
  for name in args.models:
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
      for m in model.modules() if args.randomize == 'all' else ():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.weight.uniform_(0.5, 1.5)
          m.running_mean.normal_(0, 0.1)
          m.running_var.uniform_(0.5, 1.5)
        if getattr(m, 'bias', None) is not None:
          m.bias.normal_(0, 0.1)
      start = time.perf_counter()
      logits = model(x).numpy()
      seconds = time.perf_counter() - start
      logits64 = model.double()(x.double()).numpy()
      model.float()
    torch.save(model.state_dict(), os.path.join(args.workdir, f'{name}.pth'),
               _use_new_zipfile_serialization=name not in LEGACY)
    np.save(os.path.join(args.workdir, f'{name}_logits.npy'), logits)
    np.save(os.path.join(args.workdir, f'{name}_logits64.npy'), logits64)
    print(f'  torch {name}: forward {seconds:.2f} s', flush=True)


def jax_side(args):
  import jax  # pylint: disable=import-outside-toplevel
  if args.precision != 'default':
    jax.config.update('jax_default_matmul_precision', args.precision)
  dtype = np.float64 if args.x64 else np.float32
  if args.x64:
    jax.config.update('jax_enable_x64', True)
  from awesome_jax.models import torchvision_cnn  # pylint: disable=import-outside-toplevel

  x = np.load(os.path.join(args.workdir, 'x.npy')).transpose(0, 2, 3, 1)   # NCHW -> NHWC
  x = x.astype(dtype)
  worst = 0.0
  print(f'{"model":10s} {"format":7s} {"max|diff|":>10s} {"rel":>9s} {"max|logit|":>10s} '
        f'{"ours-f64":>9s} {"torch-f64":>9s} {"convert s":>9s} {"forward s":>9s}')
  for name in args.models:
    entry = torchvision_cnn.ZOO_ENTRIES[name]
    start = time.perf_counter()
    variables = entry.convert(os.path.join(args.workdir, f'{name}.pth'))
    variables = jax.tree.map(lambda a: a.astype(dtype), variables)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    logits = np.asarray(jax.jit(entry.build().apply)(variables, x))
    forward_s = time.perf_counter() - start                   # compile included
    want = np.load(os.path.join(args.workdir, f'{name}_logits.npy'))
    exact = np.load(os.path.join(args.workdir, f'{name}_logits64.npy'))
    diff = float(np.abs(logits - want).max())
    scale = float(np.abs(want).max())
    worst = max(worst, diff)
    fmt = 'legacy' if name in LEGACY else 'zip'
    print(f'{name:10s} {fmt:7s} {diff:10.2e} {diff / scale:9.2e} {scale:10.3g} '
          f'{np.abs(logits - exact).max():9.2e} {np.abs(want - exact).max():9.2e} '
          f'{convert_s:9.2f} {forward_s:9.2f}', flush=True)
    del variables
  return worst


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--threads', type=int, default=2, help='torch threads')
  parser.add_argument('--randomize', default='all', choices=('all', 'none'),
                      help='all: random batch norm weights / statistics and biases too; '
                      "none: torchvision's init as it is")
  parser.add_argument('--precision', default='default', choices=('default', 'highest'),
                      help="jax_default_matmul_precision")
  parser.add_argument('--x64', action='store_true',
                      help='run our side in float64 (the ours-f64 column then shows the '
                      'mapping alone, free of float32 rounding)')
  parser.add_argument('--bar', type=float, default=1e-4, help='max |logit diff| allowed')
  parser.add_argument('--torch_python', default=sys.executable)
  parser.add_argument('--workdir', default=None, help='default: a temporary folder')
  parser.add_argument('--torch_side', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_side:
    return torch_side(args)

  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    args.workdir = args.workdir or tmp
    command = [args.torch_python, os.path.abspath(__file__), '--torch_side',
               '--workdir', args.workdir, '--batch', str(args.batch), '--size',
               str(args.size), '--seed', str(args.seed), '--threads', str(args.threads),
               '--randomize', args.randomize,
               '--models', *args.models]
    print(f'torch side: {args.torch_python}', flush=True)
    subprocess.run(command, check=True)
    worst = jax_side(args)
  print(f'worst max|diff| {worst:.2e} (bar {args.bar:g}); '
        f'wall {time.perf_counter() - start:.0f} s')
  sys.exit(0 if worst <= args.bar else 1)


if __name__ == '__main__':
  main()
