"""torchvision's ImageNet CNNs for the zoo, and their weights from torchvision state dicts.

`build(name, **kwargs)`: ResNet-18/34/50 (`models.resnet` in its dense torchvision form),
VGG-16 / VGG-16-BN (`models.vgg`), AlexNet (`models.alexnet`); kwargs override the
defaults (num_classes=1000; width, stage_sizes / layers, hidden ... for tiny variants).
`convert(name, path_or_state_dict, **kwargs)`: Flax variables {'params', 'batch_stats'}
for `build(name, **kwargs)` from a torchvision state dict, a `.pth` file of either torch
format read without torch (`pretrained.read_torch_state_dict`). Conv weights OIHW -> HWIO,
linear weights (out, in) -> (in, out), batch norm weight / bias -> scale / bias and
running_mean / running_var -> batch_stats mean / var; `num_batches_tracked` is ignored.
The models flatten in torch's (C, H, W) order, so no weight needs more than a transpose.
A state dict that does not fit the model raises one `CheckpointFormatError` line: the
first key that does not fit, expected vs found shape, and the missing / unexpected counts.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from awesome_jax import pretrained
from awesome_jax.models import alexnet, resnet, vgg
from awesome_jax.models.zoo import ZooEntry

# name -> (family, default build kwargs)
ARCHS = {
    'resnet18': ('resnet', {'arch': 'resnet18'}),
    'resnet34': ('resnet', {'arch': 'resnet34'}),
    'resnet50': ('resnet', {'arch': 'resnet50'}),
    'vgg16': ('vgg', {'arch': 'vgg16', 'batch_norm': False}),
    'vgg16_bn': ('vgg', {'arch': 'vgg16', 'batch_norm': True}),
    'alexnet': ('alexnet', {}),
}
# the torchvision form of models.resnet.ResNet
RESNET_TORCHVISION = {'mode': 'dense', 'bn_affine': True, 'fc_bias': True,
                      'stem': 'imagenet', 'conv_impl': 'xla'}
# (collection, Flax leaf) -> torch parameter / buffer name
LEAVES = {('params', 'kernel'): 'weight', ('params', 'bias'): 'bias',
          ('params', 'scale'): 'weight', ('batch_stats', 'mean'): 'running_mean',
          ('batch_stats', 'var'): 'running_var'}
# the input the converter traces a model with (shapes only; any size the nets take)
_TRACE_SHAPE = (1, 224, 224, 3)


def build(name, **kwargs):
  """The Flax module `name` (a key of ARCHS) in torchvision's form; kwargs override."""
  if name not in ARCHS:
    raise ValueError(f'model {name!r}: unknown; allowed: {", ".join(ARCHS)}')
  family, defaults = ARCHS[name]
  kwargs = {'num_classes': 1000, **defaults, **kwargs}
  if family == 'resnet':
    return resnet.ResNet(**{**RESNET_TORCHVISION, **kwargs})
  if family == 'vgg':
    return vgg.VGG(**kwargs)
  return alexnet.AlexNet(**kwargs)


def _torch_module_name(family, name):
  """One Flax submodule name -> its torch path."""
  if family != 'resnet':
    return name.replace('_', '.')                   # features_10 -> features.10
  block = re.fullmatch(r'stage(\d+)_block(\d+)', name)
  if block:
    return f'layer{block.group(1)}.{block.group(2)}'
  return {'conv_stem': 'conv1', 'bn_stem': 'bn1', 'shortcut': 'downsample.0',
          'bn_shortcut': 'downsample.1'}.get(name, name)


def torch_layout(name, **kwargs):
  """{torch key: (Flax path, torch shape)} for `build(name, **kwargs)`, in torch's
  state-dict order (module by module; weight, bias, running_mean, running_var); no compute."""
  model = build(name, **kwargs)
  family = ARCHS[name][0]
  leaves = []

  def init():
    variables = model.init(jax.random.key(0), jnp.zeros(_TRACE_SHAPE))
    leaves.extend(traverse_util.flatten_dict(variables).items())  # creation order
    return variables

  jax.eval_shape(init)
  module_rank = {}
  for path, _ in leaves:
    module_rank.setdefault(path[1:-1], len(module_rank))
  layout = {}
  for path, leaf in sorted(leaves, key=lambda item: module_rank[item[0][1:-1]]):
    collection, modules, leaf_name = path[0], path[1:-1], path[-1]
    key = '.'.join([_torch_module_name(family, m) for m in modules]
                   + [LEAVES[(collection, leaf_name)]])
    shape = tuple(leaf.shape)
    if leaf_name == 'kernel' and len(shape) == 4:
      shape = (shape[3], shape[2], shape[0], shape[1])    # HWIO -> OIHW
    elif leaf_name == 'kernel':
      shape = shape[::-1]                                  # (in, out) -> (out, in)
    layout[key] = (path, shape)
  return layout


def _fit_error(where, name, layout, state):
  """One line: the first key that does not fit, and the counts; None when all fit."""
  missing = [k for k in layout if k not in state]
  unexpected = [k for k in state if k not in layout]
  reshaped = [k for k in state if k in layout and tuple(state[k].shape) != layout[k][1]]
  if not (missing or unexpected or reshaped):
    return None
  misfits = set(unexpected) | set(reshaped)
  first = next((k for k in state if k in misfits), None) or missing[0]
  if first in reshaped:
    what = f'expected shape {layout[first][1]}, found {tuple(state[first].shape)}'
  elif first in unexpected:
    what = f'not in the model (found shape {tuple(state[first].shape)})'
  else:
    what = f'missing (expected shape {layout[first][1]})'
  counts = [f'{len(missing)} missing' + (f' (first {missing[0]!r})' if missing else ''),
            f'{len(unexpected)} unexpected'
            + (f' (first {unexpected[0]!r})' if unexpected else ''),
            f'{len(reshaped)} of another shape']
  return (f'{where}: state dict does not fit {name}: {first!r} {what}; '
          f'keys: {", ".join(counts)}')


def convert(name, path_or_state_dict, **kwargs):
  """Flax variables {'params': ..., 'batch_stats': ...} for `build(name, **kwargs)` from a
  torchvision state dict: a `.pth` path or {key: array}. Raises a one-line
  `pretrained.CheckpointFormatError` where keys or shapes do not fit."""
  if isinstance(path_or_state_dict, dict):
    where, state = f'{name} state dict', dict(path_or_state_dict)
  else:
    where = str(path_or_state_dict)
    state = pretrained.read_torch_state_dict(path_or_state_dict)
  state = {k: np.asarray(v) for k, v in state.items()
           if not k.endswith('num_batches_tracked')}
  layout = torch_layout(name, **kwargs)
  error = _fit_error(where, name, layout, state)
  if error:
    raise pretrained.CheckpointFormatError(error)
  variables = {}
  for key, (path, _) in layout.items():
    value = state[key]
    if not np.issubdtype(value.dtype, np.floating):
      raise pretrained.CheckpointFormatError(
          f'{where}: {key!r} holds {value.dtype} values, expected floats')
    value = value.astype(np.float32, copy=False)
    if path[-1] == 'kernel':
      value = (pretrained.conv_weight if value.ndim == 4 else pretrained.dense_weight)(value)
    node = variables
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = jnp.asarray(np.ascontiguousarray(value))
  return variables


ZOO_ENTRIES = {
    name: ZooEntry(family=family, build=functools.partial(build, name),
                   convert=functools.partial(convert, name), formats=('torchvision',),
                   preprocessing={'torchvision': 'torchvision'})
    for name, (family, _) in ARCHS.items()
}
