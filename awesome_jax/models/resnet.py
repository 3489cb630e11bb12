"""ResNet-18/34/50, masked (edge-popup) or dense: the larger edge-popup runs and the zoo.

The torchvision layout (BasicBlock [2, 2, 2, 2] / Bottleneck [3, 4, 6, 3], stride 2 in
the 3x3 conv of each stage's first block, 1x1 projection shortcuts where the shape
changes), with the edge-popup paper's choices: no biases anywhere, batch norm without
learned affine parameters (`bn_affine=False`, the default) and, in masked mode, every conv
and the classifier are MaskedConv / MaskedDense (frozen random weights, learned scores).

stem: 'cifar' (3x3 conv, stride 1, no max-pool: 32x32 inputs), 'imagenet' (7x7 conv
stride 2 + 3x3 max-pool stride 2), or 'auto' (cifar below 64 pixels, else imagenet).
Dense mode uses the same layer names with plain kaiming-normal kernels, so
`supermask.export_dense` of a masked net loads into the dense net of the same config.

torchvision's dense form (the zoo, `models.torchvision_cnn`): mode='dense', bn_affine=True,
fc_bias=True, stem='imagenet', conv_impl='xla' (nn.Conv: a faster plain forward than the
matmul convolution that edge-popup differentiates). `stage_sizes` overrides the arch's
blocks per stage (tiny test variants: fewer stages and blocks).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from awesome_jax import supermask
from awesome_jax.models import norms
from awesome_jax.models.conv_n import conv_layer, dense_layer, kaiming_normal
from awesome_jax.models.small import max_pool_3x3_s2

# arch -> (block kind, blocks per stage), torchvision's
BLOCKS = {'resnet18': ('basic', (2, 2, 2, 2)), 'resnet34': ('basic', (3, 4, 6, 3)),
          'resnet50': ('bottleneck', (3, 4, 6, 3))}
# the archs the edge-popup task takes
ARCHS = {name: BLOCKS[name] for name in ('resnet18', 'resnet50')}
CONV_IMPLS = ('matmul', 'xla')
STEMS = ('auto', 'cifar', 'imagenet')


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """What every conv / norm layer of one net shares."""
  mode: str = 'masked'
  keep_fraction: float = 0.5
  weight_init: str = 'signed_constant'
  bn_affine: bool = False
  conv_impl: str = 'matmul'       # dense mode: matmul (MatmulConv) | xla (nn.Conv)


def conv(cfg, features, kernel, stride, name):
  if cfg.mode == 'dense' and cfg.conv_impl == 'xla':
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2,
                   use_bias=False, kernel_init=kaiming_normal, name=name)
  return conv_layer(cfg.mode, features, kernel, cfg.keep_fraction, cfg.weight_init,
                    stride, name)


def norm(cfg, x, train, name):
  return norms.BatchNorm(use_running_average=not train, use_scale=cfg.bn_affine,
                         use_bias=cfg.bn_affine, momentum=0.9, epsilon=1e-5, name=name)(x)


class Block(nn.Module):
  """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) residual block."""
  cfg: LayerConfig
  kind: str
  features: int
  stride: int

  @nn.compact
  def __call__(self, x, train):
    c = self.cfg
    if self.kind == 'basic':
      out_features = self.features
      y = nn.relu(norm(c, conv(c, self.features, 3, self.stride, 'conv1')(x), train, 'bn1'))
      y = norm(c, conv(c, self.features, 3, 1, 'conv2')(y), train, 'bn2')
    else:
      out_features = 4 * self.features
      y = nn.relu(norm(c, conv(c, self.features, 1, 1, 'conv1')(x), train, 'bn1'))
      y = nn.relu(norm(c, conv(c, self.features, 3, self.stride, 'conv2')(y), train, 'bn2'))
      y = norm(c, conv(c, out_features, 1, 1, 'conv3')(y), train, 'bn3')
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_features:
      shortcut = norm(c, conv(c, out_features, 1, self.stride, 'shortcut')(x), train,
                      'bn_shortcut')
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet-18/34/50 on NHWC images -> logits; `Trainer.init_state` draws its init with
  the classic threefry stream (`fast_rng_compile`): minutes less compilation on CPU."""
  fast_rng_compile = True  # a class constant, not a field

  arch: str = 'resnet18'
  num_classes: int = 10
  width: float = 1.0              # channel multiplier (64 * width in the first stage)
  mode: str = 'masked'            # masked | dense
  keep_fraction: float = 0.5
  weight_init: str = 'signed_constant'
  bn_affine: bool = False
  stem: str = 'auto'
  fc_bias: bool = False           # dense mode: a bias in the classifier (torchvision's)
  conv_impl: str = 'matmul'       # dense mode: matmul | xla (see the module docstring)
  stage_sizes: tuple = ()         # blocks per stage; () = the arch's

  @nn.compact
  def __call__(self, x, train=False):
    if self.arch not in BLOCKS:
      raise ValueError(f'arch={self.arch!r}: allowed: {", ".join(BLOCKS)}')
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f'conv_impl={self.conv_impl!r}: allowed: {", ".join(CONV_IMPLS)}')
    if self.fc_bias and self.mode != 'dense':
      raise ValueError('fc_bias=True needs mode=dense')
    c = LayerConfig(self.mode, self.keep_fraction, self.weight_init, self.bn_affine,
                    self.conv_impl)
    kind, blocks = BLOCKS[self.arch]
    blocks = tuple(self.stage_sizes) or blocks
    base = max(int(64 * self.width), 1)
    stem = self.stem if self.stem != 'auto' else ('cifar' if x.shape[1] < 64 else 'imagenet')
    if stem == 'cifar':
      x = nn.relu(norm(c, conv(c, base, 3, 1, 'conv_stem')(x), train, 'bn_stem'))
    else:
      x = nn.relu(norm(c, conv(c, base, 7, 2, 'conv_stem')(x), train, 'bn_stem'))
      x = max_pool_3x3_s2(x)
    for stage, n in enumerate(blocks):
      for b in range(n):
        stride = 2 if (stage > 0 and b == 0) else 1
        x = Block(c, kind, base * 2 ** stage, stride, name=f'stage{stage + 1}_block{b}')(
            x, train)
    x = jnp.mean(x, axis=(1, 2))
    if self.fc_bias:
      return nn.Dense(self.num_classes, kernel_init=kaiming_normal, name='fc')(x)
    return dense_layer(self.mode, self.num_classes, self.keep_fraction, self.weight_init,
                       'fc')(x)


def check(arch, mode, keep_fraction, weight_init, stem='auto'):
  """Raises a config error naming the field."""
  if arch not in ARCHS:
    raise supermask.SupermaskConfigError(f'model.arch={arch!r}: allowed: conv, '
                                         f'{", ".join(ARCHS)}')
  supermask.check_masking(mode, keep_fraction, weight_init)
  if stem not in STEMS:
    raise supermask.SupermaskConfigError(f'model.stem={stem!r}: allowed: {", ".join(STEMS)}')
