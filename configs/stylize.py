"""Stylized datasets (Geirhos et al. 2019): every content image once, with a random style.

`python -m awesome_jax.main --config=configs/stylize.py:PRESET --workdir=DIR` writes
DIR/<split>/<class>/*.png (an image folder; DIR/<split>.tar too with tar=True), each
content image stylized exactly once with the style image that (seed, its index) picks
(`awesome_jax.stylize.style_index`). A restarted run skips the images already written,
and stops with one line if the recipe (content, styles, method, weights, alpha, size,
seed) differs from the one the split was started with. results.json: the counts (total,
written, skipped), images/s and the config, per split written into DIR.

Presets (`configs/stylize.py:PRESET`):
  cifar10   (default) CIFAR-10's train split: data.data_dir (python batches, a folder
            train/<class>/*.jpg or a .tar.gz of it, e.g. ../shared/data/cifar10_jpeg), or
            TFDS cifar10 streamed when it is ''; styles: style.dir, or, when it is '',
            procedural textures made at the content's size, 32x32 (a stand-in for the
            paintings of the original, which cannot be downloaded here); the Fourier
            amplitude swap (no weights), or AdaIN with --config.method=adain and either
            adain.decoder_ckpt (a decoder trained by `python -m awesome_jax.stylize
            train-decoder`) or adain.vgg + adain.decoder (pytorch-AdaIN's files).
  imagenet  TFDS imagenet2012 (train; --config.data.split=validation for the other),
            streamed one example at a time; style.dir: a folder of paintings that must
            be given (Kaggle "Painter by Numbers" train/, as in the original); AdaIN with
            pytorch-AdaIN's vgg_normalised.pth and decoder.pth (adain.vgg, adain.decoder:
            required); alpha 1; every image resized to 224x224 first (a square resize: one
            AdaIN compile, bounded disk; data.size=0 keeps each image's size but compiles
            once per distinct size).
  tiny      12 synthetic 16x16 images of 3 classes, 4 textures, the Fourier swap, a tar
            (tests, seconds).

A stylized CIFAR-10 to train on (the classify task reads a folder train/ + test/ of the
CIFAR-10 class names, `awesome_jax/data.py`):
  python -m awesome_jax.main --config=configs/stylize.py:cifar10 --workdir=runs/sin_cifar \\
      --config.data.data_dir=../shared/data/cifar10_jpeg
  python -m awesome_jax.main --config=configs/stylize.py:cifar10 --workdir=runs/sin_cifar \\
      --config.data.data_dir=../shared/data/cifar10_jpeg --config.data.split=test
  python -m awesome_jax.main --config=configs/classify.py --workdir=runs/r20_sin_cifar \\
      --config.data.data_dir=runs/sin_cifar

The ImageNet-scale recipe (Stylized-ImageNet, then a ResNet-50 trained on it):
  1. Paintings: Kaggle "Painter by Numbers" train.zip, unpacked to a folder; the AdaIN
     weights: vgg_normalised.pth and decoder.pth of naoto0804/pytorch-AdaIN; ImageNet:
     TFDS imagenet2012, prepared from the manually downloaded ILSVRC2012 tars.
  2. Stylize both splits (about 1.28 M + 50 k images, 224x224 PNGs; resumable):
       python -m awesome_jax.main --config=configs/stylize.py:imagenet --workdir=sin \\
           --config.style.dir=paintings/train --config.adain.vgg=vgg_normalised.pth \\
           --config.adain.decoder=decoder.pth
       ... the same with --config.data.split=validation
  3. Train a ResNet-50 of the zoo (`models.build('resnet50', 1000, (224, 224, 3))`) on
     sin/train, test on sin/validation and on ImageNet's validation split, and measure
     its shape bias with configs/shape_bias.py.
  Step 3 is configs/classify.py:resnet50_sin (data.name=folder streams the folder from
  disk, awesome_jax/folder_stream.py; its test split here is validation/); that
  docstring has the SIN, SIN+IN and fine-tuning commands. The shape bias of the trained
  model (the 16-class evaluation of configs/shape_bias.py) has no command yet: that task
  reads zoo weight files, not a classify workdir.
"""

