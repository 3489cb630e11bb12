"""One registry of models by name: `build(name, num_classes, input_shape, **kwargs)`."""

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


class ModelError(ValueError):
  """Unknown model name or an input shape the model cannot take."""


def build(name, num_classes, input_shape, **kwargs):
  """Returns the Flax module `name`, after checking it can take `input_shape` (HWC)."""
  if name not in REGISTRY:
    raise ModelError(f'model.name={name!r}: unknown; allowed: {", ".join(REGISTRY)}')
  ctor, shape_ok, allowed = REGISTRY[name]
  if not shape_ok(tuple(input_shape), **kwargs):
    raise ModelError(f'model.name={name!r} cannot take data of shape '
                     f'{tuple(input_shape)}; it takes {allowed}')
  return ctor(num_classes=num_classes, **kwargs)
