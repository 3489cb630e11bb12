"""Every artifact committed under results/ loads and has the keys and columns that
results/README.md documents (not that it reaches its number: that takes the command next
to it in RESULTS.md)."""

import csv
import glob
import json
import os
import re

import numpy as np
import pytest

from awesome_jax import distilled_io
from awesome_jax import shape_bias as sb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'results')

DISTILLED_KEYS = {'images', 'images_normalized', 'targets', 'hard_labels', 'label_encoding',
                  'lrs', 'lr_params', 'step_order', 'mean', 'std', 'normalization',
                  'dataset', 'model', 'model_kwargs', 'loss'}
DISTILL_RESULTS_KEYS = {'dataset', 'model', 'images', 'inner_steps', 'outer_steps',
                        'random_init', 'learn_labels', 'test_acc_mean', 'test_acc_std',
                        'test_acc_all', 'eval_nets'}
SHAPE_RESULTS_KEYS = {'shape_bias', 'shape_acc', 'texture_acc', 'conflict_trials',
                      'per_class_shape_bias', 'vs_humans'}
SWEEP_COLUMNS = ['mode', 'weight_init', 'keep_fraction', 'test_acc', 'random_mask_test_acc']
CONDITION_SIZES = {'cue-conflict': 1280, 'edge': 160, 'silhouette': 160}


def documented_paths():
  """The paths in the first column of results/README.md's table of artifacts (the
  section '## What is here')."""
  with open(os.path.join(RESULTS, 'README.md')) as f:
    text = f.read()
  section = text.split('## What is here', 1)[1].split('\n## ', 1)[0]
  paths = []
  for line in section.splitlines():
    if line.startswith('| `'):
      first = line.split('|')[1]
      paths.extend(re.findall(r'`([^`]+)`', first))
  return paths


def test_every_documented_artifact_exists():
  paths = documented_paths()
  assert len(paths) >= 5  # the table itself was read
  for path in paths:
    if path.startswith('.'):  # '.png' beside a csv named just before it
      continue
    assert os.path.exists(os.path.join(RESULTS, path)), f'results/{path} is documented, missing'


DISTILLED = sorted(glob.glob(os.path.join(RESULTS, 'distill', '*', '')))


def test_there_are_distilled_sets():
  assert DISTILLED


@pytest.mark.parametrize('folder', DISTILLED, ids=[os.path.basename(d[:-1]) for d in DISTILLED])
def test_distilled_set_loads_with_its_documented_keys(folder):
  for name in ('distilled.npz', 'distilled.png', 'results.json'):
    assert os.path.isfile(os.path.join(folder, name)), f'{folder}{name} missing'
  z = distilled_io.load_distilled(os.path.join(folder, 'distilled.npz'))
  assert DISTILLED_KEYS <= set(z), DISTILLED_KEYS - set(z)
  steps, n = z['images'].shape[:2]
  assert z['targets'].shape[:2] == (steps, n) and z['hard_labels'].shape == (steps, n)
  assert len(z['lrs']) == len(z['step_order']) and np.all(z['lrs'] > 0)
  np.testing.assert_allclose(z['targets'].sum(-1), 1, atol=1e-4)
  with open(os.path.join(folder, 'results.json')) as f:
    r = json.load(f)
  assert DISTILL_RESULTS_KEYS <= set(r), DISTILL_RESULTS_KEYS - set(r)
  assert r['dataset'] == str(z['dataset']) and r['model'] == str(z['model'])
  assert r['images'] == steps * n and r['inner_steps'] == len(z['lrs'])
  assert len(r['test_acc_all']) == r['eval_nets']
  assert 0 < r['test_acc_mean'] <= 1


SHAPE = sorted(glob.glob(os.path.join(RESULTS, 'shape_bias', '*', '')))


