"""scripts/run_queue.py driven with fake jobs (small Python commands, no JAX): outputs kept,
jobs killed at the deadline, estimates that do not fit, jobs side by side, failures."""

import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = os.path.join(ROOT, 'scripts', 'run_queue.py')

# argv: WORKDIR SECONDS [ignore_term]. Writes what a training run writes (metrics first,
# results.json last), a checkpoint that must not be copied, and its start and end times.
FAKE_JOB = """
import json, os, signal, sys, time
workdir, seconds = sys.argv[1], float(sys.argv[2])
if 'ignore_term' in sys.argv:
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
def write(name, text):
  os.makedirs(os.path.dirname(os.path.join(workdir, name)), exist_ok=True)
  with open(os.path.join(workdir, name), 'w') as f:
    f.write(text)
write('start.txt', repr(time.time()))
print('fake job running', flush=True)
write('metrics.jsonl', json.dumps({'step': 1, 'eval/test_acc': 0.25}) + '\\n')
write('checkpoints/1/state.txt', 'a checkpoint')
write('curve.png', 'not really a png')
time.sleep(seconds)
write('results.json', json.dumps({'test_acc': 0.75, 'per_class': [1, 2]}))
write('end.txt', repr(time.time()))
"""


def fake(tmp_path, name, seconds, *extra):
  script = tmp_path / 'fake_job.py'
  script.write_text(FAKE_JOB)
  return f'--cmd={name}=python {shlex.quote(str(script))} {{workdir}} {seconds} {" ".join(extra)}'


