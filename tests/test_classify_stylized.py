"""Training on stylized + original CIFAR-10 (Geirhos et al. 2019 at CIFAR scale): the union
of several CIFAR-10 folders (data.extra_train_dirs), the extra test sets (data.extra_test,
also re-evaluated on a finished workdir), their one-line errors, the image-folder cache
that follows a folder's contents, the commands of configs/classify.py, and
scripts/compare_stylized.py's table and figure."""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from awesome_jax import cifar_cue_conflict as cc
from awesome_jax import data as data_lib
from awesome_jax.tasks import classify
from configs import classify as classify_configs
from tests import test_docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_folder(root, train_per_class=2, test_per_class=1, classes=data_lib.CIFAR10_CLASSES,
                seed=0, size=32):
  """A CIFAR-10 image folder root/{train,test}/<class>/<i>.png of random images."""
  rng = np.random.default_rng(seed)
  for split, n in (('train', train_per_class), ('test', test_per_class)):
    for c in classes:
      os.makedirs(os.path.join(root, split, c))
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            os.path.join(root, split, c, f'{i}.png'))
  return str(root)


def folder_config(main, extra_train='', extra_test=''):
  """The tiny preset on the CIFAR-10 folder `main` (2 steps, no cue-conflict stimuli)."""
  config = classify_configs.get_config('tiny')
  config.data.name = 'cifar10'
  config.data.source = 'files'
  config.data.data_dir = main
  config.data.extra_train_dirs = extra_train
  config.data.extra_test = extra_test
  config.train.max_steps = 2
  return config


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  base = tmp_path_factory.mktemp('stylized_folders')
  return {'base': base, 'cache': str(base / 'cache'),
          'in': make_folder(base / 'in', seed=0), 'sin': make_folder(base / 'sin', seed=1),
          'other': make_folder(base / 'other', train_per_class=1, seed=2)}


@pytest.fixture(autouse=True)
def cache_in_tmp(folders, monkeypatch):
  monkeypatch.setenv('AWESOME_JAX_DATA', folders['cache'])  # not the user's cache folder


@pytest.fixture(scope='module')
def run(folders):
  """A tiny ResNet trained 2 steps on IN + SIN, tested on both test splits."""
  workdir = folders['base'] / 'run'
  config = folder_config(folders['in'], folders['sin'],
                         f'cifar10={folders["in"]},stylized={folders["sin"]}')
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('AWESOME_JAX_DATA', folders['cache'])
    results = classify.run(config, str(workdir))
  return {'workdir': workdir, 'results': results, 'config': config}


def read_results(workdir):
  with open(workdir / 'results.json') as f:
    return json.load(f)


def test_union_has_the_summed_train_split_and_the_main_test_split(folders):
  main = classify.load_data(folder_config(folders['in']).data)
  both = classify.load_data(folder_config(folders['in'], f'{folders["sin"]}, ').data)
  sin = data_lib.load_cifar10_files(folders['sin'])
  assert len(main.x_train) == 20 and len(both.x_train) == 40
  np.testing.assert_array_equal(both.x_train, np.concatenate([main.x_train, sin.x_train]))
  np.testing.assert_array_equal(both.y_train, np.concatenate([main.y_train, sin.y_train]))
  np.testing.assert_array_equal(both.x_test, main.x_test)
  assert (both.mean, both.std) == (main.mean, main.std) == data_lib.STATS['cifar10']
  three = classify.load_data(folder_config(folders['in'], f'{folders["sin"]},{folders["in"]}').data)
  assert len(three.x_train) == 60


def test_run_writes_the_extra_test_accuracies(run, folders):
  r = read_results(run['workdir'])
  assert r['train_images'] == 40 and r['extra_train_dirs'] == [folders['sin']]
  assert set(r['extra_test']) == {'cifar10', 'stylized'}
  assert r['extra_test_dirs'] == {'cifar10': folders['in'], 'stylized': folders['sin']}
  # the main folder's test split again: the run's own test accuracy
  assert r['extra_test']['cifar10'] == pytest.approx(r['test_acc'], abs=0.1)
  # the stylized test split, normalised as the training data
  model, variables = classify.load_trained(str(run['workdir']))
  sin = data_lib.load_cifar10_files(folders['sin'])
  main = classify.load_data(run['config'].data)
  logits = model.apply(variables, jnp.asarray(main.normalize(sin.x_test)), train=False)
  assert r['extra_test']['stylized'] == pytest.approx(
      float(jnp.mean(jnp.argmax(logits, -1) == sin.y_test)))


