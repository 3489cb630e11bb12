"""Conv2/4/6/8: the VGG-like CIFAR-10 nets of the edge-popup paper, masked or dense.

conv widths 64,64 | 128,128 | 256,256 | 512,512 (first depth/2 pairs, each pair then a
2x2 max-pool), then 256 -> 256 -> classes; 3x3 convs, no biases, ReLU. As in the authors'
code there is no normalisation by default; `norm='batchnorm'` adds non-affine batch norm.

mode='masked': frozen random weights ('frozen' collection) with learned scores (edge-popup).
mode='dense':  the same architecture with ordinary kaiming-normal weights (the baseline).
Layer names (conv_i, fc_i) are the same in both modes, so a found subnetwork exported by
`supermask.export_dense` loads into the dense model.
"""

import flax.linen as nn
import jax.numpy as jnp

from awesome_jax import supermask
from awesome_jax.models.small import MatmulConv
from awesome_jax.models.small import max_pool_2x2

WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)
kaiming_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def conv_layer(mode, features, kernel, keep_fraction, weight_init, stride=1, name=None):
  """A bias-free kxk 'same' conv: edge-popup's MaskedConv (mode 'masked') or a trained
  MatmulConv with kaiming-normal weights (mode 'dense'). Conv-N and the ResNets use it."""
  if mode == 'masked':
    return supermask.MaskedConv(features, (kernel, kernel), keep_fraction, weight_init,
                                stride=stride, name=name)
  return MatmulConv(features, (kernel, kernel), padding=kernel // 2, use_bias=False,
                    kernel_init=kaiming_normal, stride=stride, chunk_on_cpu=True, name=name)


def dense_layer(mode, features, keep_fraction, weight_init, name=None):
  """A bias-free linear layer: MaskedDense (mode 'masked') or a trained nn.Dense."""
  if mode == 'masked':
    return supermask.MaskedDense(features, keep_fraction, weight_init, name=name)
  return nn.Dense(features, use_bias=False, kernel_init=kaiming_normal, name=name)


class ConvN(nn.Module):
  depth: int = 4                  # 2, 4, 6 or 8 conv layers
  num_classes: int = 10
  width: float = 1.0              # channel multiplier
  mode: str = 'masked'            # masked | dense
  keep_fraction: float = 0.5      # masked: fraction of weights kept per layer
  weight_init: str = 'signed_constant'  # masked: kaiming_normal | signed_constant | scaled_signed_constant
  norm: str = 'none'              # none | batchnorm (non-affine)

  def _conv(self, features, name):
    return conv_layer(self.mode, features, 3, self.keep_fraction, self.weight_init,
                      name=name)

  def _dense(self, features, name):
    return dense_layer(self.mode, features, self.keep_fraction, self.weight_init, name)

  def _norm(self, x, train, name):
    if self.norm == 'batchnorm':
      return nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                          momentum=0.9, name=name)(x)
    return x

  @nn.compact
  def __call__(self, x, train=False):
    for i in range(self.depth):
      x = self._conv(int(WIDTHS[i] * self.width), f'conv_{i}')(x)
      x = nn.relu(self._norm(x, train, f'bn_conv_{i}'))
      if i % 2 == 1:
        x = max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for j, features in enumerate((int(256 * self.width), int(256 * self.width))):
      x = nn.relu(self._norm(self._dense(features, f'fc_{j}')(x), train, f'bn_fc_{j}'))
    return self._dense(self.num_classes, 'fc_2')(x)


def check(depth, mode, keep_fraction, weight_init, norm):
  """Raises a config error naming the field."""
  if depth not in (2, 4, 6, 8):
    raise supermask.SupermaskConfigError(f'model.depth={depth!r}: allowed: 2, 4, 6, 8')
  supermask.check_masking(mode, keep_fraction, weight_init)
  if norm not in ('none', 'batchnorm'):
    raise supermask.SupermaskConfigError(f'model.norm={norm!r}: allowed: none, batchnorm')
