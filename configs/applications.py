"""What distilled data is for (Wang et al. 2018): domain adaptation and data poisoning.

Every field of configs/distill.py (the distillation itself) plus `source` (the domain
the nets were pretrained on), `pretrain` (the pools of pretrained nets) and `attack`.

Presets (`configs/applications.py:PRESET`):
  usps_to_mnist        (default) adapt LeNets pretrained on USPS (resized to 28x28) to
                       MNIST with 100 distilled MNIST images, 10 steps x 3 epochs, from
                       random pretrained nets (4 sampled per outer step from a pool of
                       16; tested on 8 held-out ones)
  usps_to_mnist_fixed  the same for one fixed pretrained net (tested on it)
  mnist_to_usps        adapt MNIST LeNets to USPS, random pretrained nets
  mnist_to_usps_fixed  the same, one fixed net
  attack_mnist         poison LeNets well trained on MNIST: after the steps on the
                       distilled images, class 0 is called 1 (random trained nets)
  attack_mnist_fixed   the same for one fixed trained net
  attack_cifar10       the original code's documented attack: AlexCifarNet on
                       CIFAR-10, class 0 -> 1 (hours on a CPU; a GPU run)
  tiny_adapt, tiny_attack  scikit-learn digits, an MLP, seconds (tests, smoke runs);
                       tiny_adapt's source domain is the transposed digits

The pools are the CPU-budgeted protocol of RESULTS.md: 16 training and 8 test nets,
5 epochs of Adam each (2 for the random MNIST pools; the fixed nets 5) (the paper: 2,000 /
200 nets, 40 epochs of Adam at lr 2e-4); put
`pretrain.dir` on a shared folder to reuse one source's pools across runs.
"""

import importlib.util
import os

import ml_collections

PRESETS = ('usps_to_mnist', 'usps_to_mnist_fixed', 'mnist_to_usps', 'mnist_to_usps_fixed',
           'attack_mnist', 'attack_mnist_fixed', 'attack_cifar10', 'tiny_adapt',
           'tiny_attack')


def _distill_config(preset):
  """configs/distill.py's config (the file beside this one, whatever the working dir)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'distill.py')
  spec = importlib.util.spec_from_file_location('_distill_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def get_config(preset='usps_to_mnist'):
  if preset not in PRESETS:
    raise ValueError(f'configs/applications.py:{preset}: unknown preset; allowed: '
                     f'{", ".join(PRESETS)}')
  c = _distill_config('tiny' if preset.startswith('tiny') else 'paper')
  c.task = 'distill_attack' if 'attack' in preset else 'distill_adapt'

  c.source = ml_collections.ConfigDict()   # distill_adapt: the nets' pretraining domain
  c.source.name = 'usps'
  c.source.source = 'auto'
  c.source.data_dir = ''
  c.source.tfds_data_dir = ''
  c.source.transform = 'none'     # none | invert (1 - x) | transpose (x.T): a source
                                  # domain made from the target's own dataset

  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.kind = 'random'      # random: a pool of nets, n_inits sampled per outer step,
                                  # tested on a held-out pool | fixed: one net, tested on it
  c.pretrain.num_train_nets = 16  # the pool distillation samples from (random)
  c.pretrain.num_test_nets = 8    # held-out nets the set is tested on (random)
  c.pretrain.epochs = 5           # Adam epochs per net on the source (attack: the data)
  c.pretrain.batch_size = 128
  c.pretrain.lr = 1e-3
  c.pretrain.b1 = 0.5             # as the original code's pretraining
  c.pretrain.b2 = 0.999
  c.pretrain.chunk = 4            # nets saved together (a stopped run keeps finished chunks)
  c.pretrain.seed = 100           # the pools' inits and data orders
  c.pretrain.dir = ''             # where the pools are kept ('' = WORKDIR/pretrained)

  c.attack = ml_collections.ConfigDict()   # distill_attack
  c.attack.attack_class = 0       # the class the poisoned nets should call ...
  c.attack.target_class = 1       # ... this class

  c.distill.n_inits = 4           # pretrained nets per outer step (random); 1 (fixed)
  c.outer.steps = 400
  c.outer.batch_size = 256
  c.outer.decay_every = 0
  c.eval.every = 0                # (no periodic evaluation in these tasks)
  c.eval.baselines = True         # random real and k-means images, same budget
  c.eval.tune_nets = 2            # training-pool nets the baselines' lr is tuned on
  c.eval.val_size = 2000          # held-out target training images for that tuning
  c.eval.finetune_epochs = 1      # distill_adapt: upper bound, Adam on the full target
                                  # training set from each test net (0 = skip)
  c.checkpoint_every = 50

  if preset.endswith('_fixed'):
    c.pretrain.kind = 'fixed'
    c.distill.n_inits = 1
  if preset.startswith('usps_to_mnist'):
    c.data.name, c.source.name = 'mnist', 'usps'
  elif preset.startswith('mnist_to_usps'):
    c.data.name, c.source.name = 'usps', 'mnist'
    c.eval.val_size = 1000        # of USPS's 7,291 training images
  elif preset.startswith('attack_mnist'):
    c.data.name = c.source.name = 'mnist'
  if c.source.name == 'mnist' and c.pretrain.kind == 'random':
    c.pretrain.epochs = 2         # 24 MNIST nets: 2 epochs each (~98 %) fit a CPU budget
  elif preset == 'attack_cifar10':
    c.data.name = c.source.name = 'cifar10'
    c.model.name = 'alexcifarnet'
    c.distill.init_lr = 0.02
    c.pretrain.num_train_nets, c.pretrain.num_test_nets = 200, 20
    c.pretrain.epochs, c.pretrain.lr, c.pretrain.batch_size = 40, 2e-4, 1024
    c.outer.steps = 2000
  elif preset.startswith('tiny'):
    c.data.name = c.source.name = 'digits'
    if preset == 'tiny_adapt':
      c.source.transform = 'transpose'  # pretrain on transposed digits, adapt to digits
    else:
      c.outer.lr = 0.03
      c.outer.steps = 60
    c.pretrain.num_train_nets, c.pretrain.num_test_nets = 4, 2
    c.pretrain.epochs, c.pretrain.batch_size, c.pretrain.lr = 8, 64, 3e-3
    c.pretrain.chunk = 2
    c.distill.n_inits = 2
    c.distill.image_init = 'real'
    c.distill.init_lr = 0.3
    c.outer.steps = 30
    c.outer.batch_size = 128
    c.eval.val_size = 200
    c.eval.tune_nets = 2
    c.eval.finetune_epochs = 2
    c.checkpoint_every = 5
  return c
