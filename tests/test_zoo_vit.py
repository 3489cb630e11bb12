"""ViT zoo entries: tiny ViTs through the same module; converters on files generated in
timm's and the original JAX code's exact layouts, checked against a numpy ViT."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.special

from awesome_jax import pretrained
from awesome_jax.models import ModelError
from awesome_jax.models import vit
from awesome_jax.models import vit_convert
from awesome_jax.models import zoo
from tests.torch_files import save_legacy

HEADS, PATCH, IMAGE, CLASSES = 2, 8, 32, 10
TINY = dict(hidden_size=32, depth=2, num_heads=HEADS, image_size=IMAGE, patch_size=PATCH,
            num_classes=CLASSES)


def random_timm_state(seed=0, width=32, depth=2, grid=4, classes=CLASSES, rep=None):
  """A timm-layout ViT state dict of random float32 tensors."""
  rng = np.random.default_rng(seed)
  mlp = 4 * width

  def dense(out, inp):
    return rng.normal(0, inp ** -0.5, (out, inp))

  sd = {'patch_embed.proj.weight': rng.normal(0, (3 * PATCH * PATCH) ** -0.5,
                                              (width, 3, PATCH, PATCH)),
        'patch_embed.proj.bias': rng.normal(0, 0.1, width),
        'cls_token': rng.normal(0, 1, (1, 1, width)),
        'pos_embed': rng.normal(0, 0.5, (1, 1 + grid * grid, width))}
  for i in range(depth):
    b = f'blocks.{i}.'
    sd.update({b + 'norm1.weight': 1 + rng.normal(0, 0.1, width),
               b + 'norm1.bias': rng.normal(0, 0.1, width),
               b + 'attn.qkv.weight': dense(3 * width, width) * 2,
               b + 'attn.qkv.bias': rng.normal(0, 0.1, 3 * width),
               b + 'attn.proj.weight': dense(width, width),
               b + 'attn.proj.bias': rng.normal(0, 0.1, width),
               b + 'norm2.weight': 1 + rng.normal(0, 0.1, width),
               b + 'norm2.bias': rng.normal(0, 0.1, width),
               b + 'mlp.fc1.weight': dense(mlp, width),
               b + 'mlp.fc1.bias': rng.normal(0, 0.1, mlp),
               b + 'mlp.fc2.weight': dense(width, mlp),
               b + 'mlp.fc2.bias': rng.normal(0, 0.1, width)})
  sd.update({'norm.weight': 1 + rng.normal(0, 0.1, width), 'norm.bias': rng.normal(0, 0.1, width)})
  if rep:
    sd.update({'pre_logits.fc.weight': dense(rep, width),
               'pre_logits.fc.bias': rng.normal(0, 0.1, rep)})
  sd.update({'head.weight': dense(classes, rep or width), 'head.bias': rng.normal(0, 0.1, classes)})
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def timm_to_npz(sd, heads=HEADS, prefix=''):
  """The same tensors under the original JAX code's names and layouts."""
  width = sd['cls_token'].shape[-1]
  head_dim = width // heads
  out = {'cls': sd['cls_token'],
         'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
         'embedding/bias': sd['patch_embed.proj.bias'],
         'Transformer/posembed_input/pos_embedding': sd['pos_embed'],
         'Transformer/encoder_norm/scale': sd['norm.weight'],
         'Transformer/encoder_norm/bias': sd['norm.bias'],
         'head/kernel': sd['head.weight'].T, 'head/bias': sd['head.bias']}
  if 'pre_logits.fc.weight' in sd:
    out.update({'pre_logits/kernel': sd['pre_logits.fc.weight'].T,
                'pre_logits/bias': sd['pre_logits.fc.bias']})
  i = 0
  while f'blocks.{i}.norm1.weight' in sd:
    t, b = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
    mha = b + 'MultiHeadDotProductAttention_1/'
    ws = np.split(sd[t + 'attn.qkv.weight'], 3, axis=0)
    bs = np.split(sd[t + 'attn.qkv.bias'], 3)
    for name, w, bias in zip(('query', 'key', 'value'), ws, bs):
      out[mha + name + '/kernel'] = w.T.reshape(width, heads, head_dim)
      out[mha + name + '/bias'] = bias.reshape(heads, head_dim)
    out[mha + 'out/kernel'] = sd[t + 'attn.proj.weight'].T.reshape(heads, head_dim, width)
    out[mha + 'out/bias'] = sd[t + 'attn.proj.bias']
    for jax_name, timm_name in (('LayerNorm_0', 'norm1'), ('LayerNorm_2', 'norm2')):
      out[b + jax_name + '/scale'] = sd[t + timm_name + '.weight']
      out[b + jax_name + '/bias'] = sd[t + timm_name + '.bias']
    out[b + 'MlpBlock_3/Dense_0/kernel'] = sd[t + 'mlp.fc1.weight'].T
    out[b + 'MlpBlock_3/Dense_0/bias'] = sd[t + 'mlp.fc1.bias']
    out[b + 'MlpBlock_3/Dense_1/kernel'] = sd[t + 'mlp.fc2.weight'].T
    out[b + 'MlpBlock_3/Dense_1/bias'] = sd[t + 'mlp.fc2.bias']
    i += 1
  return {prefix + k: v for k, v in out.items()}


