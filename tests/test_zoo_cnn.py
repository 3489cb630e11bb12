"""The torchvision CNNs of the zoo: tiny variants, converters, one-line fit errors.

State dicts are generated here in torchvision's exact key layout (written from
torchvision's layer lists, independently of the converter), saved as real legacy torch
files without torch, converted, and checked leaf by leaf and against a float64 NumPy
forward in torch's NCHW conventions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import pretrained
from awesome_jax import xla_options
from awesome_jax.models import torchvision_cnn, vgg, zoo
from tests.torch_files import save_legacy

EPS = 1e-5


# ------------------------------------------------------------ torchvision layouts

def _bn_keys(name, c):
  return [(f'{name}.weight', (c,)), (f'{name}.bias', (c,)), (f'{name}.running_mean', (c,)),
          (f'{name}.running_var', (c,)), (f'{name}.num_batches_tracked', ())]


def resnet_keys(kind, base, blocks, classes):
  """(key, shape) of torchvision's ResNet with `base` channels in layer1, in its order."""
  keys = [('conv1.weight', (base, 3, 7, 7))] + _bn_keys('bn1', base)
  expansion = 1 if kind == 'basic' else 4
  inplanes = base
  for stage, n in enumerate(blocks, 1):
    planes = base * 2 ** (stage - 1)
    for b in range(n):
      p = f'layer{stage}.{b}.'
      if kind == 'basic':
        convs = [(planes, inplanes, 3), (planes, planes, 3)]
      else:
        convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
      for i, (o, c, k) in enumerate(convs, 1):
        keys += [(f'{p}conv{i}.weight', (o, c, k, k))] + _bn_keys(f'{p}bn{i}', o)
      if b == 0 and (stage > 1 or inplanes != planes * expansion):
        keys += [(f'{p}downsample.0.weight', (planes * expansion, inplanes, 1, 1))]
        keys += _bn_keys(f'{p}downsample.1', planes * expansion)
      inplanes = planes * expansion
  return keys + [('fc.weight', (classes, inplanes)), ('fc.bias', (classes,))]


def vgg_keys(layers, batch_norm, pool, hidden, classes):
  keys, i, c = [], 0, 3
  for v in layers:
    if v == 'M':
      i += 1
      continue
    keys += [(f'features.{i}.weight', (v, c, 3, 3)), (f'features.{i}.bias', (v,))]
    if batch_norm:
      keys += _bn_keys(f'features.{i + 1}', v)
    i, c = i + (3 if batch_norm else 2), v
  for j, (o, n) in zip((0, 3, 6), ((hidden, c * pool * pool), (hidden, hidden),
                                   (classes, hidden))):
    keys += [(f'classifier.{j}.weight', (o, n)), (f'classifier.{j}.bias', (o,))]
  return keys


def alexnet_keys(widths, hidden, classes):
  kernels = (11, 5, 3, 3, 3)
  keys, c = [], 3
  for i, w, k in zip((0, 3, 6, 8, 10), widths, kernels):
    keys += [(f'features.{i}.weight', (w, c, k, k)), (f'features.{i}.bias', (w,))]
    c = w
  for j, (o, n) in zip((1, 4, 6), ((hidden, c * 36), (hidden, hidden), (classes, hidden))):
    keys += [(f'classifier.{j}.weight', (o, n)), (f'classifier.{j}.bias', (o,))]
  return keys


