"""Image folders streamed from disk (awesome_jax/folder_stream.py) and the classify task on
them (data.name=folder): listing, deterministic batches, the train and test transforms,
streamed accuracy, one-line errors, a tiny run through main that is killed and resumed,
and the resnet50_sin preset's dry run and documented commands."""

import json
import os
import re
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from awesome_jax import data as data_lib
from awesome_jax import folder_stream as fs
from awesome_jax import metrics as metrics_lib
from awesome_jax import models
from awesome_jax.tasks import classify
from configs import classify as classify_configs
from tests import test_docs
from tests.test_classify import main_cmd, run_together

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('cat', 'dog', 'owl')
# (width, height) of the images, in turn: portrait, landscape, square, larger
SIZES = ((20, 28), (40, 24), (33, 33), (64, 48))


def make_folder(root, train_per_class=6, test_per_class=2, test_split='val',
                classes=CLASSES, seed=0):
  """root/{train,<test_split>}/<class>/<i>.{png,jpg} of random images of varied sizes and
  modes (RGB, grey, RGBA): each class brighter than the last, so a net can learn them."""
  rng = np.random.default_rng(seed)
  for split, n in (('train', train_per_class), (test_split, test_per_class)):
    for c, name in enumerate(classes):
      os.makedirs(os.path.join(root, split, name))
      for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        pixels = rng.integers(0, 96, (h, w, 3)) + 80 * c
        im = Image.fromarray(pixels.astype(np.uint8))
        im = im.convert(('RGB', 'L', 'RGBA')[i % 3])
        ext = 'jpg' if i % 2 and im.mode != 'RGBA' else 'png'
        im.save(os.path.join(root, split, name, f'{i}.{ext}'))
  return str(root)


def solid(path, colour, size=(30, 20)):
  Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def one_line(error_type, fn, *args):
  with pytest.raises(error_type) as e:
    fn(*args)
  message = str(e.value)
  assert '\n' not in message and message
  return message


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return make_folder(tmp_path_factory.mktemp('folder') / 'in')


# --------------------------------------------------------------------------- listing


def test_listing_sorted_classes_and_the_test_split(folder, tmp_path):
  data = fs.open_folder(folder, 16)
  assert data.classes == CLASSES and data.num_classes == 3 and data.shape == (16, 16, 3)
  assert len(data.train) == 18 and len(data.test) == 6
  assert data.train.where == os.path.join(folder, 'train')
  assert data.test.where == os.path.join(folder, 'val')
  assert list(data.train.labels) == [0] * 6 + [1] * 6 + [2] * 6
  assert data.train.files[6] == os.path.join(folder, 'train', 'dog', '0.png')
  assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)
  for split in ('validation', 'test'):  # the stylize task writes validation/
    other = fs.open_folder(make_folder(tmp_path / split, 1, 1, split), 16)
    assert other.test.where.endswith(split) and len(other.test) == 3
  # a test split with fewer classes is labelled by the training classes
  fewer = make_folder(tmp_path / 'fewer', 1, 1)
  os.rename(os.path.join(fewer, 'val', 'cat'), os.path.join(tmp_path, 'cat_moved'))
  assert list(fs.open_folder(fewer, 16).test.labels) == [1, 2]


def test_several_train_folders_combined(folder, tmp_path):
  sin = make_folder(tmp_path / 'sin', train_per_class=2, seed=1)
  data = fs.open_folder(folder, 16, [sin])
  assert len(data.train) == 18 + 6 and len(data.test) == 6  # the test split: folder's
  assert data.train.files[18:] == fs.list_split(os.path.join(sin, 'train'), 'x').files
  assert list(data.train.labels[18:]) == [0, 0, 1, 1, 2, 2]
  config = folder_config(folder, extra_train_dirs=sin)
  assert len(classify.load_data(config.data).train) == 24


# -------------------------------------------------------------------------- batches