def save_safetensors(path, sd):
  header, offset = {}, 0
  for name, value in sd.items():
    header[name] = {'dtype': 'F32', 'shape': list(value.shape),
                    'data_offsets': [offset, offset + value.nbytes]}
    offset += value.nbytes
  raw = json.dumps(header).encode()
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(raw)) + raw)
    for value in sd.values():
      f.write(np.ascontiguousarray(value).tobytes())


def numpy_vit(sd, x, heads=HEADS, gelu='exact'):
  """timm's ViT forward in float64 numpy: NHWC images -> logits."""
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  x = x.astype(np.float64)
  n, h, w, c = x.shape
  width, _, p, _ = sd['patch_embed.proj.weight'].shape
  head_dim = width // heads

  def ln(z, name):
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    return (z - mu) / np.sqrt(var + 1e-6) * sd[name + '.weight'] + sd[name + '.bias']

  def linear(z, name):
    return z @ sd[name + '.weight'].T + sd[name + '.bias']

  cells = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4)  # (c, kh, kw) last
  cells = cells.reshape(n, -1, c * p * p)
  t = cells @ sd['patch_embed.proj.weight'].reshape(width, -1).T + sd['patch_embed.proj.bias']
  t = np.concatenate([np.broadcast_to(sd['cls_token'], (n, 1, width)), t], 1) + sd['pos_embed']
  i = 0
  while f'blocks.{i}.norm1.weight' in sd:
    b = f'blocks.{i}.'
    qkv = linear(ln(t, b + 'norm1'), b + 'attn.qkv').reshape(n, -1, 3, heads, head_dim)
    a = np.einsum('nqhd,nkhd->nhqk', qkv[:, :, 0], qkv[:, :, 1]) / np.sqrt(head_dim)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum('nhqk,nkhd->nqhd', a, qkv[:, :, 2]).reshape(n, -1, width)
    t = t + linear(o, b + 'attn.proj')
    y = linear(ln(t, b + 'norm2'), b + 'mlp.fc1')
    if gelu == 'exact':
      y = 0.5 * y * (1 + scipy.special.erf(y / np.sqrt(2)))
    else:
      y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
    t = t + linear(y, b + 'mlp.fc2')
    i += 1
  z = ln(t, 'norm')[:, 0]
  if 'pre_logits.fc.weight' in sd:
    z = np.tanh(linear(z, 'pre_logits.fc'))
  return linear(z, 'head')


