"""AdaIN style transfer (Huang & Belongie 2017): encoder, decoder, AdaIN, converter, loss.

Layout of naoto0804/pytorch-AdaIN's `net.py`, NHWC here, images float32 in [0, 1]:
* encoder: the "normalised" VGG-19 up to relu4_1: a 1x1 3->3 conv (in the public file it
  holds the Caffe VGG's input preprocessing), then 3x3 convs, each after a
  reflection padding of 1, with ReLU; 2x2 max-pools with ceil_mode. Submodules are named
  after the torch Sequential's indices: '9.weight' of `vgg_normalised.pth` is
  `conv_9/kernel` here. The file holds all of VGG-19 (indices 0..52); the encoder uses
  indices 0..30 (convs 0, 2, 5, 9, 12, 16, 19, 22, 25, 29; relu1_1 = index 3,
  relu2_1 = 10, relu3_1 = 17, relu4_1 = 30), as the original's `children()[:31]`.
* decoder: the mirror image, reflection padding + 3x3 conv + ReLU, nearest x2
  upsampling; convs at indices 1, 5, 8, 11, 14, 18, 21, 25, 28 of `decoder.pth`; no
  activation after the last conv (outputs are not clipped).
* AdaIN: per example and channel, (x - mean_c) / std_c * std_s + mean_s, std from the
  unbiased variance (torch `var`) + eps 1e-5. Features need at least 2 pixels (an input
  of at least 9x9 pixels): one pixel has no unbiased variance (NaN, as torch).

`widths` (64, 128, 256, 512) are VGG's; smaller ones give tiny models for tests and for
training a decoder quickly. The decoder mirrors the encoder's widths.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from awesome_jax.models import efficientnet_lite
from awesome_jax.pretrained import conv_weight, read_torch_state_dict

VGG_WIDTHS = (64, 128, 256, 512)
FEATURES = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1')

# (torch index of the conv, width index of its output or 'rgb'); 'M' = max-pool, then the
# name of a feature read after that conv's ReLU
_ENCODER = ((0, 'rgb'), (2, 0), 'relu1_1', (5, 0), 'M', (9, 1), 'relu2_1', (12, 1), 'M',
            (16, 2), 'relu3_1', (19, 2), (22, 2), (25, 2), 'M', (29, 3), 'relu4_1')
# 'U' = nearest x2 upsampling; the last conv has no ReLU
_DECODER = ((1, 2), 'U', (5, 2), (8, 2), (11, 2), (14, 1), 'U', (18, 1), (21, 0), 'U',
            (25, 0), (28, 'rgb'))
ENCODER_INDICES = tuple(s[0] for s in _ENCODER if isinstance(s, tuple))
DECODER_INDICES = tuple(s[0] for s in _DECODER if isinstance(s, tuple))


def _reflect_pad(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')


def _max_pool_ceil(x):
  """2x2 max-pool, stride 2, torch's ceil_mode: an odd edge keeps its last row/column."""
  h, w = x.shape[1], x.shape[2]
  x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _upsample(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _conv(index, width, kernel=3):
  return nn.Conv(width, (kernel, kernel), padding='VALID', name=f'conv_{index}')


class Encoder(nn.Module):
  """Normalised VGG-19 to relu4_1: (N, H, W, 3) in [0, 1] -> {relu1_1..relu4_1}."""
  widths: tuple = VGG_WIDTHS

  @nn.compact
  def __call__(self, x):
    feats = {}
    for step in _ENCODER:
      if step == 'M':
        x = _max_pool_ceil(x)
      elif isinstance(step, str):
        feats[step] = x
      elif step[0] == 0:
        x = _conv(0, 3, kernel=1)(x)   # no padding, no ReLU
      else:
        x = nn.relu(_conv(step[0], self.widths[step[1]])(_reflect_pad(x)))
    return feats


class Decoder(nn.Module):
  """relu4_1 features (N, h, w, widths[3]) -> image (N, 8h, 8w, 3), not clipped."""
  widths: tuple = VGG_WIDTHS

  @nn.compact
  def __call__(self, x):
    for step in _DECODER:
      if step == 'U':
        x = _upsample(x)
      elif step[1] == 'rgb':
        x = _conv(step[0], 3)(_reflect_pad(x))
      else:
        x = nn.relu(_conv(step[0], self.widths[step[1]])(_reflect_pad(x)))
    return x


def mean_std(feat, eps=1e-5):
  """Per example and channel mean and std over H, W of (N, H, W, C); unbiased variance."""
  mean = jnp.mean(feat, axis=(1, 2), keepdims=True)
  std = jnp.sqrt(jnp.var(feat, axis=(1, 2), ddof=1, keepdims=True) + eps)
  return mean, std


def adain(content_feat, style_feat, eps=1e-5):
  """Content features (N, H, W, C) with the channel means / stds of style_feat (N or 1,
  h, w, C): both statistics per example, std = sqrt(unbiased variance + eps)."""
  c_mean, c_std = mean_std(content_feat, eps)
  s_mean, s_std = mean_std(style_feat, eps)
  return (content_feat - c_mean) / c_std * s_std + s_mean


def widths_of(enc_vars):
  """The encoder widths a variable tree was made for."""
  p = enc_vars['params']
  return tuple(int(p[f'conv_{i}']['kernel'].shape[-1]) for i in (2, 9, 16, 29))


@functools.lru_cache(maxsize=None)
def param_shapes(widths=VGG_WIDTHS):
  """({conv name: (kernel shape, bias shape)} of the encoder, same of the decoder)."""
  x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  f = jax.ShapeDtypeStruct((1, 2, 2, widths[3]), jnp.float32)
  key = jax.random.PRNGKey(0)
  trees = (jax.eval_shape(Encoder(widths).init, key, x),
           jax.eval_shape(Decoder(widths).init, key, f))
  return tuple({k: (p['kernel'].shape, p['bias'].shape) for k, p in t['params'].items()}
               for t in trees)


def init(seed=0, widths=VGG_WIDTHS, gain=1.0):
  """(encoder variables, decoder variables) drawn in numpy as torch's default conv init:
  kernel and bias ~ U(+-1/sqrt(fan_in)); gain scales the kernels (sqrt(6): He-uniform,
  which keeps an untrained deep stack's activations from fading)."""
  rng = np.random.default_rng(seed)
  out = []
  for shapes in param_shapes(tuple(widths)):
    params = {}
    for name, (k_shape, b_shape) in shapes.items():
      bound = 1 / np.sqrt(np.prod(k_shape[:3]))
      params[name] = {
          'kernel': jnp.asarray(rng.uniform(-gain * bound, gain * bound, k_shape), jnp.float32),
          'bias': jnp.asarray(rng.uniform(-bound, bound, b_shape), jnp.float32)}
    out.append({'params': params})
  return tuple(out)


@jax.jit
def encode(enc_vars, x):
  """{relu1_1, relu2_1, relu3_1, relu4_1} of images (N, H, W, 3) in [0, 1]."""
  return Encoder(widths_of(enc_vars)).apply(enc_vars, x)


@jax.jit
def decode(dec_vars, feat):
  """Images (N, 8h, 8w, 3) of relu4_1 features (N, h, w, C)."""
  return Decoder(_decoder_widths(dec_vars)).apply(dec_vars, feat)


def _decoder_widths(dec_vars):
  p = dec_vars['params']
  w = tuple(int(p[f'conv_{i}']['kernel'].shape[-1]) for i in (25, 18, 1))
  return w + (int(p['conv_1']['kernel'].shape[-2]),)


def check_alpha(alpha):
  if not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}')


