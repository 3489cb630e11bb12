"""CNN vs Transformer at CIFAR scale (Tuli et al. 2021): train a CIFAR ResNet and ViT.

Presets (`configs/classify.py:PRESET`):
  resnet20_cifar  (default) ResNet-20 on CIFAR-10: SGD + momentum, cosine, 30 epochs
  vit_cifar       a ViT with 4x4 patches on CIFAR-10: AdamW, warm-up + cosine, 30 epochs
  tiny            synthetic 32x32 RGB blobs, a tiny ResNet, 2 epochs (tests)
  tiny_vit        the same data, a tiny ViT (tests)
  resnet50_sin    ResNet-50 on an ImageNet-size image folder (Stylized-ImageNet), 224x224,
                  streamed from disk (data.name=folder), 60 epochs (below)

At the end of a CIFAR-10 run the trained model is evaluated on the 7 cue-conflict classes
that are CIFAR-10 classes (awesome_jax/cifar_cue_conflict.py): shape bias with its bootstrap
interval, shape/texture accuracy, edges/silhouettes accuracy, kappa and JS distances vs the
humans, into results.json ('cue_conflict') and shape_bias.png. The same command on a
finished workdir only re-runs that evaluation (e.g. with other cue_conflict fields).
The stimuli are fetched once into the cache folder unless cue_conflict.stimuli_root names a
folder; 'none' skips the evaluation (the default of the tiny presets: no network).

ResNet-20 (He et al. 2016, three stages of 16/32/64 channels, 3 basic blocks each) is the
registry's `resnet18` with `stage_sizes=(3, 3, 3)`, `width=0.25` and the 3x3 CIFAR stem;
its shortcuts where the shape changes are 1x1 projections (the paper's option B, 0.27 M
parameters, not option A's zero padding). Chosen over a width-scaled ResNet-18: the
standard CIFAR net with a published number (91.25 % in the paper's 164 epochs), and as
cheap per step; 30 cosine epochs should give ~90 % (the target: >= 88 % on the JPEG
CIFAR-10; not yet run to the end here).

The ViT's size was chosen for an epoch as costly as ResNet-20's on a 2-core CPU. One
training step at batch 128 on random 32x32x3 data (XLA:CPU, 2 cores shared with other
runs, so slower than an idle machine; median of 3 x 5 steps), at load average ~9 / ~4:
  resnet20_cifar (272,474 params)                      2.27 / 1.71 s/step (0.44 / 0.59 /s)
  vit_cifar: hidden 128, depth 6, 4 heads, MLP 256 (811,146)  2.39 / 1.87 s/step
  (rejected: hidden 192, depth 6, 3 heads, MLP 384: 4.1 s; hidden 128, depth 4: 1.65 s)
An epoch is 390 steps: 11-15 min at those loads, so 30 epochs take 5-8 hours there.

ImageNet scale (Geirhos et al. 2019, Table 2): the registry's ResNet-50 (zoo `resnet50`,
torchvision's layout, 224x224, as many classes as the folder has class subfolders) on
image folders streamed from disk (data.name=folder, awesome_jax/folder_stream.py:
random-resized crop + flip, ImageNet mean/std; test: resize 256, centre crop 224).
resnet50_sin is their recipe (texture-vs-shape README, "models" section): SGD momentum
0.9, batch 256, lr 0.1, weight decay 1e-4, 60 epochs on SIN; SIN+IN 45 epochs of the
doubled set (as many steps as 90 ImageNet epochs); then fine-tuned on IN for 60 epochs at
lr 0.01. Deviations: the lr follows this trainer's cosine to 0, not their step decay
(x0.1 every 20 epochs for SIN, every 15 for SIN+IN, after 30 for the fine-tuning); and
SIN and SIN+IN start from a random init, not from torchvision's ImageNet weights as
theirs did (init_from takes a classify workdir). train.shard=True: data-parallel over
every device (batch 256 must divide by their count). Folders: /data/imagenet holds
ILSVRC2012 as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (pytorch/examples'
imagenet/extract_ILSVRC.sh makes them from ILSVRC2012_img_train.tar and _val.tar);
/data/sin is Stylized-ImageNet as configs/stylize.py:imagenet writes it (train/ and
validation/, class folders named by the wnids as ILSVRC2012's; the test split is the
first of val/, validation/, test/ there):
  python -m awesome_jax.main --config=configs/classify.py:resnet50_sin \
      --workdir=/runs/geirhos/sin --config.data.data_dir=/data/sin \
      --config.data.extra_test=in=/data/imagenet,sin=/data/sin
  python -m awesome_jax.main --config=configs/classify.py:resnet50_sin \
      --workdir=/runs/geirhos/sin_in --config.model.label=resnet50_sin_in \
      --config.data.data_dir=/data/imagenet --config.data.extra_train_dirs=/data/sin \
      --config.train.epochs=45 --config.data.extra_test=in=/data/imagenet,sin=/data/sin
  python -m awesome_jax.main --config=configs/classify.py:resnet50_sin \
      --workdir=/runs/geirhos/sin_in_in --config.model.label=resnet50_sin_in_in \
      --config.data.data_dir=/data/imagenet --config.init_from=/runs/geirhos/sin_in \
      --config.train.epochs=60 --config.train.lr=0.01 \
      --config.data.extra_test=in=/data/imagenet,sin=/data/sin
These are runs for GPUs or TPUs (none was run or timed here: far out of reach of a 2-core
CPU). Their length is the images they go through: 60 epochs of SIN (or of the IN
fine-tuning) are 77 M images, 45 of SIN+IN 115 M: 21 h and 32 h at 1,000 images/s, 11 h
and 16 h at 2,000.
Each image is decoded and cropped by PIL on the host's CPU cores (a thread pool), which
may set the pace before the accelerators do; `--config.train.max_steps=200` gives a
short run whose results.json says the images/s of that machine. The 16-class shape bias
of the trained models (the paper's Figure 5), all in one figure, by the shape_bias task:
  python -m awesome_jax.main --config=configs/shape_bias.py --workdir=/runs/geirhos/bias \
      --config.models=sin=/runs/geirhos/sin,sin_in=/runs/geirhos/sin_in,sin_in_in=/runs/geirhos/sin_in_in

Stylized CIFAR-10 (Geirhos Table 2 at CIFAR scale): ResNet-20 trained on CIFAR-10 (the
IN analogue), on stylized CIFAR-10 (SIN: configs/stylize.py's folder, train/ and test/),
on both (SIN+IN: 15 epochs of the 100,000 images, the ~11,700 steps of 30 epochs of
one set), and SIN+IN fine-tuned on CIFAR-10 (the Shape-ResNet analogue: Geirhos
fine-tuned 60 epochs at lr 0.01 after 90; here 20 after 30). Every run is also tested on
both test sets (data.extra_test) and on the cue-conflict stimuli:
  CUE="--config.cue_conflict.stimuli_root=../shared/data/cue_conflict \\
       --config.cue_conflict.humans_root=../shared/data/human_decisions"
  TESTS=--config.data.extra_test=cifar10=../shared/data/cifar10_jpeg,stylized=/tmp/runs/sin_cifar
  RUN="python -m awesome_jax.main --config=configs/classify.py:resnet20_cifar $CUE $TESTS"
  $RUN --workdir=/tmp/runs/stylized/in --config.model.label=resnet20_in \\
      --config.data.data_dir=../shared/data/cifar10_jpeg
  $RUN --workdir=/tmp/runs/stylized/sin --config.model.label=resnet20_sin \\
      --config.data.data_dir=/tmp/runs/sin_cifar
  $RUN --workdir=/tmp/runs/stylized/sin_in --config.model.label=resnet20_sin_in \\
      --config.data.data_dir=../shared/data/cifar10_jpeg \\
      --config.data.extra_train_dirs=/tmp/runs/sin_cifar --config.train.epochs=15
  $RUN --workdir=/tmp/runs/stylized/sin_in_in --config.model.label=resnet20_sin_in_in \\
      --config.data.data_dir=../shared/data/cifar10_jpeg \\
      --config.init_from=/tmp/runs/stylized/sin_in --config.train.epochs=20 \\
      --config.train.lr=0.01
  python scripts/compare_stylized.py --runs IN=/tmp/runs/stylized/in \\
      SIN=/tmp/runs/stylized/sin SIN+IN=/tmp/runs/stylized/sin_in \\
      'SIN+IN->IN=/tmp/runs/stylized/sin_in_in' --out /tmp/runs/stylized/compare
"""

