"""Shape bias, error consistency and the 16-class mapping on hand-made tables."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from awesome_jax import shape_bias as sb
from awesome_jax.tasks import shape_bias as shape_bias_task
from configs import shape_bias as shape_bias_configs


def trials(responses, pairs, name='obs'):
  """pairs: list of (shape, texture); stimulus keys made unique by index."""
  names = [f'{s}{i}-{t}{i}.png' for i, (s, t) in enumerate(pairs)]
  return sb.Trials.from_decisions(name, names, responses)


def test_shape_bias_known_answer():
  pairs = [('cat', 'dog')] * 4 + [('car', 'bird')] * 4 + [('knife', 'knife')] * 2
  responses = ['cat', 'cat', 'dog', 'oven',      # 2 shape, 1 texture, 1 neither
               'car', 'bird', 'bird', 'bird',    # 1 shape, 3 texture
               'knife', 'oven']                  # same-class trials: excluded
  r = sb.shape_bias(trials(responses, pairs))
  assert (r['shape_hits'], r['texture_hits'], r['conflict_trials']) == (3, 4, 8)
  assert r['shape_bias'] == pytest.approx(3 / 7)
  assert r['shape_acc'] == pytest.approx(3 / 8) and r['texture_acc'] == pytest.approx(4 / 8)
  assert r['excluded_same_class_trials'] == 2
  per = sb.shape_bias_per_class(trials(responses, pairs))
  assert per['cat'] == pytest.approx(2 / 3) and per['car'] == pytest.approx(1 / 4)
  assert np.isnan(per['knife'])


def test_error_consistency_known_answer():
  pairs = [('cat', 'dog')] * 4
  a = trials(['cat', 'cat', 'dog', 'dog'], pairs, 'a')  # right, right, wrong, wrong
  b = trials(['cat', 'dog', 'dog', 'cat'], pairs, 'b')  # right, wrong, wrong, right
  r = sb.error_consistency(a, b)
  # c_obs = 2/4; p_a = p_b = 1/2 -> c_exp = 1/2 -> kappa = 0
  assert r['c_obs'] == 0.5 and r['c_exp'] == 0.5 and r['kappa'] == 0
  c = trials(['cat', 'cat', 'dog', 'oven'], pairs, 'c')  # same right/wrong pattern as a
  assert sb.error_consistency(a, c)['kappa'] == pytest.approx(1.0)
  d = trials(['dog', 'dog', 'cat', 'cat'], pairs, 'd')  # the opposite pattern
  assert sb.error_consistency(a, d)['kappa'] == pytest.approx(-1.0)


def test_kappa_self_is_one_and_independent_is_near_zero():
  rng = np.random.default_rng(0)
  n = 4000
  pairs = [(sb.CATEGORIES[i % 16], sb.CATEGORIES[(i + 3) % 16]) for i in range(n)]
  def random_observer(name, p_correct):
    return trials([s if rng.uniform() < p_correct else t for s, t in pairs], pairs, name)
  a, b = random_observer('a', 0.7), random_observer('b', 0.6)
  assert sb.error_consistency(a, a)['kappa'] == pytest.approx(1.0)
  assert abs(sb.error_consistency(a, b)['kappa']) < 0.05


def test_observers_are_matched_by_stimulus_not_order():
  pairs = [('cat', 'dog'), ('car', 'bird'), ('oven', 'bear')]
  a = trials(['cat', 'bird', 'oven'], pairs, 'a')
  rev = sb.Trials('b', a.key[::-1], a.shape[::-1], a.texture[::-1], a.response[::-1])
  assert sb.error_consistency(a, rev)['kappa'] == pytest.approx(1.0)


def test_mapping_table():
  mapping = sb.load_mapping()
  assert sorted(mapping) == list(sb.CATEGORIES)
  all_idx = [i for v in mapping.values() for i in v]
  assert all(0 <= i < 1000 for i in all_idx)
  assert len(all_idx) == len(set(all_idx)) == 207
  assert mapping['airplane'] == [404] and mapping['knife'] == [499]
  with pytest.raises(sb.StimulusError, match="index 404 is in both 'airplane' and 'boat'"):
    sb.check_mapping({'airplane': [404], 'boat': [404]})
  with pytest.raises(sb.StimulusError, match='outside'):
    sb.check_mapping({'airplane': [1000]})


def test_decisions_from_probs_uses_the_category_mean():
  mapping = {'cat': [0, 1, 2], 'dog': [3]}
  probs = np.zeros((2, 5))
  probs[0, [0, 1, 2, 3]] = [0.3, 0.0, 0.0, 0.2]    # cat mean 0.1 < dog 0.2
  probs[1, [0, 1, 2, 3]] = [0.3, 0.3, 0.3, 0.1]
  assert sb.decisions_from_probs(probs, mapping) == ['dog', 'cat']


def test_stimulus_names():
  assert sb.parse_stimulus('airplane1-bicycle2.png') == ('airplane1-bicycle2.png',
                                                         'airplane', 'bicycle')
  assert sb.parse_stimulus('0001_s5n_s01_0_bird_00_bird3-bird2.png')[1:] == ('bird', 'bird')
  with pytest.raises(sb.StimulusError, match="unknown class 'unicorn'"):
    sb.parse_stimulus('unicorn1-cat2.png')
  with pytest.raises(sb.StimulusError, match='expected a name like'):
    sb.parse_stimulus('cat.png')


def test_csv_round_trip(tmp_path):
  pairs = [('cat', 'dog'), ('car', 'bird'), ('oven', 'oven')]
  t = trials(['cat', 'bird', 'na'], pairs, 'model-x')
  sb.write_decisions_csv(tmp_path / 'm.csv', t)
  header = (tmp_path / 'm.csv').read_text().splitlines()[0]
  assert header == ','.join(sb.CSV_FIELDS)
  back = sb.read_decisions_csv(tmp_path / 'm.csv')
  assert back.observer == 'model-x'
  np.testing.assert_array_equal(back.response, t.response)
  assert sb.shape_bias(back) == sb.shape_bias(t)
  (tmp_path / 'bad.csv').write_text('subj,trial\nx,1\n')
  with pytest.raises(sb.StimulusError, match=r'bad.csv: missing columns'):
    sb.read_decisions_csv(tmp_path / 'bad.csv')


def test_js_distance():
  assert sb.jensen_shannon_distance([1, 0], [1, 0]) == 0
  assert sb.jensen_shannon_distance([1, 0], [0, 1]) == pytest.approx(1.0)
  assert 0 < sb.jensen_shannon_distance([0.5, 0.5], [0.9, 0.1]) < 1
  t = trials(['dog', 'dog', 'cat'], [('cat', 'dog'), ('cat', 'bird'), ('car', 'bird')])
  dist = sb.class_error_distribution(t)
  assert dist[sb.CATEGORIES.index('cat')] == pytest.approx(2 / 3)
  conf = sb.confusion_error_distribution(t)
  assert conf[sb.CATEGORIES.index('cat'), sb.CATEGORIES.index('dog')] == pytest.approx(2 / 3)


def test_task_end_to_end_with_a_fake_model(tmp_path):
  """Generated stimuli and human CSVs; a 'model' that answers by mean colour."""
  stim = tmp_path / 'cue_conflict' / 'stimuli'
  colours = {'cat': (255, 0, 0), 'dog': (0, 0, 255)}
  names = []
  for shape in ('cat', 'dog'):
    os.makedirs(stim / shape)
    for texture in ('cat', 'dog'):
      for i in range(3):
        name = f'{shape}{i}-{texture}{i}.png'
        Image.fromarray(np.full((224, 224, 3), colours[texture], np.uint8)).save(stim / shape / name)
        names.append(name)
  humans = tmp_path / 'humans' / 'cue-conflict'
  os.makedirs(humans)
  for subj in ('subject-01', 'subject-02'):  # humans answer by shape
    t = sb.Trials.from_decisions(subj, names, [n.split('-')[0].rstrip('0123456789') for n in names])
    sb.write_decisions_csv(humans / f'{subj}.csv', t)
  mapping = sb.load_mapping()

  def texture_model(x):  # red -> a cat class, blue -> a dog class
    logits = np.zeros((len(x), 1000), np.float32)
    red = x[..., 0].mean(axis=(1, 2)) > 127
    logits[red, mapping['cat'][0]] = 20
    logits[~red, mapping['dog'][0]] = 20
    return logits

  config = shape_bias_configs.get_config()
  config.data.stimuli_root = str(tmp_path / 'cue_conflict')
  config.data.humans_root = str(tmp_path / 'humans')
  config.conditions = 'cue-conflict'
  config.model.name = 'texture-model'
  config.progress_bar = False
  config.batch_size = 5
  r = shape_bias_task.run(config, str(tmp_path), logits_fn=texture_model)
  r = r['conditions']['cue-conflict']
  assert r['shape_bias'] == 0 and r['texture_acc'] == 1 and r['conflict_trials'] == 6
  assert r['humans']['pooled']['shape_bias'] == 1
  for f in ('shape_bias.png', 'kappa.png', 'results.json',
            'decisions_texture-model_cue-conflict.csv'):
    assert (tmp_path / f).exists()
  back = sb.read_decisions_csv(tmp_path / 'decisions_texture-model_cue-conflict.csv')
  assert sb.shape_bias(back)['shape_bias'] == 0
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['conditions']['cue-conflict']['stimuli'] == 12


def test_single_class_stimuli_and_bad_condition(tmp_path):
  assert sb.parse_stimulus('0001_edg_s01_0_oven_00_oven10.png') == ('oven10.png', 'oven', 'oven')
  t = trials(['cat', 'dog'], [('cat', 'cat'), ('car', 'car')])
  r = sb.shape_bias(t)
  assert r['conflict_trials'] == 0 and r['accuracy'] == 0.5
  config = shape_bias_configs.get_config()
  config.conditions = 'cue-conflict,sketch'
  with pytest.raises(sb.StimulusError, match="'sketch' unknown; allowed: cue-conflict, edge"):
    shape_bias_task.run(config, str(tmp_path), logits_fn=lambda x: x)
