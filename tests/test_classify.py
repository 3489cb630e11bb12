"""The classify task end to end (tiny ResNet and ViT through main), resume after a kill,
init_from, load_trained, config errors; the train.py options it adds."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from awesome_jax import augment
from awesome_jax import data as data_lib
from awesome_jax import metrics as metrics_lib
from awesome_jax import train as train_lib
from awesome_jax.tasks import classify
from configs import classify as classify_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# dies by SIGKILL when batch 6 (mid second epoch) is asked for: checkpoint 4 is the newest
KILLED_RUN = '''
import os, signal, sys
from awesome_jax import data
from awesome_jax.tasks import classify
from configs import classify as configs
batches = data.EpochBatches.__call__
def dying(self, step):
  if step == 6:
    os.kill(os.getpid(), signal.SIGKILL)
  return batches(self, step)
data.EpochBatches.__call__ = dying
classify.run(configs.get_config('tiny'), sys.argv[1])
'''


def main_cmd(workdir, *overrides, preset='tiny'):
  return [sys.executable, '-m', 'awesome_jax.main', f'--config=configs/classify.py:{preset}',
          f'--workdir={workdir}', *overrides]


def run_together(commands, env):
  """Runs the commands {name: argv} at the same time; {name: (returncode, output)}."""
  procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
           for name, cmd in commands.items()}
  outputs = {name: p.communicate()[0] for name, p in procs.items()}
  return {name: (procs[name].returncode, out) for name, out in outputs.items()}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The module's runs: subprocesses sharing one persistent compilation cache (each model
  compiles once), two at a time where they can: a tiny ResNet and a tiny ViT through main;
  a ResNet run killed at step 6 and one initialised from the first; the killed one resumed."""
  base = tmp_path_factory.mktemp('classify')
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(base / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  out = run_together({'resnet': main_cmd(base / 'resnet'),
                      'vit': main_cmd(base / 'vit', preset='tiny_vit')}, env)
  out.update(run_together({
      'killed': [sys.executable, '-c', KILLED_RUN, str(base / 'killed')],
      'init_from': main_cmd(base / 'init_from', f'--config.init_from={base / "resnet"}')},
      env))
  # what the kill left behind
  out['killed_results'] = (base / 'killed' / 'results.json').exists()
  saved = os.listdir(base / 'killed' / 'checkpoints')
  out['killed_checkpoints'] = sorted(int(s) for s in saved if s.isdigit())
  out.update(run_together({'resumed': main_cmd(base / 'killed')}, env))
  for name in ('resnet', 'vit', 'resumed', 'init_from'):
    assert out[name][0] == 0, out[name][1][-3000:]
  out['dir'] = {name: base / name for name in ('resnet', 'vit', 'killed', 'init_from')}
  return out


@pytest.mark.parametrize('name', ['resnet', 'vit'])
def test_tiny_run_writes_results_metrics_and_weights(runs, name):
  workdir = runs['dir'][name]
  r = json.loads((workdir / 'results.json').read_text())
  assert r['label'] == {'resnet': 'tiny', 'vit': 'tiny_vit'}[name]
  assert r['train_steps'] == 16 and r['epochs'] == 2 and r['batch_size'] == 64
  assert 0 <= r['test_acc'] <= 1 and r['images_per_s'] > 0 and r['wall_seconds'] > 0
  assert r['seed'] == 0  # the tiny presets skip the cue-conflict evaluation (no download)
  assert r['cue_conflict'] == {'evaluated': False, 'reason': "cue_conflict.stimuli_root='none'"}
  model, variables = classify.load_trained(str(workdir))
  assert r['params'] == sum(np.size(p) for p in jax.tree_util.tree_leaves(variables['params']))
  assert ('batch_stats' in variables) == (name == 'resnet')
  # the saved weights give the reported accuracy on the same (normalised) test set
  d = classify.load_data(classify_configs.get_config('tiny').data)
  logits = model.apply(variables, jnp.asarray(d.normalize(d.x_test)))
  assert float(jnp.mean(jnp.argmax(logits, -1) == d.y_test)) == pytest.approx(r['test_acc'],
                                                                             abs=0.01)
  steps, accs = metrics_lib.eval_curve(str(workdir))
  assert steps == [8, 16] and accs[-1] == r['test_acc']  # one evaluation per epoch
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))


