"""The continual, distill (unsharded), distill_adapt and shape_bias tasks through main on 2
processes joined by jax.distributed on localhost (as in tests/test_multidevice_train.py).

These tasks split nothing over the processes: each computes everything, so both exit 0
with the numbers of a 1-process run (results.json equal but for the wall-clock fields),
and process 0 alone writes the outputs: an audit hook in each process lists the files it
opened for writing, renamed or removed in the workdir, and process 1's list is empty but
for orbax's checkpoint folders (written by all processes together, checkpoint.py).
"""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.test_shape_bias import stimulus_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `python -m awesome_jax.main ARGS` after an audit hook that records every file the process
# writes under WORKDIR (argv[1], taken out of argv) outside the checkpoint folders, and
# prints them as a WRITES line at exit.
AUDITED_MAIN = r'''
import atexit, json, os, runpy, sys
workdir = os.path.abspath(sys.argv.pop(1)) + os.sep
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {'os.rename': 2, 'os.remove': 1, 'os.rmdir': 1, 'shutil.rmtree': 1,
           'os.truncate': 1, 'os.link': 2, 'os.symlink': 2}
writes = set()

def hook(event, args):
  if event == 'open':
    path, mode, flags = args
    if not (any(c in mode for c in 'wax+') if isinstance(mode, str) else
            (flags or 0) & WRITE_FLAGS):
      return
    paths = [path]
  elif event in CHANGES:
    paths = args[:CHANGES[event]]
  else:
    return
  for path in paths:
    if not isinstance(path, (str, bytes, os.PathLike)):
      continue
    path = os.path.abspath(os.fsdecode(path))
    if path.startswith(workdir):
      rel = path[len(workdir):]
      if not {'checkpoints', 'distill_checkpoints'} & set(rel.split(os.sep)):
        writes.add(rel)

sys.addaudithook(hook)
atexit.register(lambda: print('WRITES ' + json.dumps(sorted(writes)), flush=True))
runpy.run_module('awesome_jax.main', run_name='__main__', alter_sys=True)
'''

