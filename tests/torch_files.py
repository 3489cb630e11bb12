"""Writes PyTorch checkpoints (legacy < 1.6 and zip >= 1.6 formats) without torch, for tests.

The layouts `awesome_jax.pretrained` reads. Legacy: magic number, protocol, sys info, the
object pickled with tensors as torch._utils._rebuild_tensor_v2 over persistent storage
ids, the storage keys, then each storage as int64 count + raw bytes. Zip: data.pkl +
one record per storage, as torch.save writes it (64-byte aligned records).
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from awesome_jax import pretrained



class _Global:
  """A module.name that the pickle names without importing it."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce wants a callable
    raise NotImplementedError


class Storage:
  def __init__(self, key, flat):
    self.key, self.flat = key, np.ascontiguousarray(flat).reshape(-1)


class Tensor:
  """A tensor as torch pickles it: a view (offset, size, stride) into a storage."""

  def __init__(self, storage, offset, size, stride=None):
    stride = stride or tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), stride

  def __reduce__(self):
    return (_Global('torch._utils', '_rebuild_tensor_v2'),
            (self.storage, self.offset, self.size, self.stride, False,
             collections.OrderedDict()))


_STORAGE_NAMES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.int64): 'LongStorage',
                  np.dtype(np.uint16): 'BFloat16Storage'}  # uint16 arrays: bfloat16 bits


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler takes a dispatch entry
  dispatch = dict(pickle._Pickler.dispatch)

  def __init__(self, file, legacy):
    super().__init__(file, protocol=2)
    self.legacy, self.storages = legacy, {}

  def save_global_name(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())

  dispatch[_Global] = save_global_name

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    self.storages.setdefault(obj.key, obj)
    kind = _Global('torch', _STORAGE_NAMES[obj.flat.dtype])
    if self.legacy:  # ('storage', type, key, location, size, view_metadata)
      return ('storage', kind, obj.key, 'cpu', obj.flat.size, None)
    return ('storage', kind, obj.key, 'cpu', obj.flat.size)


def save_torch(path, obj, legacy):
  """Writes `obj` (containers of _Tensor) as torch.save does: legacy (< 1.6) or zip."""
  if legacy:
    with open(path, 'wb') as f:
      for header in (pretrained.LEGACY_MAGIC, 1001,
                     {'protocol_version': 1001, 'little_endian': True,
                      'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
        pickle.dump(header, f, protocol=2)
      pickler = _TorchPickler(f, legacy=True)
      pickler.dump(obj)
      keys = sorted(pickler.storages)
      pickle.dump(keys, f, protocol=2)
      for key in keys:
        flat = pickler.storages[key].flat
        f.write(struct.pack('<q', flat.size) + flat.tobytes())
    return
  buf = io.BytesIO()
  pickler = _TorchPickler(buf, legacy=False)
  pickler.dump(obj)
  records = [('data.pkl', buf.getvalue()), ('byteorder', b'little')]
  records += [(f'data/{k}', s.flat.tobytes()) for k, s in pickler.storages.items()]
  records += [('version', b'3\n')]
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
    for name, payload in records:
      info = zipfile.ZipInfo(f'results/{name}')
      # torch pads each record's local header so that its bytes start 64-aligned
      start = z.fp.tell() + 30 + len(info.filename) + 4
      pad = -start % 64
      info.extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
      z.writestr(info, payload)


def save_legacy(path, state_dict):
  """Writes {name: numpy array} as a legacy PyTorch checkpoint."""
  obj = collections.OrderedDict()
  for i, (name, value) in enumerate(state_dict.items()):
    value = np.ascontiguousarray(value)
    obj[name] = Tensor(Storage(str(i), value), 0, value.shape)
  save_torch(path, obj, legacy=True)