def test_a_finished_run_re_evaluates_the_extra_tests(run, folders, monkeypatch, capsys):
  before = read_results(run['workdir'])

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run trained again')

  monkeypatch.setattr(classify, 'train_and_test', no_training)
  config = folder_config(folders['in'], folders['sin'],
                         f'stylized={folders["sin"]},other={folders["other"]}')
  classify.run(config, str(run['workdir']))
  assert 'nothing to train; cue-conflict evaluation only' in capsys.readouterr().out
  after = read_results(run['workdir'])
  assert set(after['extra_test']) == {'stylized', 'other'}  # this config's sets
  assert after['extra_test']['stylized'] == before['extra_test']['stylized']  # same weights
  for key in ('test_acc', 'wall_seconds', 'train_steps', 'train_images'):
    assert after[key] == before[key]
  # without data.extra_test the accuracies there are kept
  classify.run(folder_config(folders['in'], folders['sin']), str(run['workdir']))
  assert read_results(run['workdir'])['extra_test'] == after['extra_test']
  # other train folders: not the same run, so it would train
  with pytest.raises(AssertionError, match='trained again'):
    classify.run(folder_config(folders['in'], folders['other']), str(run['workdir']))


def one_line_error(error, call, *args):
  with pytest.raises(error) as e:
    call(*args)
  assert '\n' not in str(e.value)
  return str(e.value)


def test_bad_folders_stop_the_run_in_one_line(folders, tmp_path):
  missing = str(tmp_path / 'missing')
  workdir = tmp_path / 'run'
  message = one_line_error(data_lib.DataError, classify.run,
                           folder_config(folders['in'], missing), str(workdir))
  assert message == f'data.extra_train_dirs: {missing}: not a directory'
  message = one_line_error(data_lib.DataError, classify.run,
                           folder_config(folders['in'], '', f'stylized={missing}'), str(workdir))
  assert message == f'data.extra_test stylized: {missing}: not a directory'
  assert not workdir.exists()  # stopped before anything was written
  nine = make_folder(tmp_path / 'nine', classes=data_lib.CIFAR10_CLASSES[:9])
  message = one_line_error(data_lib.DataError, classify.load_data,
                           folder_config(folders['in'], nine).data)
  assert message.startswith(f'data.extra_train_dirs: {nine}: its train classes (airplane, ')
  assert message.endswith("differ from the main data's (airplane, automobile, bird, cat, "
                          'deer, dog, frog, horse, ship, truck)')
  small = make_folder(tmp_path / 'small', train_per_class=1, size=16)
  message = one_line_error(data_lib.DataError, classify.load_extra_test,
                           folder_config(folders['in'], '', f's={small}').data)
  assert message == f'data.extra_test s: {small}: images of shape (16, 16, 3), not (32, 32, 3)'
  message = one_line_error(data_lib.DataError, classify.load_data,
                           folder_config(folders['in'], small).data)
  assert message == (f'data.extra_train_dirs: {small}: images of shape (16, 16, 3), '
                     'not (32, 32, 3)')


@pytest.mark.parametrize('field, value, message', [
    ('extra_test', 'stylized', "data.extra_test: 'stylized' is not NAME=DIR"),
    ('extra_test', 'a=x,a=y', "data.extra_test: name 'a' given twice"),
    ('extra_test', '=x', "data.extra_test: '=x' is not NAME=DIR"),
])
def test_extra_test_field_errors(field, value, message):
  config = classify_configs.get_config('tiny')
  config.data.name = 'cifar10'
  config.data[field] = value
  assert message in one_line_error(classify.ClassifyConfigError, classify.check, config)


def test_extra_folders_need_cifar10():
  config = classify_configs.get_config('tiny')  # synthetic data
  config.data.extra_train_dirs = '/x'
  assert one_line_error(classify.ClassifyConfigError, classify.check, config) == (
      'data.extra_train_dirs: CIFAR-10 folders, for data.name=cifar10 (not synthetic), or '
      'image folders for data.name=folder')


