"""Domain adaptation and data poisoning with distilled data (tasks/applications.py), on
scikit-learn's digits with an MLP: the methods do what they claim, resume, and refuse
bad configs with one line."""

import json
import os

import numpy as np
import pytest

from awesome_jax import applications as app
from awesome_jax import distill
from awesome_jax.tasks import applications as app_task
from configs import applications as app_configs


def tiny(preset, **overrides):
  config = app_configs.get_config(preset)
  config.progress_bar = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def test_adaptation_beats_the_source_only_nets_and_random_real_images(tmp_path):
  results = app_task.run(tiny('tiny_adapt'), str(tmp_path))
  rows = results['rows']
  # transposed digits -> digits: the source nets are near chance on the target
  assert rows['distilled']['acc_mean'] > rows['before']['acc_mean'] + 0.25
  assert rows['distilled']['acc_mean'] > rows['random_real']['acc_mean'] + 0.05
  assert rows['full_target']['acc_mean'] > rows['before']['acc_mean'] + 0.3
  assert results['test_nets'] == 2 and len(rows['distilled']['acc_all']) == 2
  for name in ('distilled.npz', 'distilled.png', 'results.json', 'results.png'):
    assert (tmp_path / name).exists(), name
  z = distill.load_distilled(str(tmp_path / 'distilled.npz'))
  assert str(z['application']) == 'distill_adapt' and str(z['source']) == 'digits-transpose'
  assert json.loads((tmp_path / 'results.json').read_text())['rows'] == rows
  # the saved set and test nets alone give the same numbers back
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      'recheck', os.path.join(os.path.dirname(__file__), '..', 'scripts',
                              'recheck_application.py'))
  recheck = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recheck)
  _, again = recheck.recheck(str(tmp_path))
  for row in ('before', 'distilled'):
    np.testing.assert_allclose(again[row]['acc_all'], rows[row]['acc_all'], atol=1e-6)


def test_poisoning_flips_the_attacked_class_more_than_its_baseline(tmp_path):
  config = tiny('tiny_attack', **{'pretrain.kind': 'fixed', 'distill.n_inits': 1})
  results = app_task.run(config, str(tmp_path))
  rows = results['rows']
  assert rows['before']['attack_success_mean'] < 0.05  # trained nets: 0s are 0s
  assert rows['distilled']['attack_success_mean'] > (
      rows['random_real']['attack_success_mean'] + 0.3)
  assert rows['distilled']['other_acc_mean'] > 0.7  # the other classes stay right
  z = distill.load_distilled(str(tmp_path / 'distilled.npz'))
  assert int(z['attack_class']) == 0 and int(z['target_class']) == 1


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
  common = {'eval.baselines': False, 'eval.finetune_epochs': 0, 'checkpoint_every': 4,
            'pretrain.dir': str(tmp_path / 'pools')}
  whole = app_task.run(tiny('tiny_adapt', **common, **{'outer.steps': 12}),
                       str(tmp_path / 'whole'))
  pool_files = sorted(os.listdir(tmp_path / 'pools'))
  stamps = [os.path.getmtime(tmp_path / 'pools' / f) for f in pool_files]
  app_task.run(tiny('tiny_adapt', **common, **{'outer.steps': 8}), str(tmp_path / 'cut'))
  again = app_task.run(tiny('tiny_adapt', **common, **{'outer.steps': 12}),
                       str(tmp_path / 'cut'))
  # the pools were reused, not retrained
  assert sorted(os.listdir(tmp_path / 'pools')) == pool_files
  assert [os.path.getmtime(tmp_path / 'pools' / f) for f in pool_files] == stamps
  a = distill.load_distilled(str(tmp_path / 'whole' / 'distilled.npz'))
  b = distill.load_distilled(str(tmp_path / 'cut' / 'distilled.npz'))
  np.testing.assert_allclose(a['images_normalized'], b['images_normalized'], atol=1e-5)
  np.testing.assert_allclose(whole['rows']['distilled']['acc_all'],
                             again['rows']['distilled']['acc_all'], atol=1e-3)


def test_an_interrupted_pool_keeps_its_finished_chunks(tmp_path, monkeypatch):
  config = tiny('tiny_adapt', **{'pretrain.num_train_nets': 4, 'pretrain.chunk': 2})
  source, target = app_task.load_domains(config)
  distiller = distill.Distiller(config, target)
  trained = []
  original = app.NetTrainer.train

  def counting(self, params, *args, **kwargs):
    trained.append(app.pool_size(params))
    if len(trained) == 2:
      raise KeyboardInterrupt  # killed while training the second chunk
    return original(self, params, *args, **kwargs)

  monkeypatch.setattr(app.NetTrainer, 'train', counting)
  with pytest.raises(KeyboardInterrupt):
    app_task.pools(config, distiller, source, str(tmp_path))
  monkeypatch.setattr(app.NetTrainer, 'train', original)
  trained.clear()
  monkeypatch.setattr(app.NetTrainer, 'train', lambda self, p, *a, **k: (
      trained.append(app.pool_size(p)), original(self, p, *a, **k))[1])
  train_pool, test_pool, info = app_task.pools(config, distiller, source, str(tmp_path))
  assert trained == [2, 2]  # the second training chunk, then the test pool's one chunk
  assert app.pool_size(train_pool) == 4 and app.pool_size(test_pool) == 2
  assert 0.5 < info['train_pool']['source_test_acc_mean'] <= 1
  assert not [f for f in os.listdir(tmp_path) if '.part' in f]


