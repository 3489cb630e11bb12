"""VGG-11/13/16/19, with or without batch norm, in torchvision's layout (NHWC here).

features: 3x3 convs (padding 1, with bias) [+ batch norm] + ReLU, 2x2 max-pools ('M');
avgpool: adaptive average pool to 7x7; classifier: Linear(512*7*7, 4096), ReLU, Dropout,
Linear(4096, 4096), ReLU, Dropout, Linear(4096, classes). Submodules are named after
torchvision's Sequential indices (`features_0`, `features_1`, ..., `classifier_6`), so
'features.10.weight' of a state dict is `features_10/kernel` here. Before the classifier
the 7x7 map is flattened in torch's (C, H, W) order: a converted first Linear weight needs
only the plain (out, in) -> (in, out) transpose.

Init follows torchvision: kaiming-normal (fan-out) convs, N(0, 0.01) linear layers, zero
biases. Dropout is on in train mode only (`rngs={'dropout': key}` then).
"""

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from awesome_jax.models.small import max_pool_2x2

# torchvision's configurations A, B, D, E: conv widths, 'M' = 2x2 max-pool
CFGS = {
    'vgg11': (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg13': (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512, 'M'),
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M'),
}

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
linear_init = nn.initializers.normal(0.01)


def _pool_axis(x, axis, out):
  """Adaptive average pooling of one axis to `out` cells, torch's windows."""
  size = x.shape[axis]
  if size == 0:
    raise ValueError('adaptive pooling of an empty feature map: the input is too small')
  if size == out:
    return x
  if size % out == 0:
    shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1:]
    return x.reshape(shape).mean(axis=axis + 1)
  cells = []
  for i in range(out):
    start, stop = (i * size) // out, -(-((i + 1) * size) // out)
    cells.append(lax.slice_in_dim(x, start, stop, axis=axis).mean(axis=axis, keepdims=True))
  return jnp.concatenate(cells, axis=axis)


def adaptive_avg_pool(x, size):
  """torch's AdaptiveAvgPool2d on NHWC: (N, H, W, C) -> (N, size[0], size[1], C).

  Output cell i of an axis of length L averages inputs floor(i L / s) .. ceil((i+1) L / s)
  - 1 (windows overlap or repeat when s does not divide L; the identity when L == s)."""
  return _pool_axis(_pool_axis(x, 1, size[0]), 2, size[1])


def flatten_chw(x):
  """(N, H, W, C) -> (N, C*H*W) in torch's (C, H, W) order."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def vgg_classifier(x, hidden, num_classes, dropout, train):
  """torchvision's VGG head after the flatten: Linear, ReLU, Dropout, Linear, ReLU,
  Dropout, Linear (classifier_0, _3, _6)."""
  for i in (0, 3):
    x = nn.relu(nn.Dense(hidden, kernel_init=linear_init, name=f'classifier_{i}')(x))
    x = nn.Dropout(dropout, deterministic=not train)(x)
  return nn.Dense(num_classes, kernel_init=linear_init, name='classifier_6')(x)


class VGG(nn.Module):
  """VGG on NHWC images (224x224 for ImageNet; any size >= 2**pools) -> logits."""
  arch: str = 'vgg16'             # a key of CFGS
  num_classes: int = 1000
  batch_norm: bool = False        # True: vgg16_bn etc. (eps 1e-5, torch momentum 0.1)
  width: float = 1.0              # multiplier on the conv widths
  hidden: int = 4096              # classifier width
  layers: tuple = ()              # overrides CFGS[arch] (tiny variants), e.g. (8, 'M', 16, 'M')
  pool_size: int = 7              # the adaptive pool's output side
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train=False):
    if not self.layers and self.arch not in CFGS:
      raise ValueError(f'arch={self.arch!r}: allowed: {", ".join(CFGS)}')
    i = 0
    for v in tuple(self.layers) or CFGS[self.arch]:
      if v == 'M':
        x, i = max_pool_2x2(x), i + 1
        continue
      x = nn.Conv(max(int(v * self.width), 1), (3, 3), padding=((1, 1), (1, 1)),
                  kernel_init=conv_init, name=f'features_{i}')(x)
      i += 1
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         name=f'features_{i}')(x)
        i += 1
      x, i = nn.relu(x), i + 1
    x = flatten_chw(adaptive_avg_pool(x, (self.pool_size, self.pool_size)))
    return vgg_classifier(x, self.hidden, self.num_classes, self.dropout, train)
