"""The stylize task (tasks/stylize.py, configs/stylize.py) and the writer's TFDS content."""

import json
import os
import pickle
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from awesome_jax import data as data_lib
from awesome_jax import stylize as st
from awesome_jax.tasks import stylize as task
from configs import stylize as configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(workdir, *args, preset='tiny'):
  return subprocess.run(
      [sys.executable, '-m', 'awesome_jax.main', f'--config=configs/stylize.py:{preset}',
       f'--workdir={workdir}', *args], cwd=ROOT, capture_output=True, text=True,
      timeout=120, check=False)


def _pngs(folder):
  """{relative path: mtime_ns} of the PNGs below folder."""
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      if f.endswith('.png'):
        path = os.path.join(root, f)
        out[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
  return out


def _config(preset, fields):
  """configs/stylize.py:preset with {'a.b': value} fields set."""
  config = configs.get_config(preset)
  for key, value in fields.items():
    node = config
    *parents, last = key.split('.')
    for p in parents:
      node = node[p]
    node[last] = value
  return config


def _tiny(**fields):
  return _config('tiny', fields)


def _one_line(excinfo, *words):
  msg = str(excinfo.value)
  assert '\n' not in msg, msg
  for w in words:
    assert w in msg, (w, msg)


def test_tiny_preset_through_main_writes_each_image_once(tmp_path):
  first = _main(tmp_path)
  assert first.returncode == 0, first.stderr
  files = _pngs(tmp_path / 'train')
  assert len(files) == 12 and {os.path.dirname(f) for f in files} <= {'0', '1', '2'}
  assert len(_pngs(tmp_path / 'style_textures')) == 4
  with tarfile.open(tmp_path / 'train.tar') as tar:
    assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(
        f'train/{f}' for f in files)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert (results['total'], results['written'], results['skipped']) == (12, 12, 0)
  assert results['complete'] and results['config']['data']['name'] == 'synthetic'

  again = _main(tmp_path)
  assert again.returncode == 0, again.stderr
  assert _pngs(tmp_path / 'train') == files  # nothing rewritten
  results = json.loads((tmp_path / 'results.json').read_text())
  assert (results['written'], results['skipped']) == (0, 12)
  assert list(results['splits']) == ['train']


def test_tfds_content_from_mock_cifar10(tmp_path):
  styles = st.textures(3, 32, seed=2)
  with tfds.testing.mock_data(num_examples=6):
    source = tfds.data_source('cifar10', split='train')
    names = source.dataset_info.features['label'].names
    examples = [source[i] for i in range(len(source))]
    want = sorted(f'{names[int(e["label"])]}/{i:08d}.png' for i, e in enumerate(examples))
    part = st.write_stylized('tfds:cifar10', styles, tmp_path / 'w', 'fourier', seed=2,
                             tar=True, limit=2, progress=False)
    assert (part['total'], part['written'], part['tar']) == (6, 2, None)
    rest = st.write_stylized('tfds:cifar10', styles, tmp_path / 'w', 'fourier', seed=2,
                             tar=True, progress=False)
    # through the task: the same split, the same choice of styles
    config = _tiny(**{'data.name': 'tfds:cifar10', 'style.texture_size': 32, 'seed': 2,
                      'style.textures': 3})
    out = task.run(config, str(tmp_path / 'task'))
  assert (rest['total'], rest['written'], rest['skipped']) == (6, 4, 2)
  assert sorted(_pngs(tmp_path / 'w' / 'train')) == want
  with tarfile.open(rest['tar']) as tar:
    assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
        f'train/{w}' for w in want]
  i = 3
  c = examples[i]['image']
  s = styles[st.style_index(2, i, 3)]
  path = tmp_path / 'w' / 'train' / names[int(examples[i]['label'])] / f'{i:08d}.png'
  np.testing.assert_array_equal(st.read_rgb(path),
                                st._to_uint8(st.fourier_swap(c / 255.0, s / 255.0, 1.0)))
  assert out['written'] == 6 and out['complete']
  assert sorted(_pngs(tmp_path / 'task' / 'train')) == want
  for f in want:  # the textures written by the task are the writer's textures
    np.testing.assert_array_equal(st.read_rgb(tmp_path / 'task' / 'train' / f),
                                  st.read_rgb(tmp_path / 'w' / 'train' / f))