def test_the_folder_cache_follows_the_folders_contents(folders, tmp_path):
  root = make_folder(tmp_path / 'restyled', train_per_class=1)
  cache = str(tmp_path / 'cache')
  first = data_lib.load_cifar10_files(root, cache)
  again = data_lib.load_cifar10_files(root, cache)  # from the cache
  np.testing.assert_array_equal(again.x_train, first.x_train)
  assert len(os.listdir(cache)) == 1
  # written again at the same path (as a restarted stylize run would)
  path = os.path.join(root, 'train', 'cat', '0.png')
  Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(path)
  os.utime(path, ns=(1, 1))  # a distinct mtime even on a coarse clock
  restyled = data_lib.load_cifar10_files(root, cache)
  cat = data_lib.CIFAR10_CLASSES.index('cat')
  np.testing.assert_allclose(restyled.x_train[restyled.y_train == cat], 7 / 255, atol=1e-6)
  assert len(os.listdir(cache)) == 1  # the stale cache removed


def doc_commands():
  """The shell lines of configs/classify.py's stylized paragraph, variables expanded."""
  text = classify_configs.__doc__.split('Stylized CIFAR-10 (Geirhos')[1]
  env, out = {}, []
  for line in text.replace('\\\n', ' ').splitlines():
    line = re.sub(r'\$(\w+)', lambda m: env[m[1]], line.strip())
    assignment = re.fullmatch(r'([A-Z]+)=(.*)', line)
    if assignment:
      env[assignment[1]] = ' '.join(shlex.split(assignment[2]))  # words without spaces
    elif line.startswith('python '):
      out.append(line)
  return out


def test_the_documented_runs_pass_their_checks():
  cmds = doc_commands()
  assert len(cmds) == 5 and cmds[-1].startswith('python scripts/compare_stylized.py')
  configs = [test_docs.parse(cmd) for cmd in cmds[:4]]
  for config in configs:
    classify.check(config)
    assert config.data.extra_test == ('cifar10=../shared/data/cifar10_jpeg,'
                                      'stylized=/tmp/runs/sin_cifar')
    assert classify.extra_test_dirs(config.data)['stylized'] == '/tmp/runs/sin_cifar'
  sin_in, sin_in_in = configs[2], configs[3]
  assert classify.extra_train_dirs(sin_in.data) == ['/tmp/runs/sin_cifar']
  assert sin_in_in.init_from == '/tmp/runs/stylized/sin_in' and sin_in_in.train.lr == 0.01
  assert not classify.extra_train_dirs(configs[0].data) and configs[1].data.data_dir == (
      '/tmp/runs/sin_cifar')
  names = [w.split('=')[0] for w in shlex.split(cmds[4]) if '=' in w and '/' in w]
  assert names == ['IN', 'SIN', 'SIN+IN', 'SIN+IN->IN']


def fake_run(path, label, shape_bias, extra_test, interval=(0.1, 0.5)):
  """A results.json as a classify run with data.extra_test writes it (the fields read)."""
  per_class = {c: None for c in cc.CATEGORIES}
  per_class.update(cat=shape_bias, dog=shape_bias + 0.1)
  conflict = {'stimuli': 245, 'per_class_shape_bias': per_class, 'humans': {
      'pooled': {'shape_bias': 0.9}, 'per_subject_shape_bias': {'s1': 0.8, 's2': 1.0},
      'human_human_kappa_mean': 0.5, 'shape_bias_interval': {'low': 0.85, 'high': 0.95},
      'per_class_shape_bias': dict(per_class, cat=0.95, dog=0.85)}}
  cue = {'evaluated': True, 'size': 32, 'shape_bias': shape_bias, 'shape_acc': 0.3,
         'texture_acc': 0.5, 'edge_accuracy': 0.6, 'silhouette_accuracy': 0.7,
         'shape_bias_interval': {'low': interval[0], 'high': interval[1], 'level': 0.95},
         'conditions': {'cue-conflict': conflict}}
  os.makedirs(path)
  dirs = {'cifar10': '/data/cifar10', 'stylized': '/data/sin'}
  with open(os.path.join(path, 'results.json'), 'w') as f:
    json.dump({'label': label, 'model': 'resnet18', 'seed': 0, 'test_acc': 0.5,
               'extra_test': extra_test, 'extra_test_dirs': {k: dirs[k] for k in extra_test},
               'cue_conflict': cue}, f)
  return str(path)