@jax.jit
def target_features(enc_vars, content, style, alpha):
  """alpha * AdaIN(relu4_1 of content, relu4_1 of style) + (1 - alpha) * relu4_1 of
  content: what the decoder turns into the stylized image."""
  c = encode(enc_vars, content)['relu4_1']
  s = encode(enc_vars, style)['relu4_1']
  return alpha * adain(c, s) + (1 - alpha) * c


@jax.jit
def _stylize(enc_vars, dec_vars, content, style, alpha):
  return decode(dec_vars, target_features(enc_vars, content, style, alpha))


def stylize(enc_vars, dec_vars, content, style, alpha=1.0):
  """Decoded AdaIN of content (N, H, W, 3) with style (N or 1, h, w, 3), both float32 in
  [0, 1]; alpha in [0, 1] blends stylized (1) and content (0) features. Output
  (N, H', W', 3), H' = 8 * ceil(H / 8); not clipped to [0, 1]. Jit-compiled."""
  content, style = _stylize_inputs(content, style, alpha)
  return _stylize(enc_vars, dec_vars, content, style, jnp.float32(alpha))


def _stylize_inputs(content, style, alpha):
  """(content, style) as float32 arrays, after checking alpha and the batch sizes."""
  check_alpha(alpha)
  content = jnp.asarray(content, jnp.float32)
  style = jnp.asarray(style, jnp.float32)
  if style.shape[0] not in (1, content.shape[0]):
    raise ValueError(f'style batch {style.shape[0]} must be 1 or the content batch '
                     f'{content.shape[0]}')
  return content, style


