"""Dataset distillation: gradients, unrolls, compilation, learning, config errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import data, distill, models
from awesome_jax.tasks import distill as distill_task
from configs import distill as distill_configs


def tiny_config(**distill_fields):
  c = distill_configs.get_config('tiny')
  c.data.name = 'synthetic'
  for k, v in distill_fields.items():
    c.distill[k] = v
  return c


def make_problem(config, seed=0):
  ds = data.make_synthetic(num_classes=4, shape=(8, 8, 1), n_train=256, n_test=256, seed=seed)
  d = distill.Distiller(config, ds)
  x = ds.normalize(ds.x_train)
  state = d.init_state(jax.random.key(seed), x, ds.y_train)
  return ds, d, state, jnp.asarray(x[:64]), jnp.asarray(ds.y_train[:64])


def python_loop_sgd(apply_fn, params, xs, ys, lrs):
  for t in range(lrs.shape[0]):
    i = t % xs.shape[0]
    g = jax.grad(lambda q: distill.soft_cross_entropy(apply_fn(q, xs[i]), ys[i]))(params)
    params = jax.tree_util.tree_map(lambda a, b: a - lrs[t] * b, params, g)
  return params


def test_scan_unroll_equals_python_loop():
  _, d, state, _, _ = make_problem(tiny_config(steps=3, epochs=2))
  p0 = d.init_params(jax.random.key(3))
  ys = jax.nn.one_hot(d.fixed_labels, d.num_classes)
  lrs = jnp.linspace(0.05, 0.2, 6)
  got = distill.inner_sgd(d.apply, p0, state['learned']['x'], ys, lrs)
  want = python_loop_sgd(d.apply, p0, state['learned']['x'], ys, lrs)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # and training actually moved the params
  assert not np.allclose(jax.tree_util.tree_leaves(got)[0], jax.tree_util.tree_leaves(p0)[0])


def test_momentum_unroll_equals_torch_style_heavy_ball_loop():
  _, d, state, _, _ = make_problem(tiny_config(steps=3, epochs=2))
  p0 = d.init_params(jax.random.key(3))
  xs, ys = state['learned']['x'], jax.nn.one_hot(d.fixed_labels, d.num_classes)
  lrs = jnp.linspace(0.05, 0.2, 6)
  got = distill.inner_sgd(d.apply, p0, xs, ys, lrs, momentum=0.7)
  params, v = p0, None
  for t in range(6):  # torch.optim.SGD(momentum=0.7): buf = g at step 0, then 0.7 buf + g
    g = jax.grad(lambda q: distill.soft_cross_entropy(d.apply(q, xs[t % 3]), ys[t % 3]))(params)
    v = g if v is None else jax.tree_util.tree_map(lambda a, b: 0.7 * a + b, v, g)
    params = jax.tree_util.tree_map(lambda a, b: a - lrs[t] * b, params, v)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  plain = distill.inner_sgd(d.apply, p0, xs, ys, lrs)
  assert not np.allclose(jax.tree_util.tree_leaves(got)[0], jax.tree_util.tree_leaves(plain)[0])


def test_learned_momentum_gradient_matches_finite_differences(tmp_path):
  with jax.enable_x64(True):
    config = tiny_config(steps=2, epochs=2, momentum=0.5, learn_momentum=True)
    _, d, state, rx, ry = make_problem(config)
    assert float(jax.nn.sigmoid(state['learned']['raw_momentum'])) == pytest.approx(0.5)
    learned = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), state['learned'])
    p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64)[None],
                                d.init_params(jax.random.key(1)))
    f = lambda l: d.loss_fn(l, p0, rx.astype(jnp.float64), ry)[0]
    g = jax.grad(f)(learned)['raw_momentum']
    eps = 1e-6
    bump = lambda s: dict(learned, raw_momentum=learned['raw_momentum'] + s)
    fd = (f(bump(eps)) - f(bump(-eps))) / (2 * eps)
    assert abs(float(g)) > 1e-8
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)
  # the saved set carries its momentum, and re-training from it reproduces the run's nets
  path = str(tmp_path / 'd.npz')
  distill.save_distilled(path, d, state)
  z = distill.load_distilled(path)
  assert float(z['momentum']) == pytest.approx(0.5)
  _, trained = distill.train_on_distilled(z, jax.random.key(7), 2)
  p0s = d.eval_inits(state, 2, 7)
  want = jax.vmap(lambda p: distill.inner_sgd(
      d.apply, p, state['learned']['x'], jax.nn.one_hot(d.fixed_labels, d.num_classes),
      jax.nn.softplus(state['learned']['raw_lr']), momentum=0.5))(p0s)
  for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_per_layer_lrs_update_each_param_with_its_own_lr():
  config = tiny_config(steps=2, epochs=2, lr_per_layer=True)
  _, d, state, rx, ry = make_problem(config)
  names = d.param_names()
  assert state['learned']['raw_lr'].shape == (4, len(names))
  p0 = d.init_params(jax.random.key(3))
  ys = jax.nn.one_hot(d.fixed_labels, d.num_classes)
  lrs = jnp.asarray(np.random.default_rng(0).uniform(0.01, 0.3, (4, len(names))), jnp.float32)
  got = distill.inner_sgd(d.apply, p0, state['learned']['x'], ys, lrs)
  params = p0
  for t in range(4):  # the same steps written out leaf by leaf
    g = jax.grad(lambda q: distill.soft_cross_entropy(d.apply(q, state['learned']['x'][t % 2]),
                                                      ys[t % 2]))(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    params = jax.tree_util.tree_unflatten(treedef, [
        a - lrs[t, j] * b for j, (a, b) in enumerate(zip(leaves, jax.tree_util.tree_leaves(g)))])
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # equal columns are the scalar schedule
  same = distill.inner_sgd(d.apply, p0, state['learned']['x'], ys,
                           jnp.repeat(lrs[:, :1], len(names), axis=1))
  scalar = distill.inner_sgd(d.apply, p0, state['learned']['x'], ys, lrs[:, 0])
  for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(scalar)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # the meta-gradient reaches every column
  g = jax.grad(lambda l: d.loss_fn(l, jax.tree_util.tree_map(lambda a: a[None], p0), rx, ry)[0])(
      state['learned'])
  assert np.all(np.abs(np.asarray(g['raw_lr'])).sum(axis=0) > 0)


def test_meta_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    config = tiny_config(steps=2, epochs=2, learn_labels=True)
    _, d, state, rx, ry = make_problem(config)
    learned = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), state['learned'])
    p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64)[None],
                                d.init_params(jax.random.key(1)))
    rx = rx.astype(jnp.float64)
    f = lambda l: d.loss_fn(l, p0, rx, ry)[0]
    grads = jax.grad(f)(learned)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name in ('x', 'raw_lr', 'labels'):
      for _ in range(3):
        idx = tuple(rng.integers(s) for s in learned[name].shape)
        bump = lambda s: dict(learned, **{name: learned[name].at[idx].add(s)})
        fd = (f(bump(eps)) - f(bump(-eps))) / (2 * eps)
        np.testing.assert_allclose(grads[name][idx], fd, rtol=1e-5, atol=1e-9)


def test_remat_and_full_truncation_give_the_same_gradient():
  base = tiny_config(steps=2, epochs=3)
  _, d, state, rx, ry = make_problem(base)
  p0 = jax.vmap(d.init_params)(jax.random.split(jax.random.key(2), 2))
  g_plain = jax.grad(lambda l: d.loss_fn(l, p0, rx, ry)[0])(state['learned'])
  for fields in ({'remat': True}, {'truncate': 6}):
    d2 = distill.Distiller(tiny_config(steps=2, epochs=3, **fields), d.data)
    g = jax.grad(lambda l, d2=d2: d2.loss_fn(l, p0, rx, ry)[0])(state['learned'])
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_plain)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_truncation_drops_early_lr_gradients():
  config = tiny_config(steps=2, epochs=3, truncate=2)
  _, d, state, rx, ry = make_problem(config)
  p0 = jax.vmap(d.init_params)(jax.random.split(jax.random.key(2), 1))
  g = jax.grad(lambda l: d.loss_fn(l, p0, rx, ry)[0])(state['learned'])
  assert np.all(np.asarray(g['raw_lr'][:4]) == 0)
  assert np.all(np.asarray(g['raw_lr'][4:]) != 0)


def test_second_outer_step_does_not_recompile():
  _, d, state, rx, ry = make_problem(tiny_config(n_inits=2))
  state, _ = d.outer_step(state, rx, ry, jax.random.key(0))
  state, m = d.outer_step(state, rx + 1.0, ry, jax.random.key(1))
  assert d.outer_step._cache_size() == 1
  assert int(state['step']) == 2 and np.isfinite(float(m['meta_loss']))


def test_fixed_init_state_keeps_its_init():
  _, d, state, rx, ry = make_problem(tiny_config(random_init=False))
  before = jax.tree_util.tree_map(np.asarray, state['init_params'])
  for k in range(3):
    state, _ = d.outer_step(state, rx, ry, jax.random.key(k))
  for a, b in zip(jax.tree_util.tree_leaves(before),
                  jax.tree_util.tree_leaves(state['init_params'])):
    np.testing.assert_array_equal(a, b)


def test_distillation_beats_its_initial_synthetic_data():
  config = tiny_config(steps=2, epochs=2, n_inits=2, init_lr=0.1)
  config.outer.lr = 0.05
  ds, d, state, _, _ = make_problem(config)
  x = ds.normalize(ds.x_train)
  x_test = ds.normalize(ds.x_test)
  batches = data.EpochBatches(x, ds.y_train, 128, seed=0)

  def test_acc(st):
    return distill_task._evaluate(d, st, x_test, ds.y_test, num=8, seed=123).mean()

  before = test_acc(state)
  for step in range(60):
    state, _ = d.outer_step(state, *batches(step), jax.random.key(step))
  after = test_acc(state)
  assert after > before + 0.3, (before, after)
  assert after > 0.85


def test_epoch_batches_are_deterministic():
  x = np.arange(10)[:, None].astype(np.float32)
  b = data.EpochBatches(x, np.arange(10), 3, seed=0)
  first_epoch = np.concatenate([b(i)[1] for i in range(3)])
  assert len(set(first_epoch.tolist())) == 9  # a permutation, no repeats within an epoch
  again = data.EpochBatches(x, np.arange(10), 3, seed=0)
  np.testing.assert_array_equal(again(4)[1], b(4)[1])


@pytest.mark.parametrize('field,value,match', [
    ('distill.images_per_class_per_step', 0, 'distill.images_per_class_per_step=0'),
    ('distill.steps', -1, 'distill.steps=-1'),
    ('distill.epochs', 0, 'distill.epochs=0'),
    ('distill.init_lr', -0.1, 'distill.init_lr=-0.1'),
    ('distill.truncate', 100, 'distill.truncate=100'),
    ('distill.image_init', 'zeros', "distill.image_init='zeros'.*allowed: noise, real"),
    ('outer.steps', -5, 'outer.steps=-5'),
    ('eval.num_inits', 0, 'eval.num_inits=0'),
    ('eval.select', 'best', "eval.select='best'.*allowed: last, val"),
    ('distill.momentum', 1.0, r'distill.momentum=1.0: must be in \[0, 1\)'),
    ('distill.learn_momentum', True, 'distill.momentum=0.0: distill.learn_momentum=True'),
])
def test_config_errors_name_the_field(field, value, match):
  config = tiny_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(distill.ConfigError, match=match):
    distill.check_config(config)


def test_dataset_model_mismatch_is_a_config_error():
  config = tiny_config()
  config.model.name = 'lenet'
  with pytest.raises(distill.ConfigError, match="model.name='lenet'.*data.name='synthetic'"):
    distill.check_config(config, (8, 8, 1), 4)


def test_model_registry_builds_every_model_used_by_presets():
  for preset in ('mnist', 'mnist_t100', 'mnist_momentum', 'mnist_fixed', 'cifar10',
                 'cifar10_cpu', 'tiny'):
    c = distill_configs.get_config(preset)
    shape = {'mnist': (28, 28, 1), 'cifar10': (32, 32, 3), 'digits': (8, 8, 1)}[c.data.name]
    distill.check_config(c, shape, 10)
    assert models.build(c.model.name, 10, shape) is not None


def test_select_by_validation_keeps_the_best_periodic_set(tmp_path):
  config = distill_configs.get_config('tiny')
  config.progress_bar = False
  config.eval.baselines = False
  config.eval.select = 'val'
  config.eval.every = 4
  config.outer.steps = 12
  results = distill_task.run(config, str(tmp_path))
  saved = {int(f[:-4]): f for f in os.listdir(tmp_path / 'best_val') if f.endswith('.npz')}
  assert results['selected_step'] in saved and results['selected_step'] in (4, 8, 12)
  # each file improves on the ones before it
  vals = [float(np.load(tmp_path / 'best_val' / saved[k])['val_acc']) for k in sorted(saved)]
  assert vals == sorted(vals) and len(set(vals)) == len(vals)
  assert results['selected_val_acc'] == vals[-1]
  with np.load(tmp_path / 'best_val' / saved[results['selected_step']]) as best:
    z = distill.load_distilled(str(tmp_path / 'distilled.npz'))
    np.testing.assert_array_equal(z['images_normalized'], best['learned/x'])
  assert 0 <= results['last_test_acc_mean'] <= 1
  # a resumed run only trusts files saved up to the checkpoint it resumed from
  assert distill_task.load_best(str(tmp_path / 'best_val'), 0) is None
  first = min(saved)
  assert distill_task.load_best(str(tmp_path / 'best_val'), first)['step'] == first


def test_validation_split_is_disjoint_and_shared_with_baselines():
  val, rest = distill.split_val(100, 10, seed=3)
  assert len(val) == 10 and len(rest) == 90
  assert sorted(np.concatenate([val, rest]).tolist()) == list(range(100))
  np.testing.assert_array_equal(distill.split_val(100, 10, seed=3)[0], val)


def test_select_val_needs_periodic_evaluations():
  config = tiny_config()
  config.eval.select = 'val'
  config.eval.every = 0
  with pytest.raises(distill.ConfigError, match='eval.every=0'):
    distill.check_config(config)
