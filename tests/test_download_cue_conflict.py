"""The cue-conflict download from tiny fake GitHub archives: the layout, the cache, the
checks of every file, one-line errors, and the shape-bias task's hook."""

import dataclasses
import hashlib
import io
import json
import os
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from awesome_jax import data
from awesome_jax import download
from awesome_jax import download_cue_conflict as dcc
from awesome_jax import shape_bias as sb
from awesome_jax.tasks import shape_bias as shape_bias_task
from configs import shape_bias as shape_bias_configs
from tests.test_download import cache, closed_port_url, server  # noqa: F401 (fixtures)

TVS_COMMIT = 'a' * 40
MVH_COMMIT = 'b' * 40
CLASSES = ('cat', 'dog')


def png(colour):
  buffer = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


def stimulus_names():
  return [f'{s}1-{t}1.png' for s in CLASSES for t in CLASSES]


def tvs_files():
  """texture-vs-shape's files the download takes, by path in the repository."""
  colours = {'cat': (200, 30, 30), 'dog': (30, 30, 200)}
  files = {'DATASET_LICENSE': b'CC BY 4.0\n'}
  for name in stimulus_names():
    shape, texture = name.split('1-')[0], name.split('1-')[1][:-5]
    files[f'stimuli/style-transfer-preprocessed-512/{shape}/{name}'] = png(colours[texture])
  for cls in CLASSES:
    files[f'stimuli/edges/{cls}/{cls}1.png'] = png((255, 255, 255))
    files[f'stimuli/filled-silhouettes/{cls}/{cls}1.png'] = png((0, 0, 0))
  return files


def human_csv(subject, names, condition):
  rows = [','.join(sb.CSV_FIELDS)]
  for i, name in enumerate(names):
    shape = name.split('1')[0]
    rows.append(f'{subject},1,{i + 1},500,{shape},{shape},{condition},{name}')
  return ('\n'.join(rows) + '\n').encode()


def mvh_files():
  """model-vs-human's files the download takes, by path in the repository."""
  files = {}
  for subject in ('subject-01', 'subject-02'):
    files[f'raw-data/cue-conflict/cue-conflict_{subject}_session_1.csv'] = human_csv(
        subject, stimulus_names(), 'cue-conflict')
    for cond in ('edge', 'silhouette'):
      files[f'raw-data/{cond}/{cond}_{subject}_session_1.csv'] = human_csv(
          subject, [f'{c}1.png' for c in CLASSES], cond)
  return files


# files in the repositories that the download leaves alone
TVS_OTHERS = {'README.md': b'readme', 'code/train.py': b'pass\n',
              'stimuli/visualisation-stimuli/cat1.png': png((1, 2, 3))}
MVH_OTHERS = {'README.md': b'readme', 'raw-data/sketch/sketch_subject-01_session_1.csv': b'x'}


