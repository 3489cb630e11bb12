"""Continual learning with a distilled memory: streams, memories, metrics, the task end
to end on scikit-learn digits with an MLP (seconds), resume after a kill, config errors."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import continual
from awesome_jax import tasks
from awesome_jax.distill import ConfigError
from awesome_jax.tasks import continual as continual_task
from configs import continual as continual_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**memory):
  config = continual_configs.get_config('tiny')
  config.progress_bar = False
  for name, value in memory.items():
    config.memory[name] = value
  return config


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """The tiny preset (5 tasks of 2 digit classes) with none, random and distilled memory."""
  workdir = tmp_path_factory.mktemp('continual_tiny')
  config = tiny_config()
  return workdir, continual_task.run(config, str(workdir))


# ------------------------------------------------------------------ metrics


def test_metrics_of_a_hand_made_accuracy_matrix():
  acc = np.array([[0.90, 0.99, 0.00],   # R[0, 1] = 0.99: an unseen task, not a peak of it
                  [0.60, 0.95, 0.20],
                  [0.50, 0.70, 0.80]])
  np.testing.assert_allclose(continual.average_accuracy(acc), 2.0 / 3.0)
  np.testing.assert_allclose(continual.seen_average(acc), [0.9, 0.775, 2.0 / 3.0])
  np.testing.assert_allclose(continual.forgetting(acc), [0.9 - 0.5, 0.95 - 0.7])
  np.testing.assert_allclose(continual.backward_transfer(acc),
                             ((0.5 - 0.9) + (0.7 - 0.95)) / 2)
  # a task that got better after later tasks forgets from its best row, not its own
  acc = np.array([[0.5, 0.0, 0.0], [0.8, 0.9, 0.0], [0.6, 0.9, 0.7]])
  np.testing.assert_allclose(continual.forgetting(acc), [0.2, 0.0])
  np.testing.assert_allclose(continual.backward_transfer(acc), 0.05)
  s = continual.summary(acc)
  assert s['accuracy_matrix'] == acc.tolist() and s['mean_forgetting'] == pytest.approx(0.1)
  one = continual.summary([[0.7]])  # a single task: nothing to forget
  assert one['forgetting'] == [] and one['mean_forgetting'] == 0.0
  assert one['backward_transfer'] == 0.0


# ---------------------------------------------------------- streams, memory


def test_split_and_permuted_streams():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 4, 4, 1)).astype(np.float32)
  y = np.arange(60) % 10
  split = continual.make_stream(x, y, x[:20], y[:20], 10, 'split', 5)
  assert [t.classes for t in split] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
  for t in split:
    assert set(t.train_set()[1]) == set(t.classes) == set(t.test_set()[1])
  perm = continual.make_stream(x, y, x[:20], y[:20], 10, 'permuted', 3, seed=1)
  again = continual.make_stream(x, y, x[:20], y[:20], 10, 'permuted', 3, seed=1)
  other = continual.make_stream(x, y, x[:20], y[:20], 10, 'permuted', 3, seed=2)
  assert perm[0].perm is None  # the first task is the data itself
  np.testing.assert_array_equal(perm[0].train_set()[0], x)
  np.testing.assert_array_equal(perm[2].perm, again[2].perm)  # seeded
  assert not np.array_equal(perm[2].perm, other[2].perm)
  assert not np.array_equal(perm[1].perm, perm[2].perm)
  px, py = perm[1].train_set()
  np.testing.assert_array_equal(py, y)
  assert not np.array_equal(px, x)
  np.testing.assert_array_equal(continual.unpermute(px, perm[1].perm), x)
  capped = continual.make_stream(x, y, x, y, 10, 'split', 2, train_per_task=5)
  assert [len(t.train_set()[0]) for t in capped] == [5, 5]
  assert len(capped[0].test_set()[0]) == 12  # test sets stay whole


def test_random_exemplars_are_balanced_real_images():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 2, 2, 1))
  y = np.repeat([4, 5], 20)
  mx, my = continual.random_exemplars(x, y, (4, 5), 7, np.random.default_rng(0))
  assert sorted(my.tolist()) == [4, 4, 4, 4, 5, 5, 5]
  for img, label in zip(mx, my):
    assert any(np.array_equal(img, x[i]) for i in np.flatnonzero(y == label))
  np.testing.assert_array_equal(continual.balanced_labels((2, 3), 6), [2, 2, 2, 3, 3, 3])


# ------------------------------------------------------------------ end to end


def test_replay_reduces_forgetting(tiny_run):
  """Without memory a class-incremental learner forgets every earlier task; replaying 10
  random or 10 distilled images per task keeps most of them (margins hold on seeds 0-2:
  forgetting 99 % without memory, 18-30 % with either)."""
  _, results = tiny_run
  kinds = results['kinds']
  none, random, distilled = kinds['none'], kinds['random'], kinds['distilled']
  assert none['mean_forgetting'] > 0.9
  for memory in (random, distilled):
    assert memory['mean_forgetting'] < none['mean_forgetting'] - 0.4
    assert memory['average_accuracy'] > none['average_accuracy'] + 0.3
    # the first task, learnt alone, is still remembered at the end
    assert memory['accuracy_matrix'][-1][0] > none['accuracy_matrix'][-1][0] + 0.2


def test_outputs_of_a_run(tiny_run):
  workdir, results = tiny_run
  assert json.loads((workdir / 'results.json').read_text()) == results
  assert (workdir / 'accuracy.png').stat().st_size > 5000
  assert results['task_classes'] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
  for kind in ('none', 'random', 'distilled'):
    r = json.loads((workdir / kind / 'results.json').read_text())
    acc = np.array(r['accuracy_matrix'])
    assert acc.shape == (5, 5) and np.all((0 <= acc) & (acc <= 1))
    assert r['average_accuracy'] == pytest.approx(acc[-1].mean())
    assert len(r['forgetting']) == 4
    assert (workdir / kind / 'metrics.jsonl').exists()
    assert not (workdir / kind / 'distill_checkpoints').exists()  # spent ones are removed
  assert not (workdir / 'none' / 'memory.npz').exists()
  for kind in ('random', 'distilled'):
    with np.load(workdir / kind / 'memory.npz') as z:
      assert z['images'].shape == (40, 8, 8, 1)  # 10 images of each of the 4 past tasks
      np.testing.assert_allclose(z['targets'].sum(-1), 1, atol=1e-6)
      np.testing.assert_array_equal(z['task'], np.repeat(np.arange(4), 10))
      np.testing.assert_array_equal(z['hard_labels'] // 2, z['task'])  # the task's classes
      np.testing.assert_allclose((z['images'] - z['mean']) / z['std'],
                                 z['images_normalized'], atol=1e-5)
      if kind == 'distilled':
        assert z['lrs'].shape == (4, 5) and np.all(z['lrs'] > 0)
    assert (workdir / kind / 'memory.png').stat().st_size > 1000
  # fresh nets trained on each distilled set alone learn its task
  fresh = results['kinds']['distilled']['distilled_fresh_net_acc']
  assert len(fresh) == 4 and all(a > 0.7 for a in fresh)


class Killed(Exception):
  """Stands for a kill right after a checkpoint was written."""


def test_killed_run_resumes_to_the_same_result(tiny_run, tmp_path, monkeypatch, capsys):
  """Killed inside the distillation of task 2, restarted: it continues from that outer
  step without learning tasks 1-2 again, and ends with the uninterrupted run's numbers
  (which the module fixture ran in another workdir: the same seed reproduces them)."""
  config = tiny_config(kind='distilled')
  save = ckpt_lib.Checkpointer.save
  saves = []

  def save_then_die(self, step, state):
    save(self, step, state)
    saves.append(step)
    # stage 1, task 1's distillation (4 saves), stage 2, stage 3, then 2 of task 2's
    if len(saves) == 9:
      raise Killed()

  monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', save_then_die)
  with pytest.raises(Killed):
    continual_task.run(config, str(tmp_path))
  monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', save)
  assert not (tmp_path / 'distilled' / 'results.json').exists()

  trained = []
  train_task = continual.Learner.train_task

  def counted(self, params, x, y, *args, **kwargs):
    trained.append(sorted(set(y.tolist())))
    return train_task(self, params, x, y, *args, **kwargs)

  monkeypatch.setattr(continual.Learner, 'train_task', counted)
  capsys.readouterr()
  results = continual_task.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'distilled: resumed after stage 3 of 9' in out
  assert 'distilled: task 2, resumed at outer step 10' in out
  assert trained == [[4, 5], [6, 7], [8, 9]]  # tasks 1 and 2 are not learnt again

  whole_dir, whole = tiny_run
  assert (results['kinds']['distilled']['accuracy_matrix'] ==
          whole['kinds']['distilled']['accuracy_matrix'])
  with np.load(tmp_path / 'distilled' / 'memory.npz') as a, \
       np.load(whole_dir / 'distilled' / 'memory.npz') as b:
    np.testing.assert_array_equal(a['images_normalized'], b['images_normalized'])
    np.testing.assert_array_equal(a['lrs'], b['lrs'])


def test_permuted_stream_with_random_memory(tmp_path):
  config = tiny_config(kind='random')
  config.stream.name = 'permuted'
  config.stream.num_tasks = 2
  config.stream.train_per_task = 300
  config.train.epochs = 2
  results = continual_task.run(config, str(tmp_path))
  acc = np.array(results['kinds']['random']['accuracy_matrix'])
  assert acc.shape == (2, 2) and acc[0, 0] > 0.6 and acc[1, 1] > 0.6
  assert results['task_classes'] == [list(range(10))] * 2
  with np.load(tmp_path / 'random' / 'memory.npz') as z:
    assert z['images'].shape == (10, 8, 8, 1)
    np.testing.assert_array_equal(z['permutations'][0], np.arange(64))  # task 1: identity
    np.testing.assert_array_equal(np.sort(z['hard_labels']), np.arange(10))


# ------------------------------------------------------------------- configs


@pytest.mark.parametrize('field,value,message', [
    ('stream.name', 'rotated', "stream.name='rotated': unknown; allowed: split, permuted"),
    ('stream.num_tasks', 6, 'stream.num_tasks=6: 6 tasks of stream.classes_per_task=2 '
                            'classes need 12 classes but digits has 10; allowed: '
                            'num_tasks <= 5'),
    ('stream.num_tasks', 0, 'stream.num_tasks=0: must be an integer >= 1'),
    ('memory.kind', 'replay', "memory.kind='replay': unknown; allowed: none, random, "
                              'distilled, a comma list of them'),
    ('memory.kind', 'none,none', "memory.kind='none,none': unknown"),
    ('memory.per_task', 0, 'memory.per_task=0: must be an integer >= 2, the classes of a '
                           'task'),
    ('memory.per_task', 1, 'memory.per_task=1: must be an integer >= 2'),
    ('memory.distill.steps', 3, 'memory.distill.steps=3: must divide memory.per_task=10'),
    ('memory.distill.steps', 10, 'memory.distill.steps=10: must divide'),
    ('memory.distill.image_init', 'zeros', "memory.distill.image_init='zeros': unknown; "
                                           'allowed: noise, real'),
    ('memory.distill.outer_steps', -1, 'memory.distill.outer_steps=-1: must be an integer'),
    ('memory.distill.lr', 0.0, 'memory.distill.lr=0.0: must be > 0'),
    ('train.optimizer', 'rmsprop', "train.optimizer='rmsprop': unknown; allowed: sgd, adam"),
    ('train.lr', -0.1, 'train.lr=-0.1: must be > 0'),
    ('train.momentum', 1.0, 'train.momentum=1.0: must be in [0, 1)'),
    ('train.epochs', 0, 'train.epochs=0: must be an integer >= 1'),
    ('model.name', 'lenet', "model.name='lenet' cannot take data of shape (8, 8, 1)"),
    ('model.name', 'resnet18', "model.name='resnet18': unknown here"),
    ('data.name', 'imagenet', "data.name='imagenet': unknown; allowed: mnist"),
])
def test_bad_config_raises_naming_the_field(field, value, message):
  config = tiny_config()
  section, name = field.rsplit('.', 1)
  node = config
  for part in section.split('.'):
    node = node[part]
  node[name] = value
  with pytest.raises(ConfigError) as e:
    continual_task.check(config)
  assert str(e.value).startswith(message) or re.search(re.escape(message), str(e.value)), (
      str(e.value))
  assert '\n' not in str(e.value)


def test_memory_fields_only_matter_for_their_kind():
  config = tiny_config(kind='none', per_task=0)
  config.memory.distill.steps = 3
  continual_task.check(config)  # no memory: per_task and distill are unused
  config = tiny_config(kind='random', per_task=3)
  config.memory.distill.steps = 2
  continual_task.check(config)  # no distillation: its steps need not divide per_task
  config.stream.name = 'permuted'  # every task holds all 10 classes
  with pytest.raises(ConfigError, match='memory.per_task=3: must be an integer >= 10'):
    continual_task.check(config)
  assert continual_task.memory_kinds('all') == ('none', 'random', 'distilled')
  assert continual_task.memory_kinds('distilled, none') == ('distilled', 'none')


def test_presets_pass_the_checks_and_main_dry_runs_them(tmp_path):
  for preset in continual_configs.PRESETS:
    config = continual_configs.get_config(preset)
    _, check = tasks.get(config.task)
    check(config)
  with pytest.raises(ValueError, match='unknown preset; allowed: split_mnist'):
    continual_configs.get_config('split_cifar')
  cmd = [sys.executable, '-m', 'awesome_jax.main', '--dry_run', f'--workdir={tmp_path / "w"}']
  ok = subprocess.run(cmd + ['--config=configs/continual.py:split_mnist'], cwd=ROOT,
                      capture_output=True, text=True)
  assert ok.returncode == 0 and 'config OK: task continual' in ok.stdout, ok.stderr[-2000:]
  bad = subprocess.run(cmd + ['--config=configs/continual.py:permuted_mnist',
                              '--config.memory.per_task=5'], cwd=ROOT, capture_output=True,
                       text=True)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith(
      'error: memory.per_task=5: must be an integer >= 10'), bad.stderr[-2000:]
  assert not (tmp_path / 'w').exists()