import ml_collections

PRESETS = ('cifar10', 'imagenet', 'tiny')


def get_config(preset='cifar10'):
  c = ml_collections.ConfigDict()
  c.task = 'stylize'
  c.seed = 0                      # picks each image's style: image i gets the style that
                                  # (seed, i) draws; also seeds the procedural textures
  c.progress_bar = True
  c.tar = False                   # also DIR/<split>.tar (entries sorted, times zeroed)
                                  # once every image of the split is written

  c.data = ml_collections.ConfigDict()
  # what is stylized: cifar10 | folder | synthetic | tfds:NAME (any TFDS image dataset,
  # e.g. tfds:imagenet2012, streamed one example at a time; awesome_jax/stylize.py)
  c.data.name = 'cifar10'
  c.data.data_dir = ''            # cifar10: CIFAR-10's files (python batches, a folder
                                  # train/<class>/*.jpg or a .tar.gz of it; '' = TFDS
                                  # cifar10, streamed); folder: the folder holding
                                  # <split>/<class>/<image>
  c.data.tfds_data_dir = ''       # TFDS's data folder ('' = its default)
  c.data.split = 'train'          # the split stylized: cifar10 and synthetic: train | test;
                                  # folder: data_dir/<split>; tfds: a TFDS split ('train',
                                  # 'validation', 'train[:10000]': a folder of its own)
  c.data.size = 0                 # resize each content image to size x size first (0 =
                                  # keep its size; AdaIN compiles once per distinct size)
  c.data.synthetic_shape = (16, 16, 3)  # synthetic: image shape HWC (3 channels)
  c.data.synthetic_classes = 3    # synthetic: number of classes (folders 0, 1, ...)
  c.data.synthetic_images = 12    # synthetic: number of images in the split

  c.style = ml_collections.ConfigDict()
  c.style.dir = ''                # a folder of style images (any layout below it), e.g.
                                  # paintings; '' = procedural textures, written once into
                                  # DIR/style_textures (a stand-in for paintings)
  c.style.textures = 1000         # style.dir='': how many textures (0 = none: style.dir
                                  # must be given)
  c.style.texture_size = 0        # their size: 0 = made at each content image's size (all
                                  # their detail kept; stylize.Textures); N = made N x N,
                                  # written into DIR/style_textures/<N>px and resized to
                                  # the content's size like any style image, which averages
                                  # away detail finer than the content's pixels (N=256 on
                                  # CIFAR-10: ~15 % of Fourier-swapped images near flat)

  c.method = 'fourier'            # fourier: the weight-free Fourier amplitude swap | adain
  c.alpha = 1.0                   # style strength in [0, 1] (1: all style, 0: content)
  c.adain = ml_collections.ConfigDict()
  c.adain.vgg = ''                # pytorch-AdaIN's vgg_normalised.pth (with adain.decoder)
  c.adain.decoder = ''            # pytorch-AdaIN's decoder.pth
  c.adain.decoder_ckpt = ''       # or: the workdir of `python -m awesome_jax.stylize
                                  # train-decoder` (its encoder and newest decoder)

  if preset == 'cifar10':
    pass
  elif preset == 'imagenet':
    c.data.name = 'tfds:imagenet2012'
    c.data.size = 224
    c.style.textures = 0          # paintings only: style.dir must name their folder
    c.method = 'adain'
  elif preset == 'tiny':
    c.data.name = 'synthetic'
    c.style.textures = 4
    c.style.texture_size = 16
    c.tar = True
    c.progress_bar = False
  else:
    raise ValueError(f'configs/stylize.py:{preset}: unknown preset; allowed: '
                     f'{", ".join(PRESETS)}')
  return c