def queue(tmp_path, *args, budget_s=60):
  """Runs the queue; (its stdout, summary.json's jobs, wall seconds)."""
  t0 = time.monotonic()
  proc = subprocess.run([sys.executable, QUEUE, f'--workdir={tmp_path / "work"}',
                         f'--out={tmp_path / "out"}', f'--budget_s={budget_s}', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  wall = time.monotonic() - t0
  assert proc.returncode == 0, proc.stdout + proc.stderr
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  return proc.stdout, summary['jobs'], wall


def test_finished_job_keeps_its_small_outputs_and_is_not_rerun(tmp_path):
  stdout, jobs, _ = queue(tmp_path, fake(tmp_path, 'a', 0))
  assert 'finished a' in stdout
  a = jobs['a']
  assert a['status'] == 'finished' and a['exit_code'] == 0 and a['wall_s'] < 30
  assert a['results'] == {'test_acc': 0.75}  # numbers only, no lists
  assert a['metrics'] == {'step': 1, 'eval/test_acc': 0.25}
  out = tmp_path / 'out' / 'a'
  for name in ('results.json', 'metrics.jsonl', 'curve.png', 'log.txt'):
    assert (out / name).exists(), name
  assert 'fake job running' in (out / 'log.txt').read_text()
  assert not (out / 'checkpoints').exists()

  # the same queue again: the finished job is kept, not run again ...
  stdout, jobs, _ = queue(tmp_path, fake(tmp_path, 'a', 0))
  assert 'kept a' in stdout and 'started a' not in stdout
  assert jobs['a']['status'] == 'finished'
  # ... unless asked to, or its command changed
  stdout, _, _ = queue(tmp_path, fake(tmp_path, 'a', 0), '--rerun_finished')
  assert 'started a' in stdout
  stdout, _, _ = queue(tmp_path, fake(tmp_path, 'a', 0.1))
  assert 'started a' in stdout
  assert (tmp_path / 'work' / 'a' / 'log.txt').read_text().count('--- run_queue') == 3


def test_jobs_past_the_deadline_are_killed_and_keep_their_partial_outputs(tmp_path):
  stdout, jobs, wall = queue(tmp_path, '--parallel=2', '--grace_s=1',
                             fake(tmp_path, 'slow', 60),
                             fake(tmp_path, 'stubborn', 60, 'ignore_term'),
                             fake(tmp_path, 'later', 0), budget_s=2)
  assert wall < 20, stdout  # not the jobs' 60 s
  assert jobs['slow']['status'] == 'killed' and jobs['slow']['exit_code'] == -15
  assert jobs['stubborn']['status'] == 'killed' and jobs['stubborn']['exit_code'] == -9
  for name in ('slow', 'stubborn'):
    assert jobs[name]['metrics']['step'] == 1
    assert (tmp_path / 'out' / name / 'metrics.jsonl').exists()
    assert not (tmp_path / 'out' / name / 'results.json').exists()
  assert jobs['later']['status'] == 'skipped'  # no time left after the deadline
  assert 'deadline: stopping slow' in stdout


def test_jobs_whose_estimate_does_not_fit_are_skipped(tmp_path):
  job_file = tmp_path / 'jobs.json'
  job_file.write_text(json.dumps([
      {'name': 'long', 'cmd': ['python', '-c', 'pass'], 'estimate_s': 1000},
      {'name': 'short', 'cmd': 'python -c pass', 'estimate_s': 5},
      {'name': 'measured', 'cmd': 'python -c pass'}]))
  estimates = tmp_path / 'estimates.json'
  estimates.write_text(json.dumps({'measured': 500}))
  stdout, jobs, _ = queue(tmp_path, f'--jobs={job_file}', f'--estimates={estimates}',
                          budget_s=100)
  assert jobs['long']['status'] == 'skipped' and jobs['measured']['status'] == 'skipped'
  assert 'estimate 1000 s' in jobs['long']['reason']
  assert not (tmp_path / 'work' / 'long').exists()
  assert jobs['short']['status'] == 'finished'

  # a previous summary.json as estimates: the wall seconds of its finished jobs
  previous = tmp_path / 'previous.json'
  previous.write_text(json.dumps({'jobs': {'measured': {'status': 'finished', 'wall_s': 2},
                                           'long': {'status': 'killed', 'wall_s': 1}}}))
  stdout, jobs, _ = queue(tmp_path, f'--jobs={job_file}', f'--estimates={previous}',
                          budget_s=100)
  assert jobs['measured']['status'] == 'finished'
  assert 'started measured (estimate 2 s' in stdout
  assert jobs['long']['status'] == 'skipped'  # its own estimate_s comes first


def spans(tmp_path, names):
  def read(name, what):
    return float((tmp_path / 'work' / name / f'{what}.txt').read_text())
  return [(read(n, 'start'), read(n, 'end')) for n in names]


def test_parallel_runs_jobs_side_by_side(tmp_path):
  jobs = [fake(tmp_path, 'p1', 1.5), fake(tmp_path, 'p2', 1.5)]
  _, summary, _ = queue(tmp_path / 'two', '--parallel=2', *jobs)
  assert all(summary[n]['status'] == 'finished' for n in ('p1', 'p2'))
  (s1, e1), (s2, e2) = spans(tmp_path / 'two', ['p1', 'p2'])
  assert s2 < e1 and s1 < e2  # they overlap

  queue(tmp_path / 'one', '--parallel=1', *jobs)
  (s1, e1), (s2, e2) = spans(tmp_path / 'one', ['p1', 'p2'])
  assert e1 <= s2  # one after the other


def test_failing_command_is_marked_failed_and_the_queue_goes_on(tmp_path):
  stdout, jobs, _ = queue(tmp_path, '--cmd=bad=python -c "import sys; sys.exit(3)"',
                          fake(tmp_path, 'next', 0))
  assert jobs['bad']['status'] == 'failed' and jobs['bad']['exit_code'] == 3
  assert 'failed bad: exit code 3' in stdout
  assert jobs['next']['status'] == 'finished'


def test_main_jobs_are_named_and_built_from_config_strings(tmp_path):
  job_file = tmp_path / 'jobs.txt'
  job_file.write_text('# edge-popup pair\nconfigs/edge_popup.py:conv8 --config.train.epochs=100\n'
                      'c8d=configs/edge_popup.py:conv8_dense  # the dense twin\n')
  proc = subprocess.run(
      [sys.executable, QUEUE, '--workdir=W', '--out=O', '--budget_s=10', '--dry_run',
       f'--jobs={job_file}', '--common=--config.data.data_dir=D', '--job=configs/distill.py'],
      cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  work = tmp_path / 'W'
  assert lines == [
      f'edge_popup_conv8_epochs100 (no estimate): python -m awesome_jax.main '
      f'--config=configs/edge_popup.py:conv8 --workdir={work}/edge_popup_conv8_epochs100 '
      f'--config.progress_bar=False --config.data.data_dir=D --config.train.epochs=100',
      f'c8d (no estimate): python -m awesome_jax.main --config=configs/edge_popup.py:conv8_dense'
      f' --workdir={work}/c8d --config.progress_bar=False --config.data.data_dir=D',
      f'distill (no estimate): python -m awesome_jax.main --config=configs/distill.py '
      f'--workdir={work}/distill --config.progress_bar=False --config.data.data_dir=D']
  assert not work.exists()

  twice = subprocess.run([sys.executable, QUEUE, '--workdir=W', '--out=O', '--budget_s=10',
                          '--job=configs/distill.py', '--job=configs/distill.py'],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert twice.returncode == 2 and 'jobs named twice: distill' in twice.stderr
