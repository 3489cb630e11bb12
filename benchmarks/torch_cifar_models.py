"""PyTorch twins of the classify task's CIFAR models (configs/classify.py), for speed
comparisons (benchmarks/classify_speed.py): the same layers, shapes and parameter count.

ResNet (`awesome_jax.models.resnet.ResNet` in the zoo's torchvision form, as
`models.build('resnet18', ...)` makes it): basic blocks, a 3x3 stride-1 CIFAR stem
without max-pool, stride 2 in the first 3x3 conv of every stage after the first, 1x1
projection shortcuts (+ batch norm) where the shape changes (option B), no conv biases,
batch norm with scale and bias (eps 1e-5, running-average momentum 0.1 = Flax's 0.9),
global average pool, a linear classifier with bias. ResNet-20: stage_sizes (3, 3, 3),
width 0.25 (16/32/64 channels), 272,474 parameters.

ViT (`awesome_jax.models.vit.VisionTransformer`): the patch embedding as a strided conv
with bias, a class token, learned position embeddings (one per token, class token
included), pre-LN encoder blocks (LayerNorm eps 1e-6; query/key/value/out projections
with biases, here one fused qkv Linear as timm has it: the same parameter count; exact
(erf) GELU MLP), a final LayerNorm and a linear head on the class token. vit_cifar: patch
4, hidden 128, depth 6, 4 heads, MLP 256 on 32x32 inputs, 811,146 parameters.

Inputs are NCHW float32 (channels_last memory works too). Only torch is imported here.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# arch -> blocks per stage of the basic-block ResNets (models/resnet.py:BLOCKS)
RESNET_BLOCKS = {'resnet18': (2, 2, 2, 2), 'resnet34': (3, 4, 6, 3)}
# name -> fields of the registry's ViTs (models/vit.py:ARCHS); model.kwargs override them
VIT_ARCHS = {
    'vit_ti16': dict(hidden_size=192, depth=12, num_heads=3, patch_size=16),
    'vit_s16': dict(hidden_size=384, depth=12, num_heads=6, patch_size=16),
    'vit_b16': dict(hidden_size=768, depth=12, num_heads=12, patch_size=16),
    'vit_b32': dict(hidden_size=768, depth=12, num_heads=12, patch_size=32),
    'vit_l16': dict(hidden_size=1024, depth=24, num_heads=16, patch_size=16),
}


def conv_bn(cin, cout, kernel, stride):
  """Conv (no bias, kaiming-normal fan-in as ours) + batch norm with scale and bias."""
  conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
  nn.init.kaiming_normal_(conv.weight, mode='fan_in', nonlinearity='relu')
  return nn.Sequential(conv, nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))


class BasicBlock(nn.Module):
  """Two 3x3 convs; a 1x1 projection shortcut where the shape changes."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = conv_bn(cin, cout, 3, stride)
    self.conv2 = conv_bn(cout, cout, 3, 1)
    self.shortcut = (conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout
                     else nn.Identity())

  def forward(self, x):
    y = self.conv2(F.relu(self.conv1(x)))
    return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
  """A basic-block ResNet with the CIFAR stem; `base` channels in the first stage,
  doubling at each later one."""

  def __init__(self, stage_sizes=(3, 3, 3), base=16, num_classes=10, in_channels=3):
    super().__init__()
    self.stem = conv_bn(in_channels, base, 3, 1)
    blocks, cin = [], base
    for stage, n in enumerate(stage_sizes):
      for b in range(n):
        cout = base * 2 ** stage
        blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and b == 0) else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.blocks(F.relu(self.stem(x)))
    return self.fc(torch.mean(x, dim=(2, 3)))


