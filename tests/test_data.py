"""Offline readers of the standard files, tiny sets, and their one-line errors."""

import bz2
import gzip
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from awesome_jax import data


def write_idx(path, array, compress=True):
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 8, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  raw = header + array.tobytes()
  with open(path, 'wb') as f:
    f.write(gzip.compress(raw) if compress else raw)


def make_mnist_dir(tmp_path, n=20, compress=True):
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (n, 28, 28))
  labels = np.arange(n) % 10
  ext = '.gz' if compress else ''
  for prefix in ('train', 't10k'):
    write_idx(tmp_path / f'{prefix}-images-idx3-ubyte{ext}', imgs, compress)
    write_idx(tmp_path / f'{prefix}-labels-idx1-ubyte{ext}', labels, compress)
  return imgs, labels


@pytest.mark.parametrize('compress', [True, False])
def test_mnist_idx_round_trip(tmp_path, compress):
  imgs, labels = make_mnist_dir(tmp_path, compress=compress)
  ds = data.load('mnist', data_dir=str(tmp_path))
  assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_train.dtype == np.float32
  np.testing.assert_allclose(ds.x_train[..., 0] * 255, imgs, atol=1e-4)
  np.testing.assert_array_equal(ds.y_test, labels)
  assert ds.mean == data.STATS['mnist'][0]


def test_mnist_malformed_file_names_file(tmp_path):
  make_mnist_dir(tmp_path)
  bad = tmp_path / 'train-labels-idx1-ubyte.gz'
  bad.write_bytes(gzip.compress(b'\x00\x00\x08\x01' + (50).to_bytes(4, 'big') + b'\x01' * 3))
  with pytest.raises(data.DataError, match='train-labels-idx1-ubyte.gz.*shape'):
    data.load('mnist', data_dir=str(tmp_path))
  bad.write_bytes(gzip.compress(b'hello world, not idx'))
  with pytest.raises(data.DataError, match='bad magic'):
    data.load('mnist', data_dir=str(tmp_path))


def test_missing_file_and_dir_errors(tmp_path):
  with pytest.raises(data.DataError, match='train-images-idx3-ubyte.*not found'):
    data.load('mnist', data_dir=str(tmp_path))
  with pytest.raises(data.DataError, match='data.data_dir'):
    data.load('mnist', source='files', data_dir=str(tmp_path / 'nope'))
  with pytest.raises(data.DataError, match="data.name='imagenet'.*allowed: mnist"):
    data.load('imagenet')
  with pytest.raises(data.DataError, match='usps.npz: file not found'):
    data.load('usps', data_dir=str(tmp_path))


def test_bad_label_is_named(tmp_path):
  imgs, labels = make_mnist_dir(tmp_path)
  write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', np.r_[labels[:-1], 12])
  with pytest.raises(data.DataError, match=r'mnist test labels: label 12 outside \[0, 10\)'):
    data.load('mnist', data_dir=str(tmp_path))


def test_cifar_python_batches(tmp_path):
  rng = np.random.default_rng(0)
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    d = {b'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8),
         b'labels': list(rng.integers(0, 10, 4))}
    with open(tmp_path / name, 'wb') as f:
      pickle.dump(d, f)
  ds = data.load('cifar10', data_dir=str(tmp_path))
  assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
  # channel-major rows become NHWC pixels
  with open(tmp_path / 'test_batch', 'rb') as f:
    raw = pickle.load(f)[b'data'][0].reshape(3, 32, 32)
  np.testing.assert_allclose(ds.x_test[0, 1, 2] * 255, raw[:, 1, 2], atol=1e-4)


@pytest.mark.parametrize('as_tar', [False, True])
def test_cifar_image_folder(tmp_path, as_tar):
  root = tmp_path / 'folder'
  for split in ('train', 'test'):
    for c in ('cat', 'ship'):
      os.makedirs(root / split / c)
      Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(root / split / c / '0.png')
  target = root
  if as_tar:
    target = tmp_path / 'tarred'
    os.makedirs(target)
    with tarfile.open(target / 'cifar10_jpg.tar.gz', 'w:gz') as tar:
      tar.add(root / 'train', arcname='train')
      tar.add(root / 'test', arcname='test')
  ds = data.load('cifar10', data_dir=str(target), cache_dir=str(tmp_path / 'cache'))
  assert sorted(ds.y_train.tolist()) == [data.CIFAR10_CLASSES.index('cat'),
                                         data.CIFAR10_CLASSES.index('ship')]
  np.testing.assert_allclose(ds.x_train, 200 / 255, atol=1e-6)
  # the second load reads the cache and gives the same arrays
  again = data.load('cifar10', data_dir=str(target), cache_dir=str(tmp_path / 'cache'))
  np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_cifar_unknown_class_folder(tmp_path):
  for split in ('train', 'test'):
    os.makedirs(tmp_path / split / 'dragon')
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / split / 'dragon' / 'a.png')
  with pytest.raises(data.DataError, match="unknown class folder 'dragon'"):
    data.load('cifar10', data_dir=str(tmp_path), cache_dir=str(tmp_path / 'c'))


def test_usps_npz(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / 'usps.npz', x_train=rng.uniform(size=(5, 16, 16)).astype(np.float32),
           y_train=np.arange(5, dtype=np.uint8), x_test=np.zeros((2, 16, 16), np.float32),
           y_test=np.zeros(2, np.uint8))
  ds = data.load('usps', data_dir=str(tmp_path))
  assert ds.shape == (16, 16, 1)
  assert data.resize(ds.x_train, 28).shape == (5, 28, 28, 1)
  np.savez(tmp_path / 'usps.npz', x_train=np.zeros((2, 16, 16)))
  with pytest.raises(data.DataError, match=r"usps.npz: missing arrays \['x_test'"):
    data.load('usps', data_dir=str(tmp_path))