def test_a_finished_run_refuses_other_training_settings(runs):
  """Re-running a finished workdir re-tests its weights: with other training settings that
  would report weights those settings never trained, so it stops in one line."""
  config = classify_configs.get_config('tiny')
  config.train.extra_augment = 'sobel'
  config.seed = 3
  with pytest.raises(classify.ClassifyConfigError) as e:
    classify.run(config, str(runs['dir']['resnet']))
  assert "seed=0 (this config: 3), train.extra_augment='' (this config: 'sobel')" in str(
      e.value) and 'use a new --workdir' in str(e.value) and '\n' not in str(e.value)


def test_killed_run_resumes_to_the_same_result(runs):
  assert runs['killed'][0] == -9, runs['killed'][1][-3000:]  # SIGKILL
  assert not runs['killed_results'] and runs['killed_checkpoints'][-1] == 4
  assert 'Resumed from step 4' in runs['resumed'][1]
  whole, killed = runs['dir']['resnet'], runs['dir']['killed']
  a, b = classify.load_variables(str(whole)), classify.load_variables(str(killed))
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  ra = json.loads((whole / 'results.json').read_text())
  rb = json.loads((killed / 'results.json').read_text())
  assert ra['test_acc'] == rb['test_acc'] and ra['train_steps'] == rb['train_steps']
  assert rb['wall_seconds'] > rb['seconds_this_run']  # the killed run's time counts too
  final = lambda w: [r for r in metrics_lib.read_jsonl(str(w)) if r['step'] == 16]
  assert final(whole) == final(killed)  # the same train/ and eval/ lines at the end


def test_init_from_starts_from_the_other_runs_weights(runs):
  source, workdir = runs['dir']['resnet'], runs['dir']['init_from']
  init = [r for r in metrics_lib.read_jsonl(str(workdir)) if 'init/test_acc' in r]
  source_acc = json.loads((source / 'results.json').read_text())['test_acc']
  assert len(init) == 1 and init[0]['init/test_acc'] == source_acc
  assert f'Initialised from {source}' in runs['init_from'][1]
  assert json.loads((workdir / 'results.json').read_text())['init_from'] == str(source)


