"""The 7-class CIFAR cue-conflict benchmark on a generated stimuli tree."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from awesome_jax import cifar_cue_conflict as cc
from awesome_jax import shape_bias as sb

STIMULI = {
    'stimuli': ['cat1-dog1', 'car1-boat2', 'airplane1-truck1', 'truck2-cat3',  # 7: conflict
                'bird1-bird2', 'dog2-dog3',                                   # 7: same class
                'cat2-bear1', 'bear1-cat1', 'clock1-knife1', 'oven1-oven2'],  # not both 7
    'edges': ['cat1', 'dog1', 'airplane1', 'bear1'],
    'silhouettes': ['truck1', 'knife1'],
}
# human 'subject-02' on the conflicts (subject-01 always answers the shape)
SUBJECT_2 = {'cat1-dog1.png': 'dog', 'car1-boat2.png': 'bear'}


def code(cls):
  """A pixel value naming a class: 20 * its CIFAR index + 10 (250 if not one of the 7)."""
  return 20 * cc.CIFAR_INDEX[cls] + 10 if cls in cc.CIFAR_INDEX else 250


def make_tree(root):
  """stimuli_root and humans_root with solid images: red = shape, green = texture code."""
  for folder, names in STIMULI.items():
    for n in names:
      _, shape, texture = sb.parse_stimulus(n + '.png')
      os.makedirs(os.path.join(root, 'stim', folder, shape), exist_ok=True)
      img = np.zeros((16, 16, 3), np.uint8)
      img[..., 0], img[..., 1] = code(shape), code(texture)
      Image.fromarray(img).save(os.path.join(root, 'stim', folder, shape, n + '.png'))
  for cond, (folder, human_folder) in cc.CONDITIONS.items():
    os.makedirs(os.path.join(root, 'humans', human_folder))
    names = [n + '.png' for n in STIMULI[folder]]
    for subj in ('subject-01', 'subject-02'):
      t = sb.Trials.from_decisions(subj, names, [sb.parse_stimulus(n)[1] for n in names])
      if subj == 'subject-02':
        t.response = np.array([SUBJECT_2.get(k, r) for k, r in zip(t.key, t.response)])
      sb.write_decisions_csv(os.path.join(root, 'humans', human_folder, f'{subj}.csv'), t)
  return os.path.join(root, 'stim'), os.path.join(root, 'humans')


def texture_model(x):
  """10-way logits: deer (not one of the 7) highest, then the texture (green) class."""
  logits = np.zeros((len(x), 10))
  logits[:, 4] = 10.0
  logits[np.arange(len(x)), (x[:, 0, 0, 1].astype(int) - 10) // 20] = 5.0
  return logits


def shape_model(x):
  return np.eye(10)[(x[:, 0, 0, 0].astype(int) - 10) // 20]


def test_select_counts(tmp_path):
  stim, _ = make_tree(str(tmp_path))
  s = cc.select(stim)
  assert [x[1] for x in s] == ['airplane1-truck1.png', 'bird1-bird2.png', 'car1-boat2.png',
                               'cat1-dog1.png', 'dog2-dog3.png', 'truck2-cat3.png']
  assert sum(x[2] != x[3] for x in s) == 4
  assert len(cc.select(stim, 'edge')) == 3 and len(cc.select(stim, 'silhouette')) == 1
  with pytest.raises(sb.StimulusError, match="'edges': unknown"):
    cc.select(stim, 'edges')


def test_load_antialiases(tmp_path):
  board = ((np.indices((224, 224)).sum(0) % 2) * 255).astype(np.uint8)
  Image.fromarray(np.stack([board] * 3, -1)).save(tmp_path / 'board.png')
  solid = np.full((224, 224, 3), (30, 90, 170), np.uint8)
  Image.fromarray(solid).save(tmp_path / 'solid.png')
  x = cc.load([(str(tmp_path / 'board.png'),), (str(tmp_path / 'solid.png'),)])
  assert x.shape == (2, 32, 32, 3) and x.dtype == np.uint8
  assert np.abs(x[0].astype(int) - 127).max() <= 8  # a 1-pixel checkerboard averages out
  assert (x[1] == (30, 90, 170)).all()
  assert cc.load([(str(tmp_path / 'solid.png'),)], size=64).shape == (1, 64, 64, 3)


def test_decide_restricted_to_the_seven():
  logits = np.full((4, 10), -5.0)
  logits[:, 4] = 9.0                  # deer wins the 10-way argmax
  logits[0, 6] = logits[0, 7] = 8.0   # frog, horse: not among the 7 either
  logits[0, 2] = 1.0                  # bird
  logits[1, 1] = 1.0                  # automobile -> car
  logits[2, 8] = 1.0                  # ship -> boat
  logits[3, 9] = 1.0                  # truck
  assert list(cc.decide(logits)) == ['bird', 'car', 'boat', 'truck']
  assert set(cc.decide(np.random.default_rng(0).normal(size=(200, 10)))) == set(cc.CATEGORIES)
  assert cc.CATEGORIES == ('airplane', 'bird', 'boat', 'car', 'cat', 'dog', 'truck')
  with pytest.raises(ValueError, match=r'\(N, 10\)'):
    cc.decide(np.zeros((3, 16)))


def test_bootstrap_interval():
  names = [f'cat{i}-dog{i}.png' for i in range(40)]
  t = sb.Trials.from_decisions('m', names, ['cat'] * 30 + ['dog'] * 10)
  r = cc.bootstrap_shape_bias(t)
  assert r['low'] < 0.75 < r['high'] and r['high'] - r['low'] < 0.4
  assert cc.bootstrap_shape_bias(t) == r
  assert cc.bootstrap_shape_bias(t, seed=1) != r
  narrow = cc.bootstrap_shape_bias(t, level=0.5)
  assert r['low'] < narrow['low'] < narrow['high'] < r['high']
  every = cc.bootstrap_shape_bias(sb.Trials.from_decisions('m', names, ['cat'] * 40))
  assert every['low'] == every['high'] == 1
  # a model that never names the shape or the texture class: no bias, no interval (a tiny
  # net did this in the notebook test and the quantile of nothing crashed the run)
  neither = cc.bootstrap_shape_bias(sb.Trials.from_decisions('m', names, ['car'] * 40))
  assert np.isnan(neither['low']) and np.isnan(neither['high'])


def test_evaluate_known_answers(tmp_path):
  stim, humans = make_tree(str(tmp_path))
  r = cc.evaluate(shape_model, stim, batch=4)
  assert r['shape_bias'] == 1 and r['shape_acc'] == 1 and r['texture_acc'] == 0
  assert r['edge_accuracy'] == 1 and r['silhouette_accuracy'] == 1
  assert r['conditions']['cue-conflict']['stimuli'] == 6
  assert r['conditions']['cue-conflict']['conflict_trials'] == 4
  assert 'human_shape_bias' not in r

  r = cc.evaluate(texture_model, stim, humans, size=16, batch=4, name='tex')
  cue = r['conditions']['cue-conflict']
  assert r['shape_bias'] == 0 and r['texture_acc'] == 1 and r['cue-conflict_accuracy'] == 2 / 6
  assert set(cue['per_class_shape_bias']) == set(cc.CATEGORIES)
  # humans: subject-01 4 shape; subject-02 2 shape, 1 texture, 1 'bear' (neither)
  assert r['human_shape_bias'] == pytest.approx(6 / 7)
  assert cue['humans']['pooled']['trials'] == 12  # the 7-class stimuli only
  kappas = cue['vs_humans']['kappa_per_human']
  assert kappas['subject-01'] == pytest.approx(0) and kappas['subject-02'] == pytest.approx(0.4)
  # inter-class errors over the 7: the model's 4 confusions vs the humans' cat->dog
  # (car->bear is outside the 7 and dropped)
  m = np.array([0.625, 0.125, 0.125, 0.125])
  p, q = np.full(4, 0.25), np.array([1.0, 0, 0, 0])
  kl = lambda a: float(np.sum(a[a > 0] * np.log2(a[a > 0] / m[a > 0])))
  js = math.sqrt(0.5 * kl(p) + 0.5 * kl(q))
  assert cue['vs_humans']['js_interclass_errors'] == pytest.approx(js)
  assert 0 < cue['vs_humans']['js_class_errors'] < 1
  assert cue['shape_bias_interval']['low'] == 0 == cue['shape_bias_interval']['high']


def test_plot(tmp_path):
  stim, humans = make_tree(str(tmp_path))
  stimuli = cc.select(stim)
  models = {'shape': cc.classify(shape_model, stimuli, name='shape'),
            'texture': cc.classify(texture_model, stimuli, name='texture')}
  path = str(tmp_path / 'shape_bias.png')
  cc.plot_shape_bias(path, models, cc.read_humans(humans, 'cue-conflict', models['shape'].key))
  assert os.path.getsize(path) > 1000
