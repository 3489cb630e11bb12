"""The classify task's cue-conflict evaluation: a tiny run (synthetic data of 10 classes
standing in for CIFAR-10) on a generated stimuli tree writes its numbers and figure; a
finished run re-evaluates without training; skipped runs say why; the CNN-vs-ViT
comparison of several runs (scripts/compare_cnn_vit.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from awesome_jax import cifar_cue_conflict as cc
from awesome_jax import notebook
from awesome_jax import shape_bias as sb
from awesome_jax.tasks import classify
from configs import classify as classify_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(stimuli_root, humans_root, preset='tiny'):
  config = classify_configs.get_config(preset)
  config.data.synthetic_classes = 10  # read as the CIFAR-10 classes
  config.train.max_steps = 8
  config.cue_conflict.stimuli_root = stimuli_root
  config.cue_conflict.humans_root = humans_root
  config.cue_conflict.resamples = 200
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny ResNet trained 8 steps, evaluated on notebook.tiny_cue_conflict's stimuli."""
  base = tmp_path_factory.mktemp('classify_cue')
  stimuli_root, humans_root = notebook.tiny_cue_conflict(str(base / 'tree'))
  config = tiny_config(stimuli_root, humans_root)
  workdir = base / 'run'
  results = classify.run(config, str(workdir))
  return {'config': config, 'workdir': workdir, 'results': results,
          'roots': (stimuli_root, humans_root)}


def read_results(workdir):
  with open(workdir / 'results.json') as f:
    return json.load(f)  # strict JSON: an undefined number is null


def test_tiny_run_writes_cue_conflict_results_and_figure(run):
  r = read_results(run['workdir'])
  assert r['seed'] == 0 and r['train_steps'] == 8 and r['label'] == 'tiny'
  cue = r['cue_conflict']
  assert cue['evaluated'] and cue['size'] == 32 and cue['resamples'] == 200
  assert cue['stimuli_root'] == run['roots'][0] and cue['humans_root'] == run['roots'][1]
  assert list(cue['conditions']) == ['cue-conflict']  # the tree has no edges/silhouettes
  conflict = cue['conditions']['cue-conflict']
  assert conflict['stimuli'] == 18 and conflict['conflict_trials'] == 12
  # the tiny tree's 3 classes are among the 7 CIFAR ones: every decision is one of the 7
  decisions = sb.read_decisions_csv(str(run['workdir'] / 'decisions_tiny_cue-conflict.csv'))
  assert set(decisions.response) <= set(cc.CATEGORIES) and len(decisions) == 18
  assert cue['cue-conflict_accuracy'] == pytest.approx(np.mean(decisions.response ==
                                                               decisions.shape))
  assert 0 <= cue['shape_acc'] <= 1 and 0 <= cue['texture_acc'] <= 1
  assert -1 <= cue['kappa_vs_humans'] <= 1
  if cue['shape_bias'] is not None:
    assert cue['shape_bias_interval']['low'] <= cue['shape_bias'] <= \
        cue['shape_bias_interval']['high']
  assert cue['human_shape_bias'] == 1  # the tiny observers answer by shape
  assert set(conflict['vs_humans']['kappa_per_human']) == {'subject-01', 'subject-02'}
  assert 'js_class_errors' in cue and 'js_interclass_errors' in cue
  assert set(conflict['per_class_shape_bias']) == set(cc.CATEGORIES)
  assert os.path.getsize(run['workdir'] / 'shape_bias.png') > 1000
  assert r['test_acc'] == run['results']['test_acc']
  assert cue['shape_acc'] == run['results']['cue_conflict']['shape_acc']


