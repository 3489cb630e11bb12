"""Small image classifiers used by dataset distillation: LeNet, AlexCifarNet, ConvNet.

Pure Flax linen modules: `model.apply({'params': p}, x)` with x NHWC float32. No
mutable state (no batch norm), so inner SGD can treat params as a plain pytree.
Weights are xavier-normal and biases zero, as in the dataset-distillation code.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

xavier = nn.initializers.xavier_normal()


def patch_matrix(x, kh, kw, padding=0, stride=1):
  """The (n, out_h, out_w, kh*kw*c) patches of NHWC `x` for a kh x kw window (zero padding
  `padding` on each side, stride `stride`): k*k shifted slices concatenated on channels."""
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  oh = (x.shape[1] - kh) // stride + 1
  ow = (x.shape[2] - kw) // stride + 1
  if kh == kw == 1:
    return x[:, :(oh - 1) * stride + 1:stride, :(ow - 1) * stride + 1:stride, :]
  return jnp.concatenate(
      [x[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride, :]
       for i in range(kh) for j in range(kw)], axis=-1)


def conv_as_matmul(x, kernel, padding=0, stride=1):
  """Cross-correlation of NHWC `x` with an HWIO `kernel` (zero padding `padding` on each
  side, stride `stride`) as its `patch_matrix` times the kernel: one matmul."""
  kh, kw, cin, cout = kernel.shape
  return patch_matrix(x, kh, kw, padding, stride) @ kernel.reshape(kh * kw * cin, cout)


def patch_matrix_t(x, kh, kw, padding=0, stride=1):
  """`patch_matrix` transposed and flattened: (kh*kw*c, n*out_h*out_w), row (i*kw + j)*c + ch
  (the rows of an HWIO kernel reshaped to (kh*kw*c, cout)). Built from the channel-first
  input as kh*kw shifted slices stacked on a new leading axis: each copies whole image
  rows, where `patch_matrix` interleaves c values of each slice into every patch."""
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  n, h, w, c = x.shape
  oh = (h - kh) // stride + 1
  ow = (w - kw) // stride + 1
  xt = x.transpose(3, 0, 1, 2)  # (c, n, h, w): a reshape when c == 1
  rows = jnp.stack(
      [xt[:, :, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride]
       for i in range(kh) for j in range(kw)])
  return rows.reshape(kh * kw * c, n * oh * ow)


def conv_as_matmul_t(x, kernel, padding=0, stride=1):
  """`conv_as_matmul` from the transposed patch matrix (`patch_matrix_t`): the same sums
  (NHWC output), faster on XLA:CPU for LeNet's few-channel convs. The matmul contracts the
  patch rows, so the kernel gradient is patches (K, M) @ output gradient (M, cout), a plain
  matmul, where `conv_as_matmul`'s contracts M = n*out_h*out_w over the patch matrix's
  leading axis (slow on XLA:CPU for 25 x 6 outputs), and the patches are written as whole
  image rows. Distillation's outer step with LeNet ran in 0.87-0.89x the time (MNIST,
  batch 1024, 2-core CPU, interleaved with the untransposed form in one process)."""
  kh, kw, cin, cout = kernel.shape
  n = x.shape[0]
  patches = patch_matrix_t(x, kh, kw, padding, stride)
  y = jax.lax.dot_general(patches, kernel.reshape(kh * kw * cin, cout),
                          (((0,), (0,)), ((), ())))
  oh = (x.shape[1] + 2 * padding - kh) // stride + 1
  return y.reshape(n, oh, -1, cout)


# conv_chunked's default budget of patches per chunk (2.5-5 MB were best on the 2-core CPU
# in whole Conv-N steps; RESULTS.md)
MAX_PATCH_BYTES = 5 << 20


def _in_chunks(x, chunk):
  """(n, ...) -> (ceil(n / chunk), chunk, ...), the last chunk zero-padded."""
  pad = -x.shape[0] % chunk
  if pad:
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
  return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def _out_of_chunks(y, n):
  return y.reshape(-1, *y.shape[2:])[:n]


def chunk_size(x_shape, kernel_shape, padding, max_patch_bytes):
  """How many images `conv_chunked` convolves at a time: as few chunks as keep each
  one's float32 patch matrices within `max_patch_bytes` (or one image), split evenly so
  the zero-padded last chunk wastes least. The forward's patches have kh*kw*cin columns,
  the input gradient's kh*kw*cout (a convolution of the output gradient): the larger."""
  n, h, w, _ = x_shape
  kh, kw, cin, cout = kernel_shape
  per_image = ((h + 2 * padding - kh + 1) * (w + 2 * padding - kw + 1) * kh * kw
               * max(cin, cout) * 4)
  most = max(1, min(n, max_patch_bytes // per_image))
  chunks = -(-n // most)
  return -(-n // chunks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_chunked(x, kernel, padding, chunk):
  y = jax.lax.map(lambda xc: conv_as_matmul(xc, kernel, padding), _in_chunks(x, chunk))
  return _out_of_chunks(y, x.shape[0])


def _conv_chunked_fwd(x, kernel, padding, chunk):
  return _conv_chunked(x, kernel, padding, chunk), (x, kernel)


def _conv_chunked_bwd(padding, chunk, res, g):
  x, kernel = res
  kh, kw, cin, cout = kernel.shape
  # the input gradient is the convolution of g with the flipped, in/out-swapped kernel
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)

  def one_chunk(grad_kernel, xg):
    xc, gc = xg
    patches = patch_matrix(xc, kh, kw, padding).reshape(-1, kh * kw * cin)
    grad_kernel = grad_kernel + patches.T @ gc.reshape(-1, cout)
    return grad_kernel, conv_as_matmul(gc, flipped, kh - 1 - padding)

  grad_kernel, gx = jax.lax.scan(one_chunk, jnp.zeros((kh * kw * cin, cout), kernel.dtype),
                                 (_in_chunks(x, chunk), _in_chunks(g, chunk)))
  return _out_of_chunks(gx, x.shape[0]), grad_kernel.reshape(kernel.shape)


_conv_chunked.defvjp(_conv_chunked_fwd, _conv_chunked_bwd)


def conv_chunked(x, kernel, padding=0, max_patch_bytes=MAX_PATCH_BYTES):
  """`conv_as_matmul` (stride 1) a few images at a time, forward and backward.

  Same values and gradients. The whole batch's patch matrix is kh*kw times the input
  (302 MB for a 64->64 3x3 conv on 128 CIFAR images): on a CPU, writing and reading it
  back costs more than the matmul. Chunks of at most `max_patch_bytes` of patches stay
  in cache (`lax.map` forward; a `lax.scan` backward that rebuilds each chunk's patches,
  accumulates the kernel gradient and convolves the output gradient for the input's).
  A custom VJP: reverse mode only (no jvp). Twice-reverse works, but the distillation's
  outer step with it in LeNet ran 1.7x slower (0.81 vs 0.47 s, benchmarks/distill_speed.py
  --headline-only), so the distillation models keep `conv_as_matmul`.
  """
  kh, kw = kernel.shape[:2]
  if not 0 <= padding <= min(kh, kw) - 1:
    raise ValueError(f'padding={padding}: conv_chunked needs 0 <= padding < kernel size')
  chunk = chunk_size(x.shape, kernel.shape, padding, max_patch_bytes)
  return _conv_chunked(x, kernel, padding, chunk)


def conv_fast(x, kernel, padding=0, stride=1):
  """The faster of the two for the backend: `conv_chunked` for kxk (k > 1) stride-1 convs
  on CPU (forward + backward of a 64->64 3x3 conv on 128 CIFAR maps: 0.49 s vs 0.68 s on
  2 cores, 0.9-1.4x as fast on smaller maps: `benchmarks/edge_popup_speed.py --layers`),
  `conv_as_matmul` otherwise (one big matmul suits a GPU or TPU). On CPU: reverse-mode
  gradients only (no jvp)."""
  if stride == 1 and kernel.shape[0] > 1 and jax.default_backend() == 'cpu':
    return conv_chunked(x, kernel, padding)
  return conv_as_matmul(x, kernel, padding, stride)


class MatmulConv(nn.Module):
  """2D convolution as `conv_as_matmul` (same params as nn.Conv).

  Same `kernel` (kh, kw, cin, cout) and `bias` as `nn.Conv`, same outputs. On XLA:CPU
  its gradients are 1.5-4x faster than the native convolution's (LeNet; 3x3 convs with
  64 channels), and vmap over a batch of weights becomes a batched matmul instead of a
  grouped convolution.
  """
  features: int
  kernel_size: tuple = (5, 5)
  padding: int = 0
  kernel_init: callable = xavier
  use_bias: bool = True
  stride: int = 1
  chunk_on_cpu: bool = False  # `conv_fast`: chunked on CPU (reverse mode only)
  transposed_patches: bool = False  # `conv_as_matmul_t` (when not chunk_on_cpu)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (kh, kw, x.shape[-1], self.features))
    conv = (conv_fast if self.chunk_on_cpu else
            conv_as_matmul_t if self.transposed_patches else conv_as_matmul)
    y = conv(x, kernel, self.padding, self.stride)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


def max_pool_2x2(x):
  """2x2 max pooling, stride 2, by reshape; an odd last row/column is dropped, as
  `nn.max_pool(x, (2, 2), (2, 2))` (VALID) does. Its gradient is 2-3x (up to 8x on small
  maps) faster on CPU than reduce_window's select-and-scatter; of tied maxima it sends the
  gradient to each in equal parts, where select-and-scatter picks the first."""
  n, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool_3x3_s2(x):
  """3x3 max pooling, stride 2, padding 1 (as torch MaxPool2d(3, 2, 1)) as the max of 9
  strided slices. Same values as `nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))`; its
  second derivative (needed by the distillation meta-gradient) avoids XLA:CPU's very slow
  select-and-gather of reduce_window's JVP (AlexCifarNet outer step 45 s -> see RESULTS.md)."""
  n, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  out = None
  for i in range(3):
    for j in range(3):
      s = x[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2, :]
      out = s if out is None else jnp.maximum(out, s)
  return out


class LeNet(nn.Module):
  """conv6@5x5(pad 2)-pool-conv16@5x5-pool-120-84-classes (MNIST, 28x28x1).

  conv_impl: 'matmul' (MatmulConv from transposed patches, `conv_as_matmul_t`, + reshape
  pooling, fast on CPU) or 'xla' (nn.Conv + nn.max_pool); same parameters and outputs
  either way.
  """
  num_classes: int = 10
  conv_impl: str = 'matmul'

  @nn.compact
  def __call__(self, x):
    if self.conv_impl == 'matmul':
      conv, pool = functools.partial(MatmulConv, transposed_patches=True), max_pool_2x2
    elif self.conv_impl == 'xla':
      conv = lambda f, k, padding=0: nn.Conv(f, k, padding=padding, kernel_init=xavier)
      pool = lambda y: nn.max_pool(y, (2, 2), (2, 2))
    else:
      raise ValueError(f'conv_impl={self.conv_impl!r}: unknown; allowed: matmul, xla')
    x = nn.relu(conv(6, (5, 5), padding=2)(x))
    x = pool(x)
    x = nn.relu(conv(16, (5, 5))(x))
    x = pool(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(120, kernel_init=xavier)(x))
    x = nn.relu(nn.Dense(84, kernel_init=xavier)(x))
    return nn.Dense(self.num_classes, kernel_init=xavier)(x)


def local_response_norm(x, size=4, alpha=0.001 / 9.0, beta=0.75, k=1.0):
  """torch.nn.LocalResponseNorm over channels (NHWC): x / (k + alpha/size * sum x^2)^beta.

  The sum runs over `size` neighbouring channels, padded with zeros
  (size//2 before, (size-1)//2 after), as torch does.
  """
  sq = jnp.square(x)
  pad = [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)]
  sq = jnp.pad(sq, pad)
  c = x.shape[-1]
  window = sum(sq[..., i:i + c] for i in range(size))
  return x / jnp.power(k + alpha / size * window, beta)


class AlexCifarNet(nn.Module):
  """The dataset-distillation paper's CIFAR-10 net: conv 64-64 5x5 (+LRN), FC 384-192.

  conv_impl: 'matmul' (MatmulConv + slice pooling, fast on CPU, above all for the
  second derivatives of distillation) or 'xla' (nn.Conv + nn.max_pool). Same parameter
  tree (the convs are named Conv_0, Conv_1 either way) and same outputs.
  """
  num_classes: int = 10
  conv_impl: str = 'matmul'

  @nn.compact
  def __call__(self, x):
    if self.conv_impl == 'matmul':
      conv, pool = MatmulConv, max_pool_3x3_s2
    elif self.conv_impl == 'xla':
      conv, pool = nn.Conv, lambda y: nn.max_pool(y, (3, 3), (2, 2), ((1, 1), (1, 1)))
    else:
      raise ValueError(f'conv_impl={self.conv_impl!r}: unknown; allowed: matmul, xla')
    x = nn.relu(conv(64, (5, 5), padding=2, kernel_init=xavier, name='Conv_0')(x))
    x = local_response_norm(pool(x))
    x = nn.relu(conv(64, (5, 5), padding=2, kernel_init=xavier, name='Conv_1')(x))
    x = pool(local_response_norm(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(384, kernel_init=xavier)(x))
    x = nn.relu(nn.Dense(192, kernel_init=xavier)(x))
    return nn.Dense(self.num_classes, kernel_init=xavier)(x)


class ConvNet(nn.Module):
  """depth x [conv3x3 width, instance norm, relu, avgpool 2], then a linear head.

  The 3-layer, 128-channel net of later distillation papers (DC, DSA, MTT, FRePo).
  """
  num_classes: int = 10
  width: int = 128
  depth: int = 3

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = nn.Conv(self.width, (3, 3), padding=1, kernel_init=xavier)(x)
      x = nn.relu(nn.InstanceNorm()(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=xavier)(x)


class MLP(nn.Module):
  """A tiny fully connected net (tests and toy problems)."""
  num_classes: int = 10
  hidden: int = 32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, kernel_init=xavier)(x))
    return nn.Dense(self.num_classes, kernel_init=xavier)(x)