def random_state(keys, seed=0):
  """Random float32 values for (key, shape): N(0, 1/fan_in) weights, positive
  running_var, int64 num_batches_tracked."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in keys:
    if key.endswith('num_batches_tracked'):
      state[key] = np.array(3, np.int64)
    elif key.endswith('running_var'):
      state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif len(shape) >= 2:
      fan_in = int(np.prod(shape[1:]))
      state[key] = (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)
    else:
      state[key] = (0.3 * rng.normal(size=shape)).astype(np.float32)
  return state


# ---------------------------------------------------------- NumPy reference (NCHW)

def np_conv(x, w, b=None, stride=1, pad=0):
  n, _, h, wd = x.shape
  o, _, kh, kw = w.shape
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
  out = np.zeros((n, o, oh, ow))
  for dy in range(kh):
    for dx in range(kw):
      patch = x[:, :, dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride]
      out += np.einsum('nchw,oc->nohw', patch, w[:, :, dy, dx])
  return out if b is None else out + b[None, :, None, None]


def np_bn(x, sd, name):
  c = lambda k: sd[f'{name}.{k}'][None, :, None, None]
  return (x - c('running_mean')) / np.sqrt(c('running_var') + EPS) * c('weight') + c('bias')


def np_max_pool(x, k, s, pad=0):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
  oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
  return np.max([x[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
                 for i in range(k) for j in range(k)], axis=0)


def np_adaptive_avg_pool(x, out):
  h, w = x.shape[2:]
  rows = []
  for i in range(out):
    r0, r1 = (i * h) // out, int(np.ceil((i + 1) * h / out))
    rows.append([x[:, :, r0:r1, (j * w) // out:int(np.ceil((j + 1) * w / out))].mean(axis=(2, 3))
                 for j in range(out)])
  return np.array(rows).transpose(2, 3, 0, 1)            # (out, out, N, C) -> NCHW


relu = lambda x: np.maximum(x, 0)
linear = lambda x, sd, name: x @ sd[f'{name}.weight'].T + sd[f'{name}.bias']


def np_resnet(sd, x, kind, blocks):
  x = relu(np_bn(np_conv(x, sd['conv1.weight'], stride=2, pad=3), sd, 'bn1'))
  x = np_max_pool(x, 3, 2, 1)
  for stage, n in enumerate(blocks, 1):
    for b in range(n):
      p = f'layer{stage}.{b}.'
      stride = 2 if stage > 1 and b == 0 else 1
      n_convs = 2 if kind == 'basic' else 3
      y = x
      for i in range(1, n_convs + 1):
        w = sd[f'{p}conv{i}.weight']
        s = stride if (kind == 'basic' and i == 1) or (kind != 'basic' and i == 2) else 1
        y = np_bn(np_conv(y, w, stride=s, pad=w.shape[-1] // 2), sd, f'{p}bn{i}')
        y = relu(y) if i < n_convs else y
      if f'{p}downsample.0.weight' in sd:
        x = np_bn(np_conv(x, sd[f'{p}downsample.0.weight'], stride=stride), sd,
                  f'{p}downsample.1')
      x = relu(y + x)
  return linear(x.mean(axis=(2, 3)), sd, 'fc')


def np_vgg(sd, x, layers, batch_norm, pool):
  i = 0
  for v in layers:
    if v == 'M':
      x, i = np_max_pool(x, 2, 2), i + 1
      continue
    x = np_conv(x, sd[f'features.{i}.weight'], sd[f'features.{i}.bias'], pad=1)
    if batch_norm:
      x = np_bn(x, sd, f'features.{i + 1}')
    x, i = relu(x), i + (3 if batch_norm else 2)
  x = np_adaptive_avg_pool(x, pool).reshape(x.shape[0], -1)
  x = relu(linear(x, sd, 'classifier.0'))
  return linear(relu(linear(x, sd, 'classifier.3')), sd, 'classifier.6')


def np_alexnet(sd, x):
  for i, stride, pad, pool in ((0, 4, 2, True), (3, 1, 2, True), (6, 1, 1, False),
                               (8, 1, 1, False), (10, 1, 1, True)):
    x = relu(np_conv(x, sd[f'features.{i}.weight'], sd[f'features.{i}.bias'], stride, pad))
    x = np_max_pool(x, 3, 2) if pool else x
  x = np_adaptive_avg_pool(x, 6).reshape(x.shape[0], -1)
  x = relu(linear(x, sd, 'classifier.1'))
  return linear(relu(linear(x, sd, 'classifier.4')), sd, 'classifier.6')


# ------------------------------------------------------------------ tiny variants

# name -> (zoo name, build kwargs, torchvision keys, NumPy forward, image side)
RESNET18 = dict(width=1 / 16, stage_sizes=(1, 1), num_classes=5)
RESNET50 = dict(width=1 / 16, stage_sizes=(1, 1), num_classes=5)
VGG_LAYERS = (4, 'M', 8, 'M')
VGG = dict(layers=VGG_LAYERS, hidden=16, num_classes=5)
ALEXNET = dict(width=1 / 16, hidden=16, num_classes=5)
TINY = {
    'resnet18': ('resnet18', RESNET18, resnet_keys('basic', 4, (1, 1), 5),
                 lambda sd, x: np_resnet(sd, x, 'basic', (1, 1)), 32),
    'resnet50': ('resnet50', RESNET50, resnet_keys('bottleneck', 4, (1, 1), 5),
                 lambda sd, x: np_resnet(sd, x, 'bottleneck', (1, 1)), 32),
    'vgg': ('vgg16', VGG, vgg_keys(VGG_LAYERS, False, 7, 16, 5),
            lambda sd, x: np_vgg(sd, x, VGG_LAYERS, False, 7), 32),
    'vgg_bn': ('vgg16_bn', VGG, vgg_keys(VGG_LAYERS, True, 7, 16, 5),
               lambda sd, x: np_vgg(sd, x, VGG_LAYERS, True, 7), 32),
    'alexnet': ('alexnet', ALEXNET, alexnet_keys((4, 12, 24, 16, 16), 16, 5), np_alexnet, 64),
}


def flax_path(key):
  """The converted leaf a torchvision key should land on (independent of the converter)."""
  *modules, leaf = key.split('.')
  collection, leaf = {'weight': ('params', None), 'bias': ('params', 'bias'),
                      'running_mean': ('batch_stats', 'mean'),
                      'running_var': ('batch_stats', 'var')}[leaf]
  names = {'conv1': 'conv_stem', 'bn1': 'bn_stem'} if len(modules) == 1 else {}
  path = []
  if modules[0].startswith('layer'):
    path.append(f'stage{modules[0][5:]}_block{modules[1]}')
    rest = modules[2:]
    rest = {('downsample', '0'): ['shortcut'], ('downsample', '1'): ['bn_shortcut']}.get(
        tuple(rest), rest)
    path += rest
  elif modules[0] in ('features', 'classifier'):
    path.append('_'.join(modules))
  else:
    path.append(names.get(modules[0], modules[0]))
  return (collection, *path, leaf)


@pytest.mark.parametrize('tiny', list(TINY))
def test_converted_tiny_net_matches_numpy_forward(tiny, tmp_path):
  name, kwargs, keys, np_forward, side = TINY[tiny]
  state = random_state(keys)
  save_legacy(tmp_path / f'{tiny}.pth', state)
  variables = torchvision_cnn.convert(name, str(tmp_path / f'{tiny}.pth'), **kwargs)

  # every converted leaf is its source, transposed; nothing else is there
  converted = {tuple(p.key for p in path): leaf for path, leaf in
               jax.tree_util.tree_flatten_with_path(variables)[0]}
  expected = {}
  for key, value in state.items():
    if key.endswith('num_batches_tracked'):
      continue
    path = flax_path(key)
    if path[-1] is None:                                       # a weight
      is_bn = value.ndim == 1
      path = path[:-1] + ('scale' if is_bn else 'kernel',)
      value = value if is_bn else (np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4
                                   else value.T)
    expected[path] = value
  assert set(converted) == set(expected)
  for path, value in expected.items():
    np.testing.assert_array_equal(np.asarray(converted[path]), value, err_msg=str(path))

  x = np.random.default_rng(1).normal(size=(2, side, side, 3)).astype(np.float32)
  model = torchvision_cnn.build(name, **kwargs)
  logits = np.asarray(model.apply(variables, jnp.asarray(x)))
  assert logits.shape == (2, 5)
  want = np_forward({k: v.astype(np.float64) for k, v in state.items()},
                    x.transpose(0, 3, 1, 2).astype(np.float64))
  # float32 vs float64: ~2e-7 of the largest logit here; a wrong eps (1e-3) moves 5e-5
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=5e-6 * np.abs(want).max())
  assert np.abs(want).max() > 1e-2                              # not a vacuous comparison
  # jitted as the zoo evaluates (zoo.jit: XLA:CPU options of its own), the same
  np.testing.assert_allclose(np.asarray(zoo.jit(model.apply)(variables, x)), want, rtol=1e-5,
                             atol=5e-6 * np.abs(want).max())
  # in float64 the float32 rounding is gone: the same function as torch's, to ~1e-15
  with jax.enable_x64(True):
    variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    logits64 = np.asarray(zoo.jit(model.apply)(variables64, x.astype(np.float64)))
  assert logits64.dtype == np.float64
  np.testing.assert_allclose(logits64, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def test_zoo_jit_runs_without_ynnpack_fusions_on_cpu():
  """zoo.jit compiles with zoo.compiler_options(): on CPU, XLA's YNNPACK fusions off (its
  Eigen kernels were 1.5-1.7x faster for the zoo's models on a 2-core Xeon)."""
  if jax.default_backend() != 'cpu':
    assert zoo.compiler_options() is None
    return
  assert zoo.compiler_options() in (xla_options.NO_YNN, None)   # None: an XLA without the option
  model = torchvision_cnn.build('resnet18', width=0.25, stage_sizes=(1, 1), num_classes=5)
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  hlo = zoo.jit(model.apply).lower(variables, x).compile().as_text()
  if zoo.compiler_options():
    assert '__ynn_fusion' not in hlo
  np.testing.assert_allclose(np.asarray(zoo.jit(model.apply)(variables, x)),
                             np.asarray(jax.jit(model.apply)(variables, x)), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('size,out', [((8, 8), 7), ((4, 4), 7), ((1, 1), 6), ((13, 13), 6),
                                      ((14, 14), 7), ((7, 7), 7), ((5, 9), 3)])
def test_adaptive_avg_pool_matches_torch_windows(size, out):
  x = np.random.default_rng(0).normal(size=(2, 3) + size)     # NCHW
  got = vgg.adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32), (out, out))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2),
                             np_adaptive_avg_pool(x, out), rtol=1e-5, atol=1e-6)


