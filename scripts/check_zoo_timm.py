"""Checks the zoo's ViTs against timm on random weights: same state dict, same images.

Two halves, so that torch never runs next to JAX: the reference half (needs torch + timm:
`pip install torch timm`) creates timm's models (pretrained=False, eval, timm's init
plus N(0, 0.02) noise on every tensor so that zero biases and unit LayerNorm scales
are exercised too), saves each state dict with torch.save, a random batch and timm's
logits in float32 and in float64; the JAX half converts each file with `vit_convert`
(timm format: exact GELU), runs the same batch (jitted as the zoo evaluates, `zoo.jit`) in
float64 and in float32 and prints max |logit diff| and wall times. It also compares the
bicubic position-embedding resize with timm's `resample_abs_pos_embed`.

The parity criterion is float64 against float64 (`f64 diff`, bar --tol; ~1e-13 when the
two compute the same function), as in check_zoo_torchvision.py; the float32 columns give
max |logit diff| to timm's float32 logits, max |logit|, the relative difference (bar
--f32-rel-tol) and ours' and timm's own float32 errors against timm's float64 logits.

  python scripts/check_zoo_timm.py --reference-python=/path/to/venv_with_timm/bin/python

Exits 1 if the float64 difference exceeds --tol or the float32 relative one --f32-rel-tol.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

TIMM_TO_ZOO = {'vit_tiny_patch16_224': 'vit_ti16', 'vit_small_patch16_224': 'vit_s16',
               'vit_base_patch16_224': 'vit_b16', 'vit_base_patch32_224': 'vit_b32',
               'vit_large_patch16_224': 'vit_l16'}
DEFAULT_MODELS = 'vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224'
POSEMB_CASES = ((14, 16), (14, 10), (7, 24))  # (old grid, new grid)


def make_reference(workdir, models, batch, threads):
  """The torch half: state dicts, images (NHWC) and timm's logits into `workdir`."""
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from timm.layers import resample_abs_pos_embed  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  x = torch.randn(batch, 3, 224, 224)
  report = {'torch': torch.__version__, 'timm': timm.__version__, 'models': {}}
  arrays = {'images': x.permute(0, 2, 3, 1).numpy()}
  for name in models:
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
      for p in model.parameters():
        p.add_(0.02 * torch.randn_like(p))
      torch.save(model.state_dict(), os.path.join(workdir, f'{name}.pth'))
      start = time.perf_counter()
      logits = model(x)
      first = time.perf_counter() - start
      start = time.perf_counter()
      model(x)
      second = time.perf_counter() - start
      logits64 = model.double()(x.double())
      model.float()
    arrays[f'logits/{name}'] = logits.numpy()
    arrays[f'logits64/{name}'] = logits64.numpy()
    act = model.blocks[0].mlp.act
    report['models'][name] = {'first_s': first, 'second_s': second,
                              'gelu': f'{type(act).__name__}({getattr(act, "approximate", "")})'}
  for old, new in POSEMB_CASES:
    posemb = torch.randn(1, 1 + old * old, 8)
    arrays[f'posemb/{old}/{new}/in'] = posemb.numpy()
    arrays[f'posemb/{old}/{new}/out'] = resample_abs_pos_embed(
        posemb, new_size=[new, new], num_prefix_tokens=1).numpy()
  np.savez(os.path.join(workdir, 'reference.npz'), **arrays)
  with open(os.path.join(workdir, 'reference.json'), 'w') as f:
    json.dump(report, f)


