"""Parity of the zoo's torchvision CNNs with torchvision itself, on random weights.

For each model: torchvision builds it with its random init, in eval mode (`--randomize
all`, the default, also draws the batch norm weights, running means and variances and all
biases at random: torchvision's init leaves them 1, 0, 1, 0, where a swapped mapping would
go unseen), saves its state dict with torch.save (zip format; vgg16_bn and alexnet in the
legacy format, so both readers are exercised) and its logits on a random batch, in float32
and in float64. Then our converter reads the file without torch and the Flax model runs the
same batch twice, jitted as the zoo evaluates (`zoo.jit`): in float64 and in float32.

The parity criterion is float64 against float64 (`f64 diff`, bar `--bar`): free of float32
rounding, it is ~1e-12 when the converted model computes the same function as torchvision's
(a batch-norm eps of 1e-3, the stride on the bottleneck's 1x1 conv or 'SAME' padding moved
ResNet-50's by 22-87). The float32 columns say how float32 behaves at each model's scale:
max |logit difference| to torch's float32 logits, absolute and relative to max |logit|,
and ours' and torch's own float32 errors against torch's float64 logits. With random batch
norm statistics ResNet-34/50 reach logits of ~1,000, where one float32 ulp is ~1e-4, so
their absolute float32 differences are ~5e-4 while relative ones stay below 1e-6. A
float32 relative difference above `--f32_rel_bar` (a float32-only fault, e.g. a
lower-precision step) fails too.

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
  """Prints one row per model; returns (worst float64 diff, worst float32 relative diff)."""
  import jax  # pylint: disable=import-outside-toplevel
  if args.precision != 'default':
    jax.config.update('jax_default_matmul_precision', args.precision)
  from awesome_jax.models import torchvision_cnn, zoo  # pylint: disable=import-outside-toplevel

  x = np.load(os.path.join(args.workdir, 'x.npy')).transpose(0, 2, 3, 1)   # NCHW -> NHWC
  print(f'ours: jax {jax.__version__}, jit with the zoo\'s XLA options {zoo.compiler_options()}')
  worst64 = worst_rel = 0.0
  print(f'{"model":10s} {"format":7s} {"f64 diff":>9s} | {"f32 diff":>9s} {"max|logit|":>10s} '
        f'{"rel":>9s} {"ours-f64":>9s} {"torch-f64":>9s} | {"convert s":>9s} {"forward s":>9s}')
  for name in args.models:
    entry = torchvision_cnn.ZOO_ENTRIES[name]
    start = time.perf_counter()
    variables = entry.convert(os.path.join(args.workdir, f'{name}.pth'))
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    logits = np.asarray(zoo.jit(entry.build().apply)(variables, x))
    forward_s = time.perf_counter() - start                   # compile included
    with jax.enable_x64(True):
      variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
      logits64 = np.asarray(zoo.jit(entry.build().apply)(variables64, x.astype(np.float64)))
    assert logits.dtype == np.float32 and logits64.dtype == np.float64
    want = np.load(os.path.join(args.workdir, f'{name}_logits.npy'))
    exact = np.load(os.path.join(args.workdir, f'{name}_logits64.npy'))
    diff64 = float(np.abs(logits64 - exact).max())
    diff = float(np.abs(logits - want).max())
    scale = float(np.abs(exact).max())
    worst64, worst_rel = max(worst64, diff64), max(worst_rel, diff / scale)
    fmt = 'legacy' if name in LEGACY else 'zip'
    print(f'{name:10s} {fmt:7s} {diff64:9.2e} | {diff:9.2e} {scale:10.4g} {diff / scale:9.2e} '
          f'{np.abs(logits - exact).max():9.2e} {np.abs(want - exact).max():9.2e} | '
          f'{convert_s:9.2f} {forward_s:9.2f}', flush=True)
    del variables, variables64
  return worst64, worst_rel


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
  parser.add_argument('--bar', type=float, default=1e-4,
                      help='max |logit diff| allowed, float64 (ours) vs float64 (torch)')
  parser.add_argument('--f32_rel_bar', type=float, default=1e-5,
                      help='max |logit diff| / max |logit| allowed, float32 vs float32')
  parser.add_argument('--torch_python', default=sys.executable)
  parser.add_argument('--workdir', default=None, help='default: a temporary folder')
  parser.add_argument('--torch_side', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_side:
    return torch_side(args)

  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    args.workdir = args.workdir or tmp
    os.makedirs(args.workdir, exist_ok=True)
    command = [args.torch_python, os.path.abspath(__file__), '--torch_side',
               '--workdir', args.workdir, '--batch', str(args.batch), '--size',
               str(args.size), '--seed', str(args.seed), '--threads', str(args.threads),
               '--randomize', args.randomize,
               '--models', *args.models]
    print(f'torch side: {args.torch_python}', flush=True)
    subprocess.run(command, check=True)
    worst64, worst_rel = jax_side(args)
  ok = worst64 <= args.bar and worst_rel <= args.f32_rel_bar
  print(f'worst float64 max|diff| {worst64:.2e} (bar {args.bar:g}); worst float32 relative '
        f'max|diff| {worst_rel:.2e} (bar {args.f32_rel_bar:g}): {"met" if ok else "NOT MET"}; '
        f'wall {time.perf_counter() - start:.0f} s')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
