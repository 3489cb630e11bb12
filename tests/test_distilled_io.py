"""Reading distilled sets in every accepted layout, from files generated here."""

import json
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import data, distill, pretrained
from awesome_jax import distilled_io as dio
from configs import distill as distill_configs
from tests.torch_files import Storage as _Storage, Tensor as _Tensor, save_legacy, save_torch

def original_results(num_batches=3, epochs=2, classes=4, per_class=2, hw=8, channels=1,
                     seed=0):
  """Steps as the original's save_results holds them, and the arrays they encode.

  As there: one data tensor per distinct step, reused by every epoch; one label tensor
  shared by all steps; the T lrs are (1,) views into one (T, 1) tensor.
  """
  rng = np.random.default_rng(seed)
  n = classes * per_class
  data_nchw = rng.normal(size=(num_batches, n, channels, hw, hw)).astype(np.float32)
  label = np.repeat(np.arange(classes), per_class).astype(np.int64)
  total = num_batches * epochs
  lrs = rng.uniform(0.01, 0.05, size=(total,)).astype(np.float32)
  data_storages = [_Storage(str(1000 + s), data_nchw[s]) for s in range(num_batches)]
  label_storage, lr_storage = _Storage('2000', label), _Storage('3000', lrs)
  steps = [(_Tensor(data_storages[t % num_batches], 0, data_nchw.shape[1:]),
            _Tensor(label_storage, 0, label.shape),
            _Tensor(lr_storage, t, (1,), (1,))) for t in range(total)]
  want = dict(images_normalized=np.transpose(data_nchw, (0, 1, 3, 4, 2)),
              targets=np.tile(np.eye(classes, dtype=np.float32)[label], (num_batches, 1, 1)),
              lrs=lrs, step_order=np.arange(total) % num_batches)
  return steps, want


def assert_loaded(z, want):
  for key, value in want.items():
    np.testing.assert_allclose(z[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
    assert np.shape(z[key]) == np.shape(value), key


def one_line_error(match, fn, *args, **kwargs):
  with pytest.raises(dio.DistilledFileError, match=match) as e:
    fn(*args, **kwargs)
  assert '\n' not in str(e.value)
  return str(e.value)


# ------------------------------------------------------------------- our npz


def tiny_distilled(tmp_path, **distill_fields):
  config = distill_configs.get_config('tiny')
  config.data.name = 'synthetic'
  for k, v in distill_fields.items():
    config.distill[k] = v
  ds = data.make_synthetic(num_classes=4, shape=(8, 8, 1), n_train=64, n_test=16)
  d = distill.Distiller(config, ds)
  state = d.init_state(jax.random.key(0), ds.normalize(ds.x_train), ds.y_train)
  path = str(tmp_path / 'distilled.npz')
  distill.save_distilled(path, d, state)
  return path


@pytest.mark.parametrize('random_init', [True, False])
def test_own_npz_round_trip(tmp_path, random_init):
  path = tiny_distilled(tmp_path, random_init=random_init)
  with np.load(path) as raw:
    raw = {k: raw[k] for k in raw.files}
  assert any(k.startswith('init/') for k in raw) == (not random_init)
  for z in (dio.load_distilled(path), dio.load_any(path), dio.load_any(path, 'awesome_jax')):
    assert set(z) == set(raw)
    for k in raw:
      np.testing.assert_array_equal(z[k], raw[k], err_msg=k)
  assert dio.detect_format(path) == 'awesome_jax'


def test_own_npz_missing_optional_keys_are_derived(tmp_path):
  rng = np.random.default_rng(0)
  xn = rng.normal(size=(2, 3, 4, 4, 1)).astype(np.float32)
  targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(2, 3))]
  np.savez(tmp_path / 'old.npz', images_normalized=xn, targets=targets,
           lrs=np.full(4, 0.1, np.float32), mean=np.array([0.5], np.float32),
           std=np.array([0.25], np.float32), dataset=np.array('digits'),
           model=np.array('mlp'), model_kwargs=np.array('{}'))
  z = dio.load_distilled(str(tmp_path / 'old.npz'))
  np.testing.assert_allclose(z['images'], xn * 0.25 + 0.5)
  np.testing.assert_array_equal(z['hard_labels'], targets.argmax(-1))
  np.testing.assert_array_equal(z['step_order'], [0, 1, 0, 1])
  assert str(z['label_encoding']) == 'one-hot' and z['lr_params'].shape == (0,)