def test_a_finished_run_only_re_evaluates(run, monkeypatch, capsys):
  before = read_results(run['workdir'])
  params = (run['workdir'] / 'params.npz').stat().st_mtime_ns

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run trained again')

  monkeypatch.setattr(classify, 'train_and_test', no_training)
  config = tiny_config(*run['roots'])
  config.cue_conflict.resamples = 100
  r = classify.run(config, str(run['workdir']))
  assert 'nothing to train; cue-conflict evaluation only' in capsys.readouterr().out
  after = read_results(run['workdir'])
  assert after['cue_conflict']['resamples'] == 100  # the new evaluation was written
  for key in ('test_acc', 'wall_seconds', 'images_per_s', 'train_steps'):
    assert after[key] == before[key]  # the training's numbers kept
  for key in ('shape_acc', 'texture_acc', 'cue-conflict_accuracy'):
    assert after['cue_conflict'][key] == before['cue_conflict'][key]  # same weights
  assert (run['workdir'] / 'params.npz').stat().st_mtime_ns == params
  assert r['cue_conflict']['resamples'] == 100

  # 'none' and an old config without the section: the evaluation is skipped, and said so
  config.cue_conflict.stimuli_root = 'none'
  classify.run(config, str(run['workdir']))
  assert read_results(run['workdir'])['cue_conflict'] == {
      'evaluated': False, 'reason': "cue_conflict.stimuli_root='none'"}
  del config['cue_conflict']
  classify.run(config, str(run['workdir']))
  assert read_results(run['workdir'])['cue_conflict'] == {
      'evaluated': False, 'reason': 'the config has no cue_conflict section'}
  # a longer schedule is not finished: it would train (here: the guard above)
  config.train.max_steps = 12
  with pytest.raises(AssertionError, match='trained again'):
    classify.run(config, str(run['workdir']))


def test_which_runs_are_evaluated(tmp_path):
  tiny = classify_configs.get_config('tiny')
  assert tiny.cue_conflict.stimuli_root == 'none'  # tests and notebooks need no network
  assert classify.cue_conflict_inputs(tiny) is None
  tiny.cue_conflict.stimuli_root = str(tmp_path)
  assert 'data.name=synthetic with 4 classes' in classify.cue_conflict_skip_reason(tiny)
  tiny.data.name = 'mnist'
  assert classify.cue_conflict_skip_reason(tiny).startswith('data.name=mnist: ')
  for preset in ('resnet20_cifar', 'vit_cifar'):
    full = classify_configs.get_config(preset)
    assert full.cue_conflict.stimuli_root == '' and not classify.cue_conflict_skip_reason(full)
  # a configured folder that is not there stops the run before anything is trained
  config = tiny_config(str(tmp_path / 'missing'), 'none')
  with pytest.raises(sb.StimulusError, match='cue_conflict.stimuli_root=.*missing: not a '):
    classify.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
  stimuli_root, humans_root = notebook.tiny_cue_conflict(str(tmp_path / 'tree'))
  os.makedirs(os.path.join(stimuli_root, 'edges'))  # edges, but no human edge CSVs
  with pytest.raises(sb.StimulusError, match="no edge/ folder for condition 'edge'"):
    classify.cue_conflict_inputs(tiny_config(stimuli_root, humans_root))


def test_size_must_fit_the_model():
  vit = tiny_config('/stimuli', 'none', preset='tiny_vit')
  vit.cue_conflict.size = 64
  with pytest.raises(classify.ClassifyConfigError, match=r'cue_conflict.size=64: the model, '
                     r'trained on 32x32 images, does not take 64x64'):
    classify.check(vit)
  resnet = tiny_config('/stimuli', 'none')
  resnet.cue_conflict.size = 64  # a ResNet pools globally: any size goes
  classify.check(resnet)
  resnet.cue_conflict.resamples = 0
  with pytest.raises(classify.ClassifyConfigError, match='cue_conflict.resamples=0'):
    classify.check(resnet)


