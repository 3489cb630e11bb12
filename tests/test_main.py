"""End to end through `python -m awesome_jax.main`: outputs, resume after kill, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from awesome_jax import distill
from awesome_jax.tasks import distill as distill_task
from configs import distill as distill_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_cmd(workdir, *overrides, preset='tiny'):
  return [sys.executable, '-m', 'awesome_jax.main', f'--config=configs/distill.py:{preset}',
          f'--workdir={workdir}', '--config.progress_bar=False', *overrides]


def test_end_to_end_tiny_run(tmp_path):
  config = distill_configs.get_config('tiny')
  config.progress_bar = False
  results = distill_task.run(config, str(tmp_path))
  for name in ('distilled.npz', 'distilled.png', 'results.json', 'metrics.jsonl'):
    assert (tmp_path / name).exists(), name
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  z = distill.load_distilled(str(tmp_path / 'distilled.npz'))
  assert z['images'].shape == (2, 10, 8, 8, 1)
  assert z['lrs'].shape == (4,) and np.all(z['lrs'] > 0)
  assert str(z['label_encoding']) == 'one-hot'
  # the stored pixels and normalisation give back what the net saw
  np.testing.assert_allclose((z['images'] - z['mean']) / z['std'], z['images_normalized'],
                             atol=1e-5)
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['eval_nets'] == 4 and 0 <= saved['test_acc_mean'] <= 1
  assert set(saved['baselines']) == {'random_real', 'class_means', 'kmeans'}
  assert results['test_acc_mean'] == saved['test_acc_mean']

  # the saved set alone reproduces the run's evaluation with its own schedule ...
  config.task = 'distill_eval'
  config.eval.npz = str(tmp_path / 'distilled.npz')
  again = distill_task.evaluate_saved(config, str(tmp_path))
  np.testing.assert_allclose(again['test_acc_all'], saved['test_acc_all'], atol=1e-9)
  # ... and also trains with plain minibatch SGD
  config.eval.schedule = 'minibatch'
  config.eval.lr = 0.1
  mb = distill_task.evaluate_saved(config, str(tmp_path))
  assert mb['eval_nets'] == 4 and 0 <= mb['test_acc_mean'] <= 1
  config.eval.schedule = 'adam'
  with pytest.raises(distill.ConfigError, match="eval.schedule='adam'"):
    distill_task.evaluate_saved(config, str(tmp_path))


def test_fixed_init_set_stores_and_reuses_its_init(tmp_path):
  config = distill_configs.get_config('tiny')
  config.progress_bar = False
  config.distill.random_init = False
  config.distill.lr_per_layer = True
  config.outer.steps = 5
  config.eval.baselines = False
  results = distill_task.run(config, str(tmp_path))
  z = distill.load_distilled(str(tmp_path / 'distilled.npz'))
  assert any(k.startswith('init/') for k in z)
  # one lr per inner step and param tensor, each column named
  assert z['lrs'].shape == (4, len(z['lr_params'])) and np.all(z['lrs'] > 0)
  assert sorted(z['lr_params']) == sorted(k[len('init/'):] for k in z if k.startswith('init/'))
  config.task = 'distill_eval'
  config.eval.npz = str(tmp_path / 'distilled.npz')
  config.eval.num_inits = 2
  again = distill_task.evaluate_saved(config, str(tmp_path))
  assert again['init'].startswith('fixed')
  assert again['test_acc_all'] == [results['test_acc_mean']] * 2


def test_killed_run_resumes_to_the_same_result(tmp_path):
  # with eval.select=val: the best-on-validation set must survive the kill as well
  overrides = ['--config.outer.steps=16', '--config.checkpoint_every=2',
               '--config.eval.baselines=False', '--config.eval.select=val',
               '--config.eval.every=4']
  whole, killed = tmp_path / 'whole', tmp_path / 'killed'
  # one persistent compilation cache: the killed and the resumed run compile nothing
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  subprocess.run(main_cmd(whole, *overrides), cwd=ROOT, check=True, capture_output=True,
                 env=env)

  proc = subprocess.Popen(main_cmd(killed, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env)
  ckpts = killed / 'checkpoints'
  deadline = time.time() + 120
  while time.time() < deadline:
    steps = [int(s) for s in os.listdir(ckpts) if s.isdigit()] if ckpts.exists() else []
    if steps and max(steps) >= 6:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / 'results.json').exists(), 'the run finished before it was killed'
  out = subprocess.run(main_cmd(killed, *overrides), cwd=ROOT, check=True,
                       capture_output=True, text=True, env=env)
  assert 'Resumed from step' in out.stdout
  a = distill.load_distilled(str(whole / 'distilled.npz'))
  b = distill.load_distilled(str(killed / 'distilled.npz'))
  np.testing.assert_array_equal(a['images_normalized'], b['images_normalized'])
  np.testing.assert_array_equal(a['lrs'], b['lrs'])
  ra = json.loads((whole / 'results.json').read_text())
  rb = json.loads((killed / 'results.json').read_text())
  assert ra['test_acc_all'] == rb['test_acc_all']
  assert ra['selected_step'] == rb['selected_step']
  assert ra['selected_val_acc'] == rb['selected_val_acc']


def test_resume_with_a_state_changing_config_is_one_line_error(tmp_path):
  base = ['--config.outer.steps=2', '--config.eval.baselines=False']
  subprocess.run(main_cmd(tmp_path, *base), cwd=ROOT, check=True, capture_output=True)
  out = subprocess.run(main_cmd(tmp_path, *base, '--config.distill.lr_per_layer=True'),
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'use a new --workdir' in last, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  prev = json.loads((tmp_path / 'config.prev.json').read_text())
  assert prev['distill']['lr_per_layer'] is False


@pytest.mark.parametrize('override,message', [
    ('--config.distill.images_per_class_per_step=0', 'distill.images_per_class_per_step=0'),
    ('--config.model.name=alexcifarnet', "model.name='alexcifarnet' cannot take"),
    ('--config.data.name=cifar100', "data.name='cifar100': unknown"),
])
def test_bad_config_is_one_line_error(tmp_path, override, message):
  out = subprocess.run(main_cmd(tmp_path, override), cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr


@pytest.mark.parametrize('args,message', [
    (['--config=configs/distill.py', '--config.outer.stepz=3'],
     '--config.outer.stepz: no such config field (Did you mean "steps"'),
    (['--config=configs/distill.py', '--config.outr.steps=3'], '--config.outr.steps: no such'),
    (['--config=configs/edge_popup.py:conv5'], 'conv5: unknown preset; allowed: conv2'),
    (['--config=configs/nofile.py'], "--config: [Errno 2] No such file or directory: 'configs/nofile.py'"),
    (['--config=configs/distill.py', '--config.outer.steps=abc'], '--config.outer.steps=abc'),
])
def test_bad_config_flag_is_one_line_error(tmp_path, args, message):
  out = subprocess.run([sys.executable, '-m', 'awesome_jax.main', f'--workdir={tmp_path}', *args],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr[-2000:]
  assert out.stderr.startswith('error: ') and message in out.stderr, out.stderr[-2000:]
  assert not os.listdir(tmp_path)  # nothing written


def test_config_file_with_a_syntax_error_names_file_and_line(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('import ml_collections\n\ndef get_config(:\n  return None\n')
  out = subprocess.run([sys.executable, '-m', 'awesome_jax.main', f'--config={bad}',
                        f'--workdir={tmp_path / "w"}'], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  first, *rest = out.stderr.strip().splitlines()
  assert first.startswith(f'error: --config: {bad}, line 3: '), out.stderr
  assert rest == ['    def get_config(:']
  assert not (tmp_path / 'w').exists()


def _not_an_npz(path):
  path.write_text('images,labels\n1,2\n')


def _corrupt_zip(path):
  path.write_bytes(b'PK\x03\x04' + b'\x00' * 40)


def _foreign_npz(path):
  np.savez(path, weights=np.zeros(3))


@pytest.mark.parametrize('make,message', [
    (_not_an_npz, 'neither an npz nor a PyTorch file'), (_corrupt_zip, 'corrupt or truncated zip'),
    (_foreign_npz, "no 'images_normalized'"),
])
def test_bad_distilled_file_is_one_line_error(tmp_path, make, message):
  bad = tmp_path / 'set.npz'
  make(bad)
  out = subprocess.run([sys.executable, '-m', 'awesome_jax.main',
                        '--config=configs/distill.py:evaluate', f'--workdir={tmp_path / "w"}',
                        f'--config.eval.npz={bad}', '--config.data.name=digits',
                        '--config.model.name=mlp'],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(f'error: {bad}') and message in last, last
