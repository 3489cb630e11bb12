"""ViT weights from public files, without torch: timm state dicts and the original JAX
(`vit_jax` / AugReg) `.npz` files, plus the zoo entries `vit_ti16` ... `vit_l16`.

The format is read from the file's contents, not its name:
* 'timm': a PyTorch file (zip or legacy, `.pth` / `.bin`, read by
  `pretrained.read_torch_state_dict`) or a `.safetensors` file with timm's key names
  (`patch_embed.proj.weight`, `blocks.N.attn.qkv.weight` (3D, D) ...);
* 'augreg_npz': an `.npz` with the original code's names (`embedding/kernel`,
  `Transformer/encoderblock_N/MultiHeadDotProductAttention_1/query/kernel` ...), which
  are the names of `vit.VisionTransformer`'s own params tree; an `opt/target/` prefix
  (older files) is dropped; big_vision files (`params/...`) are refused.

What follows the format (each a default that a caller can override):
* GELU: timm -> 'exact' (erf); augreg_npz -> 'tanh' (Flax's `nn.gelu` default, which
  `vit_jax/models_vit.py` calls).
* Position-embedding resize (when `image_size` differs from the file's grid):
  augreg_npz -> 'bilinear' as `vit_jax.checkpoint.interpolate_posembed`
  (`scipy.ndimage.zoom(order=1)`: grid corners aligned); timm -> 'bicubic' as timm's
  `resample_abs_pos_embed` (half-pixel centres, antialiased cubic).
* Preprocessing: 'augreg' (mean 0.5, std 0.5) for both: timm's pretrained_cfg of these
  ViTs (`vit_*_patch16_224.augreg_in21k_ft_in1k`, `.orig_in21k_ft_in1k`) uses
  IMAGENET_INCEPTION_MEAN/STD = 0.5 as well. timm's own eval transform resizes to 248
  (bicubic) and centre-crops 224 (crop_pct 0.9); `TIMM_EVAL` is that, for callers that
  want it.

A file whose keys or shapes do not fit the chosen model raises ModelError, one line
naming the first key that differs (expected vs found shape); an unreadable file raises
`pretrained.CheckpointFormatError`.
"""

import functools
import json
import math
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax import pretrained
from awesome_jax.models import vit
from awesome_jax.models import zoo

FORMATS = ('timm', 'augreg_npz')
GELU_BY_FORMAT = {'timm': 'exact', 'augreg_npz': 'tanh'}
POSEMB_RESIZE_BY_FORMAT = {'timm': 'bicubic', 'augreg_npz': 'bilinear'}
PREPROCESSING_BY_FORMAT = {'timm': 'augreg', 'augreg_npz': 'augreg'}
TIMM_EVAL = zoo.Preprocessing('timm_vit', 248, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                              'bicubic')

_NPZ_PREFIXES = ('opt/target/',)
_SAFETENSORS_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
                       'I64': np.int64, 'I32': np.int32, 'U8': np.uint8}


# ---------------------------------------------------------------- reading the files

def _is_safetensors(path):
  with open(path, 'rb') as f:
    head = f.read(9)
    f.seek(0, 2)
    size = f.tell()
  if len(head) < 9:
    return False
  (n,) = struct.unpack('<Q', head[:8])
  return 0 < n <= size - 8 and head[8:9] == b'{'


def weight_format(path):
  """'timm' or 'augreg_npz', read from the file's first bytes (not its name)."""
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
      if any(n.endswith('data.pkl') for n in names):
        return 'timm'
      if names and all(n.endswith('.npy') for n in names):
        return 'augreg_npz'
      raise pretrained.CheckpointFormatError(
          f'{path}: a zip file that is neither an .npz nor a PyTorch checkpoint')
    if _is_safetensors(path):
      return 'timm'
    with open(path, 'rb') as f:
      first = f.read(1)
    if first == b'\x80':  # a pickle: PyTorch's legacy format
      return 'timm'
  except FileNotFoundError:
    raise pretrained.CheckpointFormatError(f'{path}: file not found') from None
  except (OSError, zipfile.BadZipFile) as e:
    raise pretrained.CheckpointFormatError(f'{path}: unreadable ({e})') from None
  raise pretrained.CheckpointFormatError(
      f'{path}: not an .npz, PyTorch or safetensors file')