def test_dropout_in_train_mode_only():
  model = torchvision_cnn.build('vgg16_bn', **VGG)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  a, b = model.apply(variables, x), model.apply(variables, x)
  np.testing.assert_array_equal(a, b)
  train, updates = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)},
                               mutable=['batch_stats'])
  assert train.shape == (2, 5) and not np.allclose(train, a)
  assert not np.allclose(updates['batch_stats']['features_1']['mean'], 0)
  # without batch norm the only train-mode randomness is dropout: other keys, other outputs
  plain = torchvision_cnn.build('vgg16', **VGG)
  v = plain.init(jax.random.key(0), x)
  one = plain.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  two = plain.apply(v, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(one, two) and np.allclose(plain.apply(v, x), plain.apply(v, x))


# ------------------------------------------------------------------ fit errors

def _error(name, state, kwargs):
  with pytest.raises(pretrained.CheckpointFormatError) as info:
    torchvision_cnn.convert(name, state, **kwargs)
  message = str(info.value)
  assert '\n' not in message
  return message


def test_wrong_shape_names_the_key_and_both_shapes():
  name, kwargs, keys, _, _ = TINY['resnet18']
  state = random_state(keys)
  state['layer2.0.conv1.weight'] = np.zeros((8, 4, 1, 1), np.float32)
  message = _error(name, state, kwargs)
  assert ("'layer2.0.conv1.weight' expected shape (8, 4, 3, 3), found (8, 4, 1, 1)"
          in message)
  assert '0 missing, 0 unexpected, 1 of another shape' in message


def test_missing_and_extra_keys_are_named_and_counted(tmp_path):
  name, kwargs, keys, _, _ = TINY['vgg_bn']
  state = random_state(keys)
  del state['features.5.running_var']
  message = _error(name, state, kwargs)
  assert "'features.5.running_var' missing (expected shape (8,))" in message
  assert "1 missing (first 'features.5.running_var'), 0 unexpected" in message

  state = random_state(keys)
  state['features.2.weight'] = np.zeros((3,), np.float32)       # a ReLU has no weight
  save_legacy(tmp_path / 'extra.pth', state)
  message = _error(name, str(tmp_path / 'extra.pth'), kwargs)
  assert message.startswith(str(tmp_path / 'extra.pth'))
  assert "'features.2.weight' not in the model (found shape (3,))" in message
  assert "0 missing, 1 unexpected (first 'features.2.weight')" in message


def test_a_full_size_state_dict_does_not_fit_a_tiny_model():
  state = {k: np.zeros(s, np.float32) for k, s in resnet_keys('basic', 64, (2, 2, 2, 2), 1000)}
  message = _error('resnet18', state, RESNET18)
  assert "'conv1.weight' expected shape (4, 3, 7, 7), found (64, 3, 7, 7)" in message


# ------------------------------------------------------------------ zoo entries

# torchvision's parameter counts (weights + biases, no buffers)
TORCHVISION_PARAMS = {'resnet18': 11_689_512, 'resnet34': 21_797_672,
                      'resnet50': 25_557_032, 'vgg16': 138_357_544,
                      'vgg16_bn': 138_365_992, 'alexnet': 61_100_840}


def test_zoo_entries_have_torchvision_layouts():
  assert set(torchvision_cnn.ZOO_ENTRIES) == set(TORCHVISION_PARAMS)
  for name, entry in torchvision_cnn.ZOO_ENTRIES.items():
    assert isinstance(entry, zoo.ZooEntry)
    assert entry.family == {'v': 'vgg', 'r': 'resnet', 'a': 'alexnet'}[name[0]]
    assert entry.formats == ('torchvision',)
    assert zoo.PREPROCESSING[entry.preprocessing['torchvision']].crop == 224
    model = entry.build()
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x), x)
    n = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(shapes['params']))
    assert n == TORCHVISION_PARAMS[name], name
    assert jax.eval_shape(model.apply, shapes, x).shape == (1, 1000)
  # the generated full-size layout is the converter's, key for key and in order
  layout = torchvision_cnn.torch_layout('resnet50')
  want = [(k, s) for k, s in resnet_keys('bottleneck', 64, (3, 4, 6, 3), 1000)
          if not k.endswith('num_batches_tracked')]
  assert [(k, s) for k, (_, s) in layout.items()] == want
  layout = torchvision_cnn.torch_layout('vgg16_bn')
  want = [(k, s) for k, s in vgg_keys(vgg.CFGS['vgg16'], True, 7, 4096, 1000)
          if not k.endswith('num_batches_tracked')]
  assert [(k, s) for k, (_, s) in layout.items()] == want


