"""Runs a queue of jobs inside a wall-clock budget (e.g. a GPU or TPU job with a wall-clock limit) and
keeps what each job produced, even when the budget ends in the middle of one.

  python scripts/run_queue.py --workdir=/tmp/queue --out=/tmp/queue_out --budget_s=3000 \\
    --parallel=2 --common=--config.data.data_dir=../shared/data/cifar10_jpeg \\
    --job="configs/edge_popup.py:conv8 --config.train.epochs=100" \\
    --job="configs/edge_popup.py:conv8_dense --config.train.epochs=100"

Jobs, run in the order given:
  --job="CONFIG [--config.FIELD=VALUE ...]"  `python -m awesome_jax.main --config=CONFIG
      --workdir=WORKDIR/NAME --config.progress_bar=False`, the --common flags, the overrides;
  --cmd="COMMAND"  any command; `{workdir}` in it becomes WORKDIR/NAME;
  --jobs=FILE  a text file of --job strings, one a line (# comments), or a JSON list of
      {"name", "config", "overrides", "cmd", "estimate_s"} (config and overrides, or cmd).
A job string may start with `NAME=` (`--job="conv8_e100=configs/edge_popup.py:conv8 ..."`);
otherwise the name comes from the config file, the preset and the overrides. A leading
`python` runs with this script's interpreter. Jobs run in the current directory.

`--parallel=N` runs N jobs at a time (JAX's GPU memory preallocation is then turned off
unless XLA_PYTHON_CLIENT_PREALLOCATE is set); on one GPU each then runs slower than alone
(six edge-popup trainings side by side on an H200 took ~2x longer each), so keep N small
and the estimates of jobs side by side larger. A job starts only if its estimate fits the
time left: estimate_s in the job file, or `--estimates=FILE`, either {NAME: seconds} or a
previous queue's summary.json (the wall seconds of its finished jobs); a job without an
estimate always starts, a job whose estimate does not fit is skipped and the next one
tried. At the deadline every running job gets SIGTERM, then SIGKILL after --grace_s.

After each job its small outputs (*.json, *.jsonl, *.csv, *.png, *.txt, *.npz such as
distilled.npz and subnetwork.npz, among them log.txt
with its stdout and stderr; nothing under checkpoints/) are copied to OUT/NAME/ and OUT/summary.json is rewritten:
per job the command, status (finished, killed, skipped or failed), wall seconds, exit
code, the numbers of its results.json and the last value of each metric in metrics.jsonl.

Rerunning the same queue with the same --workdir and --out continues it: main resumes an
unfinished job from WORKDIR/NAME/checkpoints, and a job that OUT/summary.json lists as
finished with the same command is not run again (--rerun_finished runs it anyway).
"""

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

SMALL_OUTPUTS = ('.json', '.jsonl', '.csv', '.png', '.txt', '.npz')
LOG = 'log.txt'
T0 = time.monotonic()


def log(message):
  print(f'[{time.monotonic() - T0:7.1f}s] {message}', flush=True)


@dataclasses.dataclass
class Job:
  name: str
  argv: list  # '{workdir}' in an argument stands for the job's workdir
  estimate_s: float | None = None

  def argv_in(self, workdir):
    return [a.replace('{workdir}', workdir) for a in self.argv]

  def command_in(self, workdir):
    return shlex.join(self.argv_in(workdir))


@dataclasses.dataclass
class Running:
  job: Job
  workdir: str
  proc: subprocess.Popen
  log_file: object
  started: float


def short_name(text):
  text = re.sub(r'[^\w.,=-]+', '_', text).strip('_')
  if len(text) > 80:
    text = text[:70] + '_' + hashlib.sha1(text.encode()).hexdigest()[:8]
  return text


def split_name(tokens):
  """('conv8', rest) for ['conv8=configs/...', ...]; (None, tokens) without a name."""
  if tokens and '=' in tokens[0] and not tokens[0].startswith('-'):
    name, first = tokens[0].split('=', 1)
    return name, [first] + tokens[1:]
  return None, tokens