class Attention(nn.Module):
  """Multi-head self-attention: fused qkv projection, scaled dot-product attention."""

  def __init__(self, dim, num_heads):
    super().__init__()
    if dim % num_heads:
      raise ValueError(f'width {dim} is not divisible by num_heads={num_heads}')
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
    out = F.scaled_dot_product_attention(q, k, v)
    return self.proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
  """Pre-LN: x + attn(LN(x)), then x + mlp(LN(x))."""

  def __init__(self, dim, num_heads, mlp_dim, eps=1e-6):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=eps)
    self.attn = Attention(dim, num_heads)
    self.norm2 = nn.LayerNorm(dim, eps=eps)
    self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
  """Patch embedding, class token, learned position embeddings, `depth` pre-LN blocks,
  final LayerNorm, linear head on the class token."""

  def __init__(self, image_size=32, patch_size=4, hidden_size=128, depth=6, num_heads=4,
               mlp_dim=256, num_classes=10, in_channels=3, eps=1e-6):
    super().__init__()
    if image_size % patch_size:
      raise ValueError(f'image_size {image_size} is not a multiple of patch_size={patch_size}')
    tokens = (image_size // patch_size) ** 2 + 1
    self.embedding = nn.Conv2d(in_channels, hidden_size, patch_size, patch_size)
    self.cls = nn.Parameter(torch.zeros(1, 1, hidden_size))
    self.pos_embedding = nn.Parameter(torch.randn(1, tokens, hidden_size) * 0.02)
    self.blocks = nn.Sequential(*[EncoderBlock(hidden_size, num_heads, mlp_dim, eps)
                                  for _ in range(depth)])
    self.norm = nn.LayerNorm(hidden_size, eps=eps)
    self.head = nn.Linear(hidden_size, num_classes)
    nn.init.zeros_(self.head.weight)
    nn.init.zeros_(self.head.bias)

  def forward(self, x):
    x = self.embedding(x).flatten(2).transpose(1, 2)  # (B, patches, D), row-major as ours
    x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
    return self.head(self.norm(self.blocks(x))[:, 0])


def build(name, kwargs, num_classes, input_shape):
  """The twin of `awesome_jax.models.build(name, num_classes, input_shape, **kwargs)` for
  a classify config's model (model.name, model.kwargs) on HWC `input_shape`."""
  kwargs = dict(kwargs)
  h, w, c = input_shape
  if name in RESNET_BLOCKS:
    stem = kwargs.pop('stem', 'auto')
    if stem == 'imagenet' or (stem == 'auto' and h >= 64):
      raise ValueError(f'{name}: only the CIFAR stem has a twin here, got stem={stem!r}')
    blocks = tuple(kwargs.pop('stage_sizes', ())) or RESNET_BLOCKS[name]
    base = max(int(64 * kwargs.pop('width', 1.0)), 1)
    if kwargs:
      raise ValueError(f'{name}: no twin for model.kwargs {sorted(kwargs)}')
    return CifarResNet(blocks, base, num_classes, c)
  if name in VIT_ARCHS:
    f = {**VIT_ARCHS[name], **kwargs}
    if f.pop('gelu', 'exact') != 'exact' or f.pop('representation_size', None):
      raise ValueError(f'{name}: the twin has exact GELU and no pre-logits layer')
    if f.pop('dropout_rate', 0.0) or f.pop('attention_dropout_rate', 0.0):
      raise ValueError(f'{name}: the twin has no dropout')
    size = f.pop('image_size', h)
    if size != h or h != w:
      raise ValueError(f'{name}: the twin takes square images of its image_size, got '
                       f'{input_shape}')
    mlp_dim = f.pop('mlp_dim', None) or 4 * f['hidden_size']
    net = ViT(size, f.pop('patch_size'), f.pop('hidden_size'), f.pop('depth'),
              f.pop('num_heads'), mlp_dim, num_classes, c, f.pop('layer_norm_eps', 1e-6))
    if f:
      raise ValueError(f'{name}: no twin for model.kwargs {sorted(f)}')
    return net
  raise ValueError(f'{name}: no PyTorch twin; have '
                   f'{", ".join(list(RESNET_BLOCKS) + list(VIT_ARCHS))}')


def count_params(net):
  """The number of trained scalars (batch-norm running statistics are buffers)."""
  return sum(p.numel() for p in net.parameters())


def warmup_cosine(total_steps, warmup_steps=0):
  """The lr factor (for torch.optim.lr_scheduler.LambdaLR) of
  `awesome_jax.train.make_schedule`: linear warm-up from 0, then cosine decay to 0."""
  def factor(step):
    if warmup_steps and step < warmup_steps:
      return step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0), span) / span
    return 0.5 * (1 + math.cos(math.pi * t))
  return factor