def zip_archive(top, files):
  """A zip laid out as GitHub's: every file under one folder `top`/, folders listed too."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as zf:
    zf.writestr(f'{top}/', b'')
    for path, payload in sorted(files.items()):
      zf.writestr(f'{top}/{path}', payload)
  return buffer.getvalue()


def manifest(files):
  return {p: (len(b), hashlib.sha256(b).hexdigest()) for p, b in files.items()}


@pytest.fixture
def sources(server, monkeypatch):
  """Both fake archives on the local server; {name: Source}, also what ensure() uses by
  default."""
  (server.root / 'tvs.zip').write_bytes(
      zip_archive(f'texture-vs-shape-{TVS_COMMIT}', {**tvs_files(), **TVS_OTHERS}))
  (server.root / 'mvh.zip').write_bytes(
      zip_archive(f'model-vs-human-{MVH_COMMIT}', {**mvh_files(), **MVH_OTHERS}))
  table = {
      'texture-vs-shape': dcc.Source('texture-vs-shape', 'rgeirhos/texture-vs-shape',
                                     TVS_COMMIT, manifest(tvs_files()),
                                     (server.url + 'tvs.zip',)),
      'model-vs-human': dcc.Source('model-vs-human', 'bethgelab/model-vs-human', MVH_COMMIT,
                                   manifest(mvh_files()), (server.url + 'mvh.zip',)),
  }
  monkeypatch.setattr(dcc, 'shipped_sources', lambda: table)
  return table


def tree(folder):
  """{relative path: bytes} of every file under `folder` (hidden ones included)."""
  out = {}
  for dirpath, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def expected_layout():
  """The cache as the shape-bias task reads it (the layout of ../shared/data)."""
  rename = {'stimuli/style-transfer-preprocessed-512/': 'cue_conflict/stimuli/',
            'stimuli/edges/': 'cue_conflict/edges/',
            'stimuli/filled-silhouettes/': 'cue_conflict/silhouettes/',
            'DATASET_LICENSE': 'cue_conflict/DATASET_LICENSE',
            'raw-data/': 'human_decisions/'}
  out = {}
  for path, payload in {**tvs_files(), **mvh_files()}.items():
    prefix = next(p for p in rename if path.startswith(p))
    out[rename[prefix] + path[len(prefix):]] = payload
  return out


def one_line(excinfo):
  message = str(excinfo.value)
  assert '\n' not in message, message
  return message


def test_layout_after_download_and_no_second_download(server, cache, sources):
  fetched = dcc.ensure(progress=False)
  assert tree(cache) == expected_layout()  # nothing else: no archive, no staging folder
  assert fetched.stimuli_root == str(cache / 'cue_conflict')
  assert fetched.humans_root == str(cache / 'human_decisions')
  assert sorted(server.requests) == ['/mvh.zip', '/tvs.zip']
  assert fetched.downloaded == (server.url + 'mvh.zip', server.url + 'tvs.zip')
  assert fetched.describe() == (
      f'cue-conflict data: stimuli in {cache}/cue_conflict, human decisions in '
      f'{cache}/human_decisions (downloaded from {server.url}mvh.zip, {server.url}tvs.zip, '
      'every file checked against its SHA-256)')
  assert all(os.stat(cache / p).st_mode & 0o044 == 0o044 for p in expected_layout())
  again = dcc.ensure(progress=False)
  assert len(server.requests) == 2 and again.downloaded == ()
  assert again.describe().endswith('(from rgeirhos/texture-vs-shape at aaaaaaa and '
                                   'bethgelab/model-vs-human at bbbbbbb, already in the cache)')
  # the stimuli the task lists are the ones in the archive
  stimuli = sb.list_stimuli(cache / 'cue_conflict' / 'stimuli')
  assert [s[1] for s in stimuli] == stimulus_names()


def test_only_the_archives_needed_are_downloaded(server, cache, sources):
  fetched = dcc.ensure(parts=('humans',), progress=False)
  assert server.requests == ['/mvh.zip'] and not (cache / 'cue_conflict').exists()
  assert sorted(os.listdir(cache / 'human_decisions')) == ['cue-conflict', 'edge', 'silhouette']
  assert fetched.describe().startswith(f'cue-conflict data: human decisions in {cache}/')
  # one condition's stimuli: its archive fills every stimulus folder it serves (1.5 MB of
  # edges and silhouettes beside 136 MB), so another condition later needs no download
  dcc.ensure(conditions=('edge',), parts=('stimuli',), progress=False)
  assert server.requests == ['/mvh.zip', '/tvs.zip']
  dcc.ensure(conditions=('cue-conflict', 'silhouette'), progress=False)
  assert tree(cache) == expected_layout() and len(server.requests) == 2
  with pytest.raises(data.DataError, match="condition 'sketch': nothing to download"):
    dcc.ensure(conditions=('sketch',))


def test_a_damaged_or_incomplete_folder_is_fetched_again(server, cache, sources):
  dcc.ensure(progress=False)
  stimuli = cache / 'cue_conflict' / 'stimuli'
  (stimuli / 'cat' / 'cat1-dog1.png').write_bytes(b'truncated')
  (cache / 'human_decisions' / 'edge' / 'edge_subject-01_session_1.csv').unlink()
  (stimuli / 'cat' / 'extra.txt').write_text('left by the user')  # goes with the folder
  dcc.ensure(progress=False)
  assert tree(cache) == expected_layout()
  assert len(server.requests) == 4
  # a folder that is a link to an incomplete copy: the link is replaced, the copy kept
  mine = cache.parent / 'my_edges'
  (mine / 'cat').mkdir(parents=True)
  (mine / 'cat' / 'cat1.png').write_bytes(b'mine')
  edges = cache / 'cue_conflict' / 'edges'
  os.rename(edges, cache.parent / 'old_edges')
  os.symlink(mine, edges)
  dcc.ensure(conditions=('edge',), parts=('stimuli',), progress=False)
  assert not os.path.islink(edges) and tree(cache) == expected_layout()
  assert tree(mine) == {'cat/cat1.png': b'mine'}


def test_a_wrong_checksum_is_one_line_and_keeps_nothing(server, cache, sources):
  path = 'stimuli/edges/dog/dog1.png'
  files = dict(sources['texture-vs-shape'].files)
  files[path] = (files[path][0], '0' * 64)
  sources['texture-vs-shape'] = dataclasses.replace(sources['texture-vs-shape'], files=files)
  with pytest.raises(data.DataError) as e:
    dcc.ensure(progress=False)
  got = hashlib.sha256(tvs_files()[path]).hexdigest()
  assert one_line(e) == (
      f'could not download rgeirhos/texture-vs-shape at aaaaaaa: {server.url}tvs.zip: '
      f'{path}: wrong sha256 checksum: expected {"0" * 64}, got {got} (nothing kept)')
  # nothing of that archive, not even its good folders; the other archive is complete
  assert not (cache / 'cue_conflict').exists()
  assert sorted(tree(cache)) == sorted(p for p in expected_layout()
                                       if p.startswith('human_decisions/'))
  # a wrong size is caught as well
  files[path] = (files[path][0] + 1, got)
  with pytest.raises(data.DataError, match=re.escape(
      f'{path}: {files[path][0] - 1} bytes, expected {files[path][0]} (nothing kept)')):
    dcc.ensure(progress=False)
  assert not (cache / 'cue_conflict').exists()


def test_a_missing_archive_or_file_is_one_line(server, cache, sources):
  (server.root / 'tvs.zip').unlink()
  with pytest.raises(data.DataError) as e:
    dcc.ensure(parts=('stimuli',), progress=False)
  assert one_line(e).startswith(f'could not download rgeirhos/texture-vs-shape at aaaaaaa: '
                                f'{server.url}tvs.zip: HTTP 404')
  # an archive without some of the files: the first one named, and how many more
  files = {p: b for p, b in tvs_files().items() if '/dog/' not in p}
  (server.root / 'tvs.zip').write_bytes(zip_archive(f'texture-vs-shape-{TVS_COMMIT}', files))
  with pytest.raises(data.DataError) as e:
    dcc.ensure(parts=('stimuli',), progress=False)
  assert one_line(e).endswith(f'{server.url}tvs.zip: the archive lacks '
                              'stimuli/edges/dog/dog1.png (and 3 more)')
  # not a zip at all
  (server.root / 'tvs.zip').write_bytes(b'<html>rate limited</html>')
  with pytest.raises(data.DataError) as e:
    dcc.ensure(parts=('stimuli',), progress=False)
  assert 'tvs.zip: not a readable zip archive (File is not a zip file)' in one_line(e)
  assert not [f for f in os.listdir(cache)]  # no archive, no staging folder left


def test_urls_are_tried_in_order_and_file_urls_work(server, cache, sources, tmp_path):
  dead = closed_port_url() + 'tvs.zip'
  local = tmp_path / 'local.zip'
  local.write_bytes((server.root / 'tvs.zip').read_bytes())
  sources['texture-vs-shape'] = dataclasses.replace(
      sources['texture-vs-shape'], urls=(dead, server.url + 'missing.zip', local.as_uri()))
  fetched = dcc.ensure(parts=('stimuli',), progress=False)
  assert fetched.downloaded == (local.as_uri(),)
  assert server.requests == ['/missing.zip']
  assert sorted(tree(cache)) == sorted(p for p in expected_layout()
                                       if p.startswith('cue_conflict/'))
  # every URL failing: one line naming each and why
  (cache / 'cue_conflict' / 'DATASET_LICENSE').unlink()  # the license alone fetches nothing
  dcc.ensure(parts=('stimuli',), progress=False)
  assert server.requests == ['/missing.zip']
  local.unlink()
  os.remove(cache / 'cue_conflict' / 'edges' / 'cat' / 'cat1.png')
  with pytest.raises(data.DataError) as e:
    dcc.ensure(parts=('stimuli',), progress=False)
  message = one_line(e)
  assert f'{dead}: unreachable' in message and f'{server.url}missing.zip: HTTP 404' in message
  assert f'{local.as_uri()}: unreachable' in message


def test_shipped_manifest_pins_the_published_files():
  table = dcc.read_manifest(dcc.MANIFEST)
  tvs, mvh = table['texture-vs-shape'], table['model-vs-human']
  assert tvs.repository == 'rgeirhos/texture-vs-shape'
  assert tvs.commit == 'ccd0c01d42c0a8a834e90ec141e7f24fa915dc23'
  assert mvh.repository == 'bethgelab/model-vs-human'
  assert mvh.commit == '79ed7cd1d9ac3a114e71b6638f0a98bdd627316c'
  assert tvs.urls == (f'https://codeload.github.com/rgeirhos/texture-vs-shape/zip/{tvs.commit}',
                      f'https://github.com/rgeirhos/texture-vs-shape/archive/{tvs.commit}.zip')
  for source in table.values():
    assert all(size > 0 and re.fullmatch('[0-9a-f]{64}', sha)
               for size, sha in source.files.values())
  counts = {}
  for (part, cond), entry in dcc.FOLDERS.items():
    files = dcc._files(entry, table)  # pylint: disable=protected-access
    counts[entry[0]] = len(files)
    if entry[0].startswith('cue_conflict/') and cond:
      per_class = {}
      for rel in files:
        cls, name = rel.split('/')
        assert cls in sb.CATEGORIES and name.endswith('.png')
        per_class[cls] = per_class.get(cls, 0) + 1
      assert sorted(per_class) == sorted(sb.CATEGORIES)
      assert set(per_class.values()) == {80 if cond == 'cue-conflict' else 10}
  assert counts == {'cue_conflict/stimuli': 1280, 'cue_conflict/edges': 160,
                    'cue_conflict/silhouettes': 160, 'cue_conflict/DATASET_LICENSE': 1,
                    'human_decisions/cue-conflict': 10, 'human_decisions/edge': 10,
                    'human_decisions/silhouette': 10}
  # the folders are the ones the task reads
  for cond, (stim_dir, human_dir) in shape_bias_task.CONDITIONS.items():
    assert dcc.FOLDERS[('stimuli', cond)][0] == f'{dcc.STIMULI_ROOT}/{stim_dir}'
    assert dcc.FOLDERS[('humans', cond)][0] == f'{dcc.HUMANS_ROOT}/{human_dir}'
  with open(dcc.MANIFEST) as f:
    assert set(json.load(f)) == set(table)


def test_the_manifest_matches_a_local_copy_of_the_published_files():
  """Where a copy in this layout is at hand (../shared/data beside the checkout), every
  listed file is there with the listed SHA-256, and ensure() reads it as it is."""
  shared = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        '..', 'shared', 'data')
  if not os.path.isdir(os.path.join(shared, 'cue_conflict', 'stimuli')):
    pytest.skip('no local copy of the cue-conflict stimuli')
  table = dcc.read_manifest(dcc.MANIFEST)
  for entry in dcc.FOLDERS.values():
    for rel, (_, sha256) in dcc._files(entry, table).items():  # pylint: disable=protected-access
      path = os.path.join(shared, entry[0], *([rel] if rel else []))
      assert download.file_checksum(path, sha256) == sha256, path
  assert dcc.ensure(cache_dir=shared, progress=False).downloaded == ()


# ------------------------------------------------------------------ the task's hook


def task_config(stimuli_root='', humans_root=''):
  config = shape_bias_configs.get_config()
  config.data.stimuli_root, config.data.humans_root = stimuli_root, humans_root
  config.conditions = 'cue-conflict'
  config.model.name = 'texture-model'
  config.progress_bar = False
  return config


def texture_model(x):
  """Red -> cat, blue -> dog: the fake stimuli's texture."""
  mapping = sb.load_mapping()
  red = np.asarray(x)[..., 0].mean(axis=(1, 2)) > 127
  logits = np.zeros((len(x), 1000), np.float32)
  logits[red, mapping['cat'][0]] = 20
  logits[~red, mapping['dog'][0]] = 20
  return logits


