"""Geirhos et al. 2019 (Table 2, Fig. 5) at CIFAR scale: one table and one figure of classify
runs named by what they were trained on, e.g. ResNet-20 on CIFAR-10 (IN), stylized CIFAR-10
(SIN), both (SIN+IN), and SIN+IN fine-tuned on CIFAR-10 (SIN+IN->IN); their commands are in
configs/classify.py.

  python scripts/compare_stylized.py --runs IN=/tmp/runs/stylized/in \\
    SIN=/tmp/runs/stylized/sin SIN+IN=/tmp/runs/stylized/sin_in \\
    'SIN+IN->IN=/tmp/runs/stylized/sin_in_in' --out /tmp/runs/stylized/compare

Each --runs item is NAME=WORKDIR, a finished classify run with cue-conflict results (a
NAME given several times: its seeds, mean ± std). Writes OUT/comparison.md and
OUT/comparison.json (the accuracy on each extra test set of the runs, data.extra_test,
e.g. cifar10 and stylized; the shape bias with its bootstrap interval, shape and texture
accuracy, edges and silhouettes accuracy) and OUT/shape_bias.png (per-class shape bias of
each run beside the humans, vertical lines at the means); prints the markdown table.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from awesome_jax import cifar_cue_conflict as cc  # pylint: disable=wrong-import-position

# after the extra test accuracies: the cue-conflict numbers of the table
COLUMNS = (('shape_bias', 'shape bias'), ('shape_acc', 'shape acc'),
           ('texture_acc', 'texture acc'), ('edge_accuracy', 'edges acc'),
           ('silhouette_accuracy', 'silhouettes acc'))


def read_groups(items):
  """{NAME: [cc.read_run(WORKDIR), ...]} of the NAME=WORKDIR `items`."""
  groups = {}
  for item in items:
    name, sep, workdir = item.partition('=')
    if not sep or not name or not workdir:
      raise cc.RunError(f'--runs {item!r}: not NAME=WORKDIR (e.g. SIN=/tmp/runs/stylized/sin)')
    groups.setdefault(name, []).append(cc.read_run(workdir))
  return groups


def columns(groups):
  """The table's columns: every extra test set of the runs (first seen first), then
  COLUMNS. The runs must have tested a set of one name on the same folder."""
  folders = {}
  for group in groups.values():
    for r in group:
      tested = r['results'].get('extra_test_dirs') or {}
      for name in r['results'].get('extra_test') or {}:
        folder, known = tested.get(name), folders.get(name)
        if folder and known and folder != known:
          raise cc.RunError(f'{r["workdir"]}: extra test set {name!r} is {folder}, another '
                            f"run's is {known}")
        folders[name] = known or folder
  if not folders:
    raise cc.RunError('no run has extra test accuracies: re-run their commands with '
                      '--config.data.extra_test=cifar10=DIR,stylized=DIR (they only evaluate)')
  return tuple((cc.EXTRA_TEST + name, f'{name} test acc') for name in folders) + COLUMNS


def compare(items, out_dir, title=''):
  """The comparison.json dict of the NAME=WORKDIR `items`, written into `out_dir`."""
  groups = read_groups(items)
  return cc.compare_groups(groups, out_dir, title, columns(groups))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--runs', nargs='+', required=True, help='NAME=WORKDIR of classify runs')
  ap.add_argument('--out', required=True, help='folder for the figure and the tables')
  ap.add_argument('--title', default='ResNet-20 trained on CIFAR-10 (IN), stylized CIFAR-10 '
                  '(SIN) or both, on the 7 CIFAR cue-conflict classes')
  args = ap.parse_args()
  try:
    compare(args.runs, args.out, args.title)
  except cc.RunError as e:
    sys.exit(f'error: {e}')
  cc.print_comparison(args.out)


if __name__ == '__main__':
  main()