def test_init_from_takes_the_weights_and_resets_the_optimizer(runs):
  config = classify_configs.get_config('tiny')
  model = classify.build_model('resnet18', config.model.kwargs.to_dict(), 4, (32, 32, 3))
  trainer = train_lib.Trainer(model, config.train, (32, 32, 3), 16)
  # shapes only (no init to compile): init_from_run replaces the params and batch stats
  state = jax.eval_shape(lambda: trainer.init_state(jax.random.key(0), fast_rng_compile=True))
  moved = classify.init_from_run(state, trainer, str(runs['dir']['resnet']))
  saved = classify.load_variables(str(runs['dir']['resnet']))
  jax.tree_util.tree_map(np.testing.assert_array_equal, moved['params'], saved['params'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, moved['batch_stats'],
                         saved['batch_stats'])
  assert moved['step'] is state['step']
  assert all(float(jnp.abs(m).max()) == 0 for m in jax.tree_util.tree_leaves(moved['opt']))
  # a model of another shape is refused, naming the first leaf that differs
  wider = classify.build_model('resnet18', dict(config.model.kwargs.to_dict(), width=0.25), 4,
                               (32, 32, 3))
  other = train_lib.Trainer(wider, config.train, (32, 32, 3), 16)
  with pytest.raises(classify.ClassifyConfigError, match='init_from=.*params/.* here but'):
    classify.init_from_run(jax.eval_shape(lambda: other.init_state(jax.random.key(0))), other,
                           str(runs['dir']['resnet']))


@pytest.mark.parametrize('field, value, message', [
    ('train.optimizer', 'rmsprop', "train.optimizer='rmsprop': unknown; allowed: sgd, adam"),
    ('train.label_smoothing', 1.0, 'train.label_smoothing=1.0: must be in [0, 1)'),
    ('train.warmup_epochs', 2.0, 'train.warmup_epochs=2.0: must be in [0, train.epochs=2)'),
    ('train.extra_augment', 'cutout,mixup', "train.extra_augment='cutout,mixup': 'mixup': "
     'unknown; allowed: rotation, color, blur, sobel, noise, cutout'),
    ('train.extra_augment_params', 'noise_std', "train.extra_augment_params='noise_std': "
     "'noise_std' is not NAME=NUMBER"),
    ('train.extra_augment_params', 'noise_sigma=2', "train.extra_augment_params='noise_sigma=2':"
     " 'noise_sigma': unknown; allowed: rotation_degrees"),
    ('train.grad_clip', -1.0, 'train.grad_clip=-1.0'),
    ('data.name', 'imagenet', "data.name='imagenet': unknown; allowed: mnist, cifar10"),
    ('data.source', 'web', "data.source='web': unknown; allowed: auto, tfds"),
    ('model.name', 'resnet7', "model.name='resnet7': unknown; allowed: lenet"),
    ('checkpoint_every', -1, 'checkpoint_every=-1: must be >= 0'),
    ('data.synthetic_classes', 1, 'data.synthetic_classes=1: must be >= 2'),
    ('cue_conflict.size', 0, 'cue_conflict.size=0: must be a positive integer'),
])
def test_config_errors_name_the_field(field, value, message):
  config = classify_configs.get_config('tiny')
  section, _, name = field.rpartition('.')
  (config[section] if section else config)[name] = value
  with pytest.raises(train_lib.TrainConfigError) as e:
    classify.check(config)
  assert message in str(e.value) and '\n' not in str(e.value)


def test_model_kwargs_errors_are_one_line():
  config = classify_configs.get_config('tiny_vit')
  config.model.kwargs.num_heads = 3  # 32 is not divisible by 3
  with pytest.raises(classify.ClassifyConfigError, match='model.kwargs of vit_ti16') as e:
    classify.check(config)
  assert '\n' not in str(e.value)
  config = classify_configs.get_config('tiny')
  config.model.kwargs.depth = 3  # not a ResNet field
  with pytest.raises(classify.ClassifyConfigError, match='model.kwargs of resnet18.*depth'):
    classify.check(config)


def test_dry_run_error_through_main(tmp_path):
  out = subprocess.run(main_cmd(tmp_path / 'w', '--dry_run',
                                '--config.train.label_smoothing=-0.5'),
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      'error: train.label_smoothing=-0.5: must be in [0, 1)')
  assert not (tmp_path / 'w').exists()


def test_presets_pass_the_checks_and_unknown_ones_list_the_allowed():
  for preset in classify_configs.PRESETS:
    config = classify_configs.get_config(preset)
    if config.data.name == 'folder':  # the folder must be named (not read by the checks)
      config.data.data_dir = '/data/sin'
    classify.check(config)
  with pytest.raises(ValueError, match='unknown preset; allowed: resnet20_cifar, vit_cifar'):
    classify_configs.get_config('resnet56')


def test_resnet20_preset_is_resnet20():
  config = classify_configs.get_config('resnet20_cifar')
  model = classify.build_model(config.model.name, config.model.kwargs.to_dict(), 10,
                               (32, 32, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  convs = [p for p in jax.tree_util.tree_leaves(shapes['params']) if len(p.shape) == 4]
  # 19 3x3 convs + the classifier = 20 layers; two 1x1 projection shortcuts
  assert sum(p.shape[:2] == (3, 3) for p in convs) == 19
  assert sorted(p.shape[-1] for p in convs if p.shape[:2] == (1, 1)) == [32, 64]
  assert 0.27e6 < classify.count_params(shapes['params']) < 0.28e6


def test_label_smoothing_and_plain_cross_entropy():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  labels = jnp.array([0, 2])
  plain = train_lib.cross_entropy(logits, labels)
  np.testing.assert_allclose(plain, np.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits, labels)), rtol=1e-6)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, 3), 0.1)
  np.testing.assert_allclose(train_lib.cross_entropy(logits, labels, 0.1),
                             np.mean(optax.softmax_cross_entropy(logits, targets)), rtol=1e-6)