def images(n=2, size=IMAGE, seed=1):
  return np.random.default_rng(seed).normal(0, 1, (n, size, size, 3)).astype(np.float32)


def logits(model, variables, x):
  """float32 logits, jitted as the zoo evaluates (zoo.jit)."""
  return np.asarray(zoo.jit(model.apply)(variables, jnp.asarray(x)))


ENTRY = vit_convert.ZOO_ENTRIES['vit_b16']


def test_zoo_entries():
  entries = vit_convert.ZOO_ENTRIES
  assert set(entries) == {'vit_ti16', 'vit_s16', 'vit_b16', 'vit_b32', 'vit_l16'}
  for entry in entries.values():
    assert isinstance(entry, zoo.ZooEntry) and entry.family == 'vit'
    assert entry.formats == ('timm', 'augreg_npz')
    assert set(entry.preprocessing) == set(entry.formats)
    assert all(zoo.PREPROCESSING[k].mean == (0.5, 0.5, 0.5) for k in entry.preprocessing.values())
  model = entries['vit_l16'].build()
  assert (model.num_classes, model.image_size, model.gelu) == (1000, 224, 'exact')
  assert (model.hidden_size, model.depth, model.num_heads, model.patch_size) == (1024, 24, 16, 16)
  assert entries['vit_b32'].build(weight_format='augreg_npz').gelu == 'tanh'
  assert entries['vit_b32'].build(weight_format='augreg_npz', gelu='exact').gelu == 'exact'


def test_param_counts_match_timm():
  counts = {'vit_ti16': 5_717_416, 'vit_s16': 22_050_664, 'vit_b16': 86_567_656,
            'vit_b32': 88_224_232, 'vit_l16': 304_326_632}  # timm's models at 224, 1000 classes
  for name, count in counts.items():
    model = vit_convert.ZOO_ENTRIES[name].build()
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert sum(a.size for a in jax.tree.leaves(shapes)) == count, name
    flat = {'/'.join(k.key for k in path): tuple(a.shape)
            for path, a in jax.tree_util.tree_leaves_with_path(shapes['params'])}
    assert flat == vit_convert.npz_layout(model)


def test_tiny_vit_runs_dropout_only_in_train():
  model = ENTRY.build(dropout_rate=0.2, attention_dropout_rate=0.2, **TINY)
  x = jnp.asarray(images())
  key = lambda seed: jax.random.key(seed, impl='rbg')  # compiles much faster than threefry
  variables = jax.jit(model.init)(key(0), x)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda a: a + rng.normal(0, 0.1, a.shape).astype(np.float32),
                           variables)  # the head starts at zero
  evaluate = jax.jit(model.apply)
  train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={'dropout': k}))
  out = evaluate(variables, x)
  assert out.shape == (2, CLASSES) and bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_array_equal(out, evaluate(variables, x))
  dropped = [train(variables, x, key(seed)) for seed in (0, 1)]
  assert float(jnp.abs(dropped[0] - dropped[1]).max()) > 1e-3
  assert float(jnp.abs(dropped[0] - out).max()) > 1e-3
  with pytest.raises(ModelError, match='image_size'):
    evaluate(variables, jnp.zeros((1, 48, 48, 3)))


def test_class_token_only_last_block_is_row_zero_of_the_full_encoder():
  # The logits read the class token only: the last block skips the other rows' query, output
  # and MLP work. Its row must be the full encoder's row 0, in value and in gradient.
  kw = dict(depth=2, num_heads=HEADS, mlp_dim=64)
  full, short = vit.Encoder(**kw), vit.Encoder(**kw, class_token_only=True)
  x = jnp.asarray(np.random.default_rng(0).normal(0, 1, (2, 5, 32)), jnp.float32)
  variables = jax.jit(full.init)(jax.random.key(0, impl='rbg'), x)
  with jax.enable_x64(True):
    v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    x64 = np.asarray(x, np.float64)
    row = short.apply(v64, x64)
    assert row.shape == (2, 1, 32)
    np.testing.assert_allclose(row, full.apply(v64, x64)[:, :1], atol=1e-12, rtol=0)
    grads = [jax.grad(lambda v, m=m, f=f: jnp.sum(jnp.sin(f(m.apply(v, x64)))))(v64)
             for m, f in ((full, lambda y: y[:, 0]), (short, lambda y: y[:, 0]))]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)
  assert jax.tree.structure(grads[0]) == jax.tree.structure(grads[1])


