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


def no_nan(constant):
  raise AssertionError(f'{constant} in a JSON file')


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
  saved = json.loads((tmp_path / 'results.json').read_text(), parse_constant=no_nan)
  assert saved['conditions']['cue-conflict']['stimuli'] == 12
  # classes without stimuli have an undefined shape bias: null in the file, nan in Python
  assert saved['conditions']['cue-conflict']['per_class_shape_bias']['oven'] is None
  assert np.isnan(r['per_class_shape_bias']['oven'])


def test_single_class_stimuli_and_bad_condition(tmp_path):
  assert sb.parse_stimulus('0001_edg_s01_0_oven_00_oven10.png') == ('oven10.png', 'oven', 'oven')
  t = trials(['cat', 'dog'], [('cat', 'cat'), ('car', 'car')])
  r = sb.shape_bias(t)
  assert r['conflict_trials'] == 0 and r['accuracy'] == 0.5
  config = shape_bias_configs.get_config()
  config.conditions = 'cue-conflict,sketch'
  with pytest.raises(sb.StimulusError, match="'sketch' unknown; allowed: cue-conflict, edge"):
    shape_bias_task.run(config, str(tmp_path), logits_fn=lambda x: x)


# ------------------------------------------------------------------ bad input


def stimulus_tree(tmp_path, classes=('cat', 'dog'), humans=True):
  """A tiny stimulus tree (8x8 PNGs) and two human CSVs; -> a config that reads them."""
  stim = tmp_path / 'cue_conflict' / 'stimuli'
  names = []
  for shape in classes:
    os.makedirs(stim / shape)
    for texture in classes:
      name = f'{shape}1-{texture}1.png'
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(stim / shape / name)
      names.append(name)
  if humans:
    folder = tmp_path / 'humans' / 'cue-conflict'
    os.makedirs(folder)
    for subj in ('subject-01', 'subject-02'):
      t = sb.Trials.from_decisions(subj, names, [n.split('1-')[0] for n in names])
      sb.write_decisions_csv(folder / f'{subj}.csv', t)
  config = shape_bias_configs.get_config()
  config.data.stimuli_root = str(tmp_path / 'cue_conflict')
  config.data.humans_root = str(tmp_path / 'humans') if humans else 'none'
  config.conditions = 'cue-conflict'
  config.progress_bar = False
  return config


def model_must_not_run(x):
  raise AssertionError('the model ran before the inputs were checked')


def run_error(config, tmp_path):
  """The one-line StimulusError of run(), which must come before the model runs."""
  with pytest.raises(sb.StimulusError) as e:
    shape_bias_task.run(config, str(tmp_path / 'workdir'), logits_fn=model_must_not_run)
  assert '\n' not in str(e.value)
  return str(e.value)


def test_a_stimulus_that_is_not_an_image_fails_before_the_model(tmp_path):
  config = stimulus_tree(tmp_path)
  stim = tmp_path / 'cue_conflict' / 'stimuli'
  (stim / 'cat' / 'cat1-dog1.png').write_text('not an image')
  assert run_error(config, tmp_path) == f'{stim}/cat/cat1-dog1.png: not an image file'
  # a truncated PNG (the header reads, the data does not)
  noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
  Image.fromarray(noise).save(stim / 'cat' / 'cat1-dog1.png')
  data = (stim / 'dog' / 'dog1-cat1.png')
  Image.fromarray(noise).save(data)
  data.write_bytes(data.read_bytes()[:3000])
  assert run_error(config, tmp_path).startswith(f'{data}: broken image')
  (stim / 'dog' / 'dog1-dog1.png').write_bytes(b'')
  assert run_error(config, tmp_path).endswith('(and 1 more: dog1-dog1.png)')
  # macOS resource forks and hidden folders are not stimuli
  (stim / 'dog' / 'dog1-dog1.png').unlink()
  Image.fromarray(noise).save(data)
  (stim / 'cat' / '._cat1-dog1.png').write_text('resource fork')
  os.makedirs(stim / '.ipynb_checkpoints')
  assert [s[1] for s in sb.list_stimuli(stim)] == ['cat1-cat1.png', 'cat1-dog1.png',
                                                   'dog1-cat1.png']