def test_task_fetches_into_the_cache_when_the_folders_are_empty(server, cache, sources,
                                                                 tmp_path, capsys):
  assert shape_bias_configs.get_config().data.stimuli_root == ''
  assert shape_bias_configs.get_config().data.humans_root == ''
  r = shape_bias_task.run(task_config(), str(tmp_path / 'w'), logits_fn=texture_model)
  cue = r['conditions']['cue-conflict']
  assert cue['stimuli'] == 4 and cue['shape_bias'] == 0 and cue['texture_acc'] == 1
  assert cue['humans']['pooled']['shape_bias'] == 1
  lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith('cue-conflict data')]
  assert lines == [f'cue-conflict data: stimuli in {cache}/cue_conflict, human decisions in '
                   f'{cache}/human_decisions (downloaded from {server.url}mvh.zip, '
                   f'{server.url}tvs.zip, every file checked against its SHA-256)']
  shape_bias_task.run(task_config(), str(tmp_path / 'w2'), logits_fn=texture_model)
  assert len(server.requests) == 2
  assert 'already in the cache' in capsys.readouterr().out
  # 'none': no human comparison (and nothing of model-vs-human needed)
  r = shape_bias_task.run(task_config(humans_root='none'), str(tmp_path / 'w3'),
                          logits_fn=texture_model)
  assert 'humans' not in r['conditions']['cue-conflict']
  out = capsys.readouterr().out
  assert f'stimuli in {cache}/cue_conflict (from rgeirhos' in out and 'human decisions' not in out


