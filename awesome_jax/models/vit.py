"""Vision Transformer (Dosovitskiy et al. 2021): ViT-Ti/16, S/16, B/16, B/32, L/16.

Patch embedding as a strided conv, a class token, learned position embeddings, pre-LN
encoder blocks (LayerNorm eps 1e-6), a final LayerNorm and a linear head on the class
token. Module and parameter names follow the original JAX code
(google-research/vision_transformer, `vit_jax/models_vit.py`), so that a flattened
params tree uses the key names of its `.npz` files; `vit_convert` maps timm's names
onto it.

GELU: `gelu='tanh'` is Flax's `nn.gelu` default, which the original JAX code (and so
the AugReg `.npz` weights) used; `gelu='exact'` (erf) is timm's. On the same weights
the two move ViT-B/16 logits by ~2e-3: follow the weights' source (`vit_convert` does).
Dropout acts only with `train=True` (then it needs a 'dropout' rng).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from awesome_jax.models import norms

GELUS = ('exact', 'tanh')

# name -> the fields of VisionTransformer that make it (MLP width 4x, 1000 classes, 224)
ARCHS = {
    'vit_ti16': dict(hidden_size=192, depth=12, num_heads=3, patch_size=16),
    'vit_s16': dict(hidden_size=384, depth=12, num_heads=6, patch_size=16),
    'vit_b16': dict(hidden_size=768, depth=12, num_heads=12, patch_size=16),
    'vit_b32': dict(hidden_size=768, depth=12, num_heads=12, patch_size=32),
    'vit_l16': dict(hidden_size=1024, depth=24, num_heads=16, patch_size=16),
}

_xavier = nn.initializers.xavier_uniform()


def model_error(message):
  """awesome_jax.models.ModelError(message), imported late (that package may import us)."""
  from awesome_jax.models import ModelError  # pylint: disable=g-import-not-at-top
  return ModelError(message)


def _pair(size):
  return (size, size) if isinstance(size, int) else tuple(size)


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> GELU -> dropout -> Dense(back to the input width) -> dropout."""
  mlp_dim: int
  gelu: str = 'exact'
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train=False):
    width = x.shape[-1]
    y = nn.Dense(self.mlp_dim, kernel_init=_xavier,
                 bias_init=nn.initializers.normal(1e-6), name='Dense_0')(x)
    y = nn.gelu(y, approximate=self.gelu == 'tanh')
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = nn.Dense(width, kernel_init=_xavier, bias_init=nn.initializers.normal(1e-6),
                 name='Dense_1')(y)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class SelfAttention(nn.Module):
  """Multi-head self-attention; query/key/value kernels (D, heads, head_dim), out kernel
  (heads, head_dim, D): the layout of Flax's MultiHeadDotProductAttention."""
  num_heads: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train=False, queries=None):
    """`queries` (B, M, D): attend from these tokens only (None: from every token of x)."""
    width = x.shape[-1]
    if width % self.num_heads:
      raise model_error(f'width {width} is not divisible by num_heads={self.num_heads}')
    head_dim = width // self.num_heads

    def project(name, tokens):
      return nn.DenseGeneral((self.num_heads, head_dim), kernel_init=_xavier,
                             name=name)(tokens)

    q = project('query', x if queries is None else queries)  # (B, M, heads, head_dim)
    k, v = project('key', x), project('value', x)             # (B, N, heads, head_dim)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q * head_dim ** -0.5, k)
    weights = norms.softmax(logits)
    weights = nn.Dropout(self.dropout_rate, deterministic=not train)(weights)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    return nn.DenseGeneral(width, axis=(-2, -1), kernel_init=_xavier, name='out')(out)


class EncoderBlock(nn.Module):
  """Pre-LN block: x + attn(LN(x)), then x + mlp(LN(x)).

  `class_token_only`: return the class token's row only (B, 1, D). Its value is the
  full block's row 0 (keys and values still come from every token), without the query,
  output and MLP work on the other rows: what the last block of a class-token ViT needs.
  """
  num_heads: int
  mlp_dim: int
  gelu: str = 'exact'
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  layer_norm_eps: float = 1e-6
  class_token_only: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    y = norms.LayerNorm(epsilon=self.layer_norm_eps, name='LayerNorm_0')(x)
    queries = None
    if self.class_token_only:
      x, queries = x[:, :1], y[:, :1]
    y = SelfAttention(self.num_heads, self.attention_dropout_rate,
                      name='MultiHeadDotProductAttention_1')(y, train, queries)
    x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = norms.LayerNorm(epsilon=self.layer_norm_eps, name='LayerNorm_2')(x)
    y = MlpBlock(self.mlp_dim, self.gelu, self.dropout_rate, name='MlpBlock_3')(y, train)
    return x + y