def test_tfds_load_reader_with_tensorflow(tmp_path, monkeypatch):
  """With TensorFlow installed: tfds.load(shuffle_files=False) + tfds.as_numpy, and a
  resumed run starts reading at the first missing example."""
  rng = np.random.default_rng(0)
  examples = [{'image': rng.integers(0, 256, (8, 8, 1), np.uint8), 'label': i % 2}
              for i in range(5)]
  calls, reads = [], []

  class FakeDataset:
    def __init__(self, start=0):
      self.start = start

    def skip(self, n):
      return FakeDataset(self.start + n)

  def load(name, **kwargs):
    calls.append((name, kwargs['split'], kwargs['shuffle_files']))
    info = types.SimpleNamespace(
        splits={'test': types.SimpleNamespace(num_examples=len(examples))},
        supervised_keys=('image', 'label'),
        features={'image': None, 'label': types.SimpleNamespace(names=['even', 'odd'])})
    return FakeDataset(), info

  def as_numpy(ds):
    reads.append(ds.start)
    return iter(examples[ds.start:])

  monkeypatch.setattr(st, '_has_tensorflow', lambda: True)
  monkeypatch.setattr(tfds, 'load', load)
  monkeypatch.setattr(tfds, 'as_numpy', as_numpy)
  monkeypatch.setattr(tfds, 'ReadConfig', lambda **kwargs: kwargs)
  styles = st.textures(2, 8, seed=0)
  part = st.write_stylized('tfds:fake', styles, tmp_path, 'fourier', split='test', limit=3,
                           progress=False)
  rest = st.write_stylized('tfds:fake', styles, tmp_path, 'fourier', split='test',
                           progress=False)
  assert calls == [('fake', 'test', False)] * 2 and reads == [0, 3]
  assert part['written'] == 3
  assert (rest['written'], rest['skipped'], rest['total']) == (2, 3, 5)
  assert sorted(_pngs(tmp_path / 'test')) == [
      f'{"odd" if i % 2 else "even"}/{i:08d}.png' for i in (0, 2, 4, 1, 3)]
  assert st.read_rgb(tmp_path / 'test' / 'odd' / '00000001.png').shape == (8, 8, 3)


def test_split_folder_of_tfds_slices():
  assert st.split_folder('train') == 'train'
  assert st.split_folder('train[:10%]') == 'train_-10pct'
  assert st.split_folder('train[:1000]') != st.split_folder('train[1000:]')


def test_imagenet_preset_dry_run_with_placeholder_paths(tmp_path):
  ok = _main(tmp_path / 'w', '--dry_run', '--config.style.dir=paintings/train',
             '--config.adain.vgg=vgg_normalised.pth', '--config.adain.decoder=decoder.pth',
             preset='imagenet')
  assert ok.returncode == 0, ok.stderr
  assert 'config OK: task stylize' in ok.stdout
  assert not (tmp_path / 'w').exists()
  bad = _main(tmp_path / 'w', '--dry_run', preset='imagenet')
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
  assert bad.stderr.startswith('error: style.dir=')


IMAGENET = {'style.dir': 'paintings', 'adain.vgg': 'v.pth', 'adain.decoder': 'd.pth'}


@pytest.mark.parametrize('preset,fields,words', [
    ('tiny', {'alpha': 1.5}, ('alpha=1.5', '[0, 1]')),
    ('tiny', {'alpha': -0.1}, ('alpha=-0.1', '[0, 1]')),
    ('tiny', {'method': 'gatys'}, ("method='gatys'", 'adain, fourier')),
    ('imagenet', {**IMAGENET, 'style.dir': ''}, ("style.dir=''", 'style.textures=0')),
    ('imagenet', {**IMAGENET, 'adain.vgg': ''}, ('adain.vgg', 'decoder_ckpt')),
    ('imagenet', {**IMAGENET, 'adain.decoder_ckpt': 'runs/dec'},
     ('adain.decoder_ckpt', 'not both')),
    ('tiny', {'data.name': 'imagenet'}, ("data.name='imagenet'", 'tfds:NAME')),
    ('tiny', {'data.name': 'tfds:'}, ("data.name='tfds:'",)),
    ('cifar10', {'data.split': 'validation'}, ("data.split='validation'", 'train, test')),
    ('tiny', {'data.name': 'folder'}, ("data.data_dir=''",)),
    ('tiny', {'data.size': -1}, ('data.size=-1',)),
    ('tiny', {'style.textures': -2}, ('style.textures=-2',)),
    ('tiny', {'style.texture_size': -1}, ('style.texture_size=-1', '>= 0')),
    ('tiny', {'data.synthetic_shape': (8, 8, 1)}, ('data.synthetic_shape',)),
])
def test_bad_config_one_line_naming_the_field(preset, fields, words):
  with pytest.raises(task.StylizeError) as e:
    task.check(_config(preset, fields))
  _one_line(e, *words)