def test_timm_file_matches_numpy_vit(tmp_path):
  sd = random_timm_state()
  save_legacy(tmp_path / 'vit.pth', sd)
  assert vit_convert.weight_format(tmp_path / 'vit.pth') == 'timm'
  model, variables, fmt = vit_convert.load('vit_b16', tmp_path / 'vit.pth', **TINY)
  assert fmt == 'timm' and model.gelu == 'exact'
  x = images()
  ref = numpy_vit(sd, x)
  assert np.abs(ref).max() > 1  # logits of some size, so that the bar below means something
  np.testing.assert_allclose(logits(model, variables, x), ref, atol=1e-4, rtol=0)
  with jax.enable_x64(True):  # free of float32 rounding: the same function, to ~1e-15
    variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    logits64 = np.asarray(zoo.jit(model.apply)(variables64, x.astype(np.float64)))
  assert logits64.dtype == np.float64
  np.testing.assert_allclose(logits64, ref, atol=1e-12 * np.abs(ref).max(), rtol=0)
  save_safetensors(tmp_path / 'vit.safetensors', sd)
  np.testing.assert_allclose(
      logits(model, ENTRY.convert(tmp_path / 'vit.safetensors', **TINY), x), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize('prefix', ['', 'opt/target/'])
def test_npz_and_timm_files_of_the_same_tensors_agree(tmp_path, prefix):
  sd = random_timm_state(seed=2)
  save_legacy(tmp_path / 'vit.pth', sd)
  np.savez(tmp_path / 'vit.npz', **timm_to_npz(sd, prefix=prefix))
  assert vit_convert.weight_format(tmp_path / 'vit.npz') == 'augreg_npz'
  from_timm = ENTRY.convert(tmp_path / 'vit.pth', **TINY)
  from_npz = ENTRY.convert(tmp_path / 'vit.npz', **TINY)
  jax.tree.map(np.testing.assert_array_equal, from_timm, from_npz)
  x = images(seed=3)
  model = ENTRY.build(**TINY)
  np.testing.assert_array_equal(logits(model, from_timm, x), logits(model, from_npz, x))
  npz_model, variables, fmt = vit_convert.load('vit_b16', tmp_path / 'vit.npz', **TINY)
  assert fmt == 'augreg_npz' and npz_model.gelu == 'tanh'
  np.testing.assert_allclose(logits(npz_model, variables, x), numpy_vit(sd, x, gelu='tanh'),
                             atol=1e-4, rtol=0)


def test_gelu_switch_moves_logits_slightly(tmp_path):
  sd = random_timm_state(seed=4)
  save_legacy(tmp_path / 'vit.pth', sd)
  variables = ENTRY.convert(tmp_path / 'vit.pth', **TINY)
  x = images(seed=5)
  exact = logits(ENTRY.build(gelu='exact', **TINY), variables, x)
  tanh = logits(ENTRY.build(gelu='tanh', **TINY), variables, x)
  diff = np.abs(exact - tanh).max()
  assert 1e-5 < diff < 0.05 * np.abs(exact).max()
  ref = numpy_vit(sd, x, gelu='tanh')
  assert np.abs(tanh - ref).max() < 1e-4 < np.abs(exact - ref).max()


def test_posemb_resize():
  rng = np.random.default_rng(6)
  posemb = rng.normal(0, 1, (1, 1 + 7 * 7, 5)).astype(np.float32)
  for method in vit_convert.POSEMB_RESIZE:
    assert vit_convert.resize_posemb(posemb, (7, 7), method) is posemb
    out = vit_convert.resize_posemb(posemb, (10, 12), method)
    assert out.shape == (1, 1 + 120, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], posemb[:, 0])
  # bilinear = the original JAX code's scipy.ndimage.zoom(order=1)
  grid = posemb[0, 1:].reshape(7, 7, 5)
  for size in (10, 4, 14):
    want = scipy.ndimage.zoom(grid, (size / 7, size / 7, 1), order=1)
    got = vit_convert.resize_posemb(posemb, (size, size), 'bilinear')[0, 1:]
    np.testing.assert_allclose(got, want.reshape(-1, 5), atol=1e-5)
  # a smooth grid stays smooth: a plane stays a plane (bicubic: inside the border)
  i, j = np.meshgrid(np.arange(7.0), np.arange(7.0), indexing='ij')
  plane = np.stack([i, 2 * j - i], -1).reshape(1, 49, 2)
  plane = np.concatenate([np.full((1, 1, 2), 9.0), plane], 1).astype(np.float32)
  for method, inner in (('bilinear', slice(None)), ('bicubic', slice(3, -3))):
    out = vit_convert.resize_posemb(plane, (13, 13), method)[0, 1:].reshape(13, 13, 2)
    for axis in (0, 1):
      second = np.diff(out, 2, axis=axis)[inner, inner]
      assert np.abs(second).max() < 1e-4, method
  assert out[..., 0].min() > -0.25 and out[..., 0].max() < 6.25  # half-pixel border: a little out
  out = vit_convert.resize_posemb(plane, (13, 13), 'bilinear')[0, 1:].reshape(13, 13, 2)
  assert out[..., 0].min() >= -1e-5 and out[..., 0].max() <= 6 + 1e-5


