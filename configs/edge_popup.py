"""edge-popup (Ramanujan et al. 2020): supermasks of random Conv-N nets on CIFAR-10.

Presets (`configs/edge_popup.py:PRESET`):
  conv4        (default) masked Conv4, keep 50 %, signed constant, the paper's SGD recipe
  conv4_dense  the dense Conv4 baseline (SGD lr 0.01 as the authors' baselines)
  conv2, conv6, conv8 and their _dense twins: the same for Conv2 / Conv6 / Conv8
  resnet18     masked ResNet-18 (CIFAR stem, non-affine BN), keep 50 %, signed constant
  resnet18_dense  its dense baseline
  tiny         synthetic 8x8 data, Conv2 at width 0.25, a few steps (tests)
  sweep        task edge_popup_sweep: accuracy vs keep_fraction per init + dense line
  sweep_tiny   the sweep on the tiny setting (tests)
"""

import ml_collections


CONV_PRESETS = tuple(f'conv{d}{m}' for d in (2, 4, 6, 8) for m in ('', '_dense'))


def get_config(preset='conv4'):
  c = ml_collections.ConfigDict()
  c.task = 'edge_popup'
  c.seed = 0                      # seeds the frozen weights, scores, batches, augmentation
  c.progress_bar = True

  c.data = ml_collections.ConfigDict()
  c.data.name = 'cifar10'         # cifar10 | mnist | synthetic | ...
  c.data.source = 'auto'          # tfds | files | download | auto: files if data_dir,
                                  # else tfds, else download (awesome_jax/download.py)
  c.data.data_dir = ''            # folder of CIFAR-10 batches / image folder / its .tar.gz
  c.data.tfds_data_dir = ''

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'conv'           # conv (Conv-N, see depth) | resnet18 | resnet50
  c.model.depth = 4               # arch=conv: Conv2 / Conv4 / Conv6 / Conv8
  c.model.width = 1.0             # channel multiplier
  c.model.mode = 'masked'         # masked (edge-popup) | dense (baseline)
  c.model.keep_fraction = 0.5     # fraction of each layer's weights KEPT, in (0, 1]
  c.model.weight_init = 'signed_constant'  # kaiming_normal | signed_constant | scaled_signed_constant
  c.model.norm = 'none'           # arch=conv: none (the authors' Conv-N) | batchnorm (non-affine)
  c.model.bn_affine = False       # resnets: learned BN scale/bias (the paper: none)
  c.model.stem = 'auto'           # resnets: cifar (3x3) | imagenet (7x7/2 + pool) | auto (by size)

  c.train = ml_collections.ConfigDict()
  c.train.optimizer = 'sgd'       # sgd | adam
  c.train.lr = 0.1                # the paper's masked runs; dense baselines use 0.01
  c.train.momentum = 0.9
  c.train.weight_decay = 1e-4
  c.train.batch_size = 128
  c.train.epochs = 100            # cosine decay over all of them
  c.train.max_steps = 0           # stop earlier (0 = epochs * steps per epoch)
  c.train.augment = True          # random crop (pad 4) + horizontal flip
  c.train.shard = False           # split each batch over all devices (of all hosts), state
                                  # replicated; train.batch_size must divide by their count

  c.sweep = ml_collections.ConfigDict()  # task edge_popup_sweep only
  c.sweep.keep_fractions = '0.1,0.3,0.5,0.7,0.9'
  c.sweep.weight_inits = 'signed_constant,kaiming_normal'
  c.sweep.dense_lr = 0.01         # the dense baseline's lr (the authors' baselines)

  c.eval_every = 0                # steps between test evaluations + checkpoints (0 = epoch)
  c.log_every = 50

  if preset in CONV_PRESETS:
    c.model.depth = int(preset[4])
    if preset.endswith('_dense'):
      c.model.mode = 'dense'
      c.train.lr = 0.01
  elif preset in ('resnet18', 'resnet18_dense'):
    c.model.arch = 'resnet18'
    if preset == 'resnet18_dense':
      c.model.mode = 'dense'
      c.train.lr = 0.1           # BN nets train well at 0.1 (the paper's ResNet baselines)
  elif preset in ('tiny', 'sweep_tiny'):
    c.data.name = 'synthetic'
    c.model.depth = 2
    c.model.width = 0.25
    c.train.batch_size = 32
    c.train.epochs = 4
    c.train.lr = 0.1
    c.train.augment = False
    c.log_every = 5
    if preset == 'sweep_tiny':
      c.task = 'edge_popup_sweep'
      c.sweep.keep_fractions = '0.3,0.7'
      c.sweep.weight_inits = 'signed_constant'
      c.sweep.dense_lr = 0.1
  elif preset == 'sweep':
    c.task = 'edge_popup_sweep'
  else:
    raise ValueError(f'configs/edge_popup.py:{preset}: unknown preset; allowed: '
                     f'{", ".join(CONV_PRESETS)}, resnet18, resnet18_dense, tiny, sweep, '
                     'sweep_tiny')
  return c