def main_job(config, overrides, common, name=None, estimate_s=None):
  """A `python -m awesome_jax.main` job; the default name is config file_preset_overrides."""
  if not name:
    path, _, preset = config.partition(':')
    parts = [os.path.splitext(os.path.basename(path))[0]] + ([preset] if preset else [])
    for flag in overrides:
      field, _, value = flag.removeprefix('--config.').partition('=')
      parts.append(field.rsplit('.', 1)[-1] + value)
    name = short_name('_'.join(parts))
  argv = ['python', '-m', 'awesome_jax.main', f'--config={config}', '--workdir={workdir}']
  if not any(a.startswith('--config.progress_bar') for a in common + overrides):
    argv.append('--config.progress_bar=False')  # no tqdm bars in the log
  return Job(name, argv + common + overrides, estimate_s)


def command_job(argv, name=None, estimate_s=None):
  name = name or 'cmd_' + hashlib.sha1(shlex.join(argv).encode()).hexdigest()[:8]
  return Job(name, argv, estimate_s)


def parse_job(text, common):
  name, tokens = split_name(shlex.split(text))
  if not tokens:
    raise ValueError(f'job {text!r}: no config')
  return main_job(tokens[0], tokens[1:], common, name)


def parse_cmd(text):
  name, tokens = split_name(shlex.split(text))
  if not tokens:
    raise ValueError(f'cmd {text!r}: no command')
  return command_job(tokens, name)


def read_job_file(path, common):
  with open(path) as f:
    text = f.read()
  if not path.endswith('.json'):
    lines = [line.split(' #')[0].strip() for line in text.splitlines()]
    return [parse_job(line, common) for line in lines if line and not line.startswith('#')]
  jobs = []
  for spec in json.loads(text):
    if 'cmd' in spec:
      cmd = spec['cmd'] if isinstance(spec['cmd'], list) else shlex.split(spec['cmd'])
      jobs.append(command_job(cmd, spec.get('name'), spec.get('estimate_s')))
    else:
      jobs.append(main_job(spec['config'], list(spec.get('overrides', [])), common,
                           spec.get('name'), spec.get('estimate_s')))
  return jobs


def read_estimates(path):
  """{name: seconds} from {name: seconds} or from a summary.json (its finished jobs)."""
  with open(path) as f:
    data = json.load(f)
  if isinstance(data.get('jobs'), dict):
    return {name: entry['wall_s'] for name, entry in data['jobs'].items()
            if entry.get('status') == 'finished' and entry.get('wall_s')}
  return {name: float(seconds) for name, seconds in data.items()}


def read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def scalars(d):
  if not isinstance(d, dict):
    return {}
  return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}


def last_metrics(path):
  """The last value of each key of a metrics.jsonl (its lines hold different keys)."""
  last = {}
  try:
    with open(path) as f:
      for line in f:
        try:
          last.update(json.loads(line))
        except ValueError:  # a line cut by a kill
          pass
  except OSError:
    pass
  return scalars(last)


def copy_outputs(workdir, dest):
  for root, dirs, files in os.walk(workdir):
    dirs[:] = [d for d in dirs if d != 'checkpoints']
    for name in files:
      if name.endswith(SMALL_OUTPUTS):
        target = os.path.join(dest, os.path.relpath(root, workdir))
        os.makedirs(target, exist_ok=True)
        try:
          shutil.copy2(os.path.join(root, name), target)
        except shutil.SameFileError:  # --out is --workdir
          pass