def test_convert_resizes_posemb_to_the_image_size(tmp_path):
  sd = random_timm_state(seed=7)  # grid 4x4 (32 / 8)
  save_legacy(tmp_path / 'vit.pth', sd)
  np.savez(tmp_path / 'vit.npz', **timm_to_npz(sd))
  big = dict(TINY, image_size=48)
  for name in ('vit.pth', 'vit.npz'):
    model, variables, fmt = vit_convert.load('vit_b16', tmp_path / name, **big)
    posemb = variables['params']['Transformer']['posembed_input']['pos_embedding']
    method = vit_convert.POSEMB_RESIZE_BY_FORMAT[fmt]
    want = vit_convert.resize_posemb(sd['pos_embed'], (6, 6), method)
    np.testing.assert_array_equal(posemb, want)
    out = logits(model, variables, images(size=48))
    assert out.shape == (2, CLASSES) and np.all(np.isfinite(out))
  assert not np.allclose(vit_convert.resize_posemb(sd['pos_embed'], (6, 6), 'bilinear'),
                         vit_convert.resize_posemb(sd['pos_embed'], (6, 6), 'bicubic'))


def test_pre_logits_layer(tmp_path):
  sd = random_timm_state(seed=8, rep=24)
  save_legacy(tmp_path / 'vit.pth', sd)
  np.savez(tmp_path / 'vit.npz', **timm_to_npz(sd))
  with pytest.raises(ModelError, match='representation_size=24'):
    ENTRY.convert(tmp_path / 'vit.pth', **TINY)
  with pytest.raises(ModelError, match='^[^\n]*pre_logits/kernel[^\n]*representation_size=24'):
    ENTRY.convert(tmp_path / 'vit.npz', **TINY)
  x = images(seed=9)
  for name, gelu in (('vit.pth', 'exact'), ('vit.npz', 'tanh')):
    model, variables, _ = vit_convert.load('vit_b16', tmp_path / name, representation_size=24,
                                           **TINY)
    np.testing.assert_allclose(logits(model, variables, x), numpy_vit(sd, x, gelu=gelu),
                               atol=1e-4, rtol=0)


