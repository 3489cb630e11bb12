"""Writes PyTorch legacy-format checkpoints (torch < 1.6) without torch, for tests.

The layout `awesome_jax.pretrained` reads: magic number, protocol, sys info, the
state dict pickled with tensors as torch._utils._rebuild_tensor_v2 over persistent
storage ids, the storage keys, then each storage as int64 count + raw bytes.
"""

import collections
import pickle
import struct

import numpy as np

from awesome_jax.pretrained import LEGACY_MAGIC

_STORAGE_NAMES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.int64): 'LongStorage',
                  np.dtype(np.uint16): 'BFloat16Storage'}  # uint16 arrays: bfloat16 bits


class _Global:
  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce wants a callable
    raise NotImplementedError


class _Storage:
  def __init__(self, key, array):
    self.key, self.array = key, array


class _Tensor:
  def __init__(self, storage, shape):
    self.storage, self.shape = storage, shape

  def __reduce__(self):
    stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
    return (_Global('torch._utils', '_rebuild_tensor_v2'),
            (self.storage, 0, tuple(self.shape), stride, False, collections.OrderedDict()))


class _Writer(pickle._Pickler):  # the pure-Python pickler lets us add a dispatch entry
  dispatch = dict(pickle._Pickler.dispatch)

  def save_torch_global(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())

  dispatch[_Global] = save_torch_global

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ('storage', _Global('torch', _STORAGE_NAMES[obj.array.dtype]), obj.key, 'cpu',
              obj.array.size, None)
    return None


def save_legacy(path, state_dict):
  """Writes {name: numpy array} as a legacy PyTorch checkpoint."""
  storages, obj = [], collections.OrderedDict()
  for i, (name, value) in enumerate(state_dict.items()):
    value = np.ascontiguousarray(value)
    storages.append(_Storage(str(i), value.reshape(-1)))
    obj[name] = _Tensor(storages[-1], value.shape)
  with open(path, 'wb') as f:
    pickle.dump(LEGACY_MAGIC, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({'protocol_version': 1001, 'little_endian': True,
                 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}, f, protocol=2)
    _Writer(f, protocol=2).dump(obj)
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(struct.pack('<q', s.array.size))
      f.write(s.array.tobytes())