class Queue:
  """Starts jobs while the budget lasts, records each as it ends in OUT/summary.json."""

  def __init__(self, workdir, out, budget_s, parallel, grace_s):
    self.workdir, self.out = os.path.abspath(workdir), os.path.abspath(out)
    self.deadline = T0 + budget_s
    self.parallel, self.grace_s = parallel, grace_s
    os.makedirs(self.out, exist_ok=True)
    self.summary_path = os.path.join(self.out, 'summary.json')
    before = read_json(self.summary_path) or {}
    self.summary = {'budget_s': budget_s, 'parallel': parallel, 'workdir': self.workdir,
                    'jobs': before.get('jobs', {})}
    self.env = dict(os.environ, PYTHONUNBUFFERED='1')
    if parallel > 1:
      self.env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

  def job_dir(self, job):
    return os.path.join(self.workdir, job.name)

  def finished_before(self, job):
    entry = self.summary['jobs'].get(job.name, {})
    return (entry.get('status') == 'finished' and
            entry.get('command') == job.command_in(self.job_dir(job)))

  def record(self, name, entry):
    self.summary['jobs'][name] = entry
    self.summary['elapsed_s'] = round(time.monotonic() - T0, 1)
    tmp = self.summary_path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(self.summary, f, indent=1)
    os.replace(tmp, self.summary_path)

  def start(self, job):
    workdir = self.job_dir(job)
    os.makedirs(workdir, exist_ok=True)
    argv = job.argv_in(workdir)
    if argv[0] in ('python', 'python3'):
      argv[0] = sys.executable
    log_file = open(os.path.join(workdir, LOG), 'a')
    log_file.write(f'--- run_queue {time.strftime("%Y-%m-%d %H:%M:%S")}: '
                   f'{job.command_in(workdir)}\n')
    log_file.flush()
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=self.env,
                            start_new_session=True)  # its own group: kills reach children
    return Running(job, workdir, proc, log_file, time.monotonic())

  def end(self, run, status):
    run.log_file.close()
    dest = os.path.join(self.out, run.job.name)
    copy_outputs(run.workdir, dest)
    entry = {'command': run.job.command_in(run.workdir), 'status': status,
             'wall_s': round(time.monotonic() - run.started, 1),
             'exit_code': run.proc.returncode, 'estimate_s': run.job.estimate_s,
             'workdir': run.workdir,
             'results': scalars(read_json(os.path.join(run.workdir, 'results.json'))),
             'metrics': last_metrics(os.path.join(run.workdir, 'metrics.jsonl'))}
    self.record(run.job.name, entry)
    shown = {k: v for k, v in (entry['results'] or entry['metrics']).items()
             if 'acc' in k or k == 'step'}
    log(f'{status} {run.job.name}: exit code {entry["exit_code"]}, {entry["wall_s"]} s'
        + ''.join(f', {k}={v:.4g}' if isinstance(v, float) else f', {k}={v}'
                  for k, v in shown.items()))

  def stop(self, runs, why):
    """SIGTERM to each job's process group, SIGKILL to what remains after grace_s."""
    for run in runs:
      log(f'{why}: stopping {run.job.name}')
      signal_group(run.proc, signal.SIGTERM)
    until = time.monotonic() + self.grace_s
    for run in runs:
      try:
        run.proc.wait(max(0.0, until - time.monotonic()))
      except subprocess.TimeoutExpired:
        signal_group(run.proc, signal.SIGKILL)
        run.proc.wait()
      self.end(run, 'killed')

  def run(self, jobs, rerun_finished=False):
    pending, running = [], []
    for job in jobs:
      if not rerun_finished and self.finished_before(job):
        log(f'kept {job.name}: finished in an earlier run of this queue')
      else:
        pending.append(job)
    try:
      while pending or running:
        while pending and len(running) < self.parallel:
          job = pending.pop(0)
          left = self.deadline - time.monotonic()
          if left <= 0 or (job.estimate_s is not None and job.estimate_s > left):
            reason = f'{estimate_text(job)}, {max(0, left):.0f} s left'
            self.record(job.name, {'command': job.command_in(self.job_dir(job)),
                                   'status': 'skipped',
                                   'estimate_s': job.estimate_s, 'reason': reason})
            log(f'skipped {job.name}: {reason}')
            continue
          running.append(self.start(job))
          log(f'started {job.name} ({estimate_text(job)}, {left:.0f} s left)')
        for run in [r for r in running if r.proc.poll() is not None]:
          running.remove(run)
          self.end(run, 'finished' if run.proc.returncode == 0 else 'failed')
        if running and time.monotonic() >= self.deadline:
          stopping, running = running, []
          self.stop(stopping, 'deadline')
        time.sleep(0.2)
    except KeyboardInterrupt:
      self.stop(running, 'interrupted')
      raise
    return self.summary