# ----------------------------------------------------------------- plain npz


def test_plain_npz_flat_images_hard_labels(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 2])
  np.savez(tmp_path / 'p.npz', images=x, labels=labels, lrs=np.array([0.1, 0.2, 0.3]))
  path = str(tmp_path / 'p.npz')
  assert dio.detect_format(path) == 'plain_npz'
  z = dio.load_any(path, dataset='digits', model='mlp', mean=0.5, std=(0.2,))
  assert_loaded(z, dict(images_normalized=x[None], targets=np.eye(3)[labels][None],
                        lrs=[0.1, 0.2, 0.3], step_order=[0, 0, 0], mean=[0.5], std=[0.2],
                        images=x[None] * 0.2 + 0.5, hard_labels=labels[None]))
  assert str(z['dataset']) == 'digits' and str(z['model']) == 'mlp'
  assert json.loads(str(z['model_kwargs'])) == {} and 'momentum' not in z
  assert str(z['label_encoding']) == 'one-hot'


def test_plain_npz_stepped_pixels_soft_labels_momentum(tmp_path):
  rng = np.random.default_rng(2)
  pixels = rng.uniform(size=(2, 4, 8, 8, 3)).astype(np.float32)
  soft = rng.dirichlet(np.ones(5), size=(2, 4)).astype(np.float32)
  mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
  np.savez(tmp_path / 'p.npz', images=pixels, labels=soft, lrs=np.float32(0.05),
           image_space='pixels', mean=mean, std=std, momentum=0.9, dataset='cifar10',
           model='convnet', model_kwargs=json.dumps({'depth': 2}))
  z = dio.load_any(str(tmp_path / 'p.npz'), dataset='ignored', model='ignored',
                   mean=0.0, std=1.0)  # the file's own values win
  assert_loaded(z, dict(images_normalized=(pixels - mean) / std, images=pixels,
                        targets=soft, lrs=[0.05, 0.05], step_order=[0, 1],
                        hard_labels=soft.argmax(-1), mean=mean, std=std))
  assert float(z['momentum']) == pytest.approx(0.9)
  assert (str(z['dataset']), str(z['model'])) == ('cifar10', 'convnet')
  assert json.loads(str(z['model_kwargs'])) == {'depth': 2}
  assert str(z['label_encoding']).startswith('soft')


def test_plain_npz_other_step_order_is_unrolled(tmp_path):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 4, 4, 1)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 3))
  order = np.array([1, 0, 0, 1, 1])
  np.savez(tmp_path / 'p.npz', images=x, labels=labels, lrs=np.arange(1, 6) / 10,
           step_order=order, mean=0.0, std=1.0, dataset='digits', model='mlp')
  z = dio.load_any(str(tmp_path / 'p.npz'), 'plain_npz')
  # train_on_distilled trains step t on batch t % S: S becomes T, one batch per step
  assert_loaded(z, dict(images_normalized=x[order], hard_labels=labels[order],
                        step_order=np.arange(5), lrs=np.arange(1, 6) / 10))


