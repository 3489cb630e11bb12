"""Parity of models/adain.py with a PyTorch AdaIN (pytorch-AdaIN's layout), random weights.

The torch side builds naoto0804/pytorch-AdaIN's two nn.Sequentials (the whole 53-layer
normalised VGG-19 and the decoder; our reading of its net.py), draws random weights
(He-uniform kernels and uniform biases: torch's default init would let a deep untrained
stack fade to near-constant features, where any mapping error hides), saves them (the vgg
file in torch's legacy format, the decoder as zip, so both readers run), and computes on
a random batch: relu1_1..relu4_1 (the Sequential cut at 4, 11, 18, 31 as its Net does),
the AdaIN target, and the decoded stylization at alpha 1 and 0.6 (its test.py's
style_transfer), in float32 and float64. The JAX side converts the two files without torch
and compares: max |diff| to torch float32 (absolute, and relative to max |torch|), and
both float32 errors against torch float64.

  python scripts/check_adain_torch.py --torch_python /path/to/venv_with_torch/bin/python
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ALPHAS = (1.0, 0.6)
OUTPUTS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'adain', 'out_a1.0', 'out_a0.6')


def torch_sequentials(nn):
  """pytorch-AdaIN's vgg (normalised VGG-19, 53 layers) and decoder Sequentials."""
  def conv3(i, o):
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(i, o, (3, 3)), nn.ReLU()]
  pool = lambda: nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)
  vgg = [nn.Conv2d(3, 3, (1, 1))] + conv3(3, 64) + conv3(64, 64) + [pool()]
  vgg += conv3(64, 128) + conv3(128, 128) + [pool()]
  vgg += conv3(128, 256) + conv3(256, 256) + conv3(256, 256) + conv3(256, 256) + [pool()]
  vgg += conv3(256, 512) + conv3(512, 512) + conv3(512, 512) + conv3(512, 512) + [pool()]
  vgg += conv3(512, 512) + conv3(512, 512) + conv3(512, 512) + conv3(512, 512)
  up = lambda: nn.UpsamplingNearest2d(scale_factor=2)
  dec = conv3(512, 256) + [up()] + conv3(256, 256) + conv3(256, 256) + conv3(256, 256)
  dec += conv3(256, 128) + [up()] + conv3(128, 128) + conv3(128, 64) + [up()]
  dec += conv3(64, 64) + conv3(64, 3)[:2]
  return nn.Sequential(*vgg), nn.Sequential(*dec)


