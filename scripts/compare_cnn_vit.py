"""CNNs vs Transformers on the 7 CIFAR cue-conflict classes: one figure and one table from
several finished classify runs (each evaluated on the cue-conflict stimuli), grouped by
model label (config model.label), mean and spread over their seeds, beside the humans.

  python scripts/compare_cnn_vit.py --runs /tmp/runs/classify_resnet20 \
    /tmp/runs/classify_resnet20_seed1 /tmp/runs/classify_vit --out /tmp/runs/cnn_vs_vit

Writes OUT/shape_bias.png (per-class shape bias, vertical lines at each model's mean),
OUT/comparison.md and OUT/comparison.json (test accuracy, shape bias, shape/texture
accuracy, kappa vs humans, class-wise and inter-class JS distances, edges/silhouettes
accuracy: mean, std, min, max over seeds); prints the markdown table.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from awesome_jax import cifar_cue_conflict  # pylint: disable=wrong-import-position


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--runs', nargs='+', required=True, help='classify workdirs')
  ap.add_argument('--out', required=True, help='folder for the figure and the tables')
  ap.add_argument('--title', default='CNN vs ViT on the 7 CIFAR cue-conflict classes')
  args = ap.parse_args()
  try:
    cifar_cue_conflict.compare_runs(args.runs, args.out, args.title)
  except cifar_cue_conflict.RunError as e:
    sys.exit(f'error: {e}')
  cifar_cue_conflict.print_comparison(args.out)


if __name__ == '__main__':
  main()