def check(workdir, models, tol, f32_rel_tol):
  """The JAX half: convert, run, compare; returns (worst float64 logit difference, worst
  float32 relative one)."""
  import jax  # pylint: disable=g-import-not-at-top
  from awesome_jax.models import vit_convert, zoo  # pylint: disable=g-import-not-at-top
  ref = np.load(os.path.join(workdir, 'reference.npz'))
  with open(os.path.join(workdir, 'reference.json')) as f:
    info = json.load(f)
  x = ref['images']
  print(f'torch {info["torch"]}, timm {info["timm"]}, jax {jax.__version__} '
        f'({jax.devices()[0].platform}, XLA options {zoo.compiler_options()}); batch {len(x)} '
        'random 224x224 images')
  print(f'{"model":24s} {"f64 diff":>9s} | {"f32 diff":>9s} {"max|logit|":>10s} {"rel":>9s} '
        f'{"ours-f64":>9s} {"timm-f64":>9s} | {"convert s":>9s} {"jax 1st s":>9s} '
        f'{"jax 2nd s":>9s} {"timm 1st s":>10s} {"timm 2nd s":>10s}')
  worst64 = worst_rel = 0.0
  for name in models:
    entry = vit_convert.ZOO_ENTRIES[TIMM_TO_ZOO[name]]
    path = os.path.join(workdir, f'{name}.pth')
    start = time.perf_counter()
    variables = entry.convert(path)
    convert_s = time.perf_counter() - start
    model = entry.build(weight_format=vit_convert.weight_format(path))
    assert model.gelu == 'exact'
    forward = zoo.jit(model.apply)   # as the zoo evaluates
    start = time.perf_counter()
    ours = np.asarray(forward(variables, x))
    first = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(forward(variables, x))
    second = time.perf_counter() - start
    with jax.enable_x64(True):
      variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
      ours64 = np.asarray(zoo.jit(model.apply)(variables64, x.astype(np.float64)))
    assert ours.dtype == np.float32 and ours64.dtype == np.float64
    theirs, exact = ref[f'logits/{name}'], ref[f'logits64/{name}']
    diff64 = float(np.abs(ours64 - exact).max())
    diff = float(np.abs(ours - theirs).max())
    scale = float(np.abs(exact).max())
    worst64, worst_rel = max(worst64, diff64), max(worst_rel, diff / scale)
    t = info['models'][name]
    fail = diff64 > tol or diff / scale > f32_rel_tol
    print(f'{name:24s} {diff64:9.2e} | {diff:9.2e} {scale:10.3f} {diff / scale:9.2e} '
          f'{np.abs(ours - exact).max():9.2e} {np.abs(theirs - exact).max():9.2e} | '
          f'{convert_s:9.2f} {first:9.2f} {second:9.2f} {t["first_s"]:10.2f} '
          f'{t["second_s"]:10.2f} timm act {t["gelu"]}{"  FAIL" if fail else ""}')
    del variables, variables64
  for old, new in POSEMB_CASES:
    ours = vit_convert.resize_posemb(ref[f'posemb/{old}/{new}/in'], (new, new), 'bicubic')
    diff = float(np.abs(ours - ref[f'posemb/{old}/{new}/out']).max())
    print(f'posemb bicubic {old}x{old} -> {new}x{new}: max |diff| vs timm '
          f'resample_abs_pos_embed {diff:.2e}')
  return worst64, worst_rel


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--models', default=DEFAULT_MODELS, help='timm names, comma-separated')
  ap.add_argument('--reference-python', default=sys.executable,
                  help='a Python with torch and timm')
  ap.add_argument('--batch', type=int, default=2)
  ap.add_argument('--threads', type=int, default=2, help='torch threads')
  ap.add_argument('--tol', type=float, default=1e-4,
                  help='max |logit diff| allowed, float64 (ours) vs float64 (timm)')
  ap.add_argument('--f32-rel-tol', type=float, default=1e-5,
                  help='max |logit diff| / max |logit| allowed, float32 vs float32')
  ap.add_argument('--workdir', default=None, help='keep the files here (default: a temp dir)')
  ap.add_argument('--make-reference', default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  models = [m for m in args.models.split(',') if m]
  unknown = [m for m in models if m not in TIMM_TO_ZOO]
  if unknown:
    sys.exit(f'--models: unknown {unknown}; allowed {", ".join(TIMM_TO_ZOO)}')
  if args.make_reference:
    make_reference(args.make_reference, models, args.batch, args.threads)
    return
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    os.makedirs(workdir, exist_ok=True)
    subprocess.run([args.reference_python, os.path.abspath(__file__), '--models', args.models,
                    '--batch', str(args.batch), '--threads', str(args.threads),
                    '--make-reference', workdir], check=True)
    worst64, worst_rel = check(workdir, models, args.tol, args.f32_rel_tol)
  ok = worst64 <= args.tol and worst_rel <= args.f32_rel_tol
  print(f'worst float64 max |logit diff| {worst64:.2e} (bar {args.tol:g}); worst float32 '
        f'relative {worst_rel:.2e} (bar {args.f32_rel_tol:g}): {"met" if ok else "NOT MET"}')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