def test_plain_npz_set_trains_through_train_on_distilled(tmp_path):
  digits = data.load_digits()
  idx = np.concatenate([np.flatnonzero(digits.y_train == c)[:2] for c in range(10)])
  pixels = digits.x_train[idx]  # 20 real 8x8x1 digits as a (flat) "distilled" set
  order = np.array([1, 1, 0, 1, 0, 0])  # not t % 2: trained in this order
  stepped = np.stack([pixels[0::2], pixels[1::2]])  # (2, 10, 8, 8, 1)
  labels = np.stack([digits.y_train[idx][0::2], digits.y_train[idx][1::2]])
  np.savez(tmp_path / 'digits.npz', images=stepped, labels=labels, image_space='pixels',
           lrs=np.full(6, 0.5, np.float32), step_order=order)
  z = dio.load_any(str(tmp_path / 'digits.npz'), dataset='digits', model='mlp',
                   mean=digits.mean, std=digits.std, num_classes=10)
  model, trained = distill.train_on_distilled(z, jax.random.key(0), 2)
  leaves = jax.tree_util.tree_leaves(trained)
  assert all(np.all(np.isfinite(a)) for a in leaves)
  # the same as SGD on the file's batches in the file's order, by hand
  xn = (stepped - np.asarray(digits.mean)) / np.asarray(digits.std)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  p = jax.tree_util.tree_map(lambda a: a[0], trained)
  p0 = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 8, 8, 1)))['params'])(
      jax.random.split(jax.random.key(0), 2))
  q = jax.tree_util.tree_map(lambda a: a[0], p0)
  for t, s in enumerate(order):
    g = jax.grad(lambda w: distill.cross_entropy(apply_fn(w, xn[s]), labels[s]))(q)
    q = jax.tree_util.tree_map(lambda a, b: a - 0.5 * b, q, g)
  for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  x_test = digits.normalize(digits.x_test)
  acc = np.mean(np.argmax(apply_fn(p, x_test), -1) == digits.y_test)
  assert acc > 0.3, acc  # 20 real digits, 6 steps: far above chance (0.1)


# ---------------------------------------------------- the original's results.pth


@pytest.mark.parametrize('legacy', [True, False])
def test_original_results_pth(tmp_path, legacy):
  steps, want = original_results(num_batches=3, epochs=2)
  path = str(tmp_path / 'results.pth')
  save_torch(path, steps, legacy)
  assert zipfile.is_zipfile(path) == (not legacy)
  assert dio.detect_format(path) == 'torch'
  z = dio.load_any(path, dataset='digits', model='mlp', mean=0.5, std=0.3)
  assert_loaded(z, dict(want, mean=[0.5], std=[0.3]))
  assert (str(z['dataset']), str(z['model'])) == ('digits', 'mlp')
  assert z['images_normalized'].shape == (3, 8, 8, 8, 1) and z['lrs'].shape == (6,)
  # the original's names and normalisation
  z = dio.load_any(path, 'torch', dataset='MNIST', model='LeNet')
  assert (str(z['dataset']), str(z['model'])) == ('mnist', 'lenet')
  np.testing.assert_allclose([z['mean'], z['std']], [[0.1307], [0.3081]])
  np.testing.assert_allclose(z['images'], want['images_normalized'] * 0.3081 + 0.1307,
                             rtol=1e-6)


def test_original_results_one_epoch_and_rgb(tmp_path):
  steps, want = original_results(num_batches=4, epochs=1, channels=3, seed=5)
  save_torch(str(tmp_path / 'r.pth'), steps, legacy=False)
  z = dio.load_any(str(tmp_path / 'r.pth'), dataset='Cifar10', model='AlexCifarNet')
  assert_loaded(z, dict(want, mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.243, 0.261]))


def test_original_results_train(tmp_path):
  steps, want = original_results(num_batches=2, epochs=3, classes=3)
  save_torch(str(tmp_path / 'r.pth'), steps, legacy=True)
  z = dio.load_any(str(tmp_path / 'r.pth'), dataset='synthetic', model='mlp', mean=0.,
                   std=1.)
  _, trained = distill.train_on_distilled(z, jax.random.key(1), 1)
  assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(trained))


def test_read_torch_object_keeps_lists_tuples_and_shared_storage(tmp_path):
  flat = np.arange(6, dtype=np.float32)
  s = _Storage('7', flat)
  obj = [(_Tensor(s, 0, (2, 3)), _Tensor(s, 1, (2,), (3,))), [_Tensor(s, 5, (1,))]]
  for legacy in (True, False):
    save_torch(str(tmp_path / 'o.pth'), obj, legacy)
    got = pretrained.read_torch_object(str(tmp_path / 'o.pth'))
    assert isinstance(got, list) and isinstance(got[0], tuple) and isinstance(got[1], list)
    np.testing.assert_array_equal(got[0][0], flat.reshape(2, 3))
    np.testing.assert_array_equal(got[0][1], [1, 4])  # a strided view (a column)
    np.testing.assert_array_equal(got[1][0], [5])


