"""Dataset distillation (Wang et al. 2018).

Presets as config strings: `configs/distill.py:PRESET`, PRESET one of
  mnist_momentum  (the default) the paper's T = 30 (10 steps x 3 epochs, 100 images,
               random init, LeNet) with a learned inner SGD momentum, learned labels,
               per-layer lrs, real-image init and 4 inits per step: the best MNIST recipe
               at T = 30 (90.0 % vs the paper's 79.5 %, RESULTS.md)
  paper        the paper's method: LeNet, random init, 10 steps x 3 epochs, 100 images,
               noise init, one lr per step, fixed one-hot labels, plain inner SGD
               (`mnist` is the same preset, its earlier name)
  mnist_fixed  LeNet, fixed init, 1 step x 3 epochs, 10 images (paper: 93.8%)
  mnist_t100   random init, 100 images, 10 steps x 10 epochs (T=100), learned labels and
               per-layer lrs, real-image init, 2 inits per step: past 88.5 % (RESULTS.md)
  cifar10      AlexCifarNet, random init, 100 images (paper: 36.8%)
  cifar10_cpu  the same with learned labels (init 4 x one-hot), per-layer lrs, real-image
               init at lr 0.01, 1,000 outer steps: the budgeted CPU recipe of RESULTS.md
  tiny         scikit-learn digits, MLP, a few outer steps (tests, smoke runs)
  evaluate     task distill_eval: train fresh nets on a saved distilled.npz
               (--config.eval.npz=PATH, --config.eval.schedule=distilled|minibatch)
Override any field: `--config.outer.steps=2000`.
"""

import ml_collections