def test_load_images_names_a_file_that_broke_after_the_check(tmp_path):
  (tmp_path / 'cat1-dog1.png').write_text('not an image')
  with pytest.raises(sb.StimulusError, match=r'cat1-dog1.png: not a readable image'):
    shape_bias_task.load_images([str(tmp_path / 'cat1-dog1.png')])


@pytest.mark.parametrize('text,message', [
    (None, 'cannot read (No such file or directory)'),
    ('{"cat": [281', 'not JSON (Expecting'),
    ('[281, 282]', 'the file is not a non-empty object; expected {"categories"'),
    ('{"categories": []}', 'categories. is not a non-empty object'),
    ('{"categories": {"cat": {"wnids": ["n02123045"]}}}',
     'categories.cat.imagenet_indices: missing; expected'),
    ('{"cat": 281}', 'cat: 281 is not a list; expected'),
    ('{"cat": ["281"]}', "'cat' has index '281', not an integer"),
    ('{"cat": [281.0]}', "'cat' has index 281.0, not an integer"),
    ('{"cat": [281, 1000]}', "'cat' has index 1000 outside 0..999"),
    ('{"cat": [-1]}', "'cat' has index -1 outside 0..999"),
    ('{"cat": []}', "category 'cat' has no classes"),
    ('{"cat": [281, 281]}', "index 281 is twice in 'cat'"),
])
def test_mapping_file_errors_are_one_line(tmp_path, text, message):
  path = tmp_path / 'mapping.json'
  if text is not None:
    path.write_text(text)
  with pytest.raises(sb.StimulusError) as e:
    sb.load_mapping(str(path))
  assert str(e.value).startswith(f'mapping {path}: ') and message in str(e.value)
  assert '\n' not in str(e.value)


def test_mapping_categories_must_match_the_stimuli(tmp_path):
  config = stimulus_tree(tmp_path)
  (tmp_path / 'mapping.json').write_text('{"Cat": [281], "dog": [200], "oven": [766]}')
  config.mapping = str(tmp_path / 'mapping.json')
  assert run_error(config, tmp_path) == (
      f"mapping {config.mapping}: its categories differ from the stimuli's classes: in the "
      'stimuli but not in the mapping: cat; in the mapping but not one of the 16 categories: Cat')
  # a texture class counts too
  with pytest.raises(sb.StimulusError, match='not in the mapping: bird$'):
    sb.check_mapping_classes({'cat': [281], 'dog': [200]}, {'cat', 'dog', 'bird'})
  # more categories than the stimuli have (a subset of the 16) is a fair forced choice
  sb.check_mapping_classes({'cat': [281], 'dog': [200], 'oven': [766]}, {'cat', 'dog'})


def decisions_csv(path, responses):
  pairs = [('cat', 'dog')] * len(responses)
  sb.write_decisions_csv(path, trials(responses, pairs, 'subject-01'))


def test_unknown_response_labels_warn_or_fail(tmp_path, capsys):
  path = tmp_path / 'subject-01.csv'
  decisions_csv(path, ['cat', 'ariplane', 'na', 'Airplane', 'ariplane', 'dog'])
  t = sb.read_decisions_csv(path)
  assert sb.shape_bias(t)['shape_hits'] == 1 and sb.shape_bias(t)['texture_hits'] == 1
  err = capsys.readouterr().err
  assert err == (f"warning: {path}: 3 of 6 responses are not a category or 'na': "
                 "'ariplane' x2, 'Airplane' x1; they count as neither shape nor texture "
                 '(strict_labels rejects them)\n')
  with pytest.raises(sb.StimulusError, match=r"3 of 6 .* 'ariplane' x2, 'Airplane' x1"):
    sb.read_decisions_csv(path, strict=True)
  with pytest.raises(sb.StimulusError, match=r"'ariplane' x2"):
    sb.read_observers(tmp_path, strict=True)
  decisions_csv(path, ['cat', 'na', 'dog'])  # 'na' (no answer) is a known label
  sb.read_decisions_csv(path, strict=True)
  assert capsys.readouterr().err == ''
  # through the task: config.strict_labels rejects, before the model runs
  config = stimulus_tree(tmp_path)
  human = tmp_path / 'humans' / 'cue-conflict' / 'subject-01.csv'
  human.write_text(human.read_text().replace(',cat,cat,', ',Cat,cat,'))
  config.strict_labels = True
  assert run_error(config, tmp_path).endswith("2 of 4 responses are not a category or 'na': "
                                              "'Cat' x2 (strict labels)")