# --- converter ---------------------------------------------------------------------------

def _torch_order(item):
  index, kind = item[0].split('.')
  return int(index), kind != 'weight'   # as torch lists them: weight, then bias


def _torch_shapes(shapes):
  """{'<index>.weight' / '<index>.bias': torch shape} of {conv name: (kernel shape, _)}."""
  out = {}
  for name, (k_shape, _) in shapes.items():
    index = name.split('_')[1]
    kh, kw, i, o = k_shape
    out[f'{index}.weight'] = (o, i, kh, kw)
    out[f'{index}.bias'] = (o,)
  return dict(sorted(out.items(), key=_torch_order))


def _convert(state, template, path):
  """Flax variables of template's shapes (see param_shapes) from a Sequential state dict;
  one-line errors."""
  for key, shape in _torch_shapes(template).items():
    if key not in state:
      raise ValueError(f'{path}: missing key {key!r} (expected shape {shape})')
    got = tuple(state[key].shape)
    if got != shape:
      raise ValueError(f'{path}: key {key!r} has shape {got}, expected {shape}')
  params = {}
  for name in template:
    index = name.split('_')[1]
    params[name] = {'kernel': jnp.asarray(conv_weight(state[f'{index}.weight']), jnp.float32),
                    'bias': jnp.asarray(state[f'{index}.bias'], jnp.float32)}
  return {'params': params}


def encoder_from_torch(vgg_path, widths=VGG_WIDTHS):
  """Encoder variables from pytorch-AdaIN's `vgg_normalised.pth` alone (indices 0..30)."""
  return _convert(read_torch_state_dict(vgg_path), param_shapes(tuple(widths))[0], vgg_path)


def from_torch(vgg_path, decoder_path, widths=VGG_WIDTHS):
  """(encoder variables, decoder variables) from pytorch-AdaIN's `vgg_normalised.pth` and
  `decoder.pth` (nn.Sequential state dicts, legacy or zip format; read without torch).
  Only the encoder's indices 0..30 are read; a file that does not fit raises a one-line
  ValueError naming the first mismatching key and the shapes."""
  enc_t, dec_t = param_shapes(tuple(widths))
  enc_vars = _convert(read_torch_state_dict(vgg_path), enc_t, vgg_path)
  dec_vars = _convert(read_torch_state_dict(decoder_path), dec_t, decoder_path)
  return enc_vars, dec_vars


def to_torch_state(variables):
  """{'<index>.weight': OIHW array, '<index>.bias': ...} of a Flax variable tree."""
  state = {}
  for name, p in variables['params'].items():
    index = name.split('_')[1]
    state[f'{index}.weight'] = np.transpose(np.asarray(p['kernel']), (3, 2, 0, 1))
    state[f'{index}.bias'] = np.asarray(p['bias'])
  return dict(sorted(state.items(), key=_torch_order))


# --- any frozen encoder: AdainNet, EfficientNet-Lite0's early blocks, a mirrored decoder ---

@dataclasses.dataclass(frozen=True)
class AdainNet:
  """A frozen encoder and the decoder that inverts one of its layers (hashable: a static
  argument of the jitted functions below).

  encoder: images (N, H, W, 3) in [0, 1] -> {layer name: (N, h, w, C) features};
  decoder: `content_layer` features (N, H / stride, W / stride, C) -> images (N, H, W, 3);
  AdaIN acts on `content_layer`; the style loss compares the channel means and stds of
  `style_layers`.
  """
  name: str
  encoder: nn.Module
  decoder: nn.Module
  content_layer: str
  style_layers: tuple
  stride: int


def vgg_net(widths=VGG_WIDTHS):
  """The original: normalised VGG-19 to relu4_1, its mirror decoder; style on relu1_1..4_1."""
  return AdainNet('vgg', Encoder(tuple(widths)), Decoder(tuple(widths)), 'relu4_1', FEATURES,
                  8)


# Lite0 stages kept by the encoder: the stem + stages 1-3 (blocks 0..4), output stride 8
LITE0_CUT_STAGES = 3
LITE0_LAYERS = ('stem', 'block0', 'block2', 'block4')
LITE0_DECODER_WIDTHS = (128, 64, 32, 16)