@pytest.mark.parametrize('folder', SHAPE, ids=[os.path.basename(d[:-1]) for d in SHAPE])
def test_shape_bias_artifacts_load_with_their_columns(folder):
  with open(os.path.join(folder, 'results.json')) as f:
    r = json.load(f)
  assert 'preprocessing' in r and 'conditions' in r
  cue = r['conditions']['cue-conflict']
  assert SHAPE_RESULTS_KEYS <= set(cue), SHAPE_RESULTS_KEYS - set(cue)
  csvs = sorted(glob.glob(os.path.join(folder, 'decisions_*.csv')))
  assert {os.path.basename(p).rsplit('_', 1)[-1][:-4] for p in csvs} == set(CONDITION_SIZES)
  for path in csvs:
    with open(path) as f:
      header = next(csv.reader(f))
    assert tuple(header) == sb.CSV_FIELDS, path
    trials = sb.read_decisions_csv(path)
    condition = os.path.basename(path).rsplit('_', 1)[-1][:-4]
    assert len(trials.response) == CONDITION_SIZES[condition], path
    assert set(trials.response) <= set(sb.CATEGORIES), path
  # the committed decisions give the committed shape bias
  cue_trials = sb.read_decisions_csv(os.path.join(folder,
                                                  'decisions_efficientnet_lite0_cue-conflict.csv'))
  assert sb.shape_bias(cue_trials)['shape_bias'] == pytest.approx(cue['shape_bias'])


SWEEPS = sorted(glob.glob(os.path.join(RESULTS, 'edge_popup_sweep_*.csv')))


@pytest.mark.parametrize('path', SWEEPS, ids=[os.path.basename(p) for p in SWEEPS])
def test_sweep_csv_has_its_columns(path):
  with open(path) as f:
    rows = list(csv.DictReader(f))
  assert rows and list(rows[0]) == SWEEP_COLUMNS
  assert sum(r['mode'] == 'dense' for r in rows) == 1
  for r in rows:
    assert 0 < float(r['keep_fraction']) <= 1 and 0 <= float(r['test_acc']) <= 1


APPLICATIONS = sorted(glob.glob(os.path.join(RESULTS, 'applications', '*', '')))


@pytest.mark.parametrize('folder', APPLICATIONS, ids=os.path.basename)
def test_application_runs_have_their_set_rows_and_test_nets(folder):
  from awesome_jax import applications as app  # pylint: disable=g-import-not-at-top
  with open(os.path.join(folder, 'results.json')) as f:
    results = json.load(f)
  keys = ['acc'] if results['task'] == 'distill_adapt' else [
      'acc', 'attack_success', 'other_acc', 'acc_wrt_modified']
  for row in ('before', 'distilled', 'random_real'):
    for key in keys:
      assert len(results['rows'][row][f'{key}_all']) == results['test_nets'], (row, key)
  pool, _ = app.load_pool(os.path.join(folder, 'test_nets.npz'))
  assert app.pool_size(pool) == results['test_nets']
  z = distilled_io.load_distilled(os.path.join(folder, 'distilled.npz'))
  assert DISTILLED_KEYS <= set(z) and str(z['application']) == results['task']


@pytest.mark.parametrize('run', ['split_mnist', 'permuted_mnist', 'permuted_mnist/seed1',
                                 'permuted_mnist/seed2'])
def test_the_continual_run_has_its_accuracy_matrices(run):
  with open(os.path.join(RESULTS, 'continual', run, 'results.json')) as f:
    results = json.load(f)
  assert set(results['kinds']) == {'none', 'random', 'distilled'}
  for kind, r in results['kinds'].items():
    matrix = np.asarray(r['accuracy_matrix'])
    assert matrix.shape == (5, 5), kind
    np.testing.assert_allclose(matrix[-1].mean(), r['average_accuracy'], atol=1e-6)


def test_the_permuted_mnist_table_is_the_mean_of_its_seeds():
  """RESULTS.md's permuted-MNIST means are those of the three committed results.json."""
  folder = os.path.join(RESULTS, 'continual', 'permuted_mnist')
  runs = []
  for sub in ('', 'seed1', 'seed2'):
    with open(os.path.join(folder, sub, 'results.json')) as f:
      runs.append(json.load(f)['kinds'])
  with open(os.path.join(ROOT, 'RESULTS.md')) as f:
    text = f.read()
  for kind in ('none', 'random', 'distilled'):
    acc = [100 * r[kind]['average_accuracy'] for r in runs]
    assert f'{np.mean(acc):.2f} +/- {np.std(acc):.2f} %' in text, kind
  memory = np.load(os.path.join(folder, 'distilled', 'memory.npz'))
  assert memory['images'].shape == (400, 28, 28, 1)  # 100 for each of the 4 past tasks
