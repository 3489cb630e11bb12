"""edge-popup runs one after another, or PARALLEL at a time, on a short GPU lease (session
5 learned that a crowd of six runs on the one GPU ran each ~2x slower than alone).

  OUT=/tmp/out DEADLINE_S=540 EPOCHS=100 DATA=.gpu/data/cifar10_jpeg PARALLEL=2 \\
    python scripts/gpu_edge_popup_queue.py conv8 conv8_dense conv6 conv6_dense

Each argument is a preset of configs/edge_popup.py, run in turn (PARALLEL at a time, in
the order given: conv8 beside conv8_dense, then the Conv6 pair) with --config.train.epochs=
EPOCHS into WORK/<preset>_e<EPOCHS>. A run starts only if its estimated time (EST_MS, ms per
step by preset, from the session-5 H200 figures plus a margin; 390 steps per epoch, plus
START_S for start-up and evaluation) fits before DEADLINE_S; otherwise the queue goes on to
the next that fits. A run still going at the deadline is killed (its metrics.jsonl, one line
per epoch, still comes back). After each run its results.json, metrics.jsonl and log (and
a sweep's sweep.csv and sweep.png) are copied to OUT/<run>/ and OUT/summary.json is
rewritten, so a lease that ends early keeps what finished. Extra arguments after `--` go
to every run (e.g. -- --config.seed=1).

The device machine lacks ml_collections and tensorboardX: carry their wheels (.gpu/whl) and
the data (.gpu/data, copies of ../shared/data; `bash scripts/prepare_gpu_carry.sh` builds
.gpu/ on a new machine) and install them first:
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
"""
import json
import os
import shutil
import subprocess
import sys
import time

T0 = time.time()
E = os.environ.get
OUT = E('OUT', '/tmp/out')
WORK = E('WORK', '/tmp/w')
DATA = E('DATA', '.gpu/data/cifar10_jpeg')
DEADLINE = float(E('DEADLINE_S', '540'))
EPOCHS = int(E('EPOCHS', '100'))
START_S = float(E('START_S', '40'))
# ms per train step alone on the H200 (session 5: conv4 3.7, conv6 4.4 masked), x1.3 margin;
# conv8 and the dense nets are estimates. EST_MS='{"conv8": 7}' overrides.
EST_MS = {'conv2': 3.5, 'conv4': 4.8, 'conv6': 5.7, 'conv8': 7.5,
          'conv2_dense': 3.0, 'conv4_dense': 4.0, 'conv6_dense': 4.8, 'conv8_dense': 6.0,
          'sweep': 11 * 4.8}  # the sweep: 10 masked Conv4 runs + the dense one
EST_MS.update(json.loads(E('EST_MS', '{}')))
# PARALLEL=2 runs the presets two at a time (conv8 beside conv8_dense, which both need to
# end inside one lease; at batch 128 one run is far from filling the GPU: session 5's crowd
# of six ran each masked run only ~2x slower than alone). Each run's estimate is then
# multiplied by CROWD_SLOWDOWN per other run beside it (a guess, not measured for two).
PARALLEL = int(E('PARALLEL', '1'))
CROWD_SLOWDOWN = float(E('CROWD_SLOWDOWN', '1.3'))


def log(msg):
  print(f'[{time.time() - T0:6.1f}s] {msg}', flush=True)


def start(preset, extra):
  name = f'{preset}_e{EPOCHS}'
  workdir = os.path.join(WORK, name)
  cmd = [sys.executable, '-m', 'awesome_jax.main', f'--config=configs/edge_popup.py:{preset}',
         f'--workdir={workdir}', f'--config.data.data_dir={DATA}',
         f'--config.train.epochs={EPOCHS}', '--config.progress_bar=False'] + extra
  os.makedirs(workdir, exist_ok=True)
  f = open(os.path.join(workdir, 'log.txt'), 'a')
  return dict(name=name, workdir=workdir, cmd=cmd, t=time.time(), log=f,
              proc=subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT))


def finish(run, summary):
  """Waits for a started run until the deadline (then kills it) and copies its files."""
  try:
    rc = run['proc'].wait(max(1.0, DEADLINE - (time.time() - T0)))
  except subprocess.TimeoutExpired:
    run['proc'].kill()
    run['proc'].wait()
    rc = 'killed at the deadline'
  run['log'].close()
  name, workdir = run['name'], run['workdir']
  entry = {'rc': rc, 'wall_s': round(time.time() - run['t'], 1),
           'command': ' '.join(run['cmd'][1:])}
  dest = os.path.join(OUT, name)
  os.makedirs(dest, exist_ok=True)
  for fn in ('results.json', 'metrics.jsonl', 'log.txt', 'sweep.csv', 'sweep.png'):
    if os.path.exists(os.path.join(workdir, fn)):
      shutil.copy(os.path.join(workdir, fn), dest)
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      entry['results'] = {k: v for k, v in json.load(f).items()
                          if 'acc' in k or k in ('epochs', 'seconds_this_run')}
  except OSError:
    pass
  summary['runs'][name] = entry
  log(f'{name}: {json.dumps(entry)}')
  with open(os.path.join(OUT, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)


def main(argv):
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  presets = argv[:argv.index('--')] if '--' in argv else argv
  if not presets:
    sys.exit('usage: gpu_edge_popup_queue.py PRESET [PRESET ...] [-- EXTRA FLAGS]')
  os.makedirs(OUT, exist_ok=True)
  summary = {'epochs': EPOCHS, 'parallel': PARALLEL, 'runs': {}}
  for g in range(0, len(presets), PARALLEL):
    group = presets[g:g + PARALLEL]
    started = []
    for preset in group:
      name = f'{preset}_e{EPOCHS}'
      slowdown = CROWD_SLOWDOWN ** (len(group) - 1)
      need = START_S + EPOCHS * 390 * EST_MS.get(preset, 10.0) * slowdown / 1000
      left = DEADLINE - (time.time() - T0)
      if need > left:
        log(f'skip {name}: needs ~{need:.0f} s, {left:.0f} s left')
        summary['runs'][name] = {'skipped': f'needs ~{need:.0f} s, {left:.0f} s left'}
        continue
      log(f'start {name} (estimate {need:.0f} s beside {len(group) - 1} other run(s), '
          f'{left:.0f} s left)')
      started.append(start(preset, extra))
    for run in started:
      finish(run, summary)
  with open(os.path.join(OUT, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1:])