class Lite0Encoder(nn.Module):
  """EfficientNet-Lite0's first stages, frozen: images (N, H, W, 3) in [0, 1] ->
  {'stem': ReLU6 of the stem (H/2, 32 channels), 'block0': end of stage 1 (H/2, 16),
  'block2': end of stage 2 (H/4, 24), 'block4': end of stage 3 (H/8, 40)} for
  `stages=3` (the stage outputs are the MBConv blocks' linear projections, batch norm
  with running statistics). Pixels normalised as the TF Lite originals,
  (255 x - 127) / 128. Module names as `efficientnet_lite.EfficientNetLite`, so
  `lite0_cut_variables` of its ImageNet variables fit."""
  stages: int = LITE0_CUT_STAGES

  @nn.compact
  def __call__(self, x):
    mean, std = efficientnet_lite.NORMALIZATION['inception']
    x = (x * 255.0 - jnp.asarray(mean)) / jnp.asarray(std)
    x = nn.Conv(32, (3, 3), strides=2, padding='SAME', use_bias=False, name='_conv_stem')(x)
    x = efficientnet_lite._relu6(efficientnet_lite._bn('_bn0')(x))  # pylint: disable=protected-access
    feats = {'stem': x}
    i = 0
    for repeats, kernel, stride, expand, fin, fout in efficientnet_lite.LITE0_STAGES[:self.stages]:
      for r in range(repeats):
        x = efficientnet_lite.MBConv(kernel, stride if r == 0 else 1, expand,
                                     fin if r == 0 else fout, fout, name=f'_blocks_{i}')(x)
        i += 1
      feats[f'block{i - 1}'] = x
    return feats


def lite0_cut_variables(variables, stages=LITE0_CUT_STAGES):
  """The part of EfficientNet-Lite0's variables that `Lite0Encoder(stages)` uses."""
  n_blocks = sum(s[0] for s in efficientnet_lite.LITE0_STAGES[:stages])
  keep = {'_conv_stem', '_bn0'} | {f'_blocks_{i}' for i in range(n_blocks)}
  return {col: {k: v for k, v in tree.items() if k in keep} for col, tree in variables.items()}


class MirrorDecoder(nn.Module):
  """Features (N, h, w, C) -> images (N, 2^k h, 2^k w, 3), k = len(widths) - 1, not
  clipped. One level per resolution, coarsest first: a nearest x2 upsampling (not at
  the first), then `convs` (1 at the first level) reflection-padded 3x3 convs of
  `widths[level]` with ReLU; last, a 3x3 conv to RGB without activation."""
  widths: tuple = LITE0_DECODER_WIDTHS
  convs: int = 2

  @nn.compact
  def __call__(self, x):
    for level, width in enumerate(self.widths):
      if level:
        x = _upsample(x)
      for j in range(self.convs if level else 1):
        x = nn.relu(nn.Conv(width, (3, 3), padding='VALID', name=f'conv_{level}_{j}')(
            _reflect_pad(x)))
    return nn.Conv(3, (3, 3), padding='VALID', name='to_rgb')(_reflect_pad(x))


def lite0_net(decoder_widths=LITE0_DECODER_WIDTHS, stages=LITE0_CUT_STAGES):
  """EfficientNet-Lite0 cut after `stages` stages (3: stride 8, 40 channels at block4),
  a `MirrorDecoder`; content and AdaIN at the cut, style on all of LITE0_LAYERS kept."""
  stride = 2 ** (1 + sum(s[2] == 2 for s in efficientnet_lite.LITE0_STAGES[:stages]))
  if len(decoder_widths) != stride.bit_length():
    raise ValueError(f'decoder_widths {decoder_widths}: need {stride.bit_length()} levels '
                     f'for stride {stride}')
  n_blocks = sum(s[0] for s in efficientnet_lite.LITE0_STAGES[:stages])
  layers = ('stem',) + tuple(
      f'block{sum(s[0] for s in efficientnet_lite.LITE0_STAGES[:k + 1]) - 1}'
      for k in range(stages))
  return AdainNet('efficientnet_lite0', Lite0Encoder(stages), MirrorDecoder(tuple(decoder_widths)),
                  f'block{n_blocks - 1}', layers, stride)


def init_encoder(net, seed=0):
  """Random encoder variables of `net` (Flax's default init; batch stats mean 0, var 1)."""
  x = jnp.zeros((1, 2 * net.stride, 2 * net.stride, 3), jnp.float32)
  return jax.jit(net.encoder.init)(jax.random.PRNGKey(seed), x)  # eager: 100s of compiles


def init_decoder(net, enc_vars, seed=0):
  """Random decoder variables of `net` for the channels of `enc_vars`' content layer."""
  x = jax.ShapeDtypeStruct((1, 2 * net.stride, 2 * net.stride, 3), jnp.float32)
  feat = jax.eval_shape(net.encoder.apply, enc_vars, x)[net.content_layer]
  return jax.jit(net.decoder.init)(jax.random.PRNGKey(seed),
                                   jnp.zeros(feat.shape, jnp.float32))