def get_config(preset='mnist_momentum'):
  c = ml_collections.ConfigDict()
  c.task = 'distill'
  c.seed = 0                      # seeds the synthetic init, real batches, distill inits
  c.progress_bar = True

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'           # mnist | cifar10 | usps | digits | synthetic
  c.data.source = 'auto'          # tfds | files | download | auto: files if data_dir,
                                  # else tfds, else download (awesome_jax/download.py)
  c.data.data_dir = ''            # folder of the standard files ('' = tfds or download)
  c.data.tfds_data_dir = ''       # TFDS data_dir ('' = TFDS default)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'lenet'          # lenet | alexcifarnet | convnet | mlp
  c.model.kwargs = ml_collections.ConfigDict()  # extra constructor args (e.g. width)

  c.distill = ml_collections.ConfigDict()
  c.distill.images_per_class_per_step = 1  # images of each class in each inner batch
  c.distill.steps = 10            # distinct synthetic batches
  c.distill.epochs = 3            # passes over them: T = steps * epochs inner steps
  c.distill.init_lr = 0.02        # initial inner lr (softplus-parametrised, learned)
  c.distill.random_init = True    # fresh inits every outer step; False = one fixed init
  c.distill.n_inits = 1           # inits per outer step (vmapped), random init only
  c.distill.lr_per_layer = False  # one lr per inner step and param tensor (T x P), not T
  c.distill.learn_labels = False  # learn soft labels (softmax of logits) too
  c.distill.label_init_scale = 1.0  # initial label logits = scale * one_hot
  c.distill.momentum = 0.0         # inner heavy-ball momentum beta in [0, 1); 0 = plain SGD
  c.distill.learn_momentum = False  # learn beta (sigmoid-parametrised, one scalar) from momentum
  c.distill.image_init = 'noise'  # noise (N(0,1), as the paper) | real (random real images)
  c.distill.remat = False         # jax.checkpoint the scan body: memory flat in T
  c.distill.truncate = 0          # backprop through the last N inner steps (0 = all)
  c.distill.shard = False         # split each real batch (and the n_inits inits, when the
                                  # device count divides them) over a 'data' mesh of all
                                  # devices; outer.batch_size must divide by the count

  c.outer = ml_collections.ConfigDict()
  c.outer.steps = 2000            # outer (meta) iterations; the paper: ~23,600 (400 epochs)
  c.outer.batch_size = 1024       # real images per meta-loss
  c.outer.lr = 0.01               # Adam, as the reference code
  c.outer.b1 = 0.5
  c.outer.b2 = 0.999
  c.outer.decay_every = 1000      # lr x decay_factor every this many steps (0 = never)
  c.outer.decay_factor = 0.5
  c.outer.grad_clip = 0.0         # clip meta-gradient global norm (0 = off)

  c.eval = ml_collections.ConfigDict()
  c.eval.num_inits = 20           # nets trained on the final distilled set (unseen inits)
  c.eval.seed = 10_000            # the unseen inits' stream (differs from `seed`'s)
  c.eval.every = 500              # quick evaluation every N outer steps (0 = off)
  c.eval.every_num_inits = 5
  c.eval.baselines = True         # random real / class means / k-means, same budget
  c.eval.baseline_lrs = (0.003, 0.01, 0.03, 0.1, 0.3)  # fixed-lr grid, tuned on val
  c.eval.tune_inits = 5
  c.eval.val_size = 5000          # held-out training images for baseline lr tuning
  c.eval.select = 'last'          # last | val: keep the periodic evaluation's set that
                                  # scores best on the val_size held-out images (they are
                                  # then left out of the real batches); needs eval.every
  # task distill_eval only:
  c.eval.npz = ''                 # a distilled set to evaluate (distilled.npz, a plain npz,
                                  # or the original PyTorch code's results.pth)
  c.eval.format = 'auto'          # auto (by content) | awesome_jax | plain_npz | torch
  c.eval.mean = ()                # per-channel normalisation, only where the file lacks it
  c.eval.std = ()                 #   (x - mean) / std on [0, 1] pixels
  c.eval.schedule = 'distilled'   # distilled (its own order + lrs) | minibatch (plain SGD)
  c.eval.lr = 0.01                # minibatch: fixed lr
  c.eval.epochs = 3               # minibatch: passes over the images
  c.eval.batch_size = 10          # minibatch: images per step

  c.checkpoint_every = 100
  c.log_every = 10

  if preset in ('paper', 'mnist'):
    pass
  elif preset == 'mnist_t100':
    c.distill.epochs = 10
    c.distill.n_inits = 2
    c.distill.learn_labels = True
    c.distill.lr_per_layer = True
    c.distill.image_init = 'real'
    c.outer.batch_size = 256
    c.outer.steps = 1200
    c.outer.decay_every = 600
    c.eval.every = 300
  elif preset == 'mnist_momentum':
    c.distill.n_inits = 4
    c.distill.learn_labels = True
    c.distill.lr_per_layer = True
    c.distill.image_init = 'real'
    c.distill.momentum = 0.5          # start; learned (0.74 after 2,000 steps, RESULTS.md)
    c.distill.learn_momentum = True
    c.outer.batch_size = 256
    c.outer.steps = 2000
    c.outer.decay_every = 0
    c.eval.every = 400
  elif preset == 'mnist_fixed':
    c.distill.random_init = False
    c.distill.steps = 1
    c.distill.epochs = 3
  elif preset == 'cifar10':
    c.data.name = 'cifar10'
    c.model.name = 'alexcifarnet'
    c.distill.init_lr = 0.001
    c.outer.batch_size = 256
  elif preset == 'cifar10_cpu':
    c.data.name = 'cifar10'
    c.model.name = 'alexcifarnet'
    c.distill.learn_labels = True
    c.distill.label_init_scale = 4.0  # softmax(4 * one-hot): 0.86 on the true class
    c.distill.lr_per_layer = True
    c.distill.image_init = 'real'
    c.distill.init_lr = 0.01          # tuned for 100 random real images, T = 30
    c.outer.batch_size = 256
    c.outer.steps = 1000
    c.outer.decay_every = 500
    c.eval.every = 100
    c.checkpoint_every = 20           # ~15 s per outer step on a 2-core CPU
  elif preset == 'tiny':
    c.data.name = 'digits'
    c.model.name = 'mlp'
    c.distill.steps = 2
    c.distill.epochs = 2
    c.distill.init_lr = 0.1
    c.outer.steps = 20
    c.outer.batch_size = 128
    c.outer.decay_every = 0
    c.eval.num_inits = 4
    c.eval.every = 0
    c.eval.tune_inits = 2
    c.eval.val_size = 200
    c.eval.baseline_lrs = (0.03, 0.3)
    c.checkpoint_every = 5
    c.log_every = 5
  elif preset == 'evaluate':
    c.task = 'distill_eval'
  else:
    raise ValueError(f'configs/distill.py:{preset}: unknown preset; allowed: mnist_momentum, '
                     'paper (= mnist), mnist_t100, mnist_fixed, cifar10, cifar10_cpu, tiny, '
                     'evaluate')
  return c