def test_task_reads_a_configured_folder_and_never_downloads_over_it(server, cache, sources,
                                                                   tmp_path, capsys):
  def must_not_run(x):
    raise AssertionError('the model ran before the inputs were checked')

  missing = tmp_path / 'typo'
  for config, field in ((task_config(stimuli_root=str(missing)), 'stimuli_root'),
                        (task_config(humans_root=str(missing)), 'humans_root')):
    with pytest.raises(sb.StimulusError) as e:
      shape_bias_task.run(config, str(tmp_path / 'w'), logits_fn=must_not_run)
    assert one_line(e) == f'data.{field}={missing}: not a directory'
  assert server.requests == []  # the typo was found before the other part was fetched
  # the stimuli from a configured folder, the humans fetched: only their archive comes
  fetched = dcc.ensure(parts=('stimuli',), cache_dir=str(tmp_path / 'mine'), progress=False)
  server.requests.clear()
  capsys.readouterr()
  r = shape_bias_task.run(task_config(stimuli_root=fetched.stimuli_root),
                          str(tmp_path / 'w'), logits_fn=texture_model)
  assert server.requests == ['/mvh.zip'] and 'humans' in r['conditions']['cue-conflict']
  assert capsys.readouterr().out.startswith(f'cue-conflict data: human decisions in {cache}/')
  # a failed download stops the run with one line, before the model
  (cache / 'human_decisions' / 'cue-conflict' / 'cue-conflict_subject-01_session_1.csv').unlink()
  (server.root / 'mvh.zip').unlink()
  with pytest.raises(data.DataError) as e:
    shape_bias_task.run(task_config(), str(tmp_path / 'w4'), logits_fn=must_not_run)
  assert f'{server.url}mvh.zip: HTTP 404' in one_line(e)