def _drop(d, key):
  return {k: v for k, v in d.items() if k != key}


BAD_TIMM = {
    'width': (lambda: random_timm_state(width=48), 'patch_embed.proj.weight',
              '(32, 3, 8, 8), found (48, 3, 8, 8)'),
    'missing': (lambda: _drop(random_timm_state(), 'blocks.1.mlp.fc2.bias'),
                'blocks.1.mlp.fc2.bias', 'missing (expected shape (32,))'),
    'classes': (lambda: random_timm_state(classes=7), 'head.weight', '(10, 32), found (7, 32)'),
    'depth': (lambda: random_timm_state(depth=3), 'blocks.2.norm1.weight', 'not in the model'),
    'posemb': (lambda: dict(random_timm_state(), pos_embed=np.zeros((1, 16, 32), np.float32)),
               'pos_embed', '(1, 17, 32), found (1, 16, 32)'),
}


@pytest.mark.parametrize('case', sorted(BAD_TIMM))
def test_bad_timm_files_name_the_key(tmp_path, case):
  make, key, detail = BAD_TIMM[case]
  save_legacy(tmp_path / 'bad.pth', make())
  with pytest.raises(ModelError) as err:
    ENTRY.convert(tmp_path / 'bad.pth', **TINY)
  message = str(err.value)
  assert '\n' not in message and f': {key}: ' in message and detail in message


def test_bad_npz_and_unreadable_files(tmp_path):
  npz = timm_to_npz(random_timm_state())
  npz['Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel'] = np.zeros(
      (32, 4, 8), np.float32)
  np.savez(tmp_path / 'heads.npz', **npz)
  with pytest.raises(ModelError, match=r'^[^\n]*encoderblock_0/MultiHeadDotProductAttention_1/'
                     r'query/kernel: expected shape \(32, 2, 16\), found \(32, 4, 8\)$'):
    ENTRY.convert(tmp_path / 'heads.npz', **TINY)
  np.savez(tmp_path / 'bv.npz', **timm_to_npz(random_timm_state(), prefix='params/'))
  with pytest.raises(pretrained.CheckpointFormatError, match='big_vision'):
    ENTRY.convert(tmp_path / 'bv.npz', **TINY)
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint at all')
  with pytest.raises(pretrained.CheckpointFormatError):
    ENTRY.convert(tmp_path / 'junk.pth', **TINY)
  with pytest.raises(pretrained.CheckpointFormatError, match='not found'):
    ENTRY.convert(tmp_path / 'absent.npz', **TINY)
  np.savez(tmp_path / 'ok.npz', **timm_to_npz(random_timm_state()))
  with pytest.raises(ModelError, match='augreg_npz file'):
    ENTRY.convert(tmp_path / 'ok.npz', weight_format='timm', **TINY)


def test_format_read_from_contents_not_name(tmp_path):
  sd = random_timm_state()
  np.savez(tmp_path / 'a.npz', **timm_to_npz(sd))
  (tmp_path / 'weights.bin').write_bytes((tmp_path / 'a.npz').read_bytes())
  save_legacy(tmp_path / 'weights.npz', sd)
  assert vit_convert.weight_format(tmp_path / 'weights.bin') == 'augreg_npz'
  assert vit_convert.weight_format(tmp_path / 'weights.npz') == 'timm'
  jax.tree.map(np.testing.assert_array_equal, ENTRY.convert(tmp_path / 'weights.bin', **TINY),
               ENTRY.convert(tmp_path / 'weights.npz', **TINY))


def test_vit_names_and_bad_config():
  with pytest.raises(ModelError, match='unknown'):
    vit.vit('vit_h14')
  with pytest.raises(ModelError, match='gelu'):
    ENTRY.build(gelu='relu', **TINY).init(jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)))
  with pytest.raises(ModelError, match='weight_format'):
    ENTRY.build(weight_format='torchvision')