def read_safetensors(path):
  """{name: numpy array} from a `.safetensors` file (bfloat16 widened to float32)."""
  try:
    with open(path, 'rb') as f:
      (n,) = struct.unpack('<Q', f.read(8))
      header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    arrays = {}
    for name, info in header.items():
      if name == '__metadata__':
        continue
      begin, end = info['data_offsets']
      raw = np.array(data[begin:end])
      if info['dtype'] == 'BF16':
        array = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
      else:
        array = raw.view(_SAFETENSORS_DTYPES[info['dtype']])
      arrays[name] = array.reshape(info['shape'])
    return arrays
  except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
    reason = pretrained.one_line(e)
    raise pretrained.CheckpointFormatError(
        f'{path}: not a readable safetensors file ({reason})') from None


def read_weights(path):
  """(format, {key: float32 array}) with the file's own key names."""
  fmt = weight_format(path)
  if fmt == 'augreg_npz':
    try:
      with np.load(path, allow_pickle=False) as npz:
        arrays = {k: np.asarray(npz[k], np.float32) for k in npz.files}
    except (OSError, ValueError, TypeError, zipfile.BadZipFile) as e:
      reason = pretrained.one_line(e)
      raise pretrained.CheckpointFormatError(
          f'{path}: not a readable .npz ({reason})') from None
    if any(k.startswith('params/') for k in arrays):
      raise pretrained.CheckpointFormatError(
          f'{path}: a big_vision checkpoint (keys under params/); only the vit_jax / '
          f'AugReg layout is read')
    for prefix in _NPZ_PREFIXES:
      if arrays and all(k.startswith(prefix) for k in arrays):
        arrays = {k[len(prefix):]: v for k, v in arrays.items()}
    return fmt, arrays
  if _is_safetensors(path):
    state = read_safetensors(path)
  else:
    state = pretrained.read_torch_state_dict(path)
    if isinstance(state.get('model'), dict):  # {'model': state dict, ...} (e.g. DeiT's files)
      state = dict(state['model'])
  for key, value in state.items():
    if not isinstance(value, np.ndarray):
      raise pretrained.CheckpointFormatError(
          f'{path}: {key}: a {type(value).__name__}, not a tensor')
  return fmt, {k: np.asarray(v, np.float32) for k, v in state.items()}


# ---------------------------------------------------------------- the two layouts

def _dims(model):
  d, h = model.hidden_size, model.num_heads
  gh, gw = model.grid
  return dict(d=d, heads=h, head_dim=d // h, mlp=model.mlp_dim or 4 * d, p=model.patch_size,
              tokens=1 + gh * gw, rep=model.representation_size, classes=model.num_classes)


