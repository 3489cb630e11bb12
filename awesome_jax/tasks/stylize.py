"""The stylize task: a stylized copy of a dataset (Geirhos et al. 2019), each image once.

`run(config, workdir)` stylizes every image of the content (config.data: CIFAR-10's
files, an image folder, a TFDS dataset streamed one example at a time, or tiny synthetic
images) exactly once, with the style image that (config.seed, its index) picks, into
workdir/<split>/<class>/*.png, with the writer of `awesome_jax/stylize.py` (AdaIN or
the Fourier amplitude swap). A file there is complete (written under a temporary name,
then renamed), so a restarted run writes only the images still missing.

Outputs in the workdir:
* <split>/<class>/*.png: the stylized images (names: the content file's name for a
  folder, <index:06d>.png for arrays, <index:08d>.png for TFDS); <split>.tar too with
  config.tar, once the split is complete.
* style_textures/<size>px/: the procedural textures used when config.style.dir is '' and
  config.style.texture_size is set (with 0, the default, each texture is made at its
  content image's size as it is needed, and not written: `stylize.Textures`).
* <split>.recipe.json: what decides the images (recipe_version, content and its TFDS
  reader, split, size, styles, method, weights, alpha, seed), written before the first
  image; a restart with a different recipe stops with one line naming the field, instead
  of mixing two recipes in a split. Recipe versions: 1 (no recipe_version field): the
  procedural textures were made at style.texture_size (256) and resized to the content's
  size, which made about 15 % of stylized CIFAR-10 images near flat (fine gratings
  averaged away); 2: style.texture_size=0 makes them at the content's size.
* results.json: this run's counts (total, written, skipped), time, images/s and config,
  and under 'splits' the same for every split written into the workdir.

Config errors (`check`, data-free, what `main --dry_run` runs) and bad inputs at the
start of `run` (a style folder that is empty or unreadable, a content folder without
class subfolders, a missing weight file) raise `StylizeError` with one line naming the
field.
"""

import json
import os
import time

import numpy as np

from awesome_jax import data as data_lib
from awesome_jax import stylize as st

CONTENTS = ('cifar10', 'folder', 'synthetic', st.TFDS_PREFIX + 'NAME')
ARRAY_SPLITS = ('train', 'test')
TEXTURES_DIR = 'style_textures'
RESULTS_FILE = 'results.json'
# what a split's images are made by, beyond the config: 2 = styles fitted to the content
# by `stylize.write_stylized` (procedural textures made at the content's size when
# style.texture_size is 0; style images resized); 1 (no field) = before
RECIPE_VERSION = 2


class StylizeError(data_lib.DataError):
  """A stylize config field has an impossible value, or an input is missing or
  unreadable (a data.DataError, so that main reports it in one line)."""


def _is_int(v):
  return isinstance(v, int) and not isinstance(v, bool)


def check(config):
  """The 'stylize' task's config checks that need no data (see main --dry_run)."""
  d, s, a = config.data, config.style, config.adain
  alpha = config.alpha
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
    raise StylizeError(f'alpha={alpha!r}: must be in [0, 1] (1: all style, 0: the content)')
  if config.method not in st.METHODS:
    raise StylizeError(f'method={config.method!r}: unknown; allowed: '
                       f'{", ".join(st.METHODS)}')
  if not _is_int(config.seed):
    raise StylizeError(f'seed={config.seed!r}: must be an integer')
  for field in ('tar', 'progress_bar'):
    if not isinstance(config[field], bool):
      raise StylizeError(f'{field}={config[field]!r}: must be True or False')
  check_data(d)
  if not isinstance(s.dir, str):
    raise StylizeError(f'style.dir={s.dir!r}: must be a folder of style images or \'\'')
  if not _is_int(s.textures) or s.textures < 0:
    raise StylizeError(f'style.textures={s.textures!r}: must be an integer >= 0')
  if not _is_int(s.texture_size) or s.texture_size < 0:
    raise StylizeError(f'style.texture_size={s.texture_size!r}: must be an integer >= 0 '
                       "(0 = each content image's size)")
  if not s.dir and not s.textures:
    raise StylizeError("style.dir='': give a folder of style images (e.g. paintings); "
                       'style.textures=0 allows no procedural stand-in')
  if config.method == 'adain':
    if a.decoder_ckpt and (a.vgg or a.decoder):
      raise StylizeError('adain.decoder_ckpt: give either it or adain.vgg + adain.decoder, '
                         'not both')
    if not a.decoder_ckpt and not (a.vgg and a.decoder):
      missing = ' and '.join(f'adain.{f}' for f in ('vgg', 'decoder') if not a[f])
      raise StylizeError(f"{missing}='': method=adain needs adain.vgg and adain.decoder "
                         "(pytorch-AdaIN's vgg_normalised.pth, decoder.pth) or "
                         'adain.decoder_ckpt (a workdir of `python -m awesome_jax.stylize '
                         'train-decoder`)')


