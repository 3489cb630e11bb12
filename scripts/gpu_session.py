"""One prepared command for a short GPU lease (session 5: 15 min of an H200, RESULTS.md).

Runs, all at once on the one GPU: a smoke test (the tiny presets; on failure it retries
with the pinned flax/optax/orbax wheels in /tmp/site_pinned), three fixed-init MNIST
distillations with the paper's schedule (23,600 outer iterations, lr x0.5 every 2,360),
then a concurrent speed probe of edge-popup Conv4/6/8 (masked and dense) that sets the
epoch budget each masked/dense pair can finish before DEADLINE_S, and those six runs.
Whatever is unfinished at the deadline is killed; the workdirs (without edge-popup
checkpoints and subnetworks) are packed into $OUT/bundle.tgz with $OUT/summary.json.

  DATA_ROOT=.gpu/data DEADLINE_S=540 OUT=/tmp/out python scripts/gpu_session.py

Other knobs (environment, for dry runs on a CPU): WORK (workdirs), FIXED_STEPS,
FIXED_DECAY, FIXED_EVAL, PROBE_STEPS, EP_MAX_STEPS (cap every edge-popup run's steps),
FAKE_PROBE_STEP (skip the probe: every step takes this many seconds).

DATA_ROOT holds mnist/ (the idx .gz files) and cifar10_jpeg/ (the JPEG tarball), copies
of ../shared/data (which does not travel to the GPU machine). The machine lacks
ml_collections and tensorboardX: their wheels go to /tmp/site first (pip --target).
`bash scripts/prepare_gpu_carry.sh` builds .gpu/ (wheels and data) on a new machine.

Learned on the H200: nine processes sharing the GPU ran the masked edge-popup steps ~2x
slower than the probe of the same crowd said, and the deadline cut them; one run alone
took 77 s (Conv4, 54 epochs) where the crowd needed over 7 minutes. For edge-popup, run
the commands one after another instead.
"""
import json, math, os, signal, subprocess, sys, tarfile, time

T0 = time.time()
E = os.environ.get
DEADLINE = float(E('DEADLINE_S', '530'))
OUT = E('OUT', '/tmp/out')
W = E('WORK', '/tmp/w')
REPO = os.getcwd()
DATA = E('DATA_ROOT', '.gpu/data')
FIXED_STEPS = int(E('FIXED_STEPS', '23600'))
FIXED_DECAY = int(E('FIXED_DECAY', '2360'))
FIXED_EVAL = int(E('FIXED_EVAL', '500'))
PROBE_STEPS = int(E('PROBE_STEPS', '300'))
EP_MAX_STEPS = int(E('EP_MAX_STEPS', '0'))
os.makedirs(OUT, exist_ok=True)
os.makedirs(W, exist_ok=True)
summary = {'events': []}


def el():
  return time.time() - T0


def log(*a):
  msg = ' '.join(str(x) for x in a)
  print(f'[{el():6.1f}s] {msg}', flush=True)
  summary['events'].append(f'{el():.1f} {msg}')


def env_with(site):
  return dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false', PYTHONUNBUFFERED='1',
              PYTHONPATH=':'.join(site + [REPO]))


ENV = env_with(['/tmp/site'])
procs = {}


def launch(name, args):
  f = open(os.path.join(W, name + '.log'), 'w')
  p = subprocess.Popen([sys.executable] + args, cwd=REPO, env=ENV, stdout=f,
                       stderr=subprocess.STDOUT, start_new_session=True)
  procs[name] = p
  return p


def wait_all(names, timeout):
  end = time.time() + timeout
  for n in names:
    try:
      procs[n].wait(max(1, end - time.time()))
    except subprocess.TimeoutExpired:
      kill(n)
  return {n: procs[n].returncode for n in names}


def kill(n):
  p = procs[n]
  if p.poll() is None:
    try:
      os.killpg(p.pid, signal.SIGKILL)
      p.wait(10)
    except (OSError, subprocess.TimeoutExpired):
      pass


def tail(name, n=15):
  try:
    with open(os.path.join(W, name + '.log')) as f:
      return ''.join(f.readlines()[-n:])
  except OSError:
    return ''


def smoke(tag):
  launch(f'versions_{tag}', ['-c', 'import jax, flax, optax, orbax.checkpoint as o, ml_collections, '
                             'tensorboardX; print(jax.__version__, flax.__version__, optax.__version__, '
                             'o.__version__, jax.devices())'])
  launch(f'smoke_ep_{tag}', ['-m', 'awesome_jax.main', '--config=configs/edge_popup.py:tiny',
                             f'--workdir={W}/smoke_ep_{tag}', '--config.progress_bar=False'])
  launch(f'smoke_dd_{tag}', ['-m', 'awesome_jax.main', '--config=configs/distill.py:tiny',
                             f'--workdir={W}/smoke_dd_{tag}', '--config.progress_bar=False'])
  rc = wait_all([f'versions_{tag}', f'smoke_ep_{tag}', f'smoke_dd_{tag}'], 150)
  log('smoke', tag, rc, tail(f'versions_{tag}', 2).strip())
  for n, r in rc.items():
    if r != 0:
      log('FAILED', n, '\n' + tail(n, 25))
  return all(r == 0 for r in rc.values())