def npz_layout(model):
  """{key: shape} of `model`'s params in the original JAX names, in forward order."""
  s = _dims(model)
  d, h, hd, m = s['d'], s['heads'], s['head_dim'], s['mlp']
  out = {'embedding/kernel': (s['p'], s['p'], 3, d), 'embedding/bias': (d,),
         'cls': (1, 1, d), 'Transformer/posembed_input/pos_embedding': (1, s['tokens'], d)}
  for i in range(model.depth):
    b = f'Transformer/encoderblock_{i}/'
    a = b + 'MultiHeadDotProductAttention_1/'
    out.update({b + 'LayerNorm_0/scale': (d,), b + 'LayerNorm_0/bias': (d,)})
    for name in ('query', 'key', 'value'):
      out.update({a + f'{name}/kernel': (d, h, hd), a + f'{name}/bias': (h, hd)})
    out.update({a + 'out/kernel': (h, hd, d), a + 'out/bias': (d,),
                b + 'LayerNorm_2/scale': (d,), b + 'LayerNorm_2/bias': (d,),
                b + 'MlpBlock_3/Dense_0/kernel': (d, m), b + 'MlpBlock_3/Dense_0/bias': (m,),
                b + 'MlpBlock_3/Dense_1/kernel': (m, d), b + 'MlpBlock_3/Dense_1/bias': (d,)})
  out.update({'Transformer/encoder_norm/scale': (d,), 'Transformer/encoder_norm/bias': (d,)})
  width = d
  if s['rep']:
    out.update({'pre_logits/kernel': (d, s['rep']), 'pre_logits/bias': (s['rep'],)})
    width = s['rep']
  if s['classes']:
    out.update({'head/kernel': (width, s['classes']), 'head/bias': (s['classes'],)})
  return out


def timm_layout(model):
  """{key: shape} of the timm state dict that fits `model`, in forward order."""
  s = _dims(model)
  d, m = s['d'], s['mlp']
  out = {'patch_embed.proj.weight': (d, 3, s['p'], s['p']), 'patch_embed.proj.bias': (d,),
         'cls_token': (1, 1, d), 'pos_embed': (1, s['tokens'], d)}
  for i in range(model.depth):
    b = f'blocks.{i}.'
    out.update({b + 'norm1.weight': (d,), b + 'norm1.bias': (d,),
                b + 'attn.qkv.weight': (3 * d, d), b + 'attn.qkv.bias': (3 * d,),
                b + 'attn.proj.weight': (d, d), b + 'attn.proj.bias': (d,),
                b + 'norm2.weight': (d,), b + 'norm2.bias': (d,),
                b + 'mlp.fc1.weight': (m, d), b + 'mlp.fc1.bias': (m,),
                b + 'mlp.fc2.weight': (d, m), b + 'mlp.fc2.bias': (d,)})
  out.update({'norm.weight': (d,), 'norm.bias': (d,)})
  width = d
  if s['rep']:
    out.update({'pre_logits.fc.weight': (s['rep'], d), 'pre_logits.fc.bias': (s['rep'],)})
    width = s['rep']
  if s['classes']:
    out.update({'head.weight': (s['classes'], width), 'head.bias': (s['classes'],)})
  return out


_POSEMB_KEYS = ('pos_embed', 'Transformer/posembed_input/pos_embedding')


def _posemb_fits(expected, found):
  """Another square grid of the same width fits: it is resized."""
  if len(found) != 3 or found[0] != 1 or found[2] != expected[2] or found[1] < 2:
    return False
  return math.isqrt(found[1] - 1) ** 2 == found[1] - 1


def check_layout(layout, arrays, where):
  """Raises ModelError (one line) at the first key of `layout` missing from `arrays` or
  of another shape, else at the first key of `arrays` that `layout` lacks; a pre-logits
  layer that the model lacks is named first (it changes the head's shape too)."""
  for key, array in arrays.items():
    if key.startswith('pre_logits') and key not in layout:
      rep = next(a.shape[0] for k, a in arrays.items() if k.startswith('pre_logits')
                 and k.endswith('bias'))
      raise vit.model_error(
          f'{where}: {key}: not in the model (shape {tuple(array.shape)}); the file has a '
          f'pre-logits layer (Dense {rep} + tanh, older checkpoints): build and convert '
          f'with representation_size={rep}')
  for key, shape in layout.items():
    if key not in arrays:
      raise vit.model_error(f'{where}: {key}: missing (expected shape {shape})')
    found = tuple(arrays[key].shape)
    ok = found == tuple(shape) or (key in _POSEMB_KEYS and _posemb_fits(shape, found))
    if not ok:
      raise vit.model_error(f'{where}: {key}: expected shape {tuple(shape)}, found {found}')
  for key, array in arrays.items():
    if key not in layout:
      raise vit.model_error(f'{where}: {key}: not in the model (shape {tuple(array.shape)})')