def test_attack_metrics_and_relabel_on_a_hand_made_example():
  y = np.array([0, 0, 1, 2])
  pred = np.array([[1, 0, 1, 2],    # half of class 0 called 1, the rest right
                   [1, 1, 1, 0]])   # all of class 0 called 1, class 2 wrong
  m = app.attack_metrics(pred, y, attack_class=0, target_class=1)
  np.testing.assert_allclose(m['attack_success'], [0.5, 1.0])
  np.testing.assert_allclose(m['other_acc'], [1.0, 0.5])
  np.testing.assert_allclose(m['acc'], [0.75, 0.25])
  np.testing.assert_allclose(m['acc_wrt_modified'], [0.75, 0.75])
  np.testing.assert_array_equal(app.relabel(y, 0, 1), [1, 1, 1, 2])
  np.testing.assert_array_equal(y, [0, 0, 1, 2])  # not in place


def test_the_training_twin_computes_the_same_net():
  import jax  # pylint: disable=g-import-not-at-top
  from awesome_jax import models  # pylint: disable=g-import-not-at-top
  model = models.build('lenet', 10, (28, 28, 1))
  params = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))['params']
  apply_twin, to_twin, from_twin = app.training_twin(model, (28, 28, 1))
  x = np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(apply_twin(to_twin(params), x),
                             model.apply({'params': params}, x), atol=1e-4)
  assert jax.tree_util.tree_structure(from_twin(to_twin(params))) == (
      jax.tree_util.tree_structure(params))
  assert app.training_twin(models.build('mlp', 10, (8, 8, 1)), (8, 8, 1)) is None


def test_sampled_nets_depend_on_seed_and_step_only():
  pool = {'w': np.arange(10.0)[:, None]}
  a = app.sample_nets(pool, 3, seed=0, step=5)['w'][:, 0]
  assert len(set(np.asarray(a).tolist())) == 3
  np.testing.assert_array_equal(a, app.sample_nets(pool, 3, seed=0, step=5)['w'][:, 0])
  assert not np.array_equal(a, app.sample_nets(pool, 3, seed=0, step=6)['w'][:, 0])
  np.testing.assert_array_equal(app.sample_nets(pool, 10, 0, 0)['w'], pool['w'])


@pytest.mark.parametrize('preset,overrides,message', [
    ('tiny_adapt', {'source.transform': 'none'}, "source.name='digits' is data.name"),
    ('tiny_adapt', {'source.transform': 'rotate'}, "source.transform='rotate': unknown"),
    ('tiny_adapt', {'source.name': 'svhn'}, "source.name='svhn': unknown"),
    ('tiny_adapt', {'pretrain.kind': 'loaded'}, "pretrain.kind='loaded': unknown; allowed"),
    ('tiny_adapt', {'pretrain.kind': 'fixed'}, 'distill.n_inits=2'),
    ('tiny_adapt', {'distill.n_inits': 5}, 'more than the pool of pretrain.num_train_nets=4'),
    ('tiny_adapt', {'pretrain.num_test_nets': 0}, 'pretrain.num_test_nets=0'),
    ('tiny_adapt', {'distill.random_init': False}, 'distill.random_init=False'),
    ('tiny_attack', {'attack.target_class': 0}, 'attack.target_class=0: the same class'),
    ('tiny_attack', {'attack.attack_class': -1}, 'attack.attack_class=-1'),
])
def test_bad_configs_name_the_field(preset, overrides, message):
  with pytest.raises(distill.ConfigError, match=message.replace('(', r'\(')):
    app_task.check(tiny(preset, **overrides))


def test_an_unknown_class_is_refused_once_the_data_says_how_many(tmp_path):
  with pytest.raises(distill.ConfigError, match=r'attack.attack_class=12: unknown class; '
                     r'digits has classes 0..9'):
    app_task.run(tiny('tiny_attack', **{'attack.attack_class': 12}), str(tmp_path))


@pytest.mark.parametrize('preset', app_configs.PRESETS)
def test_every_preset_passes_its_data_free_check(preset):
  app_task.check(app_configs.get_config(preset))
