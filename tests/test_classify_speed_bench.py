"""benchmarks/classify_speed.py: its children on the tiny presets (2 steps), and the PyTorch
twins of the classify presets (benchmarks/torch_cifar_models.py, when torch is there)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import train as train_lib
from awesome_jax.tasks import classify
from configs import classify as classify_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'classify_speed.py')
PARAMS = {'resnet20_cifar': 272474, 'vit_cifar': 811146}


def child(kw):
  out = subprocess.run([sys.executable, SCRIPT, '--one', json.dumps(kw)], capture_output=True,
                       text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def ours_tiny():
  return child({'code': 'ours', 'preset': 'tiny', 'steps': 2})


def ours_params(preset):
  m = classify_configs.get_config(preset).model
  model = classify.build_model(m.name, m.kwargs.to_dict(), 10, (32, 32, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  return classify.count_params(shapes['params'])


def test_ours_child_reports_the_tiny_step(ours_tiny):
  r = ours_tiny
  c = classify_configs.get_config('tiny')
  assert r['code'] == 'ours' and r['preset'] == 'tiny' and r['model'] == c.model.name
  assert r['batch'] == c.train.batch_size and r['input_shape'] == [32, 32, 3]
  assert r['num_classes'] == c.data.synthetic_classes and r['steps'] == 2
  assert r['params'] > 0 and r['device'] == 'cpu'
  assert r['first_s'] > 0 and r['median_s'] > 0 and np.isfinite(r['loss'])
  np.testing.assert_allclose(r['images_per_s'], r['batch'] / r['median_s'])
  assert r['peak_rss_mb'] > 0
  assert r['train']['optimizer'] == 'sgd' and r['train']['augment'] is True
  assert r['train']['total_steps'] == 16 and r['train']['warmup_steps'] == 0  # 2 x 512/64
  assert 'compiler_options' in r


def test_param_counts_of_the_presets():
  assert {p: ours_params(p) for p in PARAMS} == PARAMS


@pytest.mark.parametrize('preset', ['resnet20_cifar', 'vit_cifar', 'tiny', 'tiny_vit'])
def test_torch_twins_have_our_param_counts(preset):
  torch = pytest.importorskip('torch')
  from benchmarks import torch_cifar_models as tcm  # pylint: disable=g-import-not-at-top
  m = classify_configs.get_config(preset).model
  net = tcm.build(m.name, m.kwargs.to_dict(), 10, (32, 32, 3))
  assert tcm.count_params(net) == ours_params(preset)
  if preset in PARAMS:
    assert tcm.count_params(net) == PARAMS[preset]
  assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_torch_schedule_is_ours():
  pytest.importorskip('torch')
  from benchmarks import torch_cifar_models as tcm  # pylint: disable=g-import-not-at-top
  for warmup in (0, 7):
    ours = train_lib.make_schedule(0.1, 50, warmup)
    factor = tcm.warmup_cosine(50, warmup)
    for step in (0, 3, 7, 20, 49, 50):
      np.testing.assert_allclose(0.1 * factor(step), float(ours(step)), atol=1e-7)


def test_reference_child_runs_the_tiny_twin(ours_tiny):
  pytest.importorskip('torch')
  r = child({'code': 'reference', 'spec': ours_tiny, 'steps': 1, 'threads': 1,
             'layout': 'channels_last'})
  assert r['params'] == ours_tiny['params'] and r['layout'] == 'channels_last'
  assert r['median_s'] > 0 and np.isfinite(r['loss'])
