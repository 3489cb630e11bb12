"""scripts/finetune_augment.py (Tuli et al. 2021, Fig. 7): a tiny finished classify run
(synthetic data of 10 classes standing in for CIFAR-10, a tiny cue-conflict folder)
fine-tuned a few steps without and with Sobel augmentation; the summary's table, JSON and
figure; finished fine-tunes reused; one-line errors."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from awesome_jax import notebook
from awesome_jax import shape_bias as sb
from awesome_jax.tasks import classify
from configs import classify as classify_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'finetune_augment.py')
AUGS = ['none', 'sobel']
OVERRIDES = ['train.max_steps=2', 'cue_conflict.resamples=50']


def load_script():
  """scripts/finetune_augment.py as a module."""
  spec = importlib.util.spec_from_file_location('finetune_augment', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ft = load_script()


def read_json(path):
  with open(path) as f:
    return json.load(f)  # strict JSON: an undefined number is null


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory):
  """A tiny ResNet trained 2 steps (its config.json as main writes it, less a field that
  older runs lack), then fine-tuned 2 steps with each of AUGS."""
  base = tmp_path_factory.mktemp('finetune')
  stimuli_root, humans_root = notebook.tiny_cue_conflict(str(base / 'tree'))
  config = classify_configs.get_config('tiny')
  config.seed = 3
  config.data.synthetic_classes = 10  # read as the CIFAR-10 classes
  config.train.max_steps = 2
  config.cue_conflict.stimuli_root = stimuli_root
  config.cue_conflict.humans_root = humans_root
  config.cue_conflict.resamples = 50
  run = str(base / 'run')
  os.makedirs(run)
  saved = json.loads(config.to_json_best_effort())
  del saved['train']['extra_augment_params']  # runs from before it existed
  with open(os.path.join(run, 'config.json'), 'w') as f:
    json.dump(saved, f, indent=2)
  classify.run(config, run)
  out = str(base / 'out')
  lines = []
  done = ft.finetune_all([run], out, AUGS, epochs=1, lr_scale=0.5, overrides=OVERRIDES,
                         log=lines.append)
  table = ft.summarize(out)
  return {'run': run, 'out': out, 'lines': lines, 'done': done, 'table': table}


def test_each_augmentation_fine_tunes_from_the_run(finetuned):
  run, out = finetuned['run'], finetuned['out']
  source = read_json(os.path.join(run, 'results.json'))
  assert source['label'] == 'tiny' and source['seed'] == 3
  assert source['cue_conflict']['evaluated']
  assert finetuned['done'] == {'tiny_s3/none': 'trained', 'tiny_s3/sobel': 'trained'}
  assert [line.split()[0] for line in finetuned['lines']] == ['start', 'start']
  for aug, extra in (('none', ''), ('sobel', 'sobel')):
    workdir = os.path.join(out, 'tiny_s3', aug)
    config = read_json(os.path.join(workdir, 'config.json'))
    assert config['init_from'] == run and config['train']['extra_augment'] == extra
    assert config['train']['lr'] == pytest.approx(0.05)  # the tiny preset's 0.1 x 0.5
    assert config['train']['epochs'] == 1 and config['train']['warmup_epochs'] == 0
    assert config['train']['max_steps'] == 2 and not config['progress_bar']
    assert config['train']['extra_augment_params'] == ''  # the default filled in
    assert config['cue_conflict']['resamples'] == 50 and config['seed'] == 3
    results = read_json(os.path.join(workdir, 'results.json'))
    assert results['init_from'] == run and results['train_steps'] == 2
    assert results['cue_conflict']['evaluated']
    assert results['cue_conflict']['conditions']['cue-conflict']['stimuli'] == 18
    metrics = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    init = [m for m in metrics if 'init/test_acc' in m]  # written when init_from loads
    assert len(init) == 1 and init[0]['init/test_acc'] == pytest.approx(source['test_acc'])


def test_summary_has_a_row_per_run_and_augmentation(finetuned):
  out, run = finetuned['out'], finetuned['run']
  source = read_json(os.path.join(run, 'results.json'))
  table = read_json(os.path.join(out, 'finetune.json'))
  assert table == json.loads(json.dumps(finetuned['table']))
  assert [(r['label'], r['seed'], r['augmentation']) for r in table['runs']] == [
      ('tiny', 3, 'none'), ('tiny', 3, 'sobel')]
  cue = source['cue_conflict']
  for r in table['runs']:
    after = read_json(os.path.join(r['workdir'], 'results.json'))
    assert r['run'] == run and r['train_steps'] == 2
    assert r['before']['test_acc'] == source['test_acc']
    assert r['before']['shape_bias'] == cue['shape_bias']
    assert r['after']['test_acc'] == after['test_acc']
    assert r['after']['shape_bias'] == after['cue_conflict']['shape_bias']
    if cue['shape_bias'] is not None:
      assert r['before']['shape_bias_interval']['low'] == cue['shape_bias_interval']['low']
  means = {m['augmentation']: m for m in table['means']}
  assert list(means) == AUGS and means['sobel']['seeds'] == [3]
  assert means['sobel']['after']['test_acc'] == table['runs'][1]['after']['test_acc']
  md = open(os.path.join(out, 'finetune.md')).read()
  rows = [line for line in md.splitlines() if line.startswith('| tiny | 3 | ')]
  assert len(rows) == 2 and rows[1].startswith('| tiny | 3 | sobel | ')
  before = f'{100 * source["test_acc"]:.2f} -> '
  assert all(before in row for row in rows)
  after = table['runs'][1]['after']['test_acc']
  assert f'-> {100 * after:.2f} |' in rows[1]
  assert 'Mean over seeds' in md and '| tiny | 1 | none | ' in md
  assert os.path.getsize(os.path.join(out, 'finetune.png')) > 5000


def test_a_second_call_reuses_the_finished_fine_tunes(finetuned, monkeypatch):
  out = finetuned['out']
  params = {aug: os.stat(os.path.join(out, 'tiny_s3', aug, 'params.npz')).st_mtime_ns
            for aug in AUGS}

  def no_training(*args, **kwargs):
    raise AssertionError('a finished fine-tune trained again')

  monkeypatch.setattr(classify, 'run', no_training)
  lines = []
  done = ft.finetune_all([finetuned['run']], out, AUGS, epochs=1, lr_scale=0.5,
                         overrides=OVERRIDES, log=lines.append)
  assert done == {'tiny_s3/none': 'skipped', 'tiny_s3/sobel': 'skipped'}
  assert [line.split()[:2] for line in lines] == [['skip', 'tiny_s3/none:'],
                                                   ['skip', 'tiny_s3/sobel:']]
  for aug in AUGS:
    assert os.stat(os.path.join(out, 'tiny_s3', aug, 'params.npz')).st_mtime_ns == params[aug]
  # another schedule in the same folder is refused before anything trains
  with pytest.raises(ft.FinetuneError, match=r'started with another config \(train.max_steps'
                     r': 2 there, 3 here\)'):
    ft.finetune_all([finetuned['run']], out, AUGS, epochs=1, lr_scale=0.5,
                    overrides=['train.max_steps=3', 'cue_conflict.resamples=50'])


def script(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_bad_augmentations_runs_and_overrides_are_one_line_errors(finetuned, tmp_path):
  proc = script('--runs', finetuned['run'], '--out', str(tmp_path / 'o'),
                '--augmentations', 'none,mixup')
  assert proc.returncode == 1
  assert proc.stderr == ("error: --augmentations: 'mixup': unknown; allowed: none, "
                         'rotation, color, blur, sobel, noise, cutout, all\n')
  bare = tmp_path / 'bare'
  os.makedirs(bare)
  with pytest.raises(ft.FinetuneError, match=f'{bare}: no results.json'):
    ft.finetune_all([finetuned['run'], str(bare)], str(tmp_path / 'o'), AUGS)
  with pytest.raises(ft.FinetuneError, match='no such config field'):
    ft.finetune_all([finetuned['run']], str(tmp_path / 'o'), AUGS, overrides=['train.nope=1'])
  with pytest.raises(ft.FinetuneError, match='train.max_steps=x: not a int'):
    ft.finetune_all([finetuned['run']], str(tmp_path / 'o'), AUGS,
                    overrides=['train.max_steps=x'])
  with pytest.raises(ft.FinetuneError, match='both tiny_s3'):
    ft.finetune_all([finetuned['run'], finetuned['run']], str(tmp_path / 'o'), AUGS)
  with pytest.raises(sb.StimulusError, match='stimuli_root=.*missing: not a directory'):
    ft.finetune_all([finetuned['run']], str(tmp_path / 'o'), AUGS,
                    overrides=[f'cue_conflict.stimuli_root={tmp_path / "missing"}'])
  assert not (tmp_path / 'o').exists()  # nothing started
  proc = script('--runs', str(bare), '--out', str(tmp_path / 'o'))
  assert proc.returncode == 1
  assert proc.stderr == f'error: {bare}: no results.json (not a finished classify run)\n'
  assert ft.extra_augment('all') == 'rotation,color,blur,sobel,noise,cutout'
