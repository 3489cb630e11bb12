"""Metrics to the workdir: TensorBoard event files (tensorboardX) and metrics.jsonl."""

import json
import os

import numpy as np


class MetricWriter:
  """`write(step, {'name': value})` to TensorBoard and one JSON line per call."""

  def __init__(self, workdir):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    self._tb = SummaryWriter(logdir=workdir)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def write(self, step, metrics):
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
    self._jsonl.flush()

  def close(self):
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