# --------------------------------------------------------- bad files, one line


def test_missing_and_not_npz_files(tmp_path):
  (tmp_path / 'notes.txt').write_text('hello\nworld\n')
  for fmt in ('auto', 'awesome_jax', 'plain_npz', 'torch'):
    msg = one_line_error('missing.npz: no such file', dio.load_any,
                         str(tmp_path / 'missing.npz'), fmt)
    assert 'accepted:' in msg
    one_line_error('notes.txt', dio.load_any, str(tmp_path / 'notes.txt'), fmt)
  one_line_error('notes.txt: not an npz', dio.load_distilled, str(tmp_path / 'notes.txt'))
  one_line_error('is a directory', dio.load_distilled, str(tmp_path))
  one_line_error("eval.format='pth'", dio.load_any, str(tmp_path / 'notes.txt'), 'pth')


def test_corrupt_npz(tmp_path):
  np.savez(tmp_path / 'ok.npz', images_normalized=np.zeros((1, 1, 2, 2, 1)) + 7.0)
  raw = bytearray((tmp_path / 'ok.npz').read_bytes())
  at = raw.index(np.float64(7.0).tobytes())
  raw[at:at + 8] = np.float64(8.0).tobytes()  # the CRC no longer matches
  (tmp_path / 'bad.npz').write_bytes(bytes(raw))
  one_line_error('bad.npz: a corrupt npz', dio.load_distilled, str(tmp_path / 'bad.npz'))
  (tmp_path / 'cut.npz').write_bytes(bytes(raw[:len(raw) // 2]))
  one_line_error('cut.npz: not an npz', dio.load_distilled, str(tmp_path / 'cut.npz'))


def test_foreign_npz_names_the_first_missing_key(tmp_path):
  path = tiny_distilled(tmp_path)
  with np.load(path) as z:
    kept = {k: z[k] for k in z.files if k != 'dataset'}
  np.savez(tmp_path / 'no_dataset.npz', **kept)
  one_line_error(r"no_dataset.npz: no 'dataset' array", dio.load_distilled,
                 str(tmp_path / 'no_dataset.npz'))
  np.savez(tmp_path / 'foreign.npz', weights=np.zeros(3))
  one_line_error("foreign.npz: no 'images_normalized' array", dio.load_distilled,
                 str(tmp_path / 'foreign.npz'))
  msg = one_line_error("foreign.npz: an npz with no 'images_normalized'", dio.load_any,
                       str(tmp_path / 'foreign.npz'))
  assert 'weights' in msg and 'accepted:' in msg
  one_line_error("foreign.npz: no 'images' array", dio.load_any,
                 str(tmp_path / 'foreign.npz'), 'plain_npz')
  np.savez(tmp_path / 'pickled.npz', images=np.array([{'a': 1}], dtype=object))
  one_line_error('pickled.npz: holds pickled', dio.load_distilled,
                 str(tmp_path / 'pickled.npz'))


def test_bad_plain_npz_names_key_and_config_field(tmp_path):
  x = np.zeros((4, 2, 2, 1), np.float32)
  cases = {
      'no_labels': (dict(images=x, lrs=0.1), "no 'labels' array"),
      'no_dataset': (dict(images=x, labels=np.arange(4), lrs=0.1, mean=0., std=1.),
                     "no 'dataset' in this plain npz; set data.name"),
      'no_mean': (dict(images=x, labels=np.arange(4), lrs=0.1, dataset='digits'),
                  "no 'mean' in this plain npz; set eval.mean"),
      'logits': (dict(images=x, labels=np.full((4, 3), 2.0), lrs=0.1),
                 "soft 'labels' must be distributions"),
      'short_labels': (dict(images=x, labels=np.arange(3), lrs=0.1),
                       r"'labels' has shape \(3,\)"),
      'bad_space': (dict(images=x, labels=np.arange(4), lrs=0.1, image_space='raw'),
                    "'image_space' is 'raw'"),
      'bad_order': (dict(images=x, labels=np.arange(4), lrs=[0.1, 0.1], step_order=[0, 1],
                         mean=0., std=1., dataset='d', model='mlp'),
                    "'step_order' must be 2 ints in"),
      'text_lrs': (dict(images=x, labels=np.arange(4), lrs='fast', mean=0., std=1.),
                   "'lrs' holds <U4"),
      'bad_std': (dict(images=x, labels=np.arange(4), lrs=0.1, mean=0., std=0.),
                  "'std' = \\[0.0\\] is not a usable"),
  }
  for name, (arrays, match) in cases.items():
    np.savez(tmp_path / f'{name}.npz', **arrays)
    one_line_error(f'{name}.npz: {match}', dio.load_any, str(tmp_path / f'{name}.npz'),
                   model='mlp')
  z = dio.load_any(str(tmp_path / 'no_mean.npz'), model='mlp', mean=[0.1], std=[0.2])
  assert float(z['mean'][0]) == pytest.approx(0.1)


def test_bad_torch_files_name_what_they_miss(tmp_path):
  steps, _ = original_results(num_batches=2, epochs=1)
  bad = {
      'state_dict': ({'conv.weight': np.zeros((2, 2), np.float32)}, 'holds a dict'),
      'two_items': ([steps[0][:2]], r'step 0 is 2 items, not a \(data, label, lr\)'),
      'no_lr': ([steps[0][:2] + (None,)], "step 0: 'lr' is None"),
      'test_results': ((steps[0][0], steps[0][1], steps[0][2]), 'step 0 is a ndarray'),
      'flat_data': ([(steps[0][1], steps[0][1], steps[0][2])], "step 0: 'data' is not"),
      'empty': ([], 'holds list'),
  }
  for name, (obj, match) in bad.items():
    path = str(tmp_path / f'{name}.pth')
    if name == 'state_dict':
      save_legacy(path, obj)
    else:
      save_torch(path, obj, legacy=True)
    one_line_error(f'{name}.pth: {match}', dio.load_any, path, dataset='mnist', model='lenet')
  save_torch(str(tmp_path / 'ok.pth'), steps, legacy=False)
  one_line_error("ok.pth: no 'dataset' in this original code's results.pth; set data.name",
                 dio.load_any, str(tmp_path / 'ok.pth'), model='lenet')
  one_line_error("ok.pth: no 'mean' .*'digits'.*; set eval.mean", dio.load_any,
                 str(tmp_path / 'ok.pth'), dataset='digits', model='mlp')
  # cut short, and a tensor reaching past its storage
  save_torch(str(tmp_path / 'legacy.pth'), steps, legacy=True)
  legacy = (tmp_path / 'legacy.pth').read_bytes()
  (tmp_path / 'cut.pth').write_bytes(legacy[:-10])
  one_line_error('cut.pth: not a readable PyTorch checkpoint', dio.load_any,
                 str(tmp_path / 'cut.pth'), dataset='mnist', model='lenet')
  s = _Storage('1', np.zeros(4, np.float32))
  save_torch(str(tmp_path / 'oob.pth'), [(_Tensor(s, 0, (8, 1, 2, 2)), None, None)], False)
  one_line_error('oob.pth: .*reaches past its storage', dio.load_any,
                 str(tmp_path / 'oob.pth'))


def test_torch_reader_refuses_globals_in_every_pickle(tmp_path):
  # the magic number's pickle is read by the same guarded unpickler as the object
  (tmp_path / 'evil.pth').write_bytes(b'\x80\x02' + pickle.GLOBAL + b'os\nsystem\n' +
                                      pickle.STOP)
  one_line_error('evil.pth: .*refusing to load os.system', dio.load_any,
                 str(tmp_path / 'evil.pth'), 'torch')
