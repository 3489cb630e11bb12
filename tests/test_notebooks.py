"""Every study notebook in colabs/ runs top to bottom in TINY mode, and is fit for Colab.

The code cells are run in order in one namespace (as one kernel would) by a fresh
`python -c`, with `TINY = True` and the runs under a temporary folder; a cell that
raises makes it exit non-zero, naming the cell. Plain `exec` instead of a Jupyter
kernel (nbclient + ipykernel): no extra dependencies and no kernel start-up, and the
notebooks use no IPython syntax (checked below), so what runs here is what Colab runs;
figures go through `awesome_jax.notebook.show`, which prints the path (and shows it only in a kernel).
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = ('quickstart', 'distillation', 'edge_popup', 'shape_bias', 'cnn_vs_vit',
           'stylization')
SWITCH = 'TINY = False'
RUNS = "RUNS = '/tmp/runs'"
# the only modules a notebook imports: the package, its configs, and the standard
# library the install cell needs
IMPORTS = {'awesome_jax', 'configs', 'jax', 'importlib', 'os', 'subprocess', 'sys'}

RUNNER = r'''
import json, sys, time, traceback
path, runs = sys.argv[1], sys.argv[2]
with open(path) as f:
  cells = [''.join(c['source']) for c in json.load(f)['cells'] if c['cell_type'] == 'code']
namespace = {'__name__': '__main__'}
for i, src in enumerate(cells, 1):
  src = src.replace(%r, 'TINY = True').replace(%r, f'RUNS = {runs!r}')
  t0 = time.time()
  try:
    exec(compile(src, f'<code cell {i}>', 'exec'), namespace)
  except BaseException:
    traceback.print_exc()
    print(f'CELL {i} FAILED', flush=True)
    sys.exit(1)
  print(f'CELL {i} OK {time.time() - t0:.1f} s', flush=True)
''' % (SWITCH, RUNS)


def load(name):
  with open(os.path.join(ROOT, 'colabs', f'{name}.ipynb')) as f:
    return json.load(f)


def code_cells(nb):
  return [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']


def execute(path, runs):
  env = dict(os.environ, JAX_PLATFORMS='cpu', MPLBACKEND='Agg')
  return subprocess.run([sys.executable, '-c', RUNNER, str(path), str(runs)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('name', STUDIES)
def test_notebook_runs_top_to_bottom_in_tiny_mode(name, tmp_path):
  proc = execute(os.path.join(ROOT, 'colabs', f'{name}.ipynb'), tmp_path)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  cells = len(code_cells(load(name)))
  assert proc.stdout.count(' OK ') == cells, proc.stdout
  assert proc.stdout.count('figure: ') >= 1  # the figures came out


@pytest.mark.parametrize('name', STUDIES)
def test_notebook_is_fit_for_colab(name):
  nb = load(name)
  cells = code_cells(nb)
  assert all(not c['outputs'] and c['execution_count'] is None
             for c in nb['cells'] if c['cell_type'] == 'code'), 'outputs not stripped'
  first = ''.join(nb['cells'][0]['source'])
  assert (f'https://colab.research.google.com/github/awesome-jax/awesome_jax/blob/main/'
          f'colabs/{name}.ipynb') in first
  assert "find_spec('configs') is None" in cells[0] and 'pip' in cells[0]
  assert sum(SWITCH in c for c in cells) == 1 and sum(RUNS in c for c in cells) == 1
  for src in cells:
    assert not re.search(r'^\s*[!%]', src, re.M), 'IPython syntax: use Python'
    for module in re.findall(r'^\s*(?:from|import)\s+([\w.]+)', src, re.M):
      assert module.split('.')[0] in IMPORTS, module
    for module in re.findall(r'^\s*import\s+(.+)$', src, re.M):
      assert {m.strip().split('.')[0] for m in module.split(',')} <= IMPORTS, module


def test_a_cell_that_raises_fails_the_run(tmp_path):
  nb = load('distillation')
  nb['cells'] = [c for c in nb['cells'] if c['cell_type'] == 'code'][:2]
  nb['cells'].insert(1, {'cell_type': 'code', 'source': ['raise ValueError("boom")'],
                         'metadata': {}, 'outputs': [], 'execution_count': None})
  path = tmp_path / 'broken.ipynb'
  path.write_text(json.dumps(nb))
  proc = execute(path, tmp_path)
  assert proc.returncode == 1
  assert 'CELL 2 FAILED' in proc.stdout and 'ValueError: boom' in proc.stderr
  assert 'CELL 3' not in proc.stdout  # nothing runs after it


def test_show_prints_the_path_and_displays_only_inside_a_kernel(tmp_path, monkeypatch, capsys):
  import types  # pylint: disable=g-import-not-at-top
  from awesome_jax import notebook  # pylint: disable=g-import-not-at-top
  png = tmp_path / 'f.png'
  png.write_bytes(b'\x89PNG')
  shown = []
  display = types.SimpleNamespace(display=shown.append, Image=lambda filename: filename)
  shell = [None]
  ipython = types.SimpleNamespace(get_ipython=lambda: shell[0], display=display)
  monkeypatch.setitem(sys.modules, 'IPython', ipython)
  monkeypatch.setitem(sys.modules, 'IPython.display', display)
  notebook.show(str(png))  # IPython installed, but no kernel (a CI's Python)
  assert capsys.readouterr().out == f'figure: {png}\n' and not shown
  shell[0] = object()
  notebook.show(str(png))
  assert shown == [str(png)]
  with pytest.raises(FileNotFoundError, match='no such figure'):
    notebook.show(str(tmp_path / 'missing.png'))
