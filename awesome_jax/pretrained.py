"""Reading PyTorch checkpoints without PyTorch, and converting them to Flax trees.

`read_torch_state_dict(path)` reads both torch formats into {name: numpy array}:
* legacy (torch < 1.6): a stream of pickles: magic number, protocol, sys info, the
  object (tensors refer to storages by key), the storage keys, then each storage's
  raw bytes prefixed by its element count;
* zip (torch >= 1.6): `archive/data.pkl` + one file `archive/data/<key>` per storage.
Only the pickle opcodes of plain containers and the torch tensor-rebuild functions are
accepted; anything else is refused (a checkpoint cannot run code here).
`read_torch_object(path)` reads any such file (e.g. a list of tuples of tensors), not
only a state dict.
"""

import collections
import os
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
    'BFloat16Storage': np.uint16,
}


def one_line(e):
  """An exception's message with its line breaks and runs of spaces folded to one space."""
  return ' '.join(str(e).split())


class CheckpointFormatError(ValueError):
  """A file that is not a readable PyTorch checkpoint."""


class _StorageType:
  def __init__(self, name):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
  """A tensor before its storage bytes are read: storage, offset, size, stride."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, *unused):
  return data


class _Unpickler(pickle.Unpickler):
  """Unpickles torch checkpoints into _TensorRefs; refuses all other globals."""

  def __init__(self, file, storages):
    super().__init__(file)
    self._storages = storages

  def find_class(self, module, name):
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module == 'torch._utils' and name in ('_rebuild_tensor', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f'refusing to load {module}.{name}')

  def persistent_load(self, pid):
    # legacy: ('storage', type, key, location, size[, view_metadata]);
    # zip:    ('storage', type, key, location, numel)
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unknown persistent id {pid!r}')
    storage_type, key = pid[1], str(pid[2])
    self._storages.setdefault(key, storage_type.dtype)
    return key


def _materialise(obj, arrays):
  if isinstance(obj, _TensorRef):
    flat = arrays[obj.storage]
    itemsize = flat.dtype.itemsize
    # as_strided does not check bounds: a bad size or stride would read foreign memory
    last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
    if (obj.offset < 0 or min(obj.stride, default=0) < 0 or
        (min(obj.size, default=1) > 0 and last >= flat.size)):
      raise ValueError(f'a tensor of size {obj.size}, stride {obj.stride} at offset '
                       f'{obj.offset} reaches past its storage of {flat.size} elements')
    if int(np.prod(obj.size, dtype=np.float64)) > max(flat.size, 1) * 64:
      # an expanded (stride-0) view far larger than its storage: refuse, do not allocate
      raise ValueError(f'a tensor of size {obj.size} expands a storage of {flat.size} '
                       'elements more than 64 times')
    out = np.lib.stride_tricks.as_strided(
        flat[obj.offset:], shape=obj.size,
        strides=tuple(s * itemsize for s in obj.stride)).copy()
    if flat.dtype == np.uint16:  # only BFloat16Storage reads as uint16: its bits -> float32
      out = (out.astype(np.uint32) << 16).view(np.float32)
    return out
  if isinstance(obj, dict):
    return collections.OrderedDict((k, _materialise(v, arrays)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, arrays) for v in obj)
  return obj


def _read_legacy(f, path):
  plain = lambda: _Unpickler(f, {}).load()  # the small pickles around the object too
  magic = plain()
  if magic != LEGACY_MAGIC:
    raise CheckpointFormatError(f'{path}: not a PyTorch checkpoint (bad magic number)')
  plain()  # protocol version
  sys_info = plain()
  if not sys_info.get('little_endian', True):
    raise CheckpointFormatError(f'{path}: big-endian checkpoints are not supported')
  dtypes = {}
  obj = _Unpickler(f, dtypes).load()
  keys = plain()
  arrays = {}
  left = os.fstat(f.fileno()).st_size - f.tell()
  for key in keys:
    (count,) = struct.unpack('<q', f.read(8))
    dtype = dtypes[str(key)]
    if not 0 <= count * dtype.itemsize <= left:
      raise CheckpointFormatError(f'{path}: storage {key} claims {count} elements, more '
                                  'than the file holds')
    arrays[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    if arrays[str(key)].size != count:
      raise CheckpointFormatError(f'{path}: truncated storage {key}')
  return obj, arrays


def _read_zip(path):
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith('data.pkl')]
    if not pkl:
      raise CheckpointFormatError(f'{path}: zip without data.pkl, not a torch checkpoint')
    prefix = pkl[0][:-len('data.pkl')]
    dtypes = {}
    obj = _Unpickler(io.BytesIO(z.read(pkl[0])), dtypes).load()
    arrays = {k: np.frombuffer(z.read(f'{prefix}data/{k}'), dtype=d) for k, d in dtypes.items()}
  return obj, arrays


def read_torch_object(path):
  """What a PyTorch file (legacy or zip) holds, tensors as numpy arrays, no torch.

  Dicts come back as OrderedDicts, lists and tuples as lists and tuples; a pickle that
  names any global but OrderedDict and torch's tensor and storage types is refused.
  """
  try:
    if zipfile.is_zipfile(path):
      obj, arrays = _read_zip(path)
    else:
      with open(path, 'rb') as f:
        obj, arrays = _read_legacy(f, path)
    return _materialise(obj, arrays)
  except CheckpointFormatError:
    raise
  except FileNotFoundError:
    raise CheckpointFormatError(f'{path}: file not found') from None
  except (pickle.UnpicklingError, EOFError, KeyError, IndexError, struct.error, MemoryError,
          RecursionError,
          AttributeError, TypeError, ValueError, OSError, zipfile.BadZipFile) as e:
    raise CheckpointFormatError(
        f'{path}: not a readable PyTorch checkpoint ({one_line(e)})') from None


def read_torch_state_dict(path):
  """{name: numpy array} from a PyTorch checkpoint file (legacy or zip), no torch."""
  state = read_torch_object(path)
  if isinstance(state, dict) and 'state_dict' in state:
    state = state['state_dict']
  if not isinstance(state, dict):
    raise CheckpointFormatError(f'{path}: holds a {type(state).__name__}, not a state dict')
  return dict(state)


def conv_weight(w):
  """torch conv weight (O, I/groups, kh, kw) -> Flax (kh, kw, I/groups, O)."""
  return np.transpose(w, (2, 3, 1, 0))


def dense_weight(w):
  """torch linear weight (out, in) -> Flax kernel (in, out)."""
  return np.transpose(w)
