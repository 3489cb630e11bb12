"""ImageNet models for the shape-bias studies, by name, with the weights' preprocessing.

`load(name, weights)` -> (Flax module, variables, Preprocessing): the module at
ImageNet shapes (224x224 by default), its variables converted from a weight file of a
public format (no torch at run time), and the preprocessing that travels with that
format (resize, centre crop, mean/std). `ZOO[name]` says how. `jit(fn)`: `fn` (a forward
pass) jitted with the XLA options the zoo is evaluated with (`compiler_options`).

A weight file's format decides the preprocessing (`PREPROCESSING`), a config may override
it; results.json and the plots name the one used.
"""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """uint8 images -> what the net takes: resize the short side to `resize`, centre crop
  `crop`, then (pixels / 255 - mean) / std per channel (mean, std on the 0-1 scale)."""
  name: str
  resize: int
  crop: int
  mean: tuple
  std: tuple
  interpolation: str = 'bilinear'


PREPROCESSING = {
    # torchvision's ImageNet models (and timm's ResNets): ImageNet mean / std
    'torchvision': Preprocessing('torchvision', 256, 224, (0.485, 0.456, 0.406),
                                 (0.229, 0.224, 0.225)),
    # the original JAX ViT / AugReg checkpoints: [-1, 1]
    'augreg': Preprocessing('augreg', 224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # EfficientNet-Lite (TF Lite originals): (x - 127) / 128 on 0-255
    'efficientnet_lite': Preprocessing('efficientnet_lite', 224, 224,
                                       (127 / 255,) * 3, (128 / 255,) * 3),
}


@dataclasses.dataclass(frozen=True)
class ZooEntry:
  """build(**kwargs) -> nn.Module; convert(path) -> variables (a weight file of `formats`);
  preprocessing: the default key of PREPROCESSING per weight format."""
  family: str                      # resnet | vgg | alexnet | vit | efficientnet_lite
  build: Callable
  convert: Callable
  formats: tuple                   # e.g. ('torchvision',) or ('timm', 'augreg_npz')
  preprocessing: dict              # weight format -> PREPROCESSING key


# name -> ZooEntry; filled below by each family's module
ZOO = {}


def _lite0_build(**kwargs):
  from awesome_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  return efficientnet_lite.EfficientNetLite(**kwargs)


def _lite0_convert(path):
  from awesome_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  return efficientnet_lite.load_lite0(path or None)[1]


ZOO['efficientnet_lite0'] = ZooEntry(
    family='efficientnet_lite', build=_lite0_build, convert=_lite0_convert,
    formats=('efficientnet_lite',), preprocessing={'efficientnet_lite': 'efficientnet_lite'})

# the families defined in their own modules (imported on first use: jax/flax only there)
FAMILY_MODULES = ('awesome_jax.models.torchvision_cnn', 'awesome_jax.models.vit_convert')


def entries():
  """{name: ZooEntry} of every zoo model."""
  import importlib  # pylint: disable=g-import-not-at-top
  out = dict(ZOO)
  for module in FAMILY_MODULES:
    out.update(importlib.import_module(module).ZOO_ENTRIES)
  return out


def weight_format(entry, weights):
  """The format of a weight file for `entry`: a ViT's is read from the file's contents
  (timm or augreg_npz); otherwise '.npz' -> an npz format of the entry, else its torch
  format (the first one not ending in _npz). 'random' and '' count as the torch format."""
  if entry.family == 'vit' and weights not in ('', 'random'):
    from awesome_jax.models import vit_convert  # pylint: disable=g-import-not-at-top
    return vit_convert.weight_format(weights)
  npz = [f for f in entry.formats if f.endswith('_npz')]
  torch_formats = [f for f in entry.formats if not f.endswith('_npz')]
  if str(weights).endswith('.npz') and npz:
    return npz[0]
  return torch_formats[0] if torch_formats else entry.formats[0]


def preprocessing_for(entry, weights, override=''):
  """The Preprocessing of `weights` for `entry` (or the PREPROCESSING key `override`)."""
  if override:
    if override not in PREPROCESSING:
      from awesome_jax.models import ModelError  # pylint: disable=g-import-not-at-top
      raise ModelError(f'model.preprocessing={override!r}: unknown; allowed: '
                       f'{", ".join(PREPROCESSING)} (or \'\' = the weights\' own)')
    return PREPROCESSING[override]
  return PREPROCESSING[entry.preprocessing[weight_format(entry, weights)]]


def check_name(name):
  from awesome_jax.models import ModelError  # pylint: disable=g-import-not-at-top
  known = entries()
  if name not in known:
    raise ModelError(f'model.name={name!r}: unknown; allowed: {", ".join(known)}')
  return known[name]


def load(name, weights, preprocessing='', **kwargs):
  """(module, variables, Preprocessing) of zoo model `name` with the weight file
  `weights` ('random': a seeded random init, for tests and speed runs; '' is the
  packaged file where the family has one, e.g. EfficientNet-Lite0)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  entry = check_name(name)
  if entry.family == 'vit':  # the GELU follows the weights' source (exact: timm, tanh: JAX)
    kwargs.setdefault('weight_format', weight_format(entry, weights))
  model = entry.build(**kwargs)
  spec = preprocessing_for(entry, weights, preprocessing)
  if weights == 'random':
    variables = model.init(jax.random.key(0), jnp.zeros((1, spec.crop, spec.crop, 3)))
  else:
    variables = entry.convert(weights)
  return model, variables, spec


def compiler_options():
  """XLA options for a zoo model's jitted forward pass: on CPU `xla_options.NO_YNN` where this XLA
  knows the option, else None (and None off CPU).

  jaxlib 0.10.2's XLA:CPU hands float32 dots and convolutions to YNNPACK by default; its
  own Eigen kernels were faster for every zoo model timed (2-core Intel Xeon CPU @
  2.80GHz, shared with other runs, 2026-12-01; batch 64, 224x224, forward only, process
  CPU time, interleaved in one process): ViT-B/16 1.46x -> 1.04-1.14x timm's CPU time,
  ResNet-50 10.5 -> 6.9 s, EfficientNet-Lite0 2.60 -> 1.54 s. The results are the same up
  to float32 rounding (parity: scripts/check_zoo_torchvision.py, check_zoo_timm.py).
  """
  from awesome_jax import xla_options  # pylint: disable=g-import-not-at-top
  return xla_options.no_ynn()


def jit(fn, **kwargs):
  """jax.jit(fn, **kwargs) with the zoo's `compiler_options()`."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def preprocess(images, spec):
  """uint8 (or 0-255 float) NHWC images -> the net's input: the short side resized to
  spec.resize (antialiased), centre crop spec.crop x spec.crop, (x / 255 - mean) / std.

  Square images already at the crop size go in as they are (no resize, no crop): the
  224x224 cue-conflict stimuli are shown whole, as in the model-vs-human protocol."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(images, jnp.float32)
  n, h, w, c = x.shape
  if not h == w == spec.crop and min(h, w) != spec.resize:
    scale = spec.resize / min(h, w)
    size = (max(spec.resize, round(h * scale)), max(spec.resize, round(w * scale)))
    x = jax.image.resize(x, (n,) + size + (c,), method=spec.interpolation, antialias=True)
  h, w = x.shape[1:3]
  top, left = (h - spec.crop) // 2, (w - spec.crop) // 2
  x = x[:, top:top + spec.crop, left:left + spec.crop]
  mean = jnp.asarray(spec.mean, jnp.float32) * 255
  std = jnp.asarray(spec.std, jnp.float32) * 255
  return (x - mean) / std


def describe(spec):
  """One line for titles and results: 'torchvision: resize 256, crop 224, mean ..., std ...'."""
  fmt = lambda v: '(' + ', '.join(f'{a:.3g}' for a in v) + ')'
  return (f'{spec.name}: resize {spec.resize}, crop {spec.crop}, mean {fmt(spec.mean)}, '
          f'std {fmt(spec.std)}')