def test_existing_resnet_callers_get_the_same_net():
  from awesome_jax.models import resnet
  x = jnp.zeros((1, 32, 32, 3))
  for mode in ('masked', 'dense'):
    shapes = jax.eval_shape(lambda m=mode: resnet.ResNet(mode=m).init(jax.random.key(0), x))
    assert 'bias' not in shapes['params']['fc']
    assert shapes['params']['conv_stem']['kernel' if mode == 'dense' else 'scores'].shape == (
        3, 3, 3, 64)
  with pytest.raises(ValueError, match='fc_bias=True needs mode=dense'):
    resnet.ResNet(fc_bias=True).init(jax.random.key(0), x)


def test_tiny_zoo_models_build_through_the_one_registry():
  import jax
  import jax.numpy as jnp
  from awesome_jax import models
  tiny = {'resnet18': dict(width=0.25, stage_sizes=(1, 1)), 'vgg16': dict(width=0.125, hidden=32),
          'alexnet': dict(width=0.125, hidden=32),
          'vit_ti16': dict(hidden_size=32, depth=2, num_heads=2, patch_size=8)}
  for name, kw in tiny.items():
    size = 64 if name == 'alexnet' else 32  # AlexNet's feature map vanishes below 63
    m = models.build(name, 10, (size, size, 3), **kw)
    # shapes only (the converter tests run these families' numbers): op by op, each
    # layer's init draw compiles on its own (~1 min for the four)
    v = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    assert jax.eval_shape(m.apply, v, jnp.zeros((2, size, size, 3))).shape == (2, 10), name
  with pytest.raises(models.ModelError, match="'resnet18' cannot take data of shape"):
    models.build('resnet18', 10, (28, 28, 1))
  with pytest.raises(models.ModelError, match="'alexnet' cannot take .* H and W >= 63"):
    models.build('alexnet', 10, (32, 32, 3))