def timm_to_npz_names(state, model):
  """timm state dict (checked against `model`) -> {original JAX name: array}."""
  s = _dims(model)
  d, h, hd = s['d'], s['heads'], s['head_dim']
  out = {'embedding/kernel': pretrained.conv_weight(state['patch_embed.proj.weight']),
         'embedding/bias': state['patch_embed.proj.bias'],
         'cls': state['cls_token'],
         'Transformer/posembed_input/pos_embedding': state['pos_embed']}
  for i in range(model.depth):
    t, b = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
    a = b + 'MultiHeadDotProductAttention_1/'
    qkv_w = state[t + 'attn.qkv.weight'].reshape(3, h, hd, d)  # rows: q, k, v; out-major
    qkv_b = state[t + 'attn.qkv.bias'].reshape(3, h, hd)
    for j, name in enumerate(('query', 'key', 'value')):
      out[a + f'{name}/kernel'] = qkv_w[j].transpose(2, 0, 1)
      out[a + f'{name}/bias'] = qkv_b[j]
    out[a + 'out/kernel'] = state[t + 'attn.proj.weight'].T.reshape(h, hd, d)
    out[a + 'out/bias'] = state[t + 'attn.proj.bias']
    for ln_timm, ln_jax in (('norm1', 'LayerNorm_0'), ('norm2', 'LayerNorm_2')):
      out[b + f'{ln_jax}/scale'] = state[t + f'{ln_timm}.weight']
      out[b + f'{ln_jax}/bias'] = state[t + f'{ln_timm}.bias']
    for fc, dense in (('fc1', 'Dense_0'), ('fc2', 'Dense_1')):
      out[b + f'MlpBlock_3/{dense}/kernel'] = pretrained.dense_weight(state[t + f'mlp.{fc}.weight'])
      out[b + f'MlpBlock_3/{dense}/bias'] = state[t + f'mlp.{fc}.bias']
  out['Transformer/encoder_norm/scale'] = state['norm.weight']
  out['Transformer/encoder_norm/bias'] = state['norm.bias']
  for timm_name, jax_name in (('pre_logits.fc', 'pre_logits'), ('head', 'head')):
    if timm_name + '.weight' in state:
      out[jax_name + '/kernel'] = pretrained.dense_weight(state[timm_name + '.weight'])
      out[jax_name + '/bias'] = state[timm_name + '.bias']
  return out


# ---------------------------------------------------------------- position embeddings

POSEMB_RESIZE = ('bilinear', 'bicubic')