def bundle():
  path = os.path.join(OUT, 'bundle.tgz')

  def keep(ti):
    parts = ti.name.split('/')
    if 'subnetwork.npz' in parts[-1]:
      return None
    if 'checkpoints' in parts:
      run = parts[1] if len(parts) > 1 else ''
      if not run.startswith('fixed') or os.path.exists(os.path.join(W, run, 'results.json')):
        return None
    return ti
  with tarfile.open(path, 'w:gz') as t:
    t.add(W, arcname='w', filter=keep)
  with open(os.path.join(OUT, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  log('bundle', os.path.getsize(path), 'bytes')


def main():
  # CIFAR-10 JPEGs decoded once into the cache while the smoke tests run.
  launch('decode', ['-c', "from awesome_jax import data; "
                    "d = data.load('cifar10', 'files', %r); print(d.x_train.shape)" % f'{DATA}/cifar10_jpeg'])
  global ENV
  ok = smoke('device')
  if not ok:
    ENV = env_with(['/tmp/site_pinned', '/tmp/site'])
    summary['pinned'] = True
    ok = smoke('pinned')
  if not ok:
    bundle()
    sys.exit(1)

  fixed = ['-m', 'awesome_jax.main', '--config=configs/distill.py:mnist_fixed',
           f'--config.data.data_dir={DATA}/mnist', f'--config.outer.steps={FIXED_STEPS}',
           f'--config.outer.decay_every={FIXED_DECAY}', f'--config.eval.every={FIXED_EVAL}',
           '--config.eval.select=val', '--config.progress_bar=False',
           '--config.checkpoint_every=1000', '--config.log_every=100']
  recipe = ['--config.distill.image_init=real', '--config.distill.lr_per_layer=True',
            '--config.distill.learn_labels=True', '--config.distill.momentum=0.5',
            '--config.distill.learn_momentum=True']
  runs = {'fixed_mom_s0': recipe, 'fixed_mom_s1': recipe + ['--config.seed=1'],
          'fixed_paper': []}
  for name, extra in runs.items():
    launch(name, fixed + [f'--workdir={W}/{name}'] + extra)
  log('launched fixed-init runs')

  rc = wait_all(['decode'], 120)
  log('decode', rc, tail('decode', 1).strip())
  pairs = (4, 6, 8)
  fake = float(E('FAKE_PROBE_STEP', '0'))
  for d in pairs:
    for mode in ('masked', 'dense'):
      if fake:
        launch(f'probe_{d}_{mode}', ['-c', 'import json; print(json.dumps({"step_s": %r}))' % fake])
        continue
      kw = dict(depth=d, mode=mode, steps=PROBE_STEPS, batch=128, pipelined=True)
      launch(f'probe_{d}_{mode}', ['benchmarks/edge_popup_speed.py', '--one', json.dumps(kw)])
  names = [f'probe_{d}_{m}' for d in pairs for m in ('masked', 'dense')]
  rc = wait_all(names, 150)
  probe = {}
  for n in names:
    try:
      probe[n] = json.loads(tail(n, 1))
    except ValueError:
      log('probe failed', n, tail(n, 10))
  summary['probe'] = probe
  log('probe', json.dumps(probe))

  epochs = {}
  avail = DEADLINE - el() - 60
  for d in pairs:
    st = [probe.get(f'probe_{d}_{m}', {}).get('step_s') for m in ('masked', 'dense')]
    if None in st:
      continue
    per_epoch = 391 * max(st) + 1.5
    epochs[d] = int(min(100, math.floor(avail / (1.15 * per_epoch))))
  summary['epochs'] = epochs
  log('epochs per pair', epochs, 'avail', round(avail))
  ep_names = []
  for d, e in epochs.items():
    if e < 1:
      continue
    for mode in ('masked', 'dense'):
      name = f'ep_conv{d}_{mode}_e{e}'
      args = ['-m', 'awesome_jax.main',
              f'--config=configs/edge_popup.py:conv{d}' + ('' if mode == 'masked' else '_dense'),
              f'--workdir={W}/{name}', f'--config.data.data_dir={DATA}/cifar10_jpeg',
              f'--config.train.epochs={e}',
              '--config.progress_bar=False']
      if EP_MAX_STEPS:
        args.append(f'--config.train.max_steps={EP_MAX_STEPS}')
      launch(name, args)
      ep_names.append(name)

  everything = list(runs) + ep_names
  last = 0
  while el() < DEADLINE and any(procs[n].poll() is None for n in everything):
    time.sleep(2)
    if el() - last > 30:
      last = el()
      state = []
      for n in everything:
        try:
          with open(os.path.join(W, n, 'metrics.jsonl')) as f:
            lines = f.readlines()
          step = json.loads(lines[-1])['step'] if lines else 0
        except (OSError, ValueError, KeyError):
          step = '-'
        state.append(f'{n}:{step}{"" if procs[n].poll() is None else "(rc=%s)" % procs[n].returncode}')
      log(' '.join(state))
  for n in everything:
    if procs[n].poll() is None:
      log('deadline: killing', n)
      kill(n)
  summary['rc'] = {n: procs[n].returncode for n in everything}
  summary['results'] = {}
  for n in everything:
    try:
      with open(os.path.join(W, n, 'results.json')) as f:
        summary['results'][n] = json.load(f)
    except OSError:
      log('no results', n, tail(n, 5))
  for n, r in summary['results'].items():
    log(n, {k: v for k, v in r.items() if 'acc' in k or k in ('seconds_this_run', 'epochs')})
  bundle()


main()