# wall-clock fields of results.json, different in every run
CLOCK = ('seconds_this_run', 'eval_seconds', 'images_per_second')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def run_two_and_one(tmp_path, args):
  """`main args` on 2 processes (workdir tmp_path/'two') and, at the same time, on 1
  (tmp_path/'one'); checks that all three exit 0; -> the 2 processes' WRITES lists."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_PROCESSES='2',
             JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}')
  two = tmp_path / 'two'
  procs = [subprocess.Popen([sys.executable, '-c', AUDITED_MAIN, str(two), f'--workdir={two}',
                             *args], cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(i)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    single = subprocess.run([sys.executable, '-m', 'awesome_jax.main',
                             f'--workdir={tmp_path / "one"}', *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, JAX_PLATFORMS='cpu'))
    outs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:  # one that waits for the other forever
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  return [json.loads(next(line for line in out.splitlines()
                          if line.startswith('WRITES '))[len('WRITES '):]) for out in outs]


def results(workdir, name='results.json'):
  """A results.json without its wall-clock fields and with WORKDIR for the workdir."""
  text = (workdir / name).read_text().replace(str(workdir), 'WORKDIR')

  def strip(obj):
    if isinstance(obj, dict):
      return {k: strip(v) for k, v in obj.items() if k not in CLOCK}
    return [strip(v) for v in obj] if isinstance(obj, list) else obj

  return strip(json.loads(text))


def files(workdir):
  """The files under workdir outside the checkpoint folders (event files by folder)."""
  out = []
  for folder, dirs, names in os.walk(workdir):
    dirs[:] = [d for d in dirs if d not in ('checkpoints', 'distill_checkpoints')]
    rel = os.path.relpath(folder, workdir)
    out += [os.path.join(rel, 'events.out' if n.startswith('events.out') else n)
            for n in names]
  return sorted(out)


def assert_written_once(tmp_path, writes, outputs):
  """Process 1 wrote nothing, process 0 the `outputs`, and the 2-process workdir holds
  the files of the 1-process one."""
  assert writes[1] == [], writes[1]
  assert set(outputs) <= set(writes[0]), writes[0]
  assert files(tmp_path / 'two') == files(tmp_path / 'one')


# distributed.writer_first and sync in each process: a fetch that finds or makes FOLDER/file
# (argv[1]; process 0 makes it), then one that fails on process 0; prints a RESULT line.
HELPERS = r'''
import json, os, sys
from awesome_jax import distributed
distributed.maybe_initialize(os.environ)
import jax
path = os.path.join(sys.argv[1], 'file')
found = []

def fetch():
  found.append(os.path.exists(path))
  if distributed.is_writer():
    with open(path, 'w') as f:
      f.write('fetched')
  return jax.process_index()

def fail():
  raise OSError('no network')

got = distributed.writer_first(fetch, 'data.x_root')
distributed.sync('fetched')
try:
  distributed.writer_first(fail, 'data.x_root', ValueError)
except (OSError, ValueError) as e:
  error = f'{type(e).__name__}: {e}'
print('RESULT ' + json.dumps([got, found, error]), flush=True)
'''


def test_distributed_helpers_on_one_process():
  """One process: sync waits for nothing, writer_first is fetch() (its error as it is)."""
  from awesome_jax import distributed  # pylint: disable=g-import-not-at-top
  calls = []
  assert distributed.sync('nothing to wait for') is None
  assert distributed.writer_first(lambda: calls.append(1) or 'out', 'data.x_root') == 'out'
  assert calls == [1]

  def fail():
    raise OSError('no network')

  with pytest.raises(OSError, match='no network'):
    distributed.writer_first(fail, 'data.x_root', ValueError)


@pytest.mark.multiprocess
def test_distributed_helpers_on_two_processes(tmp_path):
  """writer_first: process 0 fetches first, process 1 after it (finds its file); process
  0's error is its own, process 1's a line naming the fields."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_PROCESSES='2',
             JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}')
  procs = [subprocess.Popen([sys.executable, '-c', HELPERS, str(tmp_path)], cwd=ROOT,
                            env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=120)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  got = []
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    got.append(json.loads(next(line for line in out.splitlines()
                               if line.startswith('RESULT '))[len('RESULT '):]))
  assert got[0] == [0, [False], 'OSError: no network']
  assert got[1] == [1, [True], 'ValueError: data.x_root: process 0 could not fetch the '
                    'published files (its error says why)']


@pytest.mark.multiprocess
def test_continual_on_two_processes(tmp_path):
  """A distilled memory of 2 tasks: stage checkpoints, the distillation's own checkpoints
  (removed by process 0 once its memory is saved), memory.npz / .png, the results."""
  writes = run_two_and_one(tmp_path, [
      '--config=configs/continual.py:tiny', '--config.progress_bar=False',
      '--config.stream.num_tasks=2', '--config.memory.kind=distilled',
      '--config.memory.distill.outer_steps=4', '--config.memory.distill.checkpoint_every=2',
      '--config.memory.distill.log_every=2', '--config.memory.distill.eval_nets=0'])
  assert_written_once(tmp_path, writes, [
      'config.json', 'results.json', 'accuracy.png', 'distilled/results.json',
      'distilled/metrics.jsonl', 'distilled/memory.npz', 'distilled/memory.png'])
  two, one = tmp_path / 'two', tmp_path / 'one'
  assert results(two) == results(one)
  assert sorted(os.listdir(two / 'distilled' / 'checkpoints')) == ['2', '3']  # of 3 stages
  assert not (two / 'distilled' / 'distill_checkpoints').exists()
  lines = lambda workdir: (workdir / 'distilled' / 'metrics.jsonl').read_text().splitlines()
  assert lines(two) == lines(one)  # once, by process 0
  with np.load(two / 'distilled' / 'memory.npz') as a, \
       np.load(one / 'distilled' / 'memory.npz') as b:
    assert sorted(a.files) == sorted(b.files)
    for name in b.files:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.multiprocess
def test_distill_unsharded_on_two_processes(tmp_path):
  """distill.shard=False: every process distils the whole batch; checkpoints of host
  copies, the best-on-validation sets (periodic and final), the outputs."""
  writes = run_two_and_one(tmp_path, [
      '--config=configs/distill.py:tiny', '--config.progress_bar=False',
      '--config.distill.shard=False', '--config.outer.steps=2',
      '--config.checkpoint_every=1', '--config.log_every=1', '--config.eval.every=1',
      '--config.eval.select=val', '--config.eval.every_num_inits=2',
      '--config.eval.num_inits=2', '--config.eval.baselines=False'])
  assert_written_once(tmp_path, writes, [
      'config.json', 'results.json', 'metrics.jsonl', 'distilled.npz', 'distilled.png'])
  two, one = tmp_path / 'two', tmp_path / 'one'
  assert results(two) == results(one)
  assert sorted(os.listdir(two / 'checkpoints')) == ['1', '2']
  assert (two / 'metrics.jsonl').read_text() == (one / 'metrics.jsonl').read_text()
  for name in ['distilled.npz'] + [f'best_val/{f}' for f in os.listdir(one / 'best_val')]:
    with np.load(two / name) as a, np.load(one / name) as b:
      assert sorted(a.files) == sorted(b.files)
      for key in b.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{name}: {key}')


@pytest.mark.multiprocess
def test_distill_adapt_on_two_processes(tmp_path):
  """Pools trained in chunks (each saved, then removed, by process 0 alone), the
  distillation checkpointed, the outputs."""
  writes = run_two_and_one(tmp_path, [
      '--config=configs/applications.py:tiny_adapt', '--config.progress_bar=False',
      '--config.outer.steps=4', '--config.checkpoint_every=2', '--config.log_every=2',
      '--config.eval.baselines=False', '--config.eval.finetune_epochs=0',
      '--config.pretrain.epochs=1'])
  assert_written_once(tmp_path, writes, [
      'results.json', 'results.png', 'distilled.npz', 'distilled.png', 'test_nets.npz',
      'metrics.jsonl'])
  parts = [f for f in writes[0] if re.search(r'\.part\d+\.npz$', f)]
  assert len(parts) == 3, writes[0]  # chunks: 2 of the 4 training nets, 1 of the 2 test
  two, one = tmp_path / 'two', tmp_path / 'one'
  assert results(two) == results(one)
  assert sorted(os.listdir(two / 'checkpoints')) == ['2', '4']
  for name in ('distilled.npz', 'test_nets.npz'):
    with np.load(two / name) as a, np.load(one / name) as b:
      assert sorted(a.files) == sorted(b.files)
      for key in b.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{name}: {key}')


@pytest.mark.multiprocess
def test_shape_bias_on_two_processes(tmp_path):
  """A random ViT-Ti/16 on generated stimuli and human CSVs: decisions CSV, figures."""
  config = stimulus_tree(tmp_path)
  writes = run_two_and_one(tmp_path, [
      '--config=configs/shape_bias.py', '--config.progress_bar=False',
      '--config.conditions=cue-conflict', '--config.models=vit_ti16=random',
      f'--config.data.stimuli_root={config.data.stimuli_root}',
      f'--config.data.humans_root={config.data.humans_root}'])
  assert_written_once(tmp_path, writes, [
      'results.json', 'shape_bias.png', 'kappa.png', 'decisions_vit_ti16_cue-conflict.csv'])
  two, one = tmp_path / 'two', tmp_path / 'one'
  assert results(two) == results(one)
  csv = 'decisions_vit_ti16_cue-conflict.csv'
  assert (two / csv).read_text() == (one / csv).read_text()
