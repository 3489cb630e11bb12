"""The shape_bias task on finished classify runs: a workdir as a model's weights."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from awesome_jax import folder_stream
from awesome_jax import models
from awesome_jax import shape_bias as sb
from awesome_jax.models import zoo
from awesome_jax.tasks import classify
from awesome_jax.tasks import shape_bias as shape_bias_task
from configs import shape_bias as shape_bias_configs

SHAPE = (32, 32, 3)
KWARGS = {'hidden': 16}


def classify_run(workdir, num_classes=1000, data='folder', seed=0):
  """A finished classify workdir made by hand: a tiny MLP's model.json, params.npz
  (random weights and biases: its decisions change with any change of the input's scale
  or offset) and the results.json / config.json that name its training data."""
  os.makedirs(workdir)
  model = models.build('mlp', num_classes, SHAPE, **KWARGS)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + SHAPE))
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  rng = np.random.default_rng(seed)
  variables = jax.tree_util.tree_unflatten(
      tree, [rng.normal(0, 1 / np.sqrt(l.shape[0]) if l.ndim == 2 else 1, l.shape)
             .astype(np.float32) for l in leaves])
  spec = {'name': 'mlp', 'kwargs': KWARGS, 'num_classes': num_classes,
          'input_shape': list(SHAPE)}
  classify.save_trained(str(workdir), spec, variables)
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump({'data': data, 'test_acc': 0.001}, f)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump({'task': 'classify', 'data': {'name': data, 'image_size': SHAPE[0]}}, f)
  return str(workdir)


def stimulus_tree(root, classes=('cat', 'dog', 'car')):
  """224x224 stimuli, random colours plus noise (every shape x texture pair) and two human observers
  answering by shape -> a shape_bias config that reads them."""
  rng = np.random.default_rng(0)
  names = []
  for shape in classes:
    os.makedirs(root / 'cue_conflict' / 'stimuli' / shape)
    for texture in classes:
      pixels = rng.integers(0, 256, 3) + rng.integers(-40, 40, (224, 224, 3))
      pixels = np.clip(pixels, 0, 255).astype(np.uint8)
      names.append(f'{shape}1-{texture}1.png')
      Image.fromarray(pixels).save(root / 'cue_conflict' / 'stimuli' / shape / names[-1])
  os.makedirs(root / 'humans' / 'cue-conflict')
  for subject in ('subject-01', 'subject-02'):
    t = sb.Trials.from_decisions(subject, names, [n.split('1-')[0] for n in names])
    sb.write_decisions_csv(root / 'humans' / 'cue-conflict' / f'{subject}.csv', t)
  config = shape_bias_configs.get_config()
  config.data.stimuli_root = str(root / 'cue_conflict')
  config.data.humans_root = str(root / 'humans')
  config.conditions = 'cue-conflict'
  config.progress_bar = False
  config.batch_size = 4
  return config


def expected_decisions(workdir, stimuli):
  """The 16-class decisions of the run in `workdir`, computed here: the 224x224 stimuli
  resized whole (antialiased) to 32x32, ImageNet mean/std."""
  model, variables = classify.load_trained(workdir)
  x = jnp.asarray(shape_bias_task.load_images([s[0] for s in stimuli]), jnp.float32)
  x = jax.image.resize(x, (len(x),) + SHAPE, 'bilinear', antialias=True) / 255
  x = (x - jnp.asarray(folder_stream.MEAN)) / jnp.asarray(folder_stream.STD)
  probs = np.asarray(jax.nn.softmax(model.apply(variables, x), axis=-1))
  return sb.decisions_from_probs(probs, sb.load_mapping())


def test_classify_runs_in_one_figure(tmp_path):
  config = stimulus_tree(tmp_path)
  runs = {'in': classify_run(tmp_path / 'in', seed=0),
          'sin': classify_run(tmp_path / 'sin', seed=1)}
  config.models = ','.join(f'{label}={d}' for label, d in runs.items())
  shape_bias_task.check(config)
  r = shape_bias_task.run(config, str(tmp_path / 'w'))
  saved = json.loads((tmp_path / 'w' / 'results.json').read_text())
  assert set(saved['models']) == {'in', 'sin'}
  stimuli = sb.list_stimuli(str(tmp_path / 'cue_conflict' / 'stimuli'))
  for label, workdir in runs.items():
    m = saved['models'][label]
    assert m['weights'] == workdir and m['architecture'] == 'mlp'
    prep = m['preprocessing']
    assert prep['name'] == 'folder' and prep['resize'] == prep['crop'] == 32
    assert prep['mean'] == list(folder_stream.MEAN) and prep['std'] == list(folder_stream.STD)
    assert prep['description'] == ('folder: resize 32, crop 32, mean (0.485, 0.456, 0.406), '
                                   'std (0.229, 0.224, 0.225)')
    cue = m['conditions']['cue-conflict']
    assert cue['stimuli'] == 9 and cue['conflict_trials'] == 6
    assert 0 <= cue['shape_hits'] + cue['texture_hits'] <= 6 and 'vs_humans' in cue
    back = sb.read_decisions_csv(tmp_path / 'w' / f'decisions_{label}_cue-conflict.csv')
    assert len(back.response) == 9
    # the decisions are those of the model preprocessed as in training
    want = dict(zip([s[1] for s in stimuli], expected_decisions(workdir, stimuli)))
    assert [want[k] for k in back.key] == list(back.response)
    assert len(set(back.response)) > 1  # decisions that a wrong preprocessing would change
  assert set(r['models']) == {'in', 'sin'}
  assert (tmp_path / 'w' / 'shape_bias.png').exists()  # both runs beside the humans


def test_one_classify_run_as_model_name_and_weights(tmp_path):
  config = stimulus_tree(tmp_path, classes=('cat', 'dog'))
  config.model.name = 'mlp'  # the architecture's own name is a label too
  config.model.weights = classify_run(tmp_path / 'run')
  r = shape_bias_task.run(config, str(tmp_path / 'w'))
  assert r['model'] == 'mlp' and r['preprocessing']['name'] == 'folder'
  assert r['conditions']['cue-conflict']['stimuli'] == 4


def check_error(config):
  with pytest.raises(models.ModelError) as e:
    shape_bias_task.check(config)
  assert '\n' not in str(e.value)
  return str(e.value)


def test_a_classify_run_of_other_than_1000_classes_is_one_line(tmp_path):
  config = stimulus_tree(tmp_path, classes=('cat', 'dog'))
  config.models = f'ten={classify_run(tmp_path / "ten", num_classes=10)}'
  msg = check_error(config)
  assert 'mlp has 10 classes' in msg and "ImageNet's 1000" in msg


@pytest.mark.parametrize('remove,message', [
    (('model.json',), 'no model.json there'),
    (('params.npz',), 'no params.npz there'),
    (('model.json', 'params.npz'), 'no model.json and no params.npz there'),
])
def test_a_folder_that_is_no_finished_run_is_one_line(tmp_path, remove, message):
  config = stimulus_tree(tmp_path, classes=('cat', 'dog'))
  workdir = classify_run(tmp_path / 'run')
  for f in remove:
    os.remove(os.path.join(workdir, f))
  config.models = f'sin={workdir},resnet18=random'
  msg = check_error(config)
  assert msg.startswith(f"model sin: weights '{workdir}'") and message in msg


def test_other_bad_classify_runs_are_one_line(tmp_path):
  config = stimulus_tree(tmp_path, classes=('cat', 'dog'))
  config.models = f'sin={classify_run(tmp_path / "cifar", data="cifar10")}'
  assert 'trained on data.name=cifar10' in check_error(config)
  workdir = classify_run(tmp_path / 'run')
  config.models = f'resnet50={workdir}'  # a label that names another architecture
  assert 'the run trained mlp, not resnet50' in check_error(config)
  os.remove(os.path.join(workdir, 'results.json'))
  os.remove(os.path.join(workdir, 'config.json'))
  config.models = f'sin={workdir}'
  assert 'no results.json or config.json' in check_error(config)
  shutil.rmtree(workdir)
  assert 'no such file or folder' in check_error(config)