def test_warmup_then_cosine_and_adamw_decay_mask():
  schedule = train_lib.make_schedule(1.0, 100, warmup_steps=10)
  assert float(schedule(0)) == 0 and float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0) and float(schedule(100)) == pytest.approx(0)
  assert float(train_lib.make_schedule(1.0, 100)(0)) == 1.0  # no warm-up: as before
  t = classify_configs.get_config('tiny_vit').train
  tx = train_lib.make_optimizer(t, 100)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # zero gradient: only decoupled decay moves the kernel (lr 0 at step 0 of the warm-up)
  assert float(jnp.abs(updates['bias']).max()) == 0
  t.warmup_epochs = 0.0
  tx = train_lib.make_optimizer(t, 100)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -t.lr * t.weight_decay, rtol=1e-6)
  assert float(jnp.abs(updates['bias']).max()) == 0


def test_synthetic_data_takes_the_configured_shape():
  d = classify.load_data(classify_configs.get_config('tiny').data)
  assert d.shape == (32, 32, 3) and d.num_classes == 4
  config = classify_configs.get_config('tiny')
  config.data.synthetic_classes = 10  # stands in for CIFAR-10 (the cue-conflict tests)
  assert classify.load_data(config.data).num_classes == 10 == classify.num_classes(config.data)
  assert isinstance(d, data_lib.Dataset)


def test_trainer_compiler_options_reach_the_step_and_change_only_rounding():
  """classify's trainer compiles with xla_options.no_ynn() (None off CPU): the step then
  computes what XLA's defaults compute, up to float32 rounding."""
  from awesome_jax import xla_options  # pylint: disable=import-outside-toplevel
  c = classify_configs.get_config('tiny')
  model = classify.build_model(c.model.name, classify._model_kwargs(c.model), 4, (32, 32, 3))
  options = xla_options.no_ynn()
  if jax.default_backend() == 'cpu':
    assert options == xla_options.NO_YNN or options is None  # None: an XLA without it
  else:
    assert options is None
  plain = train_lib.Trainer(model, c.train, (32, 32, 3), 10)
  tuned = train_lib.Trainer(model, c.train, (32, 32, 3), 10, compiler_options=options)
  assert tuned.compiler_options == options and plain.compiler_options is None
  state = plain.init_state(jax.random.key(0))
  x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
  y = np.arange(8) % 4
  a, _ = plain.train_step(state, x, y, jax.random.key(1))
  b, _ = tuned.train_step(state, x, y, jax.random.key(1))
  for u, v in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
  assert tuned.accuracy(tuned.variables(b), x, y) == plain.accuracy(plain.variables(a), x, y)


def test_extra_augment_works_on_the_normalised_images_the_trainer_sees():
  t = classify_configs.get_config('tiny').train
  assert classify.extra_augment_fn(t, (0.5,) * 3, (0.25,) * 3) is None  # '' = none
  mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
  pixels = np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32)
  x = (pixels - mean) / std
  key = jax.random.key(1)
  t.extra_augment = 'sobel,noise'
  t.extra_augment_params = 'noise_std=0.1'
  got = jax.jit(classify.extra_augment_fn(t, mean, std))(key, x) * std + mean
  want = augment.build('sobel,noise', noise_std=0.1)(key, pixels)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert np.abs(np.asarray(want) - augment.build('sobel')(key, pixels)).max() > 0.05