def test_batches_are_deterministic_and_disjoint_within_an_epoch(folder):
  split = fs.open_folder(folder, 16).train
  with fs.FolderBatches(split, 4, seed=3, image_size=16) as a, \
      fs.FolderBatches(split, 4, seed=3, image_size=16, workers=1) as b:
    assert a.per_epoch == 4 and a.batch_size == 4 and len(a.y) == 18
    x0, y0 = a(0)
    x1, y1 = a(1)
    assert x0.shape == (4, 16, 16, 3) and x0.dtype == np.float32 and y0.dtype == np.int32
    # the same step again, out of order, or in another object (a resumed run): the same
    for step, (x, y) in ((1, b(1)), (0, b(0)), (0, a(0))):
      want = (x0, y0) if step == 0 else (x1, y1)
      np.testing.assert_array_equal(x, want[0])
      np.testing.assert_array_equal(y, want[1])
    epoch = [a.indices(s) for s in range(4)]
    assert len(set(np.concatenate(epoch))) == 16  # no file twice in an epoch
    np.testing.assert_array_equal(y0, split.labels[epoch[0]])
    assert not np.array_equal(a.indices(4), epoch[0])  # the next epoch: reshuffled
    assert not np.array_equal(fs.FolderBatches(split, 4, 4, 16).indices(0), epoch[0])
    assert np.abs(x0[0] - x0[1]).max() > 0.1  # different images and crops
    # random-resized crops of random pixels: about the normalised range of uniform pixels
    assert -2.2 < x0.min() < 0 < x0.max() < 2.7


def test_prefetch_decodes_ahead_but_not_past_stop(folder):
  split = fs.open_folder(folder, 16).train
  with fs.FolderBatches(split, 6, 0, 16) as batches:
    batches.stop = 3
    batches(0)
    assert sorted(batches._pending) == [1, 2]  # pylint: disable=protected-access
    batches(2)  # skipping step 1 drops its batch
    assert sorted(batches._pending) == []  # pylint: disable=protected-access
  assert batches._pool is None  # pylint: disable=protected-access


def test_normalisation_and_train_crop_of_solid_images(tmp_path):
  for c, colour in enumerate(((255, 0, 0), (0, 128, 255))):
    os.makedirs(tmp_path / 'train' / str(c))
    solid(tmp_path / 'train' / str(c) / 'a.png', colour, size=(37 + c, 21))
  split = fs.list_split(str(tmp_path / 'train'), 'x')
  with fs.FolderBatches(split, 2, 0, 8) as batches:
    x, y = batches(0)
  for row, label in enumerate(y):
    colour = np.array(((255, 0, 0), (0, 128, 255))[label]) / 255
    want = (colour - np.array(fs.MEAN)) / np.array(fs.STD)
    np.testing.assert_allclose(x[row], np.broadcast_to(want, (8, 8, 3)), atol=1e-5)


def test_rows_decodes_only_those_rows(folder):
  split = fs.open_folder(folder, 16).train
  with fs.FolderBatches(split, 6, 0, 16) as whole, fs.FolderBatches(split, 6, 0, 16) as part:
    part.rows = [1, 4]
    a, ya = whole(2)
    b, yb = part(2)
  np.testing.assert_array_equal(b[[1, 4]], a[[1, 4]])
  assert not b[[0, 2, 3, 5]].any() and a[[0, 2, 3, 5]].any()
  np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize('width, height', [(100, 100), (300, 40), (17, 260), (1, 1),
                                           (224, 168)])
def test_random_resized_crops_lie_inside_the_image(width, height):
  rng = np.random.default_rng(0)
  fractions, aspects = [], []
  for _ in range(300):
    left, top, w, h = fs.random_resized_crop_box(rng, width, height)
    assert 0 <= left and 0 <= top and 0 < w and 0 < h
    assert left + w <= width and top + h <= height
    fractions.append(w * h / (width * height))
    aspects.append(w / h)
  if (width, height) == (224, 168):  # a draw fits nearly always: torchvision's ranges
    assert 0.07 < min(fractions) < 0.2 and max(fractions) > 0.9
    assert min(aspects) > 0.7 and max(aspects) < 1.4
  if (width, height) == (300, 40):  # the fallback: the whole height, aspect 4/3 at most
    assert max(aspects) <= 4 / 3 + 0.05


