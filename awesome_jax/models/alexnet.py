"""torchvision's AlexNet (the "one weird trick" variant, 64-192-384-256-256), NHWC here.

features: conv 11x11 stride 4 pad 2 (64), ReLU, max-pool 3 stride 2, conv 5x5 pad 2 (192),
ReLU, max-pool, conv 3x3 pad 1 (384), ReLU, conv 3x3 (256), ReLU, conv 3x3 (256), ReLU,
max-pool (no padding, floor: 224 -> 55 -> 27 -> 13 -> 6); avgpool: adaptive to 6x6;
classifier: Dropout, Linear(256*6*6, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU,
Linear(4096, classes). Names follow torchvision's indices (`features_0`, ..., `classifier_6`)
and the flatten is in torch's (C, H, W) order, as in `models.vgg`.

Init: torch's default for conv and linear weights (uniform, bound 1/sqrt(fan_in)); zero
biases (torch draws those uniformly too). Inputs of at least 63x63 pixels.
"""

import flax.linen as nn

from awesome_jax.models.vgg import adaptive_avg_pool, flatten_chw

# (features index, width, kernel, stride, padding, max-pool after the ReLU)
CONVS = ((0, 64, 11, 4, 2, True), (3, 192, 5, 1, 2, True), (6, 384, 3, 1, 1, False),
         (8, 256, 3, 1, 1, False), (10, 256, 3, 1, 1, True))
torch_default_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


class AlexNet(nn.Module):
  """AlexNet on NHWC images (224x224 for ImageNet) -> logits."""
  num_classes: int = 1000
  width: float = 1.0              # multiplier on the conv widths
  hidden: int = 4096              # classifier width
  pool_size: int = 6              # the adaptive pool's output side
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train=False):
    for index, features, kernel, stride, pad, pool in CONVS:
      x = nn.Conv(max(int(features * self.width), 1), (kernel, kernel), strides=stride,
                  padding=((pad, pad), (pad, pad)), kernel_init=torch_default_init,
                  name=f'features_{index}')(x)
      x = nn.relu(x)
      if pool:
        x = nn.max_pool(x, (3, 3), (2, 2), 'VALID')
    x = flatten_chw(adaptive_avg_pool(x, (self.pool_size, self.pool_size)))
    for i in (1, 4):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.hidden, kernel_init=torch_default_init,
                           name=f'classifier_{i}')(x))
    return nn.Dense(self.num_classes, kernel_init=torch_default_init,
                    name='classifier_6')(x)