def check_data(d):
  """The data fields: the content's name, split, size and synthetic shape."""
  name = d.name
  if not isinstance(name, str) or not (name in CONTENTS or st.is_tfds(name)):
    raise StylizeError(f'data.name={name!r}: unknown; allowed: {", ".join(CONTENTS)} '
                       f'(e.g. {st.TFDS_PREFIX}imagenet2012)')
  if st.is_tfds(name) and not name[len(st.TFDS_PREFIX):]:
    raise StylizeError(f'data.name={name!r}: no TFDS dataset name after '
                       f"'{st.TFDS_PREFIX}' (e.g. {st.TFDS_PREFIX}imagenet2012)")
  if not isinstance(d.split, str) or not d.split.strip():
    raise StylizeError(f'data.split={d.split!r}: must name a split (e.g. train)')
  if name in ('cifar10', 'synthetic') and d.split not in ARRAY_SPLITS:
    raise StylizeError(f'data.split={d.split!r}: unknown for data.name={name}; allowed: '
                       f'{", ".join(ARRAY_SPLITS)}')
  if name == 'folder':
    if not d.data_dir:
      raise StylizeError("data.data_dir='': data.name=folder reads the image folder "
                         'data_dir/<split>/<class>/<image>; set the folder')
    if d.split != os.path.basename(d.split) or d.split in ('.', '..'):
      raise StylizeError(f'data.split={d.split!r}: must be a folder name in data.data_dir')
  if not _is_int(d.size) or d.size < 0:
    raise StylizeError(f'data.size={d.size!r}: must be an integer >= 0 (0 = keep each '
                       "image's size)")
  if name == 'synthetic':
    shape = tuple(d.synthetic_shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
      raise StylizeError(f'data.synthetic_shape={shape!r}: must be (H, W, 3) with sizes '
                         '>= 1')
    for field in ('synthetic_classes', 'synthetic_images'):
      if not _is_int(d[field]) or d[field] < 1:
        raise StylizeError(f'data.{field}={d[field]!r}: must be a positive integer')


def _input(field, fn, *args):
  """fn(*args), a ValueError of the stylize library as a StylizeError naming `field`."""
  try:
    return fn(*args)
  except ValueError as e:
    raise StylizeError(f'{field}: {data_lib.first_line(e, with_type=False)}') from None


def style_images(config, workdir):
  """(style images for stylize.write_stylized, their description for the recipe):
  style.dir's images; or the procedural textures: with style.texture_size 0, a
  stylize.Textures, made at each content image's size; else written once into
  workdir/style_textures/<size>px (each resized to its content image's size)."""
  s = config.style
  if s.dir:
    paths = _input('style.dir', st.list_styles, s.dir)
    return paths, {'style_dir': os.path.abspath(s.dir), 'styles': len(paths)}
  if not s.texture_size:
    return st.Textures(s.textures, config.seed), {
        'style_dir': '', 'styles': s.textures, 'texture_size': 0}
  folder = os.path.join(workdir, TEXTURES_DIR, f'{s.texture_size}px')
  paths = st.write_textures(folder, s.textures, s.texture_size, config.seed,
                            progress=config.progress_bar)
  return paths, {'style_dir': '', 'styles': s.textures, 'texture_size': s.texture_size}


def content_source(config):
  """(content for stylize.write_stylized, its description for the recipe). A folder is
  listed here (one line if it has no class subfolders); CIFAR-10's python batches or
  its .tar.gz are read into memory (data.load_files; CIFAR-10 fits); TFDS is opened by
  the writer, which streams it."""
  d = config.data
  if st.is_tfds(d.name):
    return d.name, {'content': d.name, 'reader': st.tfds_reader()}
  if d.name == 'synthetic':
    ds = data_lib.make_synthetic(d.synthetic_classes, tuple(d.synthetic_shape),
                                 d.synthetic_images, d.synthetic_images, seed=config.seed)
    x, y = (ds.x_train, ds.y_train) if d.split == 'train' else (ds.x_test, ds.y_test)
    return {'x': np.round(x * 255).astype(np.uint8), 'y': y}, {
        'content': 'synthetic', 'synthetic_shape': list(d.synthetic_shape),
        'synthetic_classes': d.synthetic_classes, 'synthetic_images': d.synthetic_images}
  if d.name == 'cifar10' and not d.data_dir:
    return st.TFDS_PREFIX + 'cifar10', {'content': st.TFDS_PREFIX + 'cifar10',
                                        'reader': st.tfds_reader()}
  if not os.path.isdir(d.data_dir):
    raise StylizeError(f'data.data_dir={d.data_dir!r}: not a directory')
  folder = os.path.join(d.data_dir, d.split)
  about = {'content': d.name, 'data_dir': os.path.abspath(d.data_dir)}
  if d.name == 'folder' or os.path.isdir(folder):
    _input('data.data_dir', st.list_content, folder)
    return folder, about
  dataset = data_lib.load_files('cifar10', d.data_dir)  # one-line DataErrors
  x, y = ((dataset.x_train, dataset.y_train) if d.split == 'train' else
          (dataset.x_test, dataset.y_test))
  return {'x': np.round(x * 255).astype(np.uint8), 'y': y,
          'classes': data_lib.CIFAR10_CLASSES}, about


def load_weights(config):
  """(variables, net, their description) of config.adain for method adain, else
  (None, None, {}); a missing or unfitting file raises a StylizeError naming the field."""
  a = config.adain
  if config.method != 'adain':
    return None, None, {}
  if a.decoder_ckpt:
    if not os.path.isdir(a.decoder_ckpt):
      raise StylizeError(f'adain.decoder_ckpt={a.decoder_ckpt!r}: not a directory')
    from awesome_jax import stylize_train  # pylint: disable=g-import-not-at-top
    try:
      net, enc_vars, dec_vars = stylize_train.load_trained(a.decoder_ckpt)
    except ValueError as e:
      message = data_lib.first_line(e, with_type=False).removeprefix(
          f'--decoder_ckpt {a.decoder_ckpt}: ')
      raise StylizeError(f'adain.decoder_ckpt={a.decoder_ckpt!r}: {message}') from None
    return (enc_vars, dec_vars), net, {'decoder_ckpt': os.path.abspath(a.decoder_ckpt)}
  for field in ('vgg', 'decoder'):
    if not os.path.isfile(a[field]):
      raise StylizeError(f'adain.{field}={a[field]!r}: no such file')
  from awesome_jax.models import adain  # pylint: disable=g-import-not-at-top
  variables = _input('adain.vgg / adain.decoder', adain.from_torch, a.vgg, a.decoder)
  return variables, None, {'vgg': os.path.abspath(a.vgg),
                           'decoder': os.path.abspath(a.decoder)}


def output_folder(config):
  """The folder of the split in the workdir (a TFDS slice spelled for file systems)."""
  d = config.data
  tfds = st.is_tfds(d.name) or (d.name == 'cifar10' and not d.data_dir)
  return st.split_folder(d.split) if tfds else d.split


def check_recipe(workdir, folder, recipe):
  """Writes workdir/<folder>.recipe.json, or, when there, checks that `recipe` is the
  one the split was started with."""
  path = os.path.join(workdir, f'{folder}.recipe.json')
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    version = before.get('recipe_version', 1)
    if version != recipe.get('recipe_version', 1):
      raise StylizeError(
          f'recipe_version: {workdir}/{folder} was started with recipe version {version}, '
          f'this run writes version {recipe.get("recipe_version", 1)} (see '
          f'awesome_jax/tasks/stylize.py); use another workdir (or delete {folder}/ and '
          f'{path})')
    for key in sorted(set(before) | set(recipe)):
      if before.get(key) != recipe.get(key):
        raise StylizeError(
            f'{key}: {workdir}/{folder} was started with {before.get(key)!r}, this run has '
            f'{recipe.get(key)!r}; use another workdir (or delete {folder}/ and {path})')
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(recipe, f, indent=2)
  os.replace(tmp, path)


def run(config, workdir):
  """Stylizes config.data's split into workdir/<split>/<class>/*.png; returns this run's
  results (also in workdir/results.json)."""
  from awesome_jax import distributed  # pylint: disable=g-import-not-at-top
  check(config)
  if not distributed.is_writer():  # one process writes the folder (others: nothing to do)
    return {}
  os.makedirs(workdir, exist_ok=True)
  # every input is checked before the weights load and before the first image
  content, about_content = content_source(config)
  styles, about_styles = style_images(config, workdir)
  variables, net, about_weights = load_weights(config)
  d = config.data
  folder = output_folder(config)
  recipe = {'recipe_version': RECIPE_VERSION, **about_content, 'split': d.split,
            'size': d.size, **about_styles, 'method': config.method, **about_weights,
            'alpha': float(config.alpha), 'seed': config.seed}
  check_recipe(workdir, folder, recipe)
  start = time.time()
  try:
    result = st.write_stylized(content, styles, workdir, config.method, split=d.split,
                               seed=config.seed, alpha=config.alpha, size=d.size or None,
                               variables=variables, tar=config.tar,
                               progress=config.progress_bar, net=net,
                               tfds_data_dir=d.tfds_data_dir or None)
  except StylizeError:
    raise
  except ValueError as e:  # an input that changed since it was checked, a TFDS failure
    raise StylizeError(data_lib.first_line(e, with_type=False)) from None
  seconds = time.time() - start
  entry = {'split': d.split, 'folder': folder, **result,
           'complete': result['total'] is not None and
                       result['skipped'] + result['written'] == result['total'],
           'seconds': round(seconds, 3),
           'images_per_second': round(result['written'] / seconds, 3) if seconds else None,
           'recipe': recipe, 'config': json.loads(config.to_json_best_effort())}
  path = os.path.join(workdir, RESULTS_FILE)
  splits = {}
  if os.path.exists(path):
    with open(path) as f:
      splits = json.load(f).get('splits', {})
  splits[folder] = entry
  out = {**entry, 'splits': splits}
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(out, f, indent=2)
  os.replace(tmp, path)
  print(f'{folder}: {result["written"]} images written, {result["skipped"]} already there '
        f'({result["total"]} in all) in {seconds:.1f} s -> {os.path.join(workdir, folder)}'
        + (f', {result["tar"]}' if result['tar'] else ''))
  return out
