"""Downloads from a local HTTP server: checksums, the cache, mirrors, one-line errors."""

import bz2
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading

import numpy as np
import pytest

from awesome_jax import data
from awesome_jax import download

N_MNIST = 20


def md5(payload):
  return hashlib.md5(payload).hexdigest()


def idx_gz(array):
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 8, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  return gzip.compress(header + array.tobytes())


def mnist_payloads():
  rng = np.random.default_rng(0)
  images = {'train': rng.integers(0, 256, (N_MNIST, 28, 28)),
            't10k': rng.integers(0, 256, (N_MNIST // 2, 28, 28))}
  labels = {'train': np.arange(N_MNIST) % 10, 't10k': (np.arange(N_MNIST // 2) * 3) % 10}
  payloads = {}
  for prefix in ('train', 't10k'):
    payloads[f'{prefix}-images-idx3-ubyte.gz'] = idx_gz(images[prefix])
    payloads[f'{prefix}-labels-idx1-ubyte.gz'] = idx_gz(labels[prefix])
  return payloads, images, labels


def cifar_payload():
  """A cifar-10-python.tar.gz with 2 images per batch, laid out as the published one."""
  rng = np.random.default_rng(1)
  batches = {}
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta']:
      batch = {b'data': rng.integers(0, 256, (2, 3072), dtype=np.uint8),
               b'labels': [int(v) for v in rng.integers(0, 10, 2)]}
      batches[name] = batch
      raw = pickle.dumps(batch)
      info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  return buffer.getvalue(), batches


def usps_payload(labels, seed):
  """libsvm lines `label index:value ...` with labels 1..10 and values in [-1, 1]."""
  rng = np.random.default_rng(seed)
  pixels = np.round(rng.uniform(-1, 1, (len(labels), 256)), 6)
  lines = [f'{label} ' + ' '.join(f'{i + 1}:{v:g}' for i, v in enumerate(row))
           for label, row in zip(labels, pixels)]
  return bz2.compress(('\n'.join(lines) + '\n').encode()), pixels


class Server:
  """http.server on 127.0.0.1 serving a folder in a thread; counts GET requests by path."""

  def __init__(self, root):
    self.requests = []
    server = self

    class Handler(http.server.SimpleHTTPRequestHandler):

      def do_GET(self):
        server.requests.append(self.path)
        super().do_GET()

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Handler, directory=str(root)))
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()
    self.thread.join()


@pytest.fixture
def server(tmp_path):
  root = tmp_path / 'www'
  root.mkdir()
  s = Server(root)
  s.root = root
  yield s
  s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  folder = tmp_path / 'cache'
  monkeypatch.setenv(download.CACHE_ENV, str(folder))
  return folder


def closed_port_url():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  return f'http://127.0.0.1:{port}/'


def serve_mnist(server, monkeypatch, mirrors=None):
  payloads, images, labels = mnist_payloads()
  for name, payload in payloads.items():
    (server.root / name).write_bytes(payload)
  files = tuple(download.RemoteFile(name, md5(payload), tuple(mirrors or [server.url]))
                for name, payload in payloads.items())
  monkeypatch.setitem(download.FILES, 'mnist', files)
  return payloads, images, labels


def test_mnist_download_then_cache(server, cache, monkeypatch, capsys):
  payloads, images, labels = serve_mnist(server, monkeypatch)
  ds = data.load('mnist', source='download')
  assert ds.x_train.shape == (N_MNIST, 28, 28, 1) and ds.x_test.shape == (N_MNIST // 2, 28, 28, 1)
  np.testing.assert_allclose(ds.x_train[..., 0] * 255, images['train'], atol=1e-4)
  np.testing.assert_array_equal(ds.y_test, labels['t10k'])
  assert sorted(os.listdir(cache / 'mnist')) == sorted(payloads)  # no temp files left
  assert f'{cache / "mnist"}' in capsys.readouterr().out
  assert len(server.requests) == 4
  again = data.load('mnist', source='download')
  assert len(server.requests) == 4  # everything came from the cache
  np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_auto_falls_back_to_download_when_tfds_fails(server, cache, monkeypatch, capsys):
  _, images, _ = serve_mnist(server, monkeypatch)
  def no_tfds(name, data_dir):
    raise ModuleNotFoundError("No module named 'importlib_resources'")
  monkeypatch.setattr(data, '_tfds_arrays', no_tfds)
  ds = data.load('mnist')
  np.testing.assert_allclose(ds.x_train[..., 0] * 255, images['train'], atol=1e-4)
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 and str(cache / 'mnist') in out[0] and 'importlib_resources' in out[0]
  # with the server gone too, one line names both failures
  monkeypatch.setitem(download.FILES, 'mnist', (download.RemoteFile(
      'train-images-idx3-ubyte.gz', '0' * 32, (closed_port_url(),)),))
  monkeypatch.setenv(download.CACHE_ENV, str(cache / 'empty'))
  with pytest.raises(data.DataError) as e:
    data.load('mnist')
  assert 'unreachable' in str(e.value) and 'importlib_resources' in str(e.value)
  assert '\n' not in str(e.value)


def test_cache_dir_argument_and_env_var(server, tmp_path, monkeypatch):
  serve_mnist(server, monkeypatch)
  monkeypatch.delenv(download.CACHE_ENV, raising=False)
  assert download.cache_root() == os.path.expanduser('~/.cache/awesome_jax')
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / 'env'))
  assert download.cache_root() == str(tmp_path / 'env')
  assert download.cache_root(str(tmp_path / 'arg')) == str(tmp_path / 'arg')
  folder = download.download('mnist', cache_dir=str(tmp_path / 'arg'), progress=False)
  assert folder == str(tmp_path / 'arg' / 'mnist')
  assert len(os.listdir(folder)) == 4 and not (tmp_path / 'env').exists()
  assert all(os.stat(os.path.join(folder, f)).st_mode & 0o044 == 0o044 for f in os.listdir(folder))
  # source='download' with data_dir set downloads into data_dir
  data.load('mnist', source='download', data_dir=str(tmp_path / 'mine'))
  assert len(os.listdir(tmp_path / 'mine')) == 4 and not (tmp_path / 'env').exists()


def test_damaged_cached_file_is_fetched_again(server, cache, monkeypatch):
  payloads, _, _ = serve_mnist(server, monkeypatch)
  download.download('mnist')
  damaged = cache / 'mnist' / 't10k-labels-idx1-ubyte.gz'
  damaged.write_bytes(b'not the published file')
  download.download('mnist')
  assert server.requests.count('/t10k-labels-idx1-ubyte.gz') == 2 and len(server.requests) == 5
  assert damaged.read_bytes() == payloads['t10k-labels-idx1-ubyte.gz']


def test_missing_file_is_one_line(server, cache, monkeypatch):
  serve_mnist(server, monkeypatch)
  (server.root / 't10k-images-idx3-ubyte.gz').unlink()
  with pytest.raises(data.DataError) as e:
    data.load('mnist', source='download')
  message = str(e.value)
  assert '\n' not in message
  assert f'{server.url}t10k-images-idx3-ubyte.gz: HTTP 404' in message
  assert not [f for f in os.listdir(cache / 'mnist') if f.startswith('.')]


def test_wrong_checksum_is_one_line_and_leaves_nothing(server, cache, monkeypatch):
  payload = b'\x00' * 100
  (server.root / 'usps.bz2').write_bytes(payload)
  wrong = '0123456789abcdef' * 2
  remote = download.RemoteFile('usps.bz2', wrong, (server.url,))
  with pytest.raises(data.DataError) as e:
    download.fetch(remote, str(cache / 'usps'))
  message = str(e.value)
  assert '\n' not in message and 'usps.bz2' in message
  assert f'expected {wrong}, got {md5(payload)}' in message and 'md5' in message
  assert os.listdir(cache / 'usps') == []  # neither the file nor its temporary copy


def test_sha256_checksums_are_accepted(server, cache):
  payload = b'some published bytes'
  (server.root / 'file.bin').write_bytes(payload)
  remote = download.RemoteFile('file.bin', hashlib.sha256(payload).hexdigest(), (server.url,))
  path = download.fetch(remote, str(cache))
  assert open(path, 'rb').read() == payload


def test_unreachable_mirror_falls_through(server, cache, monkeypatch):
  dead = closed_port_url()
  _, images, _ = serve_mnist(server, monkeypatch, mirrors=[dead, server.url])
  ds = data.load('mnist', source='download')
  np.testing.assert_allclose(ds.x_test[..., 0] * 255, images['t10k'], atol=1e-4)
  assert len(server.requests) == 4
  # a mirror serving a file with the wrong checksum is passed over as well
  (server.root / 'bad').mkdir()
  (server.root / 'bad' / 'usps.bz2').write_bytes(b'wrong')
  (server.root / 'usps.bz2').write_bytes(b'right')
  remote = download.RemoteFile('usps.bz2', md5(b'right'), (dead, server.url + 'bad/',
                                                          server.url))
  assert open(download.fetch(remote, str(cache / 'usps')), 'rb').read() == b'right'
  # all mirrors failing: one line listing each URL and its reason
  remote = download.RemoteFile('usps.t.bz2', md5(b'x'), (dead, server.url))
  with pytest.raises(data.DataError) as e:
    download.fetch(remote, str(cache / 'usps'))
  assert str(e.value).startswith('could not download usps.t.bz2: ')
  assert f'{dead}usps.t.bz2: unreachable' in str(e.value)
  assert f'{server.url}usps.t.bz2: HTTP 404' in str(e.value)


def test_cifar10_download_and_extract(server, cache, monkeypatch):
  payload, batches = cifar_payload()
  (server.root / 'cifar-10-python.tar.gz').write_bytes(payload)
  remote = download.FILES['cifar10'][0]
  monkeypatch.setitem(download.FILES, 'cifar10', (download.RemoteFile(
      remote.name, md5(payload), (server.url,), remote.extract),))
  ds = data.load('cifar10', source='download')
  assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
  test = batches['test_batch']
  np.testing.assert_array_equal(ds.y_test, test[b'labels'])
  np.testing.assert_allclose(ds.x_test[1, 4, 5] * 255,
                             test[b'data'][1].reshape(3, 32, 32)[:, 4, 5], atol=1e-4)
  names = set(os.listdir(cache / 'cifar10'))
  assert {'test_batch', 'data_batch_5', 'cifar-10-python.tar.gz'} <= names
  assert 'batches.meta' not in names and 'cifar-10-batches-py' not in names
  data.load('cifar10', source='download')
  assert len(server.requests) == 1


def test_cifar10_archive_without_batches(server, cache):
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
    info = tarfile.TarInfo('cifar-10-batches-py/readme.html')
    tar.addfile(info, io.BytesIO(b''))
  (server.root / 'c.tar.gz').write_bytes(buffer.getvalue())
  files = (download.RemoteFile('c.tar.gz', md5(buffer.getvalue()), (server.url,),
                               ('data_batch_1', 'test_batch')),)
  with pytest.raises(data.DataError, match=r'c.tar.gz: archive lacks data_batch_1, test_batch$'):
    download.download('cifar10', files=files)


def test_usps_download_reads_libsvm(server, cache, monkeypatch):
  y_train, y_test = np.arange(12) % 10, np.array([9, 0, 4])
  files = []
  pixels = {}
  for name, labels, seed in (('usps.bz2', y_train, 0), ('usps.t.bz2', y_test, 1)):
    payload, pixels[name] = usps_payload(labels + 1, seed)
    (server.root / name).write_bytes(payload)
    files.append(download.RemoteFile(name, md5(payload), (server.url,)))
  monkeypatch.setitem(download.FILES, 'usps', tuple(files))
  ds = data.load('usps', source='download')
  assert ds.shape == (16, 16, 1) and len(ds.x_train) == 12
  np.testing.assert_array_equal(ds.y_train, y_train)
  np.testing.assert_array_equal(ds.y_test, y_test)
  np.testing.assert_allclose(ds.x_test[..., 0].reshape(3, 256), (pixels['usps.t.bz2'] + 1) / 2,
                             atol=1e-6)
  assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


def test_published_table():
  """The built-in table: each dataset's files, MD5s of 32 hex digits, mirrors ending in /."""
  assert [f.name for f in download.FILES['mnist']] == [
      'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
      't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']
  assert download.FILES['cifar10'][0].extract[-1] == 'test_batch'
  published = {  # the hosts' MD5s (torchvision checks the same ones)
      'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
      'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
      't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
      't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c',
      'cifar-10-python.tar.gz': 'c58f30108f718f92721af3b95e74349a',
      'usps.bz2': 'ec16c51db3855ca6c91edd34d0e9b197',
      'usps.t.bz2': '8ea070ee2aca1ac39742fdd1ef5ed118'}
  assert {f.name: f.checksum for f in sum(download.FILES.values(), ())} == published
  for remote in sum(download.FILES.values(), ()):
    assert remote.mirrors and all(m.endswith('/') for m in remote.mirrors)
