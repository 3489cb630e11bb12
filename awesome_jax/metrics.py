"""Metrics to the workdir: TensorBoard event files (tensorboardX) and metrics.jsonl."""

import json
import os

import numpy as np


class MetricWriter:
  """`write(step, {'name': value})` to TensorBoard and one JSON line per call.

  With several processes only process 0 writes; on the others the writer does nothing.
  """

  def __init__(self, workdir):
    from awesome_jax import distributed  # pylint: disable=g-import-not-at-top
    self._tb = self._jsonl = None
    if not distributed.is_writer():
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    self._tb = SummaryWriter(logdir=workdir)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write(self, step, metrics):
    if self._jsonl is None:
      return
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
    self._jsonl.flush()

  def close(self):
    if self._jsonl is not None:
      self._tb.close()
      self._jsonl.close()


def read_jsonl(workdir):
  """The metrics.jsonl of a workdir as a list of dicts."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def accuracy_in_batches(correct_fn, x, y, batch_size=1000):
  """Fraction correct, where correct_fn(x_batch, y_batch) counts the hits of a batch."""
  hits = 0
  for i in range(0, len(x), batch_size):
    hits += int(correct_fn(x[i:i + batch_size], y[i:i + batch_size]))
  return hits / len(x)


def eval_curve(workdir, key='test_acc'):
  """(steps, values) of every `eval/<key>` and `final/<key>` line of a workdir's
  metrics.jsonl, by step (a resumed run's repeated steps: the last line wins)."""
  points = {}
  for row in read_jsonl(workdir):
    for name in (f'eval/{key}', f'final/{key}'):
      if name in row:
        points[row['step']] = row[name]
  steps = sorted(points)
  return steps, [points[s] for s in steps]


def figure(figsize):
  """A matplotlib Figure that is not registered with pyplot: saving it needs no display
  and leaves the caller's backend alone (a notebook's inline plots keep working)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=figsize)


def plot_curves(path, runs, steps_per_epoch, key='test_acc', title=''):
  """One line per (label, workdir) of `runs`: `key` (in %) vs epoch; a run's last point is
  marked and labelled. Runs without any point are skipped; returns the labels plotted."""
  fig = figure((6, 4))
  ax = fig.subplots()
  plotted = []
  for label, workdir in runs:
    steps, values = eval_curve(workdir, key)
    if not steps:
      continue
    epochs = [s / steps_per_epoch for s in steps]
    line, = ax.plot(epochs, [100 * v for v in values], marker='.', label=label)
    ax.annotate(f'{100 * values[-1]:.2f}', (epochs[-1], 100 * values[-1]), fontsize=7,
                color=line.get_color(), xytext=(3, 0), textcoords='offset points')
    plotted.append(label)
  ax.margins(x=0.1)  # room for the last values' labels
  ax.set_xlabel('epoch')
  ax.set_ylabel(f'{key} (%)')
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return plotted