def test_other_bad_inputs_are_one_line(tmp_path):
  config = stimulus_tree(tmp_path)
  root = config.data.stimuli_root
  config.data.stimuli_root = f'{root}/stimuli'  # one level too deep
  assert run_error(config, tmp_path) == (
      f"data.stimuli_root={root}/stimuli: no stimuli/ folder for condition 'cue-conflict' "
      f'(expected {root}/stimuli/stimuli/<class>/<name>.png; found: cat, dog)')
  config.data.stimuli_root = str(tmp_path / 'nowhere')
  assert run_error(config, tmp_path) == f'data.stimuli_root={tmp_path}/nowhere: not a directory'
  config.data.stimuli_root = root
  os.makedirs(f'{root}/stimuli/oven')
  assert run_error(config, tmp_path) == f'{root}/stimuli/oven: empty class folder (no .png stimuli)'
  os.rmdir(f'{root}/stimuli/oven')
  humans = tmp_path / 'humans' / 'cue-conflict'
  config.data.humans_root = str(tmp_path)
  assert "no cue-conflict/ folder for condition 'cue-conflict'" in run_error(config, tmp_path)
  config.data.humans_root = str(tmp_path / 'humans')
  (humans / 'subject-03.csv').write_bytes(bytes(range(256)))
  assert run_error(config, tmp_path) == f'{humans}/subject-03.csv: not a text CSV (not UTF-8)'
  (humans / 'subject-03.csv').write_text(','.join(sb.CSV_FIELDS) + '\nsubject-03,1,1\n')
  assert run_error(config, tmp_path) == (f'{humans}/subject-03.csv: data row 1 has 3 fields, '
                                         'expected 8')
  # the CSV of another condition: no stimulus in common
  sb.write_decisions_csv(humans / 'subject-03.csv',
                         sb.Trials.from_decisions('subject-03', ['cat7.png'], ['cat']))
  assert run_error(config, tmp_path) == (
      f"{humans}: observer 'subject-03' saw none of the 4 stimuli in {root}/stimuli "
      '(a CSV of another condition?)')
  for f in os.listdir(humans):
    os.remove(humans / f)
  assert run_error(config, tmp_path) == f'{humans}: no .csv files'
  config.batch_size = 0
  with pytest.raises(sb.StimulusError, match='batch_size=0: must be a positive integer'):
    shape_bias_task.check(config)
  config.batch_size, config.conditions = 64, ' , '
  with pytest.raises(sb.StimulusError, match='conditions: empty'):
    shape_bias_task.check(config)


def test_results_json_is_strict_json(tmp_path):
  """Undefined numbers (no conflict trials, one human) are null in results.json."""
  config = stimulus_tree(tmp_path)
  os.remove(tmp_path / 'humans' / 'cue-conflict' / 'subject-02.csv')  # no human pairs
  config.model.name = 'always-oven'
  oven = sb.load_mapping()['oven'][0]
  r = shape_bias_task.run(config, str(tmp_path / 'new' / 'workdir'),
                          logits_fn=lambda x: np.eye(1000, dtype=np.float32)[[oven] * len(x)])
  r = r['conditions']['cue-conflict']
  assert np.isnan(r['shape_bias']) and np.isnan(r['humans']['human_human_kappa_mean'])
  saved = json.loads((tmp_path / 'new' / 'workdir' / 'results.json').read_text(),
                     parse_constant=no_nan)['conditions']['cue-conflict']
  assert saved['shape_bias'] is None and saved['humans']['human_human_kappa_mean'] is None
  assert saved['accuracy'] == 0
  assert shape_bias_task.json_ready({'a': (np.float32(np.inf), np.int64(3)), 1: np.array(
      [0.5, np.nan])}) == {'a': [None, 3], '1': [0.5, None]}


# ------------------------------------------------------------------ zoo models


