"""edge-popup: top-k masks, straight-through gradients, frozen weights, a tiny run."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import data, supermask
from awesome_jax import train as train_lib
from awesome_jax.tasks import edge_popup
from awesome_jax.models import conv_n
from configs import edge_popup as edge_popup_configs


@pytest.mark.parametrize('k', [0.1, 0.3, 0.5, 0.77, 1.0])
def test_exactly_round_k_n_kept_per_layer(k):
  model = conv_n.ConvN(depth=2, width=0.25, keep_fraction=k)
  v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  masks = supermask.layer_masks(v['params'], k)
  assert set(masks) == {'conv_0', 'conv_1', 'fc_0', 'fc_1', 'fc_2'}
  for name, mask in masks.items():
    n = mask.size
    assert int(mask.sum()) == int(round(k * n)), name
    scores = np.abs(np.asarray(v['params'][name]['scores'])).ravel()
    kept = np.asarray(mask).ravel() == 1
    if 0 < kept.sum() < n:  # kept scores are the largest ones
      assert scores[kept].min() >= scores[~kept].max()


def test_kth_largest_is_exact():
  a = np.abs(np.random.default_rng(1).normal(size=1001)).astype(np.float32)
  for k in (1, 2, 500, 1000, 1001):
    assert float(supermask.kth_largest(jnp.asarray(a), k)) == np.sort(a)[::-1][k - 1]
  assert float(supermask.kth_largest(jnp.zeros(5), 3)) == 0.0


def test_ties_still_keep_exactly_round_k_n():
  scores = jnp.asarray(np.random.default_rng(0).integers(-3, 4, (40, 25)), jnp.float32)
  for k in (0.1, 0.5, 0.9):
    mask = np.asarray(supermask.topk_mask(scores, k))
    assert int(mask.sum()) == int(round(k * scores.size))
    a = np.abs(np.asarray(scores))
    assert a[mask == 1].min() >= a[mask == 0].max()


def test_straight_through_gradient():
  """d loss/d scores = sign(scores) * w * (d loss / d w_eff), with w_eff = w * mask."""
  key_w, key_s, key_x = jax.random.split(jax.random.key(0), 3)
  w = jax.random.normal(key_w, (6, 4))
  scores = jax.random.normal(key_s, (6, 4))
  x = jax.random.normal(key_x, (5, 6))
  loss = lambda w_eff: jnp.sum(jnp.tanh(x @ w_eff) ** 2)
  g_scores = jax.grad(lambda s: loss(w * supermask.ste_mask(s, 0.5)))(scores)
  mask = supermask.topk_mask(scores, 0.5)
  g_eff = jax.grad(loss)(w * mask)
  np.testing.assert_allclose(g_scores, jnp.sign(scores) * w * g_eff, rtol=1e-6)
  # and the forward pass is exactly the masked weights
  np.testing.assert_array_equal(w * supermask.ste_mask(scores, 0.5), w * mask)


def test_weight_inits():
  k = 0.25
  fan_in = 3 * 3 * 16
  std = np.sqrt(2 / fan_in)
  sc = supermask.init_weights(jax.random.key(0), (3, 3, 16, 8), fan_in, 'signed_constant')
  np.testing.assert_allclose(np.unique(np.abs(sc)), [std], rtol=1e-6)
  assert 0.4 < float((sc > 0).mean()) < 0.6
  scaled = supermask.init_weights(jax.random.key(0), (3, 3, 16, 8), fan_in,
                                  'scaled_signed_constant', k)
  np.testing.assert_allclose(np.unique(np.abs(scaled)), [std / np.sqrt(k)], rtol=1e-6)
  kn = supermask.init_weights(jax.random.key(1), (200, 300), 200, 'kaiming_normal')
  assert abs(float(kn.std()) - np.sqrt(2 / 200)) < 0.005


def make_trainer(mode='masked'):
  config = edge_popup_configs.get_config('tiny')
  config.model.mode = mode
  model = edge_popup.build_model(config.model, 4)
  return train_lib.Trainer(model, config.train, (8, 8, 1), total_steps=10), config


def test_frozen_weights_never_change_and_scores_do():
  trainer, _ = make_trainer()
  state = trainer.init_state(jax.random.key(0))
  assert 'frozen' in state
  frozen0 = jax.tree_util.tree_map(np.asarray, state['frozen'])
  scores0 = jax.tree_util.tree_map(np.asarray, state['params'])
  # the optimizer state holds only the scores (same tree as params), never the weights
  opt_leaves = sum(l.size for l in jax.tree_util.tree_leaves(state['opt']))
  assert opt_leaves <= 2 * sum(l.size for l in jax.tree_util.tree_leaves(state['params'])) + 10
  ds = data.make_synthetic()
  x, y = ds.normalize(ds.x_train[:32]), ds.y_train[:32]
  for i in range(3):
    state, _ = trainer.train_step(state, x, y, jax.random.key(i))
  for a, b in zip(jax.tree_util.tree_leaves(frozen0), jax.tree_util.tree_leaves(state['frozen'])):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree_util.tree_leaves(scores0), jax.tree_util.tree_leaves(state['params']))]
  assert all(changed)
  assert trainer.train_step._cache_size() == 1


def test_tiny_run_learns_what_a_random_mask_cannot(tmp_path):
  config = edge_popup_configs.get_config('tiny')
  config.progress_bar = False
  r = edge_popup.run(config, str(tmp_path))
  assert r['test_acc'] > 0.9, r
  assert r['random_mask_test_acc'] < 0.5, r   # 4 balanced classes: chance is 0.25
  assert all(abs(v - 0.5) < 1e-3 for v in r['kept_fraction_per_layer'].values())
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['test_acc'] == r['test_acc']
  # the exported subnetwork, loaded as plain weights into the dense model, is the same net
  dense = edge_popup.build_model(_dense(config.model), 4)
  params = edge_popup.load_subnetwork(str(tmp_path / 'subnetwork.npz'))
  masked_model = edge_popup.build_model(config.model, 4)
  ds = data.make_synthetic()
  x = ds.normalize(ds.x_test[:16])
  trainer, _ = make_trainer()
  state = trainer.init_state(jax.random.key(config.seed))
  from awesome_jax import checkpoint as ckpt_lib
  state = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints')).restore(state)
  want = masked_model.apply(trainer.variables(state), x)
  got = dense.apply({'params': params}, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _dense(m):
  d = m.copy_and_resolve_references()
  d.mode = 'dense'
  return d


@pytest.mark.parametrize('override,message', [
    ('--config.model.keep_fraction=0', 'model.keep_fraction=0.0: must be in (0, 1]'),
    ('--config.model.keep_fraction=1.5', 'model.keep_fraction=1.5'),
    ('--config.model.weight_init=xavier', "model.weight_init='xavier': unknown; allowed: "
                                          'kaiming_normal, signed_constant'),
    ('--config.model.depth=5', 'model.depth=5: allowed: 2, 4, 6, 8'),
    ('--config.train.optimizer=rmsprop', "train.optimizer='rmsprop'"),
])
def test_config_errors_are_one_line(tmp_path, override, message):
  out = subprocess.run([sys.executable, '-m', 'awesome_jax.main',
                        '--config=configs/edge_popup.py:tiny', f'--workdir={tmp_path}',
                        override], capture_output=True, text=True)
  assert out.returncode == 2, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last
  assert 'Traceback' not in out.stderr


def test_sweep_writes_csv_and_plot_and_skips_finished_runs(tmp_path):
  config = edge_popup_configs.get_config('sweep_tiny')
  config.progress_bar = False
  config.train.max_steps = 10
  edge_popup.sweep(config, str(tmp_path))
  lines = (tmp_path / 'sweep.csv').read_text().splitlines()
  assert lines[0] == 'mode,weight_init,keep_fraction,test_acc,random_mask_test_acc'
  assert [l.split(',')[:3] for l in lines[1:]] == [
      ['dense', '', '1.0'], ['masked', 'signed_constant', '0.3'],
      ['masked', 'signed_constant', '0.7']]
  assert (tmp_path / 'sweep.png').exists()
  mtime = (tmp_path / 'k0.3_signed_constant' / 'results.json').stat().st_mtime
  edge_popup.sweep(config, str(tmp_path))  # a rerun reuses finished sub-runs
  assert (tmp_path / 'k0.3_signed_constant' / 'results.json').stat().st_mtime == mtime
  config.sweep.keep_fractions = '0.5,2'
  with pytest.raises(supermask.SupermaskConfigError, match='sweep.keep_fractions=2.0'):
    edge_popup.sweep(config, str(tmp_path))


# ------------------------------------------------------------------ ResNets

def test_strided_matmul_conv_equals_xla_conv():
  # conv_fast: what the masked and dense ResNet / Conv-N layers call (chunked on CPU for
  # the 3x3 stride-1 case, conv_as_matmul otherwise)
  from awesome_jax.models.small import conv_as_matmul, conv_fast
  # numpy draws and jitted convs (op by op, each random draw and conv compiles alone)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 11, 12, 3)).astype(np.float32)
  for k, stride in ((1, 2), (3, 1), (3, 2), (7, 2)):
    w = rng.normal(size=(k, k, 3, 5)).astype(np.float32)
    want = jax.lax.conv_general_dilated(x, w, (stride, stride), [(k // 2, k // 2)] * 2,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    for conv in (conv_as_matmul, conv_fast):
      got = jax.jit(conv, static_argnums=(2, 3))(x, w, k // 2, stride)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('arch,size,classes,weights', [
    # conv + fc weight counts of torchvision's resnet18 / resnet50 (their parameter totals
    # 11,689,512 / 25,557,032 less the fc bias and the batch-norm affine parameters)
    ('resnet18', 224, 1000, 11_678_912),
    ('resnet50', 224, 1000, 25_502_912),
])
def test_resnet_has_torchvision_weight_count(arch, size, classes, weights):
  from awesome_jax.models import resnet
  model = resnet.ResNet(arch=arch, num_classes=classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  assert sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(shapes['frozen'])) == weights
  # every frozen kernel has a score of the same shape, and batch norm has nothing to learn
  layers = lambda tree, leaf: {'/'.join(k.key for k in path[:-1]): v.shape
                               for path, v in jax.tree_util.tree_leaves_with_path(tree)
                               if path[-1].key == leaf}
  assert layers(shapes['frozen'], 'kernel') == layers(shapes['params'], 'scores')
  assert len(jax.tree_util.tree_leaves(shapes['params'])) == len(layers(shapes['params'],
                                                                        'scores'))


# The full nets' masked layers are counted from their shapes; the training and the export
# run on one block per stage of the same block kind (the full resnet50, 54 masked layers,
# took 1.5-2.5 min of CPU compile here for the same checks).
@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_masked_resnet_trains_scores_only_and_exports_to_dense(arch):
  config = edge_popup_configs.get_config('resnet18')
  config.model.arch = arch
  config.model.width = 0.0625
  config.train.augment = False
  full = edge_popup.build_model(config.model, 4)
  shapes = jax.eval_shape(lambda: full.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))
  scores = [p for p, _ in jax.tree_util.tree_leaves_with_path(shapes['params'])
            if p[-1].key == 'scores']
  assert len(scores) == (21 if arch == 'resnet18' else 54)  # convs + shortcuts + fc
  model = full.clone(stage_sizes=(1, 1, 1, 1))
  trainer = train_lib.Trainer(model, config.train, (16, 16, 3), total_steps=10)
  state = trainer.init_state(jax.random.key(0))
  frozen0 = jax.tree_util.tree_map(np.asarray, state['frozen'])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
  y = rng.integers(0, 4, 8)
  for i in range(2):
    state, met = trainer.train_step(state, x, y, jax.random.key(i))
  assert np.isfinite(float(met['loss']))
  for a, b in zip(jax.tree_util.tree_leaves(frozen0), jax.tree_util.tree_leaves(state['frozen'])):
    np.testing.assert_array_equal(a, b)
  masks = supermask.layer_masks(state['params'], 0.5)
  assert len(masks) == (13 if arch == 'resnet18' else 18)  # stem, blocks, shortcuts, fc
  for name, mask in masks.items():
    assert int(mask.sum()) == int(round(0.5 * mask.size)), name
  # the found subnetwork as plain weights in the dense ResNet gives the same logits
  dense = edge_popup.build_model(_dense(config.model), 4).clone(stage_sizes=(1, 1, 1, 1))
  params = supermask.export_dense(state['params'], state['frozen'], 0.5)
  want = jax.jit(model.apply)(trainer.variables(state), x)  # op by op: ~20 s of compiles
  got = dense.apply({'params': params, 'batch_stats': state['batch_stats']}, x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_resnet_config_errors():
  config = edge_popup_configs.get_config('resnet18')
  config.model.arch = 'resnet34'
  with pytest.raises(supermask.SupermaskConfigError, match="model.arch='resnet34': allowed: "
                     'conv, resnet18, resnet50'):
    edge_popup.build_model(config.model, 10)
  config.model.arch = 'resnet18'
  config.model.stem = 'big'
  with pytest.raises(supermask.SupermaskConfigError, match="model.stem='big'"):
    edge_popup.build_model(config.model, 10)


@pytest.mark.parametrize('depth', [2, 4, 6, 8])
def test_conv_presets_name_their_net_and_mode(depth):
  masked = edge_popup_configs.get_config(f'conv{depth}')
  dense = edge_popup_configs.get_config(f'conv{depth}_dense')
  assert (masked.model.depth, masked.model.mode, masked.train.lr) == (depth, 'masked', 0.1)
  assert (dense.model.depth, dense.model.mode, dense.train.lr) == (depth, 'dense', 0.01)
  # the Conv-N stack: depth convs (pool after every 2) + the 256-256-10 head
  model = edge_popup.build_model(masked.model, 10)
  params = jax.eval_shape(  # shapes only: nothing compiled
      lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False), jax.random.key(0))['params']
  assert sorted(params) == [f'conv_{i}' for i in range(depth)] + ['fc_0', 'fc_1', 'fc_2']


def test_unknown_edge_popup_preset_lists_the_allowed_ones():
  with pytest.raises(ValueError, match='conv6_dense'):
    edge_popup_configs.get_config('conv5')
