"""One registry of models by name: `build(name, num_classes, input_shape, **kwargs)`."""

import jax
import jax.numpy as jnp

from awesome_jax.models.small import AlexCifarNet, ConvNet, LeNet, MLP  # noqa: F401


def _any(shape):
  return True


def _conv_net_ok(shape, depth=3, **_):
  return shape[0] % (2 ** depth) == 0 and shape[1] % (2 ** depth) == 0


# name -> (constructor, input-shape check, human description of allowed shapes)
REGISTRY = {
    'lenet': (LeNet, lambda s, **_: s in ((28, 28, 1), (32, 32, 1), (32, 32, 3)),
              '28x28x1 (MNIST) or 32x32xC'),
    'alexcifarnet': (AlexCifarNet, lambda s, **_: s[:2] == (32, 32), '32x32xC (CIFAR-10)'),
    'convnet': (ConvNet, _conv_net_ok, 'HxWxC with H, W divisible by 2**depth'),
    'mlp': (MLP, lambda s, **_: True, 'any'),
}


# the smallest input side of each zoo family: below it the feature map collapses to 0x0
ZOO_MIN_SIZE = {'alexnet': 63, 'vgg': 32, 'resnet': 32, 'efficientnet_lite': 32}


class ModelError(ValueError):
  """Unknown model name or an input shape the model cannot take."""


def build(name, num_classes, input_shape, **kwargs):
  """Returns the Flax module `name`, after checking it can take `input_shape` (HWC).

  The small nets above, or an ImageNet model of the zoo (`models/zoo.py`: ResNet, VGG,
  AlexNet, ViT, EfficientNet-Lite0; RGB inputs, a ViT built for the input's size).
  """
  if name not in REGISTRY:
    from awesome_jax.models import zoo  # pylint: disable=g-import-not-at-top
    entries = zoo.entries()
    if name in entries:
      smallest = ZOO_MIN_SIZE.get(entries[name].family, 1)
      if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < smallest:
        raise ModelError(f'model.name={name!r} cannot take data of shape '
                         f'{tuple(input_shape)}; it takes HxWx3 (RGB), H and W >= {smallest}')
      if entries[name].family == 'vit':
        kwargs.setdefault('image_size', input_shape[0])
      return entries[name].build(num_classes=num_classes, **kwargs)
    raise ModelError(f'model.name={name!r}: unknown; allowed: '
                     f'{", ".join(list(REGISTRY) + list(entries))}')
  ctor, shape_ok, allowed = REGISTRY[name]
  if not shape_ok(tuple(input_shape), **kwargs):
    raise ModelError(f'model.name={name!r} cannot take data of shape '
                     f'{tuple(input_shape)}; it takes {allowed}')
  return ctor(num_classes=num_classes, **kwargs)


def inference_twin(model, input_shape):
  """A module computing the same function as `model` on the same params, faster forward.

  The matmul-conv models (`conv_impl='matmul'`, fast to differentiate twice on XLA:CPU)
  run their plain forward ~2x slower than `nn.Conv`; where the `conv_impl='xla'` twin has
  the same param tree (AlexCifarNet), evaluation uses it. Otherwise `model` itself.
  """
  if getattr(model, 'conv_impl', None) != 'matmul':
    return model
  twin = model.clone(conv_impl='xla')
  dummy = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  shapes = lambda m: jax.eval_shape(lambda: m.init(jax.random.key(0), dummy))
  try:
    same = shapes(twin) == shapes(model)
  except Exception:  # pylint: disable=broad-except  (a twin that cannot take these params)
    same = False
  return twin if same else model