@functools.partial(jax.jit, static_argnames='net')
def net_target(net, enc_vars, content, style, alpha):
  """alpha * AdaIN(content, style) + (1 - alpha) * content at net.content_layer."""
  c = net.encoder.apply(enc_vars, content)[net.content_layer]
  s = net.encoder.apply(enc_vars, style)[net.content_layer]
  return alpha * adain(c, s) + (1 - alpha) * c


@functools.partial(jax.jit, static_argnames='net')
def _net_stylize(net, enc_vars, dec_vars, content, style, alpha):
  return net.decoder.apply(dec_vars, net_target(net, enc_vars, content, style, alpha))


def net_stylize(net, enc_vars, dec_vars, content, style, alpha=1.0):
  """As `stylize`, for any AdainNet: output (N, H', W', 3), H' = stride * ceil(H /
  stride) for the encoders here; not clipped. Jit-compiled once per net and shape."""
  content, style = _stylize_inputs(content, style, alpha)
  return _net_stylize(net, enc_vars, dec_vars, content, style, jnp.float32(alpha))


def net_loss(dec_params, net, enc_vars, content, style, content_weight=1.0,
             style_weight=10.0):
  """content = MSE(net.content_layer of the decoded image, AdaIN target); style = sum
  over net.style_layers of MSE of channel means + MSE of channel stds (vs the style
  image's). Returns (content_weight * content + style_weight * style,
  {'content', 'style'})."""
  enc = lambda x: net.encoder.apply(enc_vars, x)
  style_feats = enc(style)
  target = jax.lax.stop_gradient(adain(enc(content)[net.content_layer],
                                       style_feats[net.content_layer]))
  out = net.decoder.apply({'params': dec_params}, target)
  out_feats = enc(out)
  loss_c = _mse(out_feats[net.content_layer], target)
  loss_s = 0.0
  for name in net.style_layers:
    o_mean, o_std = mean_std(out_feats[name])
    s_mean, s_std = mean_std(style_feats[name])
    loss_s += _mse(o_mean, s_mean) + _mse(o_std, s_std)
  return content_weight * loss_c + style_weight * loss_s, {'content': loss_c, 'style': loss_s}


@functools.partial(jax.jit, static_argnames=('net', 'optimizer', 'content_weight',
                                             'style_weight'))
def net_train_step(state, enc_vars, content, style, net, optimizer, content_weight=1.0,
                   style_weight=10.0):
  """`train_step` for any AdainNet: one optimizer step on its decoder's params."""
  (loss, parts), grads = jax.value_and_grad(net_loss, has_aux=True)(
      state['params'], net, enc_vars, content, style, content_weight, style_weight)
  updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  return {'params': params, 'opt_state': opt_state}, {'loss': loss, **parts}


# --- decoder training --------------------------------------------------------------------

def _mse(a, b):
  return jnp.mean(jnp.square(a - b))


def decoder_loss(dec_params, enc_vars, content, style, content_weight=1.0,
                 style_weight=10.0):
  """The original's loss: content = MSE(relu4_1 of the decoded image, AdaIN target);
  style = sum over relu1_1..relu4_1 of MSE of channel means + MSE of channel stds.
  Returns (content_weight * content + style_weight * style, {'content', 'style'})."""
  return net_loss(dec_params, vgg_net(widths_of(enc_vars)), enc_vars, content, style,
                  content_weight, style_weight)


def init_train_state(dec_vars, optimizer):
  """{'params', 'opt_state'} of a decoder to train with an optax optimizer."""
  return {'params': dec_vars['params'], 'opt_state': optimizer.init(dec_vars['params'])}


@functools.partial(jax.jit, static_argnames=('optimizer', 'content_weight', 'style_weight'))
def train_step(state, enc_vars, content, style, optimizer, content_weight=1.0,
               style_weight=10.0):
  """One optimizer step on the decoder params (the encoder stays fixed):
  state {'params', 'opt_state'} -> (new state, {'loss', 'content', 'style'}).
  The original trains with optax.adam(1e-4) (lr decay 5e-5), style_weight 10."""
  (loss, parts), grads = jax.value_and_grad(decoder_loss, has_aux=True)(
      state['params'], enc_vars, content, style, content_weight, style_weight)
  updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  return {'params': params, 'opt_state': opt_state}, {'loss': loss, **parts}