def torch_side(args):
  """Writes vgg_normalised.pth, decoder.pth, content.npy, style.npy and <output>.npy /
  <output>_64.npy into args.workdir."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  vgg, dec = torch_sequentials(torch.nn)
  assert len(vgg) == 53 and len(dec) == 29, (len(vgg), len(dec))
  with torch.no_grad():
    for m in list(vgg) + list(dec):
      if isinstance(m, torch.nn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.uniform_(-np.sqrt(6 / fan_in), np.sqrt(6 / fan_in))
  torch.save(vgg.state_dict(), os.path.join(args.workdir, 'vgg_normalised.pth'),
             _use_new_zipfile_serialization=False)
  torch.save(dec.state_dict(), os.path.join(args.workdir, 'decoder.pth'))
  vgg.eval()
  dec.eval()
  rng = np.random.default_rng(args.seed)
  content = rng.random((args.batch, 3, args.size, args.size)).astype(np.float32)
  style = rng.random((args.batch, 3, args.style_size, args.style_size)).astype(np.float32)
  np.save(os.path.join(args.workdir, 'content.npy'), content)
  np.save(os.path.join(args.workdir, 'style.npy'), style)

  def mean_std(f, eps=1e-5):
    n, c = f.shape[:2]
    var = f.reshape(n, c, -1).var(dim=2) + eps
    return f.reshape(n, c, -1).mean(dim=2).reshape(n, c, 1, 1), var.sqrt().reshape(n, c, 1, 1)

  def adain(c, s):
    c_mean, c_std = mean_std(c)
    s_mean, s_std = mean_std(s)
    return (c - c_mean) / c_std * s_std + s_mean

  def run(dtype, suffix):
    v, d = vgg.to(dtype), dec.to(dtype)
    c, s = torch.from_numpy(content).to(dtype), torch.from_numpy(style).to(dtype)
    cuts = (4, 11, 18, 31)
    outs, x = {}, c
    start = time.perf_counter()
    with torch.no_grad():
      for name, (a, b) in zip(OUTPUTS[:4], zip((0,) + cuts[:3], cuts)):
        x = v[a:b](x)
        outs[name] = x
      encoder = v[:31]
      c_f, s_f = outs['relu4_1'], encoder(s)
      t = adain(c_f, s_f)
      outs['adain'] = t
      for alpha in ALPHAS:
        outs[f'out_a{alpha}'] = d(alpha * t + (1 - alpha) * c_f)
    seconds = time.perf_counter() - start
    for name, value in outs.items():
      value = value.numpy()
      if value.ndim == 4:
        value = value.transpose(0, 2, 3, 1)   # NCHW -> NHWC
      np.save(os.path.join(args.workdir, f'{name}{suffix}.npy'), value)
    return seconds

  print(f'  torch float32 forward {run(torch.float32, ""):.2f} s', flush=True)
  run(torch.float64, '_64')


def jax_side(args):
  """Prints the table; returns the worst relative difference."""
  import jax  # pylint: disable=import-outside-toplevel
  from awesome_jax.models import adain  # pylint: disable=import-outside-toplevel

  load = lambda name: np.load(os.path.join(args.workdir, name))
  start = time.perf_counter()
  enc_vars, dec_vars = adain.from_torch(os.path.join(args.workdir, 'vgg_normalised.pth'),
                                        os.path.join(args.workdir, 'decoder.pth'))
  convert_s = time.perf_counter() - start
  content = load('content.npy').transpose(0, 2, 3, 1)
  style = load('style.npy').transpose(0, 2, 3, 1)
  start = time.perf_counter()
  ours = dict(jax.device_get(adain.encode(enc_vars, content)))
  ours['adain'] = np.asarray(adain.target_features(enc_vars, content, style, 1.0))
  for alpha in ALPHAS:
    ours[f'out_a{alpha}'] = np.asarray(adain.stylize(enc_vars, dec_vars, content, style,
                                                     alpha))
  forward_s = time.perf_counter() - start
  print(f'content {content.shape[1]}x{content.shape[2]}, style '
        f'{style.shape[1]}x{style.shape[2]}, batch {content.shape[0]}; convert '
        f'{convert_s:.2f} s, forward (compile included) {forward_s:.1f} s')
  print(f'{"output":9s} {"shape":>18s} {"max|diff|":>10s} {"rel":>9s} {"max|torch|":>10s} '
        f'{"ours-f64":>9s} {"torch-f64":>9s}')
  worst = 0.0
  for name in OUTPUTS:
    want, exact = load(f'{name}.npy'), load(f'{name}_64.npy')
    got = np.asarray(ours[name])
    if got.shape != want.shape:
      print(f'{name:9s} shape {got.shape} != torch {want.shape}')
      return np.inf
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    worst = max(worst, diff / scale)
    print(f'{name:9s} {str(got.shape):>18s} {diff:10.2e} {diff / scale:9.2e} {scale:10.3g} '
          f'{np.abs(got - exact).max():9.2e} {np.abs(want - exact).max():9.2e}', flush=True)
  return worst


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=64, help='content height = width')
  parser.add_argument('--style_size', type=int, default=72, help='style height = width')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--threads', type=int, default=2, help='torch threads')
  parser.add_argument('--bar', type=float, default=1e-4,
                      help='max |diff| / max |torch| allowed, each output')
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
               '--workdir', args.workdir, '--size', str(args.size), '--style_size',
               str(args.style_size), '--batch', str(args.batch), '--seed', str(args.seed),
               '--threads', str(args.threads)]
    print(f'torch side: {args.torch_python}', flush=True)
    subprocess.run(command, check=True)
    worst = jax_side(args)
  print(f'worst max|diff| / max|torch| {worst:.2e} (bar {args.bar:g}); '
        f'wall {time.perf_counter() - start:.0f} s')
  sys.exit(0 if worst <= args.bar else 1)


if __name__ == '__main__':
  main()