def test_the_same_rng_draws_the_same_crop_and_flip(folder):
  path = fs.open_folder(folder, 16).train.files[3]  # a 64x48 image
  a = fs.train_example(path, 16, fs.example_rng(0, 5, 2))
  b = fs.train_example(path, 16, fs.example_rng(0, 5, 2))
  np.testing.assert_array_equal(a, b)
  others = [fs.train_example(path, 16, fs.example_rng(0, 5, r)) for r in range(3, 8)]
  assert all(not np.array_equal(a, o) for o in others)


def test_eval_transform_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
  pixels = np.zeros((40, 60, 3), np.uint8)  # black left half, white right half
  pixels[:, 30:] = 255
  Image.fromarray(pixels).save(tmp_path / 'half.png')
  x = fs.eval_example(str(tmp_path / 'half.png'), 16)
  assert x.shape == (16, 16, 3) and x.dtype == np.uint8
  np.testing.assert_array_equal(x, fs.eval_example(str(tmp_path / 'half.png'), 16))
  # resized to 27x18 (shorter side round(16 * 256 / 224) = 18), columns 6..21 kept: the
  # edge at 13.5 falls at column 7.5 of the crop
  assert x[:, :7].max() < 20 and x[:, 9:].min() > 235
  tall = np.asarray(Image.fromarray(pixels).transpose(Image.Transpose.TRANSPOSE))
  Image.fromarray(tall).save(tmp_path / 'tall.png')
  np.testing.assert_array_equal(fs.eval_example(str(tmp_path / 'tall.png'), 16),
                                x.transpose(1, 0, 2))


def test_accuracy_streams_chunks_in_order(folder):
  test = fs.open_folder(folder, 16).test
  seen = []

  def count_zeros(x, y):  # a 'model' that always answers class 0
    seen.append((x.copy(), y.copy()))
    return int(np.sum(y == 0))

  assert fs.accuracy(count_zeros, test, 16, chunk=4) == pytest.approx(2 / 6)
  assert [len(y) for _, y in seen] == [4, 2]
  x = np.concatenate([c[0] for c in seen])
  want = np.stack([fs.normalize(fs.eval_example(f, 16)) for f in test.files])
  np.testing.assert_array_equal(x, want)
  np.testing.assert_array_equal(np.concatenate([c[1] for c in seen]), test.labels)


# --------------------------------------------------------------------------- errors


def test_bad_folders_give_one_line_errors(folder, tmp_path):
  missing = str(tmp_path / 'nowhere')
  assert one_line(fs.FolderError, fs.open_folder, missing, 16) == (
      f"data.data_dir='{missing}': not a directory")
  no_train = tmp_path / 'no_train'
  (no_train / 'val' / 'cat').mkdir(parents=True)
  assert one_line(fs.FolderError, fs.open_folder, str(no_train), 16) == (
      f'data.data_dir={no_train}: no train/ folder (expected {no_train}/train/<class>/<image>)')
  no_test = make_folder(tmp_path / 'no_test', 1, 1)
  os.rename(os.path.join(no_test, 'val'), os.path.join(no_test, 'holdout'))
  assert 'no val/, validation/ or test/ folder' in one_line(fs.FolderError, fs.open_folder,
                                                            no_test, 16)
  flat = tmp_path / 'flat'
  (flat / 'train').mkdir(parents=True)
  solid(flat / 'train' / 'a.png', (1, 2, 3))
  assert one_line(fs.FolderError, fs.open_folder, str(flat), 16) == (
      f'data.data_dir: {flat}/train has no class subfolders (expected '
      f'{flat}/train/<class>/<image>)')
  empty = make_folder(tmp_path / 'empty_class', 1, 1)
  for f in os.listdir(os.path.join(empty, 'train', 'dog')):
    os.rename(os.path.join(empty, 'train', 'dog', f), os.path.join(empty, f + '.txt'))
  open(os.path.join(empty, 'train', 'dog', 'notes.txt'), 'w').close()
  assert one_line(fs.FolderError, fs.open_folder, empty, 16).startswith(
      f'data.data_dir: {empty}/train/dog holds no images (.jpg .jpeg .png')
  unknown = make_folder(tmp_path / 'unknown', 1, 1)
  os.rename(os.path.join(unknown, 'val', 'owl'), os.path.join(unknown, 'val', 'emu'))
  assert one_line(fs.FolderError, fs.open_folder, unknown, 16).startswith(
      f'data.data_dir: {unknown}/val/emu: a class the training data does not have')