def test_tiny_sets():
  digits = data.load('digits')
  assert digits.shape == (8, 8, 1) and digits.num_classes == 10
  assert 0 <= digits.x_train.min() and digits.x_train.max() <= 1
  syn = data.make_synthetic(num_classes=3, shape=(4, 4, 2), n_train=30, n_test=9)
  assert syn.x_train.shape == (30, 4, 4, 2) and set(syn.y_test.tolist()) == {0, 1, 2}
  np.testing.assert_allclose(syn.normalize(syn.x_train).mean(axis=(0, 1, 2)), 0, atol=1e-5)


def test_truncated_gz_names_file(tmp_path):
  make_mnist_dir(tmp_path)
  bad = tmp_path / 't10k-images-idx3-ubyte.gz'
  bad.write_bytes(bad.read_bytes()[:200])
  with pytest.raises(data.DataError) as e:
    data.load('mnist', data_dir=str(tmp_path))
  assert str(e.value).startswith(f'{bad}: truncated or corrupt gzip file')
  bad.write_bytes(b'\x1f\x8b not really gzip')
  with pytest.raises(data.DataError, match='t10k-images-idx3-ubyte.gz: truncated or corrupt'):
    data.load('mnist', data_dir=str(tmp_path))


def test_idx_size_message_has_plain_ints(tmp_path):
  make_mnist_dir(tmp_path)
  write_idx(tmp_path / 'train-images-idx3-ubyte.gz', np.zeros((3, 28, 28)))
  raw = gzip.decompress((tmp_path / 'train-images-idx3-ubyte.gz').read_bytes())
  (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(raw[:16 + 1000]))
  with pytest.raises(data.DataError) as e:
    data.load('mnist', data_dir=str(tmp_path))
  assert str(e.value).endswith('header says shape (3, 28, 28) but holds 1000 bytes')
  assert 'np.' not in str(e.value)
  (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(raw[:10]))
  with pytest.raises(data.DataError, match=r'idx header of 3 dimensions cut short \(10 bytes\)'):
    data.load('mnist', data_dir=str(tmp_path))


@pytest.mark.parametrize('content, reason', [
    (b'not a pickle at all', 'unpickling failed'),
    (b'', 'unpickling failed: EOFError'),
    (pickle.dumps([1, 2, 3]), "expected a dict with b'data' and b'labels', got list"),
    (pickle.dumps({b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]}),
     'cannot reshape'),
])
def test_cifar_batch_not_a_batch(tmp_path, content, reason):
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    with open(tmp_path / name, 'wb') as f:
      pickle.dump({b'data': np.zeros((1, 3072), np.uint8), b'labels': [0]}, f)
  (tmp_path / 'data_batch_3').write_bytes(content)
  with pytest.raises(data.DataError) as e:
    data.load('cifar10', data_dir=str(tmp_path))
  message = str(e.value)
  assert message.startswith(f'{tmp_path / "data_batch_3"}: not a CIFAR-10 python batch')
  assert reason in message and '\n' not in message


def test_cifar_corrupt_tar(tmp_path):
  os.makedirs(tmp_path / 'src' / 'train' / 'cat')
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, 'PNG')
  for i in range(20):
    (tmp_path / 'src' / 'train' / 'cat' / f'{i}.png').write_bytes(buffer.getvalue())
  target = tmp_path / 'tarred'
  os.makedirs(target)
  with tarfile.open(target / 'cifar10_jpg.tar.gz', 'w:gz') as tar:
    tar.add(tmp_path / 'src' / 'train', arcname='train')
  whole = (target / 'cifar10_jpg.tar.gz').read_bytes()
  (target / 'cifar10_jpg.tar.gz').write_bytes(whole[:len(whole) // 2])
  with pytest.raises(data.DataError, match=r'cifar10_jpg.tar.gz: not a readable tar archive'):
    data.load('cifar10', data_dir=str(target), cache_dir=str(tmp_path / 'cache'))


def test_usps_libsvm_files(tmp_path):
  def write(name, rows):
    with bz2.open(tmp_path / name, 'wt') as f:
      f.write(''.join(rows))
  write('usps.bz2', ['1 1:-1 2:1 256:0.5\n', '10 1:0\n'])
  write('usps.t.bz2', ['3 2:-0.5\n'])
  ds = data.load('usps', data_dir=str(tmp_path))
  np.testing.assert_array_equal(ds.y_train, [0, 9])
  np.testing.assert_array_equal(ds.y_test, [2])
  np.testing.assert_allclose(ds.x_train[0, 0, :2, 0], [0, 1])
  np.testing.assert_allclose(ds.x_train[0, 15, 15, 0], 0.75)
  np.testing.assert_allclose(ds.x_train[1, 0, 1, 0], 0.5)  # left-out value: 0 -> 0.5
  np.testing.assert_allclose(ds.x_test[0, 0, 1, 0], 0.25)
  write('usps.t.bz2', ['3 2:-0.5\n', '11 1:1\n'])
  with pytest.raises(data.DataError, match=r'usps.t.bz2, line 2: label 11 outside 1..10'):
    data.load('usps', data_dir=str(tmp_path))
  write('usps.t.bz2', ['3 2:-0.5 7\n'])
  with pytest.raises(data.DataError, match=r'usps.t.bz2, line 1: not `label index:value'):
    data.load('usps', data_dir=str(tmp_path))
  (tmp_path / 'usps.t.bz2').write_bytes(bz2.compress(b'3 1:1\n' * 50)[:30])
  with pytest.raises(data.DataError, match=r'usps.t.bz2: truncated or corrupt bz2 file'):
    data.load('usps', data_dir=str(tmp_path))
