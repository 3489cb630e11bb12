"""Continual learning with distilled images as the memory of past tasks.

Presets as config strings: `configs/continual.py:PRESET`, PRESET one of
  split_mnist     (the default) split MNIST, class-incremental: 5 tasks of 2 classes, one
                  10-way LeNet head; 1 epoch of SGD per task, 20 images of memory per past
                  task (distilled: 200 outer steps per task, 10 inner steps, learned soft
                  labels); runs none, random and distilled memory one after the other and
                  plots them together. Sized for a 2-core CPU: ~10-15 minutes, most of it
                  the 4 distillations.
  permuted_mnist  permuted MNIST, domain-incremental: 5 tasks (the first unpermuted) of all
                  10 classes, an MLP with 256 hidden units, 5 epochs on 10,000 training
                  images per task, 100 images of memory per past task (10 a class); all
                  three memory kinds (minutes).
  tiny            scikit-learn digits split into 5 tasks of 2 classes, a small MLP, 20
                  distillation steps per task (tests, smoke runs: under a minute, mostly
                  compiling).
Override any field: `--config.memory.kind=distilled`, `--config.memory.per_task=10`.
"""

import ml_collections

PRESETS = ('split_mnist', 'permuted_mnist', 'tiny')


def get_config(preset='split_mnist'):
  c = ml_collections.ConfigDict()
  c.task = 'continual'
  c.seed = 0                      # seeds the learner's init, batches, memories, permutations
  c.progress_bar = True

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'           # mnist | cifar10 | usps | digits | synthetic
  c.data.source = 'auto'          # tfds | files | download | auto (see configs/distill.py)
  c.data.data_dir = ''            # folder of the standard files ('' = tfds or download)
  c.data.tfds_data_dir = ''       # TFDS data_dir ('' = TFDS default)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'lenet'          # lenet | alexcifarnet | convnet | mlp (no batch norm)
  c.model.kwargs = ml_collections.ConfigDict()  # extra constructor args (e.g. hidden)

  c.stream = ml_collections.ConfigDict()
  c.stream.name = 'split'         # split (disjoint classes per task, one shared head) |
                                  # permuted (all classes, a pixel permutation per task)
  c.stream.num_tasks = 5
  c.stream.classes_per_task = 2   # split only: task k = classes [k*c, (k+1)*c)
  c.stream.identity_first = True  # permuted only: task 0 is the unpermuted data
  c.stream.train_per_task = 0     # keep this many random training images per task (0 = all)

  c.train = ml_collections.ConfigDict()
  c.train.optimizer = 'sgd'       # sgd | adam; the optimiser state starts afresh each task
  c.train.lr = 0.01
  c.train.momentum = 0.9          # sgd only (0 = plain SGD)
  c.train.epochs = 1              # passes over each task's training data
  c.train.batch_size = 64         # real images per step
  c.train.replay_batch_size = 64  # memory images joined to each step (from the 2nd task on)

  c.memory = ml_collections.ConfigDict()
  c.memory.kind = 'all'           # none | random | distilled, a comma list of them, or all
                                  # (= none,random,distilled: each in WORKDIR/<kind>/)
  c.memory.per_task = 20          # images kept of each past task (random, distilled)

  c.memory.distill = ml_collections.ConfigDict()  # memory.kind=distilled
  c.memory.distill.steps = 1      # inner batches: M / steps images each, balanced classes
  c.memory.distill.epochs = 10    # passes over them: steps * epochs inner SGD steps
  c.memory.distill.init_lr = 0.02  # initial inner lr (softplus-parametrised, learned)
  c.memory.distill.learn_labels = True  # learn soft labels too (replayed as targets)
  c.memory.distill.label_init_scale = 4.0  # initial label logits = scale * one_hot: 4 puts
                                  # 0.86 on the class of 10 (1 puts 0.23, and replaying
                                  # so unsure a target loses the old classes)
  c.memory.distill.image_init = 'real'  # real (random real images of the task) | noise
  c.memory.distill.n_inits = 2    # fresh random inits per outer step (vmapped)
  c.memory.distill.outer_steps = 200  # Adam steps per task
  c.memory.distill.batch_size = 128  # real images of the task per meta-loss
  c.memory.distill.lr = 0.01      # outer Adam lr (b1 = 0.5)
  c.memory.distill.eval_nets = 4  # fresh nets trained on each distilled set, tested on
                                  # its task (a check of the distillation; 0 = skip)
  c.memory.distill.checkpoint_every = 50  # outer steps between checkpoints
  c.memory.distill.log_every = 10

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1000        # test images per forward pass

  if preset == 'split_mnist':
    pass
  elif preset == 'permuted_mnist':
    c.model.name = 'mlp'
    c.model.kwargs.hidden = 256
    c.stream.name = 'permuted'
    c.stream.train_per_task = 10_000
    c.train.epochs = 5
    c.train.batch_size = 128
    c.train.replay_batch_size = 128
    c.memory.per_task = 100
  elif preset == 'tiny':
    c.data.name = 'digits'
    c.model.name = 'mlp'
    c.model.kwargs.hidden = 64
    c.train.lr = 0.05
    c.train.epochs = 5
    c.train.batch_size = 32
    c.train.replay_batch_size = 32
    c.memory.per_task = 10
    c.memory.distill.epochs = 5
    c.memory.distill.init_lr = 0.1
    c.memory.distill.eval_nets = 2
    c.memory.distill.outer_steps = 20
    c.memory.distill.batch_size = 128
    c.memory.distill.checkpoint_every = 5
    c.memory.distill.log_every = 5
  else:
    raise ValueError(f'configs/continual.py:{preset}: unknown preset; allowed: '
                     f'{", ".join(PRESETS)}')
  return c