def test_an_undecodable_image_names_its_file(tmp_path):
  root = make_folder(tmp_path / 'broken', 2, 2)
  bad = os.path.join(root, 'train', 'dog', '1.jpg')
  with open(bad, 'wb') as f:
    f.write(b'not a jpeg at all')
  split = fs.open_folder(root, 16).train  # listed without reading
  with fs.FolderBatches(split, 6, 0, 16) as batches:
    message = one_line(fs.FolderError, batches, 0)
  assert message.startswith(f'{bad}: not a readable image (')
  assert isinstance(fs.FolderError(''), data_lib.DataError)  # main's 'error: ...'
  bad_test = os.path.join(root, 'val', 'owl', '0.png')
  with open(bad_test, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n cut short')
  test = fs.open_folder(root, 16).test
  message = one_line(fs.FolderError, fs.accuracy, lambda x, y: 0, test, 16, 2)
  assert message.startswith(f'{bad_test}: not a readable image (')


def test_train_folders_with_other_classes_are_refused(folder, tmp_path):
  other = make_folder(tmp_path / 'other', 1, 1, classes=('cat', 'cow', 'dog', 'owl'))
  message = one_line(fs.FolderError, classify.load_data,
                     folder_config(folder, extra_train_dirs=other).data)
  assert message == (f"data.extra_train_dirs: {other}/train has class 'cow' where "
                     f"{folder}/train has 'dog' (the train splits must have the same class "
                     'folders)')
  fewer = make_folder(tmp_path / 'fewer', 1, 1, classes=CLASSES[:2])
  assert "has class 'none' where" in one_line(
      fs.FolderError, classify.load_data, folder_config(folder, extra_train_dirs=fewer).data)


@pytest.mark.parametrize('fields, message', [
    ({'data.data_dir': ''}, "data.data_dir='': data.name=folder reads the image folder"),
    ({'train.augment': True}, 'train.augment=True: data.name=folder has its own'),
    ({'data.image_size': 0}, 'data.image_size=0: must be a positive integer'),
    ({'data.image_size': 16, 'model.name': 'resnet50'},
     "model.name='resnet50' cannot take data of shape (16, 16, 3)"),
])
def test_folder_config_errors(folder, fields, message):
  config = folder_config(folder)
  for field, value in fields.items():
    section, name = field.split('.')
    config[section][name] = value
  if 'model.name' in fields:
    config.model.kwargs = {}
  errors = (classify.ClassifyConfigError, models.ModelError)  # both: main's one-line errors
  assert message in one_line(errors, classify.check, config)


# ----------------------------------------------------------------- classify end to end


def folder_config(data_dir, extra_train_dirs='', extra_test=''):
  """The tiny preset on an image folder at 32x32 (the zoo ResNet's smallest input): batch
  6, 3 steps per epoch of the 18 train images, 2 epochs."""
  config = classify_configs.get_config('tiny')
  config.data.name = 'folder'
  config.data.data_dir = data_dir
  config.data.image_size = 32
  config.data.extra_train_dirs = extra_train_dirs
  config.data.extra_test = extra_test
  config.train.augment = False
  config.train.batch_size = 6
  config.cue_conflict.stimuli_root = ''  # skipped for folders, without a download
  return config


OVERRIDES = ('--config.data.name=folder', '--config.data.image_size=32',
             '--config.train.augment=False', '--config.train.batch_size=6',
             '--config.cue_conflict.stimuli_root=')

# classify.run of folder_config(argv[2], extra_test=argv[3]), killed by SIGKILL when batch 5
# (mid second epoch) is asked for: the checkpoint of step 4 is the newest
KILLED_RUN = '''
import os, signal, sys
from awesome_jax import folder_stream
from awesome_jax.tasks import classify
from tests.test_folder_stream import folder_config
batches = folder_stream.FolderBatches.__call__
def dying(self, step):
  if step == 5:
    os.kill(os.getpid(), signal.SIGKILL)
  return batches(self, step)
folder_stream.FolderBatches.__call__ = dying
classify.run(folder_config(sys.argv[2], extra_test=sys.argv[3]), sys.argv[1])
'''


@pytest.fixture(scope='module')
def runs(folder, tmp_path_factory):
  """Through main: a whole tiny run and, at the same time, one killed at step 5 (then
  resumed with main's command), sharing a persistent compilation cache."""
  base = tmp_path_factory.mktemp('folder_runs')
  other = make_folder(base / 'other', 1, 3, seed=5)
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=str(base / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  args = (*OVERRIDES, f'--config.data.data_dir={folder}',
          f'--config.data.extra_test=other={other}')
  out = run_together({
      'whole': main_cmd(base / 'whole', *args),
      'killed': [sys.executable, '-c', KILLED_RUN, str(base / 'killed'), folder,
                 f'other={other}']}, env)
  out['killed_checkpoints'] = sorted(
      int(s) for s in os.listdir(base / 'killed' / 'checkpoints') if s.isdigit())
  out['killed_results'] = (base / 'killed' / 'results.json').exists()
  out.update(run_together({'resumed': main_cmd(base / 'killed', *args)}, env))
  for name in ('whole', 'resumed'):
    assert out[name][0] == 0, out[name][1][-3000:]
  out.update(base=base, other=other)
  return out


def read_results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def test_a_folder_run_trains_and_tests_streamed(runs, folder):
  workdir = runs['base'] / 'whole'
  r = read_results(workdir)
  assert r['data'] == 'folder' and r['train_images'] == 18 and r['batch_size'] == 6
  assert r['train_steps'] == 6 and r['epochs'] == 2
  assert r['cue_conflict'] == {'evaluated': False, 'reason': (
      'data.name=folder: the 7-class benchmark reads the logits of a CIFAR-10 classifier')}
  model, variables = classify.load_trained(str(workdir))
  data = fs.open_folder(folder, 32)
  logits_of = lambda split: np.asarray(model.apply(variables, np.stack(
      [fs.normalize(fs.eval_example(f, 32)) for f in split.files]), train=False))
  # the reported accuracies are those of the saved weights on the test splits
  want = np.mean(np.argmax(logits_of(data.test), -1) == data.test.labels)
  assert r['test_acc'] == pytest.approx(want, abs=1e-6)
  other = fs.open_test(runs['other'], CLASSES, 'x')
  want_other = np.mean(np.argmax(logits_of(other), -1) == other.labels)
  assert r['extra_test'] == {'other': pytest.approx(want_other, abs=1e-6)}
  assert r['extra_test_dirs'] == {'other': runs['other']}
  steps, accs = metrics_lib.eval_curve(str(workdir))
  assert steps == [3, 6] and accs[-1] == r['test_acc']  # one evaluation per epoch
  assert '18 train images of 3 classes' in runs['whole'][1]


def test_a_killed_folder_run_resumes_to_the_same_weights(runs):
  assert runs['killed'][0] == -9, runs['killed'][1][-3000:]  # SIGKILL
  assert not runs['killed_results'] and runs['killed_checkpoints'][-1] == 4
  assert 'Resumed from step 4' in runs['resumed'][1]
  whole, killed = runs['base'] / 'whole', runs['base'] / 'killed'
  a, b = classify.load_variables(str(whole)), classify.load_variables(str(killed))
  leaves = lambda v: [np.asarray(x) for x in jax.tree_util.tree_leaves(v)]
  for u, w in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(u, w)
  ra, rb = read_results(whole), read_results(killed)
  assert ra['test_acc'] == rb['test_acc'] and ra['extra_test'] == rb['extra_test']
  final = lambda w: [r for r in metrics_lib.read_jsonl(str(w)) if r['step'] == 6]
  assert final(whole) == final(killed)


def test_a_missing_folder_stops_main_in_one_line(tmp_path):
  out = subprocess.run(main_cmd(tmp_path / 'w', *OVERRIDES,
                                f'--config.data.data_dir={tmp_path / "nowhere"}'),
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: data.data_dir='{tmp_path / 'nowhere'}': not a directory")


# -------------------------------------------------------------- the resnet50_sin preset


def test_resnet50_sin_dry_runs(tmp_path):
  runs = run_together({
      'ok': main_cmd(tmp_path / 'w', '--dry_run', '--config.data.data_dir=/data/sin',
                     preset='resnet50_sin'),
      'empty': main_cmd(tmp_path / 'w', '--dry_run', preset='resnet50_sin')},
                      dict(os.environ, JAX_PLATFORMS='cpu'))
  assert runs['ok'][0] == 0 and 'config OK: task classify' in runs['ok'][1], runs['ok'][1]
  code, output = runs['empty']
  assert code == 2
  assert output.strip().splitlines()[-1] == (
      "error: data.data_dir='': data.name=folder reads the image folder "
      'data_dir/train/<class>/<image> (and val/ or test/); set it')
  assert not (tmp_path / 'w').exists()


def test_resnet50_sin_is_geirhos_recipe():
  c = classify_configs.get_config('resnet50_sin')
  assert (c.model.name, c.data.name, c.data.image_size) == ('resnet50', 'folder', 224)
  t = c.train
  assert (t.optimizer, t.momentum, t.batch_size, t.lr, t.weight_decay, t.epochs) == (
      'sgd', 0.9, 256, 0.1, 1e-4, 60)
  assert not t.augment and t.warmup_epochs == 0 and t.label_smoothing == 0


def documented_commands():
  """The ImageNet-scale commands of configs/classify.py's docstring."""
  text = classify_configs.__doc__.split('ImageNet scale (Geirhos')[1].split(
      'Stylized CIFAR-10 (Geirhos')[0]
  return [line.strip() for line in text.replace('\\\n', ' ').splitlines()
          if line.strip().startswith('python -m awesome_jax.main')]


def test_the_documented_imagenet_commands_pass_their_checks():
  commands = [test_docs.parse(re.sub(r'\s+', ' ', c)) for c in documented_commands()]
  sin, sin_in, sin_in_in = [c for c in commands if c.task == 'classify']
  # the 16-class shape bias of the three, in one run (their folders do not exist here)
  bias, = [c for c in commands if c.task == 'shape_bias']
  assert bias.models == ','.join(f'{n}=/runs/geirhos/{n}' for n in ('sin', 'sin_in',
                                                                    'sin_in_in'))
  for config in (sin, sin_in, sin_in_in):
    classify.check(config)
    assert config.data.name == 'folder' and config.model.name == 'resnet50'
    assert classify.extra_test_dirs(config.data) == {'in': '/data/imagenet',
                                                     'sin': '/data/sin'}
  assert sin.data.data_dir == '/data/sin' and sin.train.epochs == 60
  assert classify.extra_train_dirs(sin_in.data) == ['/data/sin'] and sin_in.train.epochs == 45
  assert sin_in_in.init_from == '/runs/geirhos/sin_in' and sin_in_in.train.lr == 0.01
  assert sin_in_in.train.epochs == 60 and sin_in_in.data.data_dir == '/data/imagenet'
  workdirs = [w for c in documented_commands() for w in shlex.split(c)
              if w.startswith('--workdir=')]
  assert workdirs == [f'--workdir=/runs/geirhos/{n}' for n in ('sin', 'sin_in', 'sin_in_in',
                                                               'bias')]