def load_script():
  """scripts/compare_stylized.py as a module."""
  spec = importlib.util.spec_from_file_location(
      'compare_stylized', os.path.join(ROOT, 'scripts', 'compare_stylized.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def compare_cmd(*args):
  return subprocess.run([sys.executable, 'scripts/compare_stylized.py', *args], cwd=ROOT,
                        capture_output=True, text=True, env=dict(os.environ, MPLBACKEND='Agg'))


def test_compare_stylized_writes_its_table_and_figure(tmp_path):
  runs = {'IN': fake_run(tmp_path / 'in', 'resnet20', 0.2, {'cifar10': 0.9, 'stylized': 0.2}),
          'SIN': fake_run(tmp_path / 'sin', 'resnet20', 0.6, {'cifar10': 0.5, 'stylized': 0.7}),
          'SIN+IN': fake_run(tmp_path / 'both', 'resnet20', 0.4, {'stylized': 0.68}),
          'SIN+IN->IN': fake_run(tmp_path / 'ft', 'resnet20', 0.3,
                                 {'cifar10': 0.91, 'stylized': 0.4})}
  out = tmp_path / 'cmp'
  proc = compare_cmd('--runs', *(f'{k}={v}' for k, v in runs.items()), '--out', str(out))
  assert proc.returncode == 0, proc.stderr
  table = json.loads((out / 'comparison.json').read_text())
  assert list(table['models']) == list(runs)  # the names given, same label and seed
  assert [c[0] for c in table['columns']] == [
      'extra_test/cifar10', 'extra_test/stylized', 'shape_bias', 'shape_acc', 'texture_acc',
      'edge_accuracy', 'silhouette_accuracy']
  sin = table['models']['SIN']
  assert sin['extra_test/cifar10']['mean'] == 0.5 and sin['shape_bias']['mean'] == 0.6
  assert sin['shape_bias_interval'] == [{'low': 0.1, 'high': 0.5, 'level': 0.95}]
  assert table['models']['SIN+IN']['extra_test/cifar10']['n'] == 0
  md = (out / 'comparison.md').read_text()
  assert md.splitlines()[0] == (
      '| model | seeds | cifar10 test acc (%) | stylized test acc (%) | shape bias | '
      'shape acc | texture acc | edges acc | silhouettes acc |')
  assert '| IN | 1 | 90.00 | 20.00 | 0.200 [0.100, 0.500] | 0.300 | 0.500 | 0.600 | 0.700 |' in md
  assert '| SIN+IN | 1 | - | 68.00 | 0.400 [0.100, 0.500] |' in md
  assert '| humans | 2 subjects | - | - | 0.900 [0.850, 0.950] | - |' in md
  assert '95 % bootstrap interval' in md and md.splitlines()[0] in proc.stdout
  assert os.path.getsize(out / 'shape_bias.png') > 1000

  # one line for: not NAME=DIR, a run without extra tests, sets on different folders
  proc = compare_cmd('--runs', runs['IN'], '--out', str(out))
  assert proc.returncode == 1
  assert proc.stderr.strip() == f"error: --runs {runs['IN']!r}: not NAME=WORKDIR (e.g. " \
      'SIN=/tmp/runs/stylized/sin)'
  script = load_script()
  bare = fake_run(tmp_path / 'bare', 'resnet20', 0.2, {})
  with pytest.raises(cc.RunError) as e:
    script.compare([f'IN={bare}'], str(out))
  assert str(e.value) == ('no run has extra test accuracies: re-run their commands with '
                          '--config.data.extra_test=cifar10=DIR,stylized=DIR (they only '
                          'evaluate)')
  moved = json.loads((tmp_path / 'sin' / 'results.json').read_text())
  moved['extra_test_dirs']['stylized'] = '/elsewhere'
  (tmp_path / 'sin' / 'results.json').write_text(json.dumps(moved))
  with pytest.raises(cc.RunError, match="extra test set 'stylized' is /elsewhere, another "
                     "run's is /data/sin"):
    script.compare([f'IN={runs["IN"]}', f'SIN={runs["SIN"]}'], str(out))