def fake_run(path, label, seed, shape_bias, test_acc, humans=True):
  """A results.json as a classify run writes it, with the fields the comparison reads."""
  per_class = {c: None for c in cc.CATEGORIES}
  per_class.update(cat=shape_bias, dog=shape_bias + 0.1)
  conflict = {'stimuli': 245, 'per_class_shape_bias': per_class}
  if humans:
    conflict['humans'] = {
        'pooled': {'shape_bias': 0.9}, 'per_subject_shape_bias': {'s1': 0.8, 's2': 1.0},
        'human_human_kappa_mean': 0.5, 'shape_bias_interval': {'low': 0.85, 'high': 0.95},
        'per_class_shape_bias': dict(per_class, cat=0.95, dog=0.85)}
  cue = {'evaluated': True, 'size': 32, 'shape_bias': shape_bias, 'shape_acc': 0.3,
         'texture_acc': 0.5, 'kappa_vs_humans': 0.2, 'js_class_errors': 0.4,
         'js_interclass_errors': None, 'edge_accuracy': 0.6, 'silhouette_accuracy': 0.7,
         'conditions': {'cue-conflict': conflict}}
  os.makedirs(path)
  with open(os.path.join(path, 'results.json'), 'w') as f:
    json.dump({'label': label, 'model': 'resnet18', 'seed': seed, 'test_acc': test_acc,
               'cue_conflict': cue}, f)
  return str(path)


def test_compare_script_groups_seeds_and_writes_figure_and_tables(tmp_path):
  runs = [fake_run(tmp_path / 'r0', 'resnet20', 0, 0.2, 0.90),
          fake_run(tmp_path / 'r1', 'resnet20', 1, 0.4, 0.92),
          fake_run(tmp_path / 'v0', 'vit_cifar', 0, 0.5, 0.80, humans=False)]
  out = tmp_path / 'cmp'
  proc = subprocess.run([sys.executable, 'scripts/compare_cnn_vit.py', '--runs', *runs,
                         '--out', str(out)], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, MPLBACKEND='Agg'))
  assert proc.returncode == 0, proc.stderr
  table = json.loads((out / 'comparison.json').read_text())
  resnet, vit = table['models']['resnet20'], table['models']['vit_cifar']
  assert resnet['seeds'] == [0, 1] and vit['seeds'] == [0]
  assert resnet['shape_bias']['mean'] == pytest.approx(0.3)
  assert resnet['shape_bias']['std'] == pytest.approx(np.std([0.2, 0.4], ddof=1))
  assert resnet['test_acc']['mean'] == pytest.approx(0.91) and vit['shape_bias']['std'] is None
  assert resnet['per_class_shape_bias']['dog']['mean'] == pytest.approx(0.4)
  assert resnet['per_class_shape_bias']['truck']['n'] == 0
  assert resnet['js_interclass_errors']['mean'] is None
  assert table['humans']['shape_bias'] == 0.9 and table['humans']['subjects'] == 2
  md = (out / 'comparison.md').read_text()
  assert '| resnet20 | 2 | 91.00 ± 1.41 | 0.300 ± 0.141 |' in md
  assert '| vit_cifar | 1 | 80.00 | 0.500 |' in md and '| humans | 2 subjects |' in md
  assert md.splitlines()[0] in proc.stdout
  assert os.path.getsize(out / 'shape_bias.png') > 1000

  # a run without cue-conflict results, or the same seed twice, is refused in one line
  bare = tmp_path / 'bare'
  os.makedirs(bare)
  (bare / 'results.json').write_text(json.dumps({'label': 'x', 'cue_conflict': {
      'evaluated': False, 'reason': "cue_conflict.stimuli_root='none'"}}))
  with pytest.raises(cc.RunError, match="no cue-conflict results .*stimuli_root='none'"):
    cc.compare_runs([runs[0], str(bare)], str(out))
  with pytest.raises(cc.RunError, match="both model 'resnet20' with seed 0"):
    cc.compare_runs([runs[0], runs[0]], str(out))
  proc = subprocess.run([sys.executable, 'scripts/compare_cnn_vit.py', '--runs', str(bare),
                         '--out', str(out)], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 1 and proc.stderr.startswith('error: ')