def test_bad_inputs_at_run_time_one_line_naming_the_field(tmp_path):
  (tmp_path / 'empty').mkdir()
  flat = tmp_path / 'flat' / 'train'
  flat.mkdir(parents=True)
  st._write_png(str(flat / 'a.png'), np.zeros((4, 4, 3), np.uint8))
  cases = [
      ({'style.dir': str(tmp_path / 'empty')}, ('style.dir', 'holds no images')),
      ({'style.dir': str(tmp_path / 'nowhere')}, ('style.dir', 'does not exist')),
      ({'data.name': 'folder', 'data.data_dir': str(tmp_path / 'flat')},
       ('data.data_dir', 'no class subfolders')),
      ({'method': 'adain', 'adain.vgg': str(tmp_path / 'v.pth'),
        'adain.decoder': str(tmp_path / 'd.pth')}, ('adain.vgg', 'no such file')),
  ]
  for fields, words in cases:
    with pytest.raises(task.StylizeError) as e:
      task.run(_tiny(**fields), str(tmp_path / 'w'))
    _one_line(e, *words)
  assert not _pngs(tmp_path / 'w' / 'train')


def test_restart_with_another_recipe_is_refused(tmp_path):
  task.run(_tiny(), str(tmp_path))
  with pytest.raises(task.StylizeError) as e:
    task.run(_tiny(alpha=0.5), str(tmp_path))
  _one_line(e, 'alpha', 'started with 1.0')
  other = task.run(_tiny(alpha=0.5, **{'data.split': 'test'}), str(tmp_path))
  assert other['written'] == 12 and sorted(other['splits']) == ['test', 'train']


def test_split_of_an_older_recipe_version_is_refused(tmp_path):
  task.run(_tiny(), str(tmp_path))
  recipe_path = tmp_path / 'train.recipe.json'
  recipe = json.loads(recipe_path.read_text())
  assert recipe['recipe_version'] == task.RECIPE_VERSION == 2
  del recipe['recipe_version']                  # as version 1 wrote it
  recipe_path.write_text(json.dumps(recipe))
  files = _pngs(tmp_path / 'train')
  with pytest.raises(task.StylizeError) as e:
    task.run(_tiny(), str(tmp_path))
  _one_line(e, 'recipe_version', 'recipe version 1', 'writes version 2')
  assert _pngs(tmp_path / 'train') == files


def test_cifar10_default_textures_made_at_the_content_size(tmp_path):
  """The cifar10 preset's textures are made 32x32, not resized: no near-flat images."""
  rng = np.random.default_rng(4)
  x = np.stack([st.texture(int(s), 0, 32) for s in rng.integers(1 << 30, size=6)])
  src = tmp_path / 'src'
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    src.mkdir(exist_ok=True)
    with open(src / name, 'wb') as f:
      pickle.dump({b'data': x.transpose(0, 3, 1, 2).reshape(6, -1),
                   b'labels': [0, 1, 2, 3, 4, 5]}, f)
  config = configs.get_config('cifar10')
  assert config.style.texture_size == 0
  config.data.data_dir = str(src)
  config.data.split = 'test'
  config.style.textures = 20
  config.progress_bar = False
  out = task.run(config, str(tmp_path / 'w'))
  assert out['written'] == 6 and out['recipe']['texture_size'] == 0
  assert out['recipe']['recipe_version'] == task.RECIPE_VERSION
  assert not (tmp_path / 'w' / task.TEXTURES_DIR).exists()
  for i in range(6):
    path = tmp_path / 'w' / 'test' / data_lib.CIFAR10_CLASSES[i] / f'{i:06d}.png'
    style = st.texture(0, st.style_index(0, i, 20), 32)
    got = st.read_rgb(path)
    np.testing.assert_array_equal(
        got, st._to_uint8(st.fourier_swap(x[i] / 255.0, style / 255.0, 1.0)))
    assert got.reshape(-1, 3).std(0).max() >= 5


def test_cifar10_python_batches_to_a_folder_classify_reads(tmp_path):
  rng = np.random.default_rng(3)
  src = tmp_path / 'src'
  src.mkdir()
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    with open(src / name, 'wb') as f:
      pickle.dump({b'data': rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                   b'labels': [int(v) for v in rng.integers(0, 10, 2)]}, f)
  for split in ('train', 'test'):
    config = configs.get_config('cifar10')
    config.data.data_dir = str(src)
    config.data.split = split
    config.style.textures = 3
    config.style.texture_size = 32
    config.progress_bar = False
    task.run(config, str(tmp_path / 'w'))
  batches = data_lib.load_files('cifar10', str(src))
  stylized = data_lib.load_files('cifar10', str(tmp_path / 'w'),
                                 cache_dir=str(tmp_path / 'cache'))
  assert stylized.x_train.shape == (10, 32, 32, 3)
  assert stylized.x_test.shape == (2, 32, 32, 3)
  assert sorted(stylized.y_train) == sorted(batches.y_train)