def _linear_corners(a, size, axis):
  """Linear resize of `a` along `axis` to `size` with the end points aligned."""
  old = a.shape[axis]
  pos = np.arange(size) * ((old - 1) / (size - 1)) if size > 1 else np.zeros(1)
  lo = np.clip(np.floor(pos).astype(int), 0, old - 1)
  hi = np.minimum(lo + 1, old - 1)
  w = (pos - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
  return np.take(a, lo, axis) * (1 - w) + np.take(a, hi, axis) * w


def resize_posemb(posemb, grid, method='bilinear', old_grid=None):
  """Position embeddings (1, 1 + gh*gw, D) -> (1, 1 + grid[0]*grid[1], D).

  The class token's embedding is kept; the (gh, gw) grid (square if old_grid is None)
  is resized: 'bilinear' as the original JAX code (scipy.ndimage.zoom, order 1, grid
  corners aligned), 'bicubic' as timm (F.interpolate bicubic, antialias: half-pixel
  centres, cubic a=-0.5). Same grid: returned unchanged.
  """
  posemb = np.asarray(posemb)
  token, cells = posemb[:, :1], posemb[0, 1:]
  n, d = cells.shape
  if old_grid is None:
    side = math.isqrt(n)
    if side * side != n:
      raise vit.model_error(f'position embeddings of {n} grid cells: not a square grid')
    old_grid = (side, side)
  grid = tuple(grid)
  if tuple(old_grid) == grid:
    return posemb
  cells = cells.reshape(*old_grid, d)
  if method == 'bilinear':
    cells = _linear_corners(_linear_corners(cells.astype(np.float64), grid[0], 0), grid[1], 1)
  elif method == 'bicubic':
    cells = np.asarray(jax.image.resize(jnp.asarray(cells, jnp.float32), grid + (d,),
                                        'cubic', antialias=True))
  else:
    raise vit.model_error(f'posemb_resize={method!r}: allowed {", ".join(POSEMB_RESIZE)}')
  return np.concatenate([token, cells.reshape(1, -1, d).astype(posemb.dtype)], axis=1)


# ---------------------------------------------------------------- build / convert / load

def build(arch, weight_format='timm', gelu=None, **kwargs):
  """VisionTransformer `arch` (ARCHS; kwargs override its fields, num_classes=1000 and
  image_size=224 by default); GELU from `weight_format` unless `gelu` is given."""
  if weight_format not in FORMATS:
    raise vit.model_error(f'weight_format={weight_format!r}: allowed {", ".join(FORMATS)}')
  return vit.vit(arch, gelu=gelu or GELU_BY_FORMAT[weight_format], **kwargs)


def _unflatten(flat):
  tree = {}
  for key, value in flat.items():
    *path, leaf = key.split('/')
    node = tree
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value, jnp.float32)
  return tree


def convert(arch, path, posemb_resize=None, weight_format=None, **kwargs):
  """Variables {'params': ...} for `build(arch, **kwargs)` from the weight file `path`.

  kwargs: those of `build` (num_classes, image_size, representation_size ...); the file
  must fit them, except for the position-embedding grid, which is resized to image_size
  (`posemb_resize`: 'bilinear' | 'bicubic', default per format). `weight_format`, if
  given, must be the file's.
  """
  fmt, arrays = read_weights(path)
  if weight_format not in (None, fmt):
    raise vit.model_error(f'{path}: a {fmt} file, but weight_format={weight_format!r}')
  kwargs.pop('gelu', None)
  model = build(arch, weight_format=fmt, **kwargs)
  d = _dims(model)
  where = (f'{path} ({fmt} layout) does not fit {arch} (width {d["d"]}, depth '
           f'{model.depth}, {d["heads"]} heads, patch {d["p"]}, {d["classes"]} classes)')
  if fmt == 'timm':
    check_layout(timm_layout(model), arrays, where)
    arrays = timm_to_npz_names(arrays, model)
  else:
    check_layout(npz_layout(model), arrays, where)
  key = 'Transformer/posembed_input/pos_embedding'
  if arrays[key].shape[1] != d['tokens']:
    arrays[key] = resize_posemb(arrays[key], model.grid,
                                posemb_resize or POSEMB_RESIZE_BY_FORMAT[fmt])
  return {'params': _unflatten(arrays)}


def load(arch, path, **kwargs):
  """(module, variables, format): the model built for the file's format (its GELU) and
  the file's weights converted for it; kwargs as `convert`."""
  fmt = weight_format(path)
  posemb_resize = kwargs.pop('posemb_resize', None)
  asked = kwargs.pop('weight_format', None)
  variables = convert(arch, path, posemb_resize=posemb_resize, weight_format=asked, **kwargs)
  return build(arch, weight_format=fmt, **kwargs), variables, fmt


def _entry(arch):
  return zoo.ZooEntry(family='vit', build=functools.partial(build, arch),
                      convert=functools.partial(convert, arch), formats=FORMATS,
                      preprocessing=dict(PREPROCESSING_BY_FORMAT))


ZOO_ENTRIES = {name: _entry(name) for name in vit.ARCHS}
