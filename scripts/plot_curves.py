"""Test accuracy vs epoch of several runs in one figure (their metrics.jsonl).

  python scripts/plot_curves.py results/conv8.png "masked=/tmp/w/conv8_e100" \
    "dense=/tmp/w/conv8_dense_e100" [--steps_per_epoch 390] [--title "Conv8, CIFAR-10"]

steps_per_epoch: 390 for CIFAR-10 at batch 128 (the edge-popup runs).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from awesome_jax import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('out')
  ap.add_argument('runs', nargs='+', help='LABEL=WORKDIR')
  ap.add_argument('--steps_per_epoch', type=float, default=390)
  ap.add_argument('--key', default='test_acc')
  ap.add_argument('--title', default='')
  args = ap.parse_args()
  runs = []
  for r in args.runs:
    if '=' not in r:
      ap.error(f'run {r!r}: expected LABEL=WORKDIR')
    label, workdir = r.split('=', 1)
    if not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
      ap.error(f'run {label}: no metrics.jsonl in {workdir}')
    runs.append((label, workdir))
  plotted = metrics.plot_curves(args.out, runs, args.steps_per_epoch, args.key, args.title)
  print(f'{args.out}: {", ".join(plotted) or "no points"}')


if __name__ == '__main__':
  main()
