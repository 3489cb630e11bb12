"""Downloads the datasets' own published files once into a local cache folder.

`download('mnist')` fetches the files listed in `FILES['mnist']` into
`cache_root()/mnist` and returns that folder, ready for the offline readers in
`awesome_jax.data`. The cache root is, in order: the `cache_dir` argument, the
environment variable `AWESOME_JAX_DATA`, `~/.cache/awesome_jax`.

Each file is checked against its published MD5 or SHA-256; it is written under a
temporary name and renamed only once it checks out, so the cache never holds a
partial or wrong file. Files already there and valid are not fetched again. The
mirrors of a file are tried in order; if all fail, one `DataError` line lists every
URL tried and why it failed. Only the standard library speaks HTTP.

The cue-conflict stimuli and human decisions of the shape-bias study come from GitHub
archives instead: `awesome_jax.download_cue_conflict`.
"""

import dataclasses
import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib

import tqdm

from awesome_jax import data

CACHE_ENV = 'AWESOME_JAX_DATA'
TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One published file: its name, checksum and the base URLs that serve it, in order."""
  name: str
  checksum: str  # hex digest of the file: MD5 (32 digits) or SHA-256 (64 digits)
  mirrors: tuple  # base URLs; the file is at mirror + name
  extract: tuple = ()  # for a tar archive: the member files (base names) the reader needs


MNIST_MIRRORS = ('https://ossci-datasets.s3.amazonaws.com/mnist/',
                 'https://storage.googleapis.com/cvdf-datasets/mnist/',
                 'http://yann.lecun.com/exdb/mnist/')
CIFAR10_MIRRORS = ('https://www.cs.toronto.edu/~kriz/',)
USPS_MIRRORS = ('https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/',)

# The MD5s are the ones the hosts publish (and torchvision checks).
FILES = {
    'mnist': (
        RemoteFile('train-images-idx3-ubyte.gz', 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
                   MNIST_MIRRORS),
        RemoteFile('train-labels-idx1-ubyte.gz', 'd53e105ee54ea40749a09fcbcd1e9432',
                   MNIST_MIRRORS),
        RemoteFile('t10k-images-idx3-ubyte.gz', '9fb629c4189551a2d022fa330f9573f3',
                   MNIST_MIRRORS),
        RemoteFile('t10k-labels-idx1-ubyte.gz', 'ec29112dd5afa0611ce80d1b7f02629c',
                   MNIST_MIRRORS),
    ),
    'cifar10': (
        RemoteFile('cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a',
                   CIFAR10_MIRRORS,
                   extract=tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',)),
    ),
    'usps': (
        RemoteFile('usps.bz2', 'ec16c51db3855ca6c91edd34d0e9b197', USPS_MIRRORS),
        RemoteFile('usps.t.bz2', '8ea070ee2aca1ac39742fdd1ef5ed118', USPS_MIRRORS),
    ),
}


def cache_root(cache_dir=None):
  """The cache folder: `cache_dir`, else $AWESOME_JAX_DATA, else ~/.cache/awesome_jax."""
  root = cache_dir or os.environ.get(CACHE_ENV) or os.path.join('~', '.cache', 'awesome_jax')
  return os.path.abspath(os.path.expanduser(root))


def file_checksum(path, checksum):
  """Hex digest of `path` with the algorithm the length of `checksum` implies."""
  algorithms = {32: hashlib.md5, 64: hashlib.sha256}
  if len(checksum) not in algorithms:
    raise data.DataError(f'{os.path.basename(path)}: checksum {checksum!r} is neither an '
                         'MD5 (32 hex digits) nor a SHA-256 (64)')
  digest = algorithms[len(checksum)]()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(CHUNK_BYTES), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _algorithm(checksum):
  return 'md5' if len(checksum) == 32 else 'sha256'


def _is_valid(path, remote):
  return os.path.isfile(path) and file_checksum(path, remote.checksum) == remote.checksum.lower()


def _publish(tmp_path, path):
  os.chmod(tmp_path, 0o644)  # mkstemp makes files readable by their owner only
  os.replace(tmp_path, path)


def _http_failure(e):
  """What went wrong in a request, in a few words."""
  if isinstance(e, urllib.error.HTTPError):
    return f'HTTP {e.code} {e.reason}'
  if isinstance(e, urllib.error.URLError):
    return f'unreachable ({e.reason})'
  if isinstance(e, TimeoutError):
    return f'timed out after {TIMEOUT_S} s'
  return f'{type(e).__name__}: {e}'


def save_url(url, tmp_path, name, progress):
  """Streams `url` (http(s):// or file://) into `tmp_path`. Returns None, or why it failed
  in a few words; `name` labels the progress bar."""
  request = urllib.request.Request(url, headers={'User-Agent': 'awesome_jax'})
  try:
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, \
         open(tmp_path, 'wb') as out:
      size = response.headers.get('Content-Length')
      size = int(size) if size and size.isdigit() else None
      received = 0
      with tqdm.tqdm(total=size, unit='B', unit_scale=True, unit_divisor=1024, desc=name,
                     disable=None if progress else True) as bar:
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b''):
          out.write(chunk)
          received += len(chunk)
          bar.update(len(chunk))
  except (OSError, http.client.HTTPException) as e:
    return _http_failure(e)
  if size is not None and received != size:
    return f'connection closed after {received} of {size} bytes'
  return None


def fetch(remote, folder, progress=True):
  """Makes `folder/remote.name` a valid copy of `remote`; returns its path.

  A file already there with the right checksum is kept. Otherwise the mirrors are tried
  in order until one serves the file with the right checksum.
  """
  path = os.path.join(folder, remote.name)
  if _is_valid(path, remote):
    return path
  try:
    if os.path.isfile(path):
      os.remove(path)  # a stale or damaged copy
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{remote.name}.', suffix='.part', dir=folder)
    os.close(fd)
  except OSError as e:
    raise data.DataError(f'{folder}: cannot write the download of {remote.name} '
                         f'({e.strerror or e})') from None
  failures = []
  try:
    for mirror in remote.mirrors:
      url = mirror + remote.name
      failure = save_url(url, tmp_path, remote.name, progress)
      if failure is None:
        got = file_checksum(tmp_path, remote.checksum)
        if got == remote.checksum.lower():
          _publish(tmp_path, path)
          return path
        failure = (f'wrong {_algorithm(remote.checksum)} checksum: expected '
                   f'{remote.checksum}, got {got} (bad download deleted)')
      failures.append(f'{url}: {failure}')
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
  tried = '; '.join(failures) or 'no mirrors listed'
  raise data.DataError(f'could not download {remote.name}: {tried}')


def extract(archive, members, folder):
  """Writes the tar `archive`'s files named `members` (base names) into `folder`."""
  wanted = set(members)
  try:
    with tarfile.open(archive) as tar:
      for member in tar:
        fname = os.path.basename(member.name)
        if not member.isfile() or fname not in wanted:
          continue
        fd, tmp_path = tempfile.mkstemp(prefix=f'.{fname}.', suffix='.part', dir=folder)
        try:
          with os.fdopen(fd, 'wb') as out, tar.extractfile(member) as source:
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b''):
              out.write(chunk)
          _publish(tmp_path, os.path.join(folder, fname))
        finally:
          if os.path.exists(tmp_path):
            os.remove(tmp_path)
        wanted.discard(fname)
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise data.DataError(f'{archive}: not a readable tar archive ({e})') from None
  if wanted:
    raise data.DataError(f'{archive}: archive lacks {", ".join(sorted(wanted))}')


def download(name, cache_dir=None, folder=None, files=None, progress=True):
  """Fetches dataset `name`'s standard files; returns the folder that holds them.

  `folder` defaults to `cache_root(cache_dir)/name`; `files` (a tuple of `RemoteFile`)
  defaults to `FILES[name]`. Archives are unpacked into the same folder.
  """
  if files is None:
    if name not in FILES:
      raise data.DataError(f'{name}: no download known; downloadable: {", ".join(FILES)}')
    files = FILES[name]
  folder = folder or os.path.join(cache_root(cache_dir), name)
  for remote in files:
    if remote.extract and all(os.path.isfile(os.path.join(folder, m))
                              for m in remote.extract):
      continue  # unpacked before; members are written whole or not at all
    path = fetch(remote, folder, progress)
    if remote.extract:
      extract(path, remote.extract, folder)
  return folder
