"""edge-popup runs one after another on a short GPU lease (what session 5 learned: one run
alone is several times faster than a crowd of them on the one GPU).

  OUT=/tmp/out DEADLINE_S=540 EPOCHS=100 DATA=.gpu/data/cifar10_jpeg \\
    python scripts/gpu_edge_popup_queue.py conv8 conv8_dense conv6 conv6_dense

Each argument is a preset of configs/edge_popup.py, run in turn with --config.train.epochs=
EPOCHS into WORK/<preset>_e<EPOCHS>. A run starts only if its estimated time (EST_MS, ms per
step by preset, from the session-5 H200 figures plus a margin; 390 steps per epoch, plus
START_S for start-up and evaluation) fits before DEADLINE_S; otherwise the queue goes on to
the next that fits. A run still going at the deadline is killed (its metrics.jsonl, one line
per epoch, still comes back). After each run its results.json, metrics.jsonl and log (and
a sweep's sweep.csv and sweep.png) are copied to OUT/<run>/ and OUT/summary.json is
rewritten, so a lease that ends early keeps what finished. Extra arguments after `--` go
to every run (e.g. -- --config.seed=1).

The device machine lacks ml_collections and tensorboardX: carry their wheels (.gpu/whl) and
the data (.gpu/data, copies of ../shared/data) and install them first:
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


def log(msg):
  print(f'[{time.time() - T0:6.1f}s] {msg}', flush=True)


def main(argv):
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  presets = argv[:argv.index('--')] if '--' in argv else argv
  if not presets:
    sys.exit('usage: gpu_edge_popup_queue.py PRESET [PRESET ...] [-- EXTRA FLAGS]')
  os.makedirs(OUT, exist_ok=True)
  summary = {'epochs': EPOCHS, 'runs': {}}
  for preset in presets:
    name = f'{preset}_e{EPOCHS}'
    need = START_S + EPOCHS * 390 * EST_MS.get(preset, 10.0) / 1000
    left = DEADLINE - (time.time() - T0)
    if need > left:
      log(f'skip {name}: needs ~{need:.0f} s, {left:.0f} s left')
      summary['runs'][name] = {'skipped': f'needs ~{need:.0f} s, {left:.0f} s left'}
      continue
    workdir = os.path.join(WORK, name)
    cmd = [sys.executable, '-m', 'awesome_jax.main', f'--config=configs/edge_popup.py:{preset}',
           f'--workdir={workdir}', f'--config.data.data_dir={DATA}',
           f'--config.train.epochs={EPOCHS}', '--config.progress_bar=False'] + extra
    log(f'start {name} (estimate {need:.0f} s, {left:.0f} s left)')
    os.makedirs(workdir, exist_ok=True)
    t = time.time()
    with open(os.path.join(workdir, 'log.txt'), 'a') as f:
      p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
      try:
        rc = p.wait(max(1.0, left))
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = 'killed at the deadline'
    entry = {'rc': rc, 'wall_s': round(time.time() - t, 1), 'command': ' '.join(cmd[1:])}
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
  with open(os.path.join(OUT, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1:])
