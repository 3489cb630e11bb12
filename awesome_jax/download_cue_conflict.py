"""Fetches the cue-conflict stimuli and the human decisions once into the cache folder.

`ensure(conditions)` makes the cache folder (`download.cache_root()`: the `cache_dir`
argument, else $AWESOME_JAX_DATA, else ~/.cache/awesome_jax) hold them in the layout the
shape-bias task reads, and returns the two roots:

  cue_conflict/stimuli/<shape class>/<shape><n>-<texture><n>.png   (1,280)
  cue_conflict/edges/<class>/<name>.png, cue_conflict/silhouettes/<class>/<name>.png
  cue_conflict/DATASET_LICENSE                                     (CC BY 4.0)
  human_decisions/{cue-conflict,edge,silhouette}/*.csv             (10 observers each)

They come from GitHub's zip archives of two repositories at pinned commits:
rgeirhos/texture-vs-shape (`stimuli/style-transfer-preprocessed-512`, `stimuli/edges`,
`stimuli/filled-silhouettes`, `DATASET_LICENSE`; a 163 MB archive) and
bethgelab/model-vs-human (`raw-data/{cue-conflict,edge,silhouette}`; a few MB). Only
those folders are taken out of an archive, and the archive is deleted afterwards.

GitHub builds these archives on request and does not promise the same bytes forever, so
no archive checksum is pinned: every file taken out is checked instead, against its size
and SHA-256 in `resources/cue_conflict_files.json` (computed from the repositories' git
blobs at the pinned commits, e.g. `git show COMMIT:PATH | sha256sum`). The files of an
archive are written into a hidden staging folder and renamed into place only once all
of them check out, so a folder is there whole or not at all. A folder already there is
kept when it holds every listed file at its listed size (sizes, not hashes: the
shape-bias task opens and checks every image anyway). The URLs of an archive are tried
in order; if all fail, one `data.DataError` line names each URL and why (HTTP status, a
file the archive lacks, a file with the wrong checksum).
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib

from awesome_jax import data
from awesome_jax import download

MANIFEST = os.path.join(os.path.dirname(__file__), 'resources', 'cue_conflict_files.json')
# GitHub's zip archive of a commit; the second redirects to the first
ARCHIVE_URLS = ('https://codeload.github.com/{repository}/zip/{commit}',
                'https://github.com/{repository}/archive/{commit}.zip')
STIMULI_ROOT = 'cue_conflict'      # under the cache root: what data.stimuli_root names
HUMANS_ROOT = 'human_decisions'   # under the cache root: what data.humans_root names
CONDITIONS = ('cue-conflict', 'edge', 'silhouette')
PARTS = ('stimuli', 'humans')

# (part, condition) -> (path under the cache root, source, path in the source repository).
# condition None: comes along whenever the source's archive is fetched, never a reason to
# fetch it.
FOLDERS = {
    ('stimuli', 'cue-conflict'): ('cue_conflict/stimuli', 'texture-vs-shape',
                                  'stimuli/style-transfer-preprocessed-512'),
    ('stimuli', 'edge'): ('cue_conflict/edges', 'texture-vs-shape', 'stimuli/edges'),
    ('stimuli', 'silhouette'): ('cue_conflict/silhouettes', 'texture-vs-shape',
                                'stimuli/filled-silhouettes'),
    ('stimuli', None): ('cue_conflict/DATASET_LICENSE', 'texture-vs-shape', 'DATASET_LICENSE'),
    ('humans', 'cue-conflict'): ('human_decisions/cue-conflict', 'model-vs-human',
                                 'raw-data/cue-conflict'),
    ('humans', 'edge'): ('human_decisions/edge', 'model-vs-human', 'raw-data/edge'),
    ('humans', 'silhouette'): ('human_decisions/silhouette', 'model-vs-human',
                               'raw-data/silhouette'),
}


@dataclasses.dataclass(frozen=True)
class Source:
  """One repository at one commit: the files taken from it and the URLs of its archive."""
  name: str
  repository: str  # GitHub owner/name
  commit: str
  files: dict  # path in the repository -> (size in bytes, SHA-256 hex digest)
  urls: tuple  # zip archives of the repository at `commit`, tried in order


@dataclasses.dataclass(frozen=True)
class Fetched:
  """What `ensure` left in the cache: the two roots, and where their files came from."""
  stimuli_root: str
  humans_root: str
  parts: tuple  # the parts asked for: 'stimuli', 'humans'
  pins: tuple  # 'owner/name at commit' of the repositories they come from
  downloaded: tuple  # archive URLs downloaded by this call; () when all was there

  def describe(self):
    """One line: where the data is and where it came from."""
    where = {'stimuli': f'stimuli in {self.stimuli_root}',
             'humans': f'human decisions in {self.humans_root}'}
    how = (f'downloaded from {", ".join(self.downloaded)}, every file checked against its '
           'SHA-256' if self.downloaded else
           f'from {" and ".join(self.pins)}, already in the cache')
    return f'cue-conflict data: {", ".join(where[p] for p in self.parts)} ({how})'


@functools.lru_cache(maxsize=None)
def shipped_sources():
  """{name: Source} of the manifest shipped in awesome_jax/resources."""
  return read_manifest(MANIFEST)


def read_manifest(path):
  """{name: Source} of a manifest {name: {repository, commit, files: {path: [size,
  sha256]}}}, each with the GitHub archive URLs of ARCHIVE_URLS."""
  try:
    with open(path) as f:
      table = json.load(f)
    return {name: Source(name, entry['repository'], entry['commit'],
                         {p: (int(size), sha) for p, (size, sha) in entry['files'].items()},
                         tuple(u.format(**entry) for u in ARCHIVE_URLS))
            for name, entry in table.items()}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise data.DataError(f'{path}: not a readable file manifest ({type(e).__name__}: '
                         f'{e})') from None


def ensure(conditions=CONDITIONS, parts=PARTS, cache_dir=None, sources=None, progress=True):
  """Makes the cache hold the `parts` ('stimuli', 'humans') of `conditions`; -> Fetched.

  Folders already complete are not fetched again. An archive that has to be downloaded
  fills every incomplete folder it serves (the edges and silhouettes are 1.5 MB beside
  the 136 MB of cue-conflict stimuli), so a later run with other conditions does not
  download it again. `sources` ({name: Source}) defaults to the shipped manifest.
  """
  sources = shipped_sources() if sources is None else sources
  for cond in conditions:
    if cond not in CONDITIONS:
      raise data.DataError(f'condition {cond!r}: nothing to download; known: '
                           f'{", ".join(CONDITIONS)}')
  for part in parts:
    if part not in PARTS:
      raise data.DataError(f'{part!r}: nothing to download; known: {", ".join(PARTS)}')
  root = download.cache_root(cache_dir)
  wanted = [k for k in FOLDERS if k[0] in parts and k[1] in conditions]
  pins = tuple(f'{sources[n].repository} at {sources[n].commit[:7]}'
               for n in dict.fromkeys(FOLDERS[k][1] for k in wanted) if n in sources)
  missing = {FOLDERS[k][1] for k in wanted if not _complete(root, FOLDERS[k], sources)}
  downloaded = []
  for name in sorted(missing):
    entries = [e for e in FOLDERS.values()
               if e[1] == name and not _complete(root, e, sources)]
    downloaded.append(_download_and_extract(sources[name], entries, root, progress))
  return Fetched(os.path.join(root, STIMULI_ROOT), os.path.join(root, HUMANS_ROOT),
                 tuple(p for p in PARTS if p in parts), pins, tuple(downloaded))


def _files(entry, sources):
  """{path relative to the entry's folder ('' for a single file): (size, sha256)}."""
  _, name, path = entry
  if name not in sources:
    raise data.DataError(f'no source {name!r} in the cue-conflict file manifest')
  files = sources[name].files
  if path in files:
    return {'': files[path]}
  prefix = path + '/'
  out = {p[len(prefix):]: v for p, v in files.items() if p.startswith(prefix)}
  if not out:
    raise data.DataError(f'the cue-conflict file manifest lists no files under {name}:{path}')
  return out


def _complete(root, entry, sources):
  """Whether every file of `entry` is under `root` at its listed size."""
  dest = os.path.join(root, entry[0])
  for rel, (size, _) in _files(entry, sources).items():
    try:
      if os.path.getsize(os.path.join(dest, rel) if rel else dest) != size:
        return False
    except OSError:
      return False
  return True


def _download_and_extract(source, entries, root, progress):
  """Downloads `source`'s archive and fills `entries` from it; -> the URL that served it."""
  label = f'{source.repository} at {source.commit[:7]}'
  try:
    os.makedirs(root, exist_ok=True)
    fd, archive = tempfile.mkstemp(prefix=f'.{source.name}.', suffix='.zip.part', dir=root)
    os.close(fd)
  except OSError as e:
    raise data.DataError(f'{root}: cannot write the download of {label} '
                         f'({e.strerror or e})') from None
  failures = []
  try:
    for url in source.urls:
      failure = download.save_url(url, archive, f'{source.name}.zip', progress)
      if failure is None:
        failure = _extract(archive, source, entries, root)
        if failure is None:
          return url
      failures.append(f'{url}: {failure}')
  finally:
    if os.path.exists(archive):
      os.remove(archive)
  tried = '; '.join(failures) or 'no URLs listed'
  raise data.DataError(f'could not download {label}: {tried}')


def _extract(archive, source, entries, root):
  """Writes `entries` from the zip `archive` under `root`, all or none: each file is
  checked in a hidden staging folder, and only once all of them are right are the
  entries renamed into place. None, or why not."""
  try:
    staging = tempfile.mkdtemp(prefix=f'.{source.name}.', suffix='.part', dir=root)
  except OSError as e:
    raise data.DataError(f'{root}: cannot write the cue-conflict files ({e})') from None
  try:
    with zipfile.ZipFile(archive) as zf:
      # GitHub puts everything in one top folder, <repository>-<commit>/: dropped
      members = {}
      for info in zf.infolist():
        _, _, path = info.filename.partition('/')
        if path and not info.is_dir():
          members.setdefault(path, info)
      wanted = {}  # path in the repository -> (path under root, size, sha256)
      for dest, _, repo_path in entries:
        for rel, (size, sha256) in _files((dest, source.name, repo_path),
                                          {source.name: source}).items():
          wanted[f'{repo_path}/{rel}' if rel else repo_path] = (
              os.path.join(dest, rel) if rel else dest, size, sha256)
      absent = sorted(p for p in wanted if p not in members)
      if absent:
        more = f' (and {len(absent) - 1} more)' if len(absent) > 1 else ''
        return f'the archive lacks {absent[0]}{more}'
      for name, (dest, size, sha256) in sorted(wanted.items()):
        out_path = os.path.join(staging, dest)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        failure = _copy_checked(zf, members[name], name, out_path, size, sha256)
        if failure:
          return failure
    for dest, _, _ in entries:
      _replace(os.path.join(staging, dest), os.path.join(root, dest))
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as e:
    return f'not a readable zip archive ({e})'
  except OSError as e:
    raise data.DataError(f'{root}: cannot write the cue-conflict files ({e})') from None
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return None


def _copy_checked(zf, info, name, out_path, size, sha256):
  """Copies the member `info` (`name` in the repository) to `out_path`; None, or why it
  does not match the manifest."""
  digest, n = hashlib.sha256(), 0
  with zf.open(info) as src, open(out_path, 'wb') as out:
    for chunk in iter(lambda: src.read(download.CHUNK_BYTES), b''):
      digest.update(chunk)
      n += len(chunk)
      out.write(chunk)
  if n != size:
    return f'{name}: {n} bytes, expected {size} (nothing kept)'
  if digest.hexdigest() != sha256:
    return (f'{name}: wrong sha256 checksum: expected {sha256}, got {digest.hexdigest()} '
            '(nothing kept)')
  return None


def _replace(new, dest):
  """Renames `new` (a checked file or folder) to `dest`. What was at `dest` (an incomplete
  copy) goes first; a symbolic link there is removed, never what it points to."""
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  if os.path.islink(dest) or os.path.isfile(dest):
    os.remove(dest)
  elif os.path.exists(dest):
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(dest)}.', suffix='.old',
                           dir=os.path.dirname(dest))
    os.rename(dest, os.path.join(old, 'incomplete'))
    shutil.rmtree(old)
  os.rename(new, dest)