class PositionEmbedding(nn.Module):
  """Adds learned position embeddings (1, tokens, D), one per token (class token first)."""

  @nn.compact
  def __call__(self, x):
    return x + self.param('pos_embedding', nn.initializers.normal(0.02), (1,) + x.shape[1:])


class Encoder(nn.Module):
  """Position embeddings, `depth` encoder blocks, final LayerNorm.

  `class_token_only`: the output is the class token's row (B, 1, D) only, computed
  without the last block's per-row work on the other tokens (the same values as row 0 of
  the full output; the class-token head reads nothing else).
  """
  depth: int
  num_heads: int
  mlp_dim: int
  gelu: str = 'exact'
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  layer_norm_eps: float = 1e-6
  class_token_only: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    x = PositionEmbedding(name='posembed_input')(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.gelu, self.dropout_rate,
                       self.attention_dropout_rate, self.layer_norm_eps,
                       self.class_token_only and i == self.depth - 1,
                       name=f'encoderblock_{i}')(x, train)
    return norms.LayerNorm(epsilon=self.layer_norm_eps, name='encoder_norm')(x)


class VisionTransformer(nn.Module):
  """NHWC images of `image_size` (already normalised) -> logits (B, num_classes).

  `image_size` fixes the position-embedding grid (image_size / patch_size per side); to
  run at another size, build with that size and convert the weights for it
  (`vit_convert` resizes the grid). `representation_size`: the Dense + tanh "pre_logits"
  layer of some older checkpoints (None: none). `num_classes=0`: the pooled features.
  """
  num_classes: int = 1000
  image_size: int | tuple = 224
  patch_size: int = 16
  hidden_size: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int | None = None          # None: 4 * hidden_size
  representation_size: int | None = None
  gelu: str = 'exact'                 # 'exact' (erf, timm) | 'tanh' (the original JAX code)
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  layer_norm_eps: float = 1e-6

  @property
  def grid(self):
    """The patch grid (rows, cols) the position embeddings are made for."""
    h, w = _pair(self.image_size)
    return h // self.patch_size, w // self.patch_size

  def check_input(self, shape):
    """Raises ModelError unless `shape` (B, H, W, C) fits this model."""
    h, w = _pair(self.image_size)
    if h % self.patch_size or w % self.patch_size:
      raise model_error(f'image_size {self.image_size} is not a multiple of '
                        f'patch_size={self.patch_size}')
    if len(shape) != 4 or tuple(shape[1:3]) != (h, w):
      raise model_error(f'ViT built for {h}x{w} images got input of shape {tuple(shape)}: '
                        f'build it (and convert its weights) with image_size={shape[1:3]}')

  @nn.compact
  def __call__(self, x, train=False):
    if self.gelu not in GELUS:
      raise model_error(f'gelu={self.gelu!r}: allowed {", ".join(GELUS)}')
    self.check_input(x.shape)
    p = self.patch_size
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID',
                name='embedding')(x)
    n, gh, gw, d = x.shape
    x = x.reshape(n, gh * gw, d)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, d)).astype(x.dtype), x], axis=1)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim or 4 * self.hidden_size, self.gelu,
                self.dropout_rate, self.attention_dropout_rate, self.layer_norm_eps,
                class_token_only=True, name='Transformer')(x, train)
    x = x[:, 0]
    if self.representation_size:
      x = jnp.tanh(nn.Dense(self.representation_size, name='pre_logits')(x))
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name='head')(x)
    return x


def vit(name, **kwargs):
  """The VisionTransformer `name` of ARCHS; kwargs override any field (e.g. a tiny
  test variant: hidden_size=32, depth=2, num_heads=2, image_size=32, patch_size=8)."""
  if name not in ARCHS:
    raise model_error(f'ViT {name!r}: unknown; allowed: {", ".join(ARCHS)}')
  return VisionTransformer(**{**ARCHS[name], **kwargs})
