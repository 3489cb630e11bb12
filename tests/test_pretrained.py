"""Reading torch checkpoints without torch; EfficientNet-Lite0 from a generated one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import pretrained
from awesome_jax.models import efficientnet_lite
from tests.torch_files import save_legacy


def test_legacy_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  sd = {'a.weight': rng.normal(size=(3, 4, 5)).astype(np.float32),
        'b.num_batches_tracked': np.array(7, np.int64),
        'c.bias': rng.normal(size=(2,)).astype(np.float32)}
  save_legacy(tmp_path / 'x.pth', sd)
  got = pretrained.read_torch_state_dict(str(tmp_path / 'x.pth'))
  assert list(got) == list(sd)
  for k in sd:
    np.testing.assert_array_equal(got[k], sd[k])
    assert got[k].dtype == sd[k].dtype


def test_bad_files_are_named(tmp_path):
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint at all')
  with pytest.raises(pretrained.CheckpointFormatError, match='junk.pth'):
    pretrained.read_torch_state_dict(str(tmp_path / 'junk.pth'))
  with pytest.raises(pretrained.CheckpointFormatError, match='missing.pth: file not found'):
    pretrained.read_torch_state_dict(str(tmp_path / 'missing.pth'))


def test_refuses_arbitrary_globals(tmp_path):
  import pickle
  with open(tmp_path / 'evil.pth', 'wb') as f:
    pickle.dump(pretrained.LEGACY_MAGIC, f)
    pickle.dump(1001, f)
    pickle.dump({'little_endian': True}, f)
    f.write(pickle.GLOBAL + b'os\nsystem\n' + pickle.STOP)
  with pytest.raises(pretrained.CheckpointFormatError, match='refusing to load os.system'):
    pretrained.read_torch_state_dict(str(tmp_path / 'evil.pth'))


def torch_layout_from_flax(variables):
  """Inverse of from_torch_state_dict: Flax variables -> lukemelas torch key layout."""
  out = {}
  for path, v in jax.tree_util.tree_leaves_with_path(variables):
    names = [p.key for p in path]
    collection, *module, leaf = names
    module = '.'.join(m.replace('_blocks_', '_blocks.') for m in module)
    v = np.asarray(v)
    if leaf == 'kernel':
      out[f'{module}.weight'] = (np.transpose(v, (3, 2, 0, 1)) if v.ndim == 4 else v.T)
    elif leaf == 'scale':
      out[f'{module}.weight'] = v
    elif leaf == 'bias':
      out[f'{module}.bias'] = v
    elif leaf == 'mean':
      out[f'{module}.running_mean'] = v
      out[f'{module}.num_batches_tracked'] = np.array(0, np.int64)
    elif leaf == 'var':
      out[f'{module}.running_var'] = v
  return out


@pytest.fixture(scope='module')
def lite0_checkpoint(tmp_path_factory):
  model = efficientnet_lite.EfficientNetLite()
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda s: rng.normal(scale=0.1, size=s.shape).astype(np.float32), shapes)
  variables['batch_stats'] = jax.tree_util.tree_map(np.abs, variables['batch_stats'])
  sd = torch_layout_from_flax(variables)
  path = tmp_path_factory.mktemp('lite0') / 'efficientnet-lite0.pth'
  save_legacy(path, sd)
  return str(path), sd, variables


def test_lite0_key_layout(lite0_checkpoint):
  _, sd, _ = lite0_checkpoint
  # the real file's layout: 296 entries, 16 blocks, ImageNet head
  assert len(sd) == 296
  assert sd['_conv_stem.weight'].shape == (32, 3, 3, 3)
  assert sd['_blocks.15._project_conv.weight'].shape == (320, 1152, 1, 1)
  assert sd['_blocks.1._depthwise_conv.weight'].shape == (96, 1, 3, 3)
  assert sd['_fc.weight'].shape == (1000, 1280)


def test_lite0_loads_generated_checkpoint(lite0_checkpoint):
  path, sd, variables = lite0_checkpoint
  model, loaded = efficientnet_lite.load_lite0(path)
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  x = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3)).astype(np.uint8)
  # jitted: op by op, each of the ~150 layers' ops compiles on its own (~1 min)
  logits = jax.jit(model.apply)(loaded, efficientnet_lite.preprocess(x))
  assert logits.shape == (2, 1000) and bool(jnp.all(jnp.isfinite(logits)))


def test_lite0_stem_matches_torch_semantics(lite0_checkpoint):
  """The converted stem computes torch's cross-correlation with TF 'SAME' padding
  (224 -> 112, pad 0 before / 1 after) on the torch-layout (O, I, kh, kw) weights."""
  path, sd, _ = lite0_checkpoint
  model, loaded = efficientnet_lite.load_lite0(path)
  x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
  _, inter = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                               mutable=['intermediates']))(loaded, x)
  got = np.asarray(inter['intermediates']['_conv_stem']['__call__'][0])
  w = sd['_conv_stem.weight']  # (32, 3, 3, 3)
  xp = np.pad(x[0], ((0, 1), (0, 1), (0, 0)))
  want = np.zeros((112, 112, 32), np.float32)
  for i in range(3):
    for j in range(3):
      patch = xp[i:i + 223:2, j:j + 223:2, :]  # (112, 112, 3)
      want += patch @ w[:, :, i, j].T
  np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


def test_wrong_shapes_are_named(tmp_path, lite0_checkpoint):
  _, sd, _ = lite0_checkpoint
  bad = dict(sd)
  bad['_fc.weight'] = np.zeros((10, 1280), np.float32)
  bad['_fc.bias'] = np.zeros((10,), np.float32)
  save_legacy(tmp_path / 'bad.pth', bad)
  with pytest.raises(ValueError, match=r"_fc.*shape \(10,\), expected \(1000,\)"):
    efficientnet_lite.load_lite0(str(tmp_path / 'bad.pth'))


@pytest.mark.parametrize('kernel,stride,size', [(3, 1, 9), (5, 2, 10), (3, 2, 7)])
def test_depthwise_conv_equals_grouped_conv(kernel, stride, size):
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), (2, size, size, 6))
  ours = efficientnet_lite.DepthwiseConv(kernel, stride)
  params = ours.init(jax.random.key(1), x)
  ref = nn.Conv(6, (kernel, kernel), strides=stride, padding='SAME', feature_group_count=6,
                use_bias=False)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)


def test_bfloat16_tensors_read_as_their_values(tmp_path):
  values = np.array([1.0, -2.5, 0.15625, 3e38], np.float32)
  bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 = the top 16 bits
  path = tmp_path / 'bf16.pth'
  save_legacy(path, {'w': bits})
  got = pretrained.read_torch_state_dict(str(path))['w']
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, (bits.astype(np.uint32) << 16).view(np.float32))
  np.testing.assert_allclose(got[:3], values[:3])  # these are exact in bfloat16


def test_a_storage_larger_than_the_file_is_one_line(tmp_path):
  path = tmp_path / 'big.pth'
  save_legacy(path, {'w': np.zeros(4, np.float32)})
  raw = bytearray(path.read_bytes())
  at = len(raw) - 16 - 8  # the int64 element count before the last storage's 16 bytes
  raw[at:at + 8] = (10**15).to_bytes(8, 'little')
  path.write_bytes(bytes(raw))
  with pytest.raises(pretrained.CheckpointFormatError, match='claims 1000000000000000 elements'):
    pretrained.read_torch_state_dict(str(path))