import ml_collections

PRESETS = ('resnet20_cifar', 'vit_cifar', 'tiny', 'tiny_vit', 'resnet50_sin')

RESNET20 = dict(stem='cifar', width=0.25, stage_sizes=(3, 3, 3))
# patch 4 on 32x32: 64 patches + the class token; sized to cost what ResNet-20 does
VIT_CIFAR = dict(patch_size=4, hidden_size=128, depth=6, num_heads=4, mlp_dim=256)


def get_config(preset='resnet20_cifar'):
  c = ml_collections.ConfigDict()
  c.task = 'classify'
  c.seed = 0                      # seeds the init, the batch order and the augmentation
  c.progress_bar = True
  c.init_from = ''                # workdir of a finished classify run: start from its
                                  # final weights (fresh optimizer; '' = random init)

  c.data = ml_collections.ConfigDict()
  c.data.name = 'cifar10'         # cifar10 | mnist | usps | digits | synthetic | folder
                                  # (an image folder streamed from disk: data_dir/train/
                                  # <class>/<image>, val/ or test/ alike; any size)
  c.data.source = 'auto'          # tfds | files | download | auto: files if data_dir,
                                  # else tfds, else download (awesome_jax/download.py)
  c.data.data_dir = ''            # e.g. ../shared/data/cifar10_jpeg (train/<class>/*.jpg)
  c.data.extra_train_dirs = ''    # 'DIR,DIR2': CIFAR-10 folders whose train splits are
                                  # added to data_dir's (e.g. stylized + original CIFAR-10)
  c.data.extra_test = ''          # 'name=DIR,name2=DIR2': CIFAR-10 folders whose test
                                  # splits the final model is tested on (results.json
                                  # 'extra_test'; normalised as the training data)
  c.data.tfds_data_dir = ''
  c.data.synthetic_shape = (32, 32, 3)  # data.name=synthetic: image shape HWC
  c.data.synthetic_classes = 4    # data.name=synthetic: number of classes (10: read as the
                                  # CIFAR-10 classes by the cue-conflict evaluation, in tests)
  c.data.image_size = 224         # data.name=folder: side of the square crops trained and
                                  # tested on (test: resize to 256/224 of it, centre crop)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnet18'       # a name of models.build: resnet18, vit_ti16, lenet, ...
  c.model.kwargs = ml_collections.ConfigDict(RESNET20)  # fields of that model
  c.model.label = 'resnet20'      # its name in results.json and prints ('' = model.name)

  c.train = ml_collections.ConfigDict()
  c.train.optimizer = 'sgd'       # sgd (momentum) | adam | adamw (decoupled decay)
  c.train.lr = 0.1                # peak learning rate (after warm-up), cosine to 0
  c.train.momentum = 0.9          # sgd only
  c.train.weight_decay = 5e-4     # sgd/adam: L2 added to the gradient; adamw: decoupled
  c.train.decay_1d_params = True  # adamw: decay biases and norm scales too
  c.train.warmup_epochs = 0.0     # linear lr warm-up from 0 (epochs, may be fractional)
  c.train.label_smoothing = 0.0   # mass spread evenly over all classes, in [0, 1)
  c.train.grad_clip = 0.0         # clip the gradient's global norm (0 = no clipping)
  c.train.batch_size = 128
  c.train.epochs = 30             # the cosine decays over all of them
  c.train.max_steps = 0           # a shorter run: the schedule (warm-up, cosine) shrinks to
                                  # it (0 = epochs * steps per epoch)
  c.train.augment = True          # random crop (pad 4) + horizontal flip (data.name=folder:
                                  # False, the folder's random-resized crop + flip replace it)
  c.train.extra_augment = ''      # more augmentation after crop + flip, per example:
                                  # 'rotation,color,blur,sobel,noise,cutout' or any of
                                  # them ('' = none; awesome_jax/augment.py)
  c.train.extra_augment_params = ''  # 'rotation_degrees=30,noise_std=0.1' (defaults:
                                     # augment.PARAMS)
  c.train.shard = False           # split each batch over all devices (of all hosts), state
                                  # replicated; train.batch_size must divide by their count

  # the 7-class cue-conflict evaluation at the end (data.name=cifar10, or synthetic with
  # 10 classes; skipped for other data, which results.json says)
  c.cue_conflict = ml_collections.ConfigDict()
  # stimuli_root/{stimuli,edges,silhouettes}/<shape class>/<name>.png: each condition whose
  # folder is there ('' = the published stimuli, fetched once into $AWESOME_JAX_DATA or
  # ~/.cache/awesome_jax at the start of the run; 'none' = no cue-conflict evaluation)
  c.cue_conflict.stimuli_root = ''
  # humans_root/{cue-conflict,edge,silhouette}/*.csv ('' = the published decisions, fetched
  # like the stimuli; 'none' = no human comparison)
  c.cue_conflict.humans_root = ''
  c.cue_conflict.size = 32        # stimuli resized (antialiased) from 224 to size x size; 32
                                  # for CIFAR models; another size must fit the model (a
                                  # ResNet takes any, a ViT only its training size)
  c.cue_conflict.resamples = 1000  # bootstrap resamples of the shape-bias interval

  c.eval_every = 0                # steps between test evaluations (0 = every epoch)
  c.checkpoint_every = 100        # steps between checkpoints (also at every epoch's end)
  c.log_every = 50                # steps between train/ metrics lines

  if preset == 'resnet20_cifar':
    pass
  elif preset == 'vit_cifar':
    c.model.name = 'vit_ti16'     # the registry's ViT, re-shaped by model.kwargs
    c.model.kwargs = ml_collections.ConfigDict(VIT_CIFAR)
    c.model.label = 'vit_cifar'
    c.train.optimizer = 'adamw'
    c.train.lr = 1e-3
    c.train.weight_decay = 0.05
    c.train.decay_1d_params = False
    c.train.warmup_epochs = 5.0
    c.train.label_smoothing = 0.1
    c.train.grad_clip = 1.0
  elif preset in ('tiny', 'tiny_vit'):
    c.data.name = 'synthetic'
    c.model.kwargs = ml_collections.ConfigDict(
        dict(stem='cifar', width=0.125, stage_sizes=(1, 1)))
    c.model.label = preset
    c.train.batch_size = 64
    c.train.epochs = 2            # 512 images: 8 steps per epoch
    c.checkpoint_every = 4
    c.log_every = 4
    c.progress_bar = False
    c.cue_conflict.stimuli_root = 'none'  # no download in tests (they point it at a
                                          # notebook.tiny_cue_conflict folder)
    if preset == 'tiny_vit':
      c.model.name = 'vit_ti16'
      c.model.kwargs = ml_collections.ConfigDict(
          dict(patch_size=8, hidden_size=32, depth=1, num_heads=2, mlp_dim=64))
      c.train.optimizer = 'adamw'
      c.train.lr = 1e-3
      c.train.weight_decay = 0.05
      c.train.decay_1d_params = False
      c.train.warmup_epochs = 0.5
      c.train.label_smoothing = 0.1
      c.train.grad_clip = 1.0
  elif preset == 'resnet50_sin':  # Geirhos et al. 2019's SIN recipe (module docstring)
    c.data.name = 'folder'
    c.data.image_size = 224
    c.model.name = 'resnet50'     # the zoo's, torchvision's layout
    c.model.kwargs = ml_collections.ConfigDict()
    c.model.label = 'resnet50_sin'
    c.train.weight_decay = 1e-4
    c.train.batch_size = 256
    c.train.epochs = 60
    c.train.augment = False       # the folder pipeline crops and flips
    c.train.shard = True          # every device (of every host)
    c.checkpoint_every = 1000     # ~5,000 steps per ImageNet epoch
    c.log_every = 100
  else:
    raise ValueError(f'configs/classify.py:{preset}: unknown preset; allowed: '
                     f'{", ".join(PRESETS)}')
  return c