def test_several_zoo_models_in_one_run(tmp_path):
  config = stimulus_tree(tmp_path)
  config.models = 'resnet18=random,vit_ti16=random'
  r = shape_bias_task.run(config, str(tmp_path / 'w'))
  assert set(r['models']) == {'resnet18', 'vit_ti16'}
  preps = {n: m['preprocessing'] for n, m in r['models'].items()}
  assert preps['resnet18']['name'] == 'torchvision' and preps['resnet18']['crop'] == 224
  assert preps['vit_ti16']['mean'] == [0.5, 0.5, 0.5] and preps['vit_ti16']['gelu'] == 'exact'
  for name in r['models']:
    assert r['models'][name]['conditions']['cue-conflict']['stimuli'] == 4
    assert (tmp_path / 'w' / f'decisions_{name}_cue-conflict.csv').exists()
    assert 'vs_humans' in r['models'][name]['conditions']['cue-conflict']
  saved = json.loads((tmp_path / 'w' / 'results.json').read_text(), parse_constant=no_nan)
  assert set(saved['models']) == {'resnet18', 'vit_ti16'}
  assert (tmp_path / 'w' / 'shape_bias.png').exists() and (tmp_path / 'w' / 'kappa.png').exists()


@pytest.mark.parametrize('field,value,message', [
    ('models', 'resnet51=random', "model.name='resnet51': unknown; allowed: efficientnet_lite0"),
    ('models', 'resnet18', 'model resnet18: no weight file'),
    ('models', 'resnet18=/no/such.pth', "weights '/no/such.pth': no such file"),
    ('models', 'resnet18=random,resnet18=random', 'listed twice'),
    ('model.preprocessing', 'caffe', "model.preprocessing='caffe': unknown"),
])
def test_bad_model_config_is_one_line(tmp_path, field, value, message):
  from awesome_jax import models
  config = stimulus_tree(tmp_path)
  if field == 'models':
    config.models = value
  else:
    config.models = 'resnet18=random'
    config.model.preprocessing = value
  with pytest.raises(models.ModelError) as e:
    shape_bias_task.check(config)
  assert message in str(e.value) and '\n' not in str(e.value)


def test_zoo_vit_gelu_follows_the_weight_files_contents(tmp_path):
  from awesome_jax.models import zoo
  entry = zoo.entries()['vit_ti16']
  npz_named_bin = tmp_path / 'weights.bin'  # an npz by content, whatever its name
  with open(npz_named_bin, 'wb') as f:
    np.savez(f, cls=np.zeros((1, 1, 192)))
  assert zoo.weight_format(entry, str(npz_named_bin)) == 'augreg_npz'
  assert zoo.preprocessing_for(entry, str(npz_named_bin)).name == 'augreg'
  model = entry.build(weight_format=zoo.weight_format(entry, str(npz_named_bin)))
  assert model.gelu == 'tanh'
  assert zoo.weight_format(entry, 'random') == 'timm'


def test_zoo_preprocessing_resizes_crops_and_normalises():
  from awesome_jax.models import zoo
  tv = zoo.PREPROCESSING['torchvision']
  mean, std = np.array(tv.mean), np.array(tv.std)
  # square images at the crop size go in whole: a ramp comes back unchanged, normalised
  ramp = np.broadcast_to(np.arange(224, dtype=np.uint8)[None, None, :, None], (1, 224, 224, 3))
  y = np.asarray(zoo.preprocess(ramp, tv))
  np.testing.assert_allclose(y[0, 5, :, 0], (np.arange(224) / 255 - mean[0]) / std[0], rtol=1e-5)
  # others: short side to 256, then the centre 224 x 224 (a ramp along W keeps its middle)
  wide = np.broadcast_to(np.arange(400, dtype=np.float32)[None, None, :, None] * 0.5,
                         (2, 200, 400, 3))
  y = np.asarray(zoo.preprocess(wide, tv))
  assert y.shape == (2, 224, 224, 3)
  pixels = y[0, 100, :, 0] * std[0] + mean[0]  # back to 0-1
  assert np.all(np.diff(pixels) > 0)  # still a ramp, not flipped or transposed
  # the resized row spans 0..199.5 over 512 columns; its centre 224 start at column 144
  np.testing.assert_allclose(pixels[0] * 255, 144 * 400 / 512 * 0.5, atol=1.0)
  y = np.asarray(zoo.preprocess(np.zeros((1, 224, 224, 3)), zoo.PREPROCESSING['augreg']))
  assert y.shape == (1, 224, 224, 3) and np.allclose(y, -1)