def estimate_text(job):
  return 'no estimate' if job.estimate_s is None else f'estimate {job.estimate_s:.0f} s'


def signal_group(proc, sig):
  try:
    os.killpg(proc.pid, sig)
  except ProcessLookupError:
    pass


def interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--job', dest='specs', action='append', default=[],
                  type=lambda s: ('job', s), metavar='JOB', help='"[NAME=]CONFIG [--config.FIELD=VALUE ...]"')
  ap.add_argument('--cmd', dest='specs', action='append', type=lambda s: ('cmd', s),
                  metavar='CMD',
                  help='"[NAME=]COMMAND ..." ({workdir}: the job\'s workdir)')
  ap.add_argument('--jobs', dest='specs', action='append', type=lambda s: ('file', s),
                  metavar='FILE',
                  help='a text file of --job strings or a JSON list of jobs')
  ap.add_argument('--common', action='append', default=[],
                  help='flags for every main job: --common=--config.FIELD=VALUE')
  ap.add_argument('--estimates', help='{NAME: seconds} or a previous summary.json')
  ap.add_argument('--workdir', required=True, help='each job runs in WORKDIR/NAME')
  ap.add_argument('--out', required=True, help='small outputs and summary.json')
  ap.add_argument('--budget_s', type=float, required=True, help='wall-clock budget')
  ap.add_argument('--parallel', type=int, default=1, help='jobs at a time')
  ap.add_argument('--grace_s', type=float, default=10, help='SIGTERM to SIGKILL')
  ap.add_argument('--rerun_finished', action='store_true',
                  help='also run jobs that summary.json lists as finished')
  ap.add_argument('--dry_run', action='store_true', help='print the jobs, run nothing')
  args = ap.parse_args()

  common = [flag for c in args.common for flag in shlex.split(c)]
  jobs = []
  for kind, text in args.specs:
    try:
      if kind == 'file':
        jobs += read_job_file(text, common)
      else:
        jobs.append(parse_job(text, common) if kind == 'job' else parse_cmd(text))
    except (OSError, ValueError, KeyError, TypeError) as e:
      ap.error(f'--{kind if kind != "file" else "jobs"} {text}: {e}')
  try:
    estimates = read_estimates(args.estimates) if args.estimates else {}
  except (OSError, ValueError, AttributeError) as e:
    ap.error(f'--estimates {args.estimates}: {e}')
  if not jobs:
    ap.error('no jobs: give --job, --cmd or --jobs')
  names = [job.name for job in jobs]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    ap.error(f'jobs named twice: {", ".join(twice)} (name them: NAME=...)')
  for job in jobs:
    if job.estimate_s is None:
      job.estimate_s = estimates.get(job.name)
  if args.dry_run:
    for job in jobs:
      workdir = os.path.join(os.path.abspath(args.workdir), job.name)
      print(f'{job.name} ({estimate_text(job)}): {job.command_in(workdir)}')
    return

  signal.signal(signal.SIGTERM, interrupt)  # the wall-clock limit reached: stop the jobs, keep outputs
  queue = Queue(args.workdir, args.out, args.budget_s, args.parallel, args.grace_s)
  try:
    summary = queue.run(jobs, args.rerun_finished)
  except KeyboardInterrupt:
    sys.exit(130)
  counts = {}
  for name in names:
    status = summary['jobs'][name]['status']
    counts[status] = counts.get(status, 0) + 1
  log(f'done: {", ".join(f"{n} {s}" for s, n in counts.items())}; '
      f'{queue.summary_path}')


if __name__ == '__main__':
  main()
