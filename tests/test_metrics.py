import json
import os
import subprocess
import sys

from awesome_jax import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(workdir, rows):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')


def test_eval_curve_takes_eval_and_final_points_last_line_wins(tmp_path):
  write_jsonl(tmp_path, [
      {'step': 50, 'train/acc': 0.2},
      {'step': 100, 'eval/test_acc': 0.30},
      {'step': 200, 'eval/test_acc': 0.40},
      {'step': 200, 'eval/test_acc': 0.45},  # the step again after a resume
      {'step': 300, 'final/test_acc': 0.50, 'final/other': 1.0}])
  assert metrics.eval_curve(str(tmp_path)) == ([100, 200, 300], [0.30, 0.45, 0.50])
  assert metrics.eval_curve(str(tmp_path), 'other') == ([300], [1.0])


def test_plot_curves_cli_writes_png_and_skips_runs_without_points(tmp_path):
  write_jsonl(tmp_path / 'a', [{'step': 10, 'eval/test_acc': 0.5}, {'step': 20, 'final/test_acc': 0.6}])
  write_jsonl(tmp_path / 'b', [{'step': 10, 'train/acc': 0.5}])
  out = tmp_path / 'curves.png'
  r = subprocess.run([sys.executable, 'scripts/plot_curves.py', str(out), f'masked={tmp_path / "a"}',
                      f'empty={tmp_path / "b"}', '--steps_per_epoch', '10'],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == f'{out}: masked'
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  r = subprocess.run([sys.executable, 'scripts/plot_curves.py', str(out), f'x={tmp_path / "none"}'],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 2 and 'run x: no metrics.jsonl in' in r.stderr


def test_plots_leave_the_callers_matplotlib_backend_and_figures_alone(tmp_path):
  # A notebook has its own (inline) backend and figures: saving our PNGs must not switch
  # the backend (matplotlib.use) nor leave figures registered with pyplot.
  code = f'''
import os, sys
import matplotlib
matplotlib.use('svg')
import matplotlib.pyplot as plt
import numpy as np
from awesome_jax import metrics
from awesome_jax.tasks import distill as distill_task, edge_popup
plt.figure()
out = {str(tmp_path)!r}
os.makedirs(os.path.join(out, 'run'))
with open(os.path.join(out, 'run', 'metrics.jsonl'), 'w') as f:
  f.write('{{"step": 10, "eval/test_acc": 0.5}}\\n')
metrics.plot_curves(os.path.join(out, 'c.png'), [('a', os.path.join(out, 'run'))], 10)
edge_popup.plot_sweep(os.path.join(out, 's.png'),
                      [('dense', '', 1.0, 0.5, ''), ('masked', 'signed_constant', 0.5, 0.4, 0.1)], 'x')
distill_task.save_grid(os.path.join(out, 'g.png'), np.zeros((2, 3, 8, 8, 1)), np.zeros((2, 3)),
                       lrs=np.ones(2))
print(matplotlib.get_backend(), plt.get_fignums())
'''
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert r.stdout.split('\n')[-2] == 'svg [1]'
  for name in ('c.png', 's.png', 'g.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
