"""The `distill_adapt` and `distill_attack` tasks of `main` (Wang et al. 2018, Sec. 4-5).

Steps, each resumable in the workdir:
1. Pools of pretrained nets (`WORKDIR/pretrained/` or `pretrain.dir`): a training pool
   the distillation samples from and a held-out test pool (`pretrain.kind='random'`), or
   one net (`'fixed'`, tested on itself). distill_adapt pretrains on the source domain,
   distill_attack on the data itself. Trained `pretrain.chunk` nets at a time, each
   chunk saved when done.
2. Distillation from those nets (awesome_jax.distill.Distiller, its own fields), on the
   target's training images (distill_attack: with the attacked class relabelled as the
   target class in the meta-loss); checkpointed every `checkpoint_every` outer steps.
3. Evaluation on the test pool, each number a mean +/- std over its nets:
   distill_adapt: target test accuracy before adaptation (source only, the lower bound),
   after the steps on the distilled set, after the same steps on random real / k-means
   target images (lr tuned on held-out target images with training-pool nets), and
   after `eval.finetune_epochs` of Adam on the full target training set (upper bound).
   distill_attack: accuracy, attack success (attacked class predicted as the target),
   the other classes' accuracy, before and after the steps on the distilled set, and
   after the steps on random real images with the attacked class labelled as the target
   (the baseline).
Outputs: distilled.npz (+ what it was made for), distilled.png, results.json,
results.png (the comparison as bars), test_nets.npz (the nets the numbers were measured
on: scripts/recheck_application.py re-checks from these files alone), metrics.jsonl.

Several processes (awesome_jax/distributed.py): every process pretrains, distils and
evaluates (the same numbers; distill.shard is not supported here, so nothing is split
over them), only process 0 writes the pools and the outputs above; the checkpoints go
through orbax from all processes, as host (numpy) copies of the state, which orbax takes
from process 0.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax import applications as app
from awesome_jax import baselines
from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import data as data_lib
from awesome_jax import distill as distill_lib
from awesome_jax import distributed
from awesome_jax import metrics as metrics_lib
from awesome_jax.tasks import distill as distill_task

ConfigError = distill_lib.ConfigError

KINDS = ('random', 'fixed')
TRANSFORMS = ('none', 'invert', 'transpose')

# The paper's numbers for our adaptation settings (Wang et al. 2018, its adaptation
# table; LeNet, 100 distilled images, 2,000 / 200 pretrained nets): (source, target,
# kind) -> (test accuracy %, std or None).
PAPER_ADAPT = {
    ('mnist', 'usps', 'fixed'): (97.9, None),
    ('mnist', 'usps', 'random'): (95.4, 1.8),
    ('usps', 'mnist', 'fixed'): (93.2, None),
    ('usps', 'mnist', 'random'): (92.7, 1.4),
}


# ------------------------------------------------------------------ the config


def check(config):
  """Raises ConfigError naming the field if the config is impossible (no data read)."""
  distill_lib.check_config(config)
  p, e = config.pretrain, config.eval
  if p.kind not in KINDS:
    raise ConfigError(f'pretrain.kind={p.kind!r}: unknown; allowed: {", ".join(KINDS)}')
  for name in ('num_train_nets', 'num_test_nets', 'epochs', 'batch_size', 'chunk'):
    value = p[name]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f'pretrain.{name}={value!r}: must be an integer >= 1')
  if not p.lr > 0:
    raise ConfigError(f'pretrain.lr={p.lr!r}: must be > 0')
  if not config.distill.random_init:
    raise ConfigError('distill.random_init=False: these tasks start from pretrained nets; '
                      "choose one net with pretrain.kind='fixed' instead")
  if config.distill.get('shard', False):
    raise ConfigError('distill.shard=True: not supported by distill_adapt / distill_attack '
                      '(set it False)')
  n = config.distill.n_inits
  if p.kind == 'fixed' and n != 1:
    raise ConfigError(f"distill.n_inits={n}: pretrain.kind='fixed' trains from its one net; "
                      'set n_inits=1')
  if p.kind == 'random' and n > p.num_train_nets:
    raise ConfigError(f'distill.n_inits={n}: more than the pool of pretrain.num_train_nets='
                      f'{p.num_train_nets} nets it samples from')
  if not isinstance(e.tune_nets, int) or e.tune_nets < 1:
    raise ConfigError(f'eval.tune_nets={e.tune_nets!r}: must be an integer >= 1')
  if not isinstance(e.val_size, int) or e.val_size < 1:
    raise ConfigError(f'eval.val_size={e.val_size!r}: must be an integer >= 1')
  if config.task == 'distill_adapt':
    s = config.source
    if s.transform not in TRANSFORMS:
      raise ConfigError(f'source.transform={s.transform!r}: unknown; allowed: '
                        f'{", ".join(TRANSFORMS)}')
    if s.name not in data_lib.DATASETS:
      raise ConfigError(f'source.name={s.name!r}: unknown; allowed: '
                        f'{", ".join(data_lib.DATASETS)}')
    if s.name == config.data.name and s.transform == 'none':
      raise ConfigError(f'source.name={s.name!r} is data.name: adapting a domain to itself; '
                        'choose another source, or a source.transform (invert, transpose)')
    if not isinstance(e.finetune_epochs, int) or e.finetune_epochs < 0:
      raise ConfigError(f'eval.finetune_epochs={e.finetune_epochs!r}: must be an integer '
                        '>= 0 (0 = no full-target upper bound)')
  else:
    a = config.attack
    for name in ('attack_class', 'target_class'):
      if not isinstance(a[name], int) or a[name] < 0:
        raise ConfigError(f'attack.{name}={a[name]!r}: must be a class index >= 0')
    if a.attack_class == a.target_class:
      raise ConfigError(f'attack.target_class={a.target_class}: the same class as '
                        'attack.attack_class; the attack moves one class to another')


def check_classes(config, num_classes):
  """The data-dependent checks: attacked and target classes exist."""
  if config.task != 'distill_attack':
    return
  for name in ('attack_class', 'target_class'):
    c = config.attack[name]
    if c >= num_classes:
      raise ConfigError(f'attack.{name}={c}: unknown class; {config.data.name} has classes '
                        f'0..{num_classes - 1}')


# -------------------------------------------------------------------- the data


def transform(dataset, kind):
  """The dataset with every image inverted (1 - x) or transposed (a made-up domain)."""
  if kind == 'none':
    return dataset
  fn = (lambda x: 1.0 - x) if kind == 'invert' else (lambda x: np.swapaxes(x, 1, 2))
  x_train, x_test = fn(dataset.x_train), fn(dataset.x_test)
  mean = tuple(float(m) for m in x_train.mean(axis=(0, 1, 2)))
  std = tuple(float(s) for s in x_train.std(axis=(0, 1, 2)))
  return data_lib.Dataset(f'{dataset.name}-{kind}', x_train, dataset.y_train, x_test,
                          dataset.y_test, dataset.num_classes, mean, std)


def same_size(a, b):
  """Resizes the smaller images of two datasets to the larger (USPS 16 -> MNIST 28)."""
  size = max(a.shape[0], b.shape[0])

  def grow(d):
    if d.shape[0] == size:
      return d
    return data_lib.Dataset(d.name, data_lib.resize(d.x_train, size),
                            d.y_train, data_lib.resize(d.x_test, size), d.y_test,
                            d.num_classes, d.mean, d.std)

  a, b = grow(a), grow(b)
  if a.shape != b.shape:
    raise data_lib.DataError(f'{a.name} images {a.shape} and {b.name} images {b.shape}: '
                             'channels differ, no common input')
  return a, b


def load_domains(config):
  """(source, target) datasets with images of one size."""
  d = config.data
  target = data_lib.load(d.name, d.source, d.data_dir, d.tfds_data_dir)
  if config.task != 'distill_adapt':
    return target, target
  s = config.source
  if s.name == d.name:
    source = target
  else:
    source = data_lib.load(s.name, s.source, s.data_dir, s.tfds_data_dir)
  source = transform(source, s.transform)
  if source.num_classes != target.num_classes:
    raise data_lib.DataError(f'source {source.name} has {source.num_classes} classes, '
                             f'target {target.name} {target.num_classes}')
  return same_size(source, target)


# ------------------------------------------------------------------- the pools


def pools(config, distiller, source, folder):
  """(train pool, test pool, info): nets pretrained on `source` (leading axis over nets).

  Saved in `folder`, one file per pool named by what made it; a pool is trained in
  chunks of `pretrain.chunk` nets, each chunk saved when done, so an interrupted run
  keeps the finished chunks. Several processes: each trains what no saved file holds (a
  finished chunk it finds, even one that process 0 has just saved, it reads instead: the
  same nets); process 0 alone writes and removes the files.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  p = config.pretrain
  writer = distributed.is_writer()
  if writer:
    os.makedirs(folder, exist_ok=True)
  x = source.normalize(source.x_train)
  x_test = source.normalize(source.x_test)
  trainer = app.NetTrainer(distiller.apply, p.lr, p.b1, p.b2,
                           twin=app.training_twin(distiller.model, source.shape))
  stem = (f'{source.name}{source.shape[0]}_{config.model.name}_e{p.epochs}_b{p.batch_size}'
          f'_lr{p.lr:g}_s{p.seed}')
  wanted = [('train', 1 if p.kind == 'fixed' else p.num_train_nets, p.seed)]
  if p.kind == 'random':
    wanted.append(('test', p.num_test_nets, p.seed + 1000))
  paths = {split: os.path.join(folder, f'{stem}_{split}{n}.npz') for split, n, _ in wanted}
  saved = {split: os.path.exists(path) for split, path in paths.items()}
  # all have looked before process 0 saves a pool: all train the same ones
  distributed.sync('pools')
  out, info = {}, {}
  for split, n, seed in wanted:
    path = paths[split]
    if saved[split]:
      params, meta = app.load_pool(path)
    else:
      parts = []
      steps = p.epochs * (len(x) // min(p.batch_size, len(x)))
      bar = tqdm(total=-(-n // p.chunk) * steps, desc=f'pretrain {split} nets on {source.name}',
                 disable=not config.progress_bar)
      for start in range(0, n, p.chunk):
        ids = list(range(start, min(start + p.chunk, n)))
        part = f'{path}.part{start}.npz'
        if os.path.exists(part):
          parts.append(app.load_pool(part)[0])
          bar.update(steps)
          continue
        params = app.stack_trees([distiller.init_params(
            jax.random.fold_in(jax.random.key(seed), i)) for i in ids])
        params = trainer.train(params, x, source.y_train, p.epochs, p.batch_size,
                               seed * 7919 + start, progress=bar.update)
        if writer:
          app.save_pool(part, params, {})
        parts.append(params)
      bar.close()
      params = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)
      accs = app.accuracy_metrics(app.predict(distiller.apply, params, x_test),
                                  source.y_test)['acc']
      meta = {'source': source.name, 'model': config.model.name, 'epochs': p.epochs,
              'seed': seed, 'source_test_acc': [float(a) for a in accs]}
      distributed.sync(f'pool {split}')  # no process reads the chunks any more
      if writer:
        app.save_pool(path, params, meta)
        for start in range(0, n, p.chunk):
          part = f'{path}.part{start}.npz'
          if os.path.exists(part):
            os.remove(part)
    out[split] = params
    info[f'{split}_pool'] = {'file': path, 'nets': n,
                             'source_test_acc_mean': float(np.mean(meta['source_test_acc'])),
                             'source_test_acc_std': float(np.std(meta['source_test_acc']))}
  test = out.get('test', out['train'])  # fixed: tested on its own net
  return out['train'], test, info


# ------------------------------------------------------------------- the task


def run(config, workdir):
  """Distils a set for pretrained nets (adapt or attack); resumes from the workdir."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  check(config)
  adapt = config.task == 'distill_adapt'
  source, target = load_domains(config)
  check_classes(config, target.num_classes)
  distill_lib.check_config(config, target.shape, target.num_classes)
  distiller = distill_lib.Distiller(config, target)
  train_pool, test_pool, pool_info = pools(
      config, distiller, source, config.pretrain.dir or os.path.join(workdir, 'pretrained'))

  e, a = config.eval, config.attack
  x_train, y_train = target.normalize(target.x_train), target.y_train
  x_test, y_test = target.normalize(target.x_test), target.y_test
  if e.val_size >= len(x_train):
    raise ConfigError(f'eval.val_size={e.val_size}: must be below the {len(x_train)} '
                      f'training images of {target.name}')
  val_idx, pool_idx = distill_lib.split_val(len(x_train), e.val_size, config.seed)
  objective = (lambda y: y) if adapt else (
      lambda y: app.relabel(y, a.attack_class, a.target_class))

  # -- distillation
  state = distiller.init_state(jax.random.key(config.seed), x_train[pool_idx],
                               y_train[pool_idx])
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    print(f'Resumed from step {int(state["step"])} in {workdir}')
  start = int(state['step'])
  batches = data_lib.EpochBatches(x_train[pool_idx], objective(y_train[pool_idx]),
                                  config.outer.batch_size, config.seed)
  writer = metrics_lib.MetricWriter(workdir)
  base_key = jax.random.key(config.seed + 1)
  t0 = time.time()
  bar = tqdm(range(start, config.outer.steps), initial=start, total=config.outer.steps,
             desc=config.task, disable=not config.progress_bar)
  for step in bar:
    real_x, real_y = batches(step)
    params0 = app.sample_nets(train_pool, config.distill.n_inits, config.seed, step)
    state, m = distiller.outer_step(state, real_x, real_y,
                                    jax.random.fold_in(base_key, step), params0)
    done = step + 1
    if done % config.log_every == 0 or done == config.outer.steps:
      distill_task.log_outer_step(writer, bar, done, m)
    if done % config.checkpoint_every == 0 or done == config.outer.steps:
      # host copies: orbax saves no process's own (host-local) device arrays, numpy ones once
      checkpointer.save(done, ckpt_lib.host(state))
  bar.close()
  seconds = time.time() - t0
  checkpointer.close()

  # -- evaluation
  print('evaluating on the test nets: before, after the distilled steps'
        + (', the same-budget baselines' if e.baselines else '')
        + (', fine-tuning on the full target set' if adapt and e.finetune_epochs else ''),
        flush=True)
  metric = ((lambda pred: app.accuracy_metrics(pred, y_test)) if adapt else
            (lambda pred: app.attack_metrics(pred, y_test, a.attack_class, a.target_class)))
  learned = state['learned']
  ys = distill_lib.targets_of(learned, distiller.fixed_labels, distiller.num_classes)
  lrs = jax.nn.softplus(learned['raw_lr'])
  beta = distill_lib.momentum_of(learned, config.distill.momentum)
  after = lambda pool, xs, ys_, lrs_, b=beta: app.predict(
      distiller.apply, distiller.train_nets(pool, xs, ys_, lrs_, b), x_test)
  rows = {'before': metric(app.predict(distiller.apply, test_pool, x_test)),
          'distilled': metric(after(test_pool, learned['x'], ys, lrs))}
  tuned = {}
  if e.baselines:
    rows_b, tuned = _baselines(config, distiller, train_pool, test_pool, x_train, y_train,
                               val_idx, pool_idx, objective, after, metric)
    rows.update(rows_b)
  if adapt and e.finetune_epochs:
    trainer = app.NetTrainer(distiller.apply, config.pretrain.lr, config.pretrain.b1,
                             config.pretrain.b2,
                             twin=app.training_twin(distiller.model, target.shape))
    tuned_nets = trainer.train(test_pool, x_train, y_train, e.finetune_epochs,
                               config.pretrain.batch_size, config.seed + 5)
    rows['full_target'] = metric(app.predict(distiller.apply, tuned_nets, x_test))

  results = {
      'task': config.task, 'target': target.name, 'source': source.name,
      'model': config.model.name, 'pretrained': config.pretrain.kind,
      'images': int(distiller.per_step * config.distill.steps),
      'inner_steps': distiller.total_steps, 'outer_steps': config.outer.steps,
      'test_nets': app.pool_size(test_pool), **pool_info,
      'seconds_this_run': seconds,
      'rows': {name: app.summarize(m) for name, m in rows.items()},
  }
  if tuned:
    results['baseline_lrs'] = tuned
  if adapt:
    paper = PAPER_ADAPT.get((config.source.name, target.name, config.pretrain.kind))
    results['paper'] = None if paper is None else {
        'test_acc': paper[0] / 100, 'std': None if paper[1] is None else paper[1] / 100,
        'source': "Wang et al. 2018, the adaptation table (LeNet, 100 images, 2,000 "
                  "pretrained nets), 'Ours' column"}
  else:
    results['attack'] = {'attack_class': a.attack_class, 'target_class': a.target_class}
  writer.write(config.outer.steps, {f'final/{n}_{k}': float(np.mean(v))
                                    for n, m in rows.items() for k, v in m.items()})
  writer.close()
  if distributed.is_writer():  # every process has the numbers, process 0 writes them
    save_outputs(workdir, config, distiller, state, source, test_pool, results)
  print(summary(results))
  return results


def save_outputs(workdir, config, distiller, state, source, test_pool, results):
  """distilled.npz (+ what it was made for), distilled.png, results.png, test_nets.npz and
  results.json in `workdir`."""
  adapt, a = config.task == 'distill_adapt', config.attack
  extra = {'application': np.array(config.task), 'pretrained': np.array(config.pretrain.kind),
           'source': np.array(source.name)}
  if not adapt:
    extra.update(attack_class=np.array(a.attack_class), target_class=np.array(a.target_class))
  npz = os.path.join(workdir, 'distilled.npz')
  distill_lib.save_distilled(npz, distiller, state, extra)
  z = distill_lib.load_distilled(npz)
  distill_task.save_grid(os.path.join(workdir, 'distilled.png'), z['images'], z['hard_labels'],
                         z['lrs'], z['lr_params'], z.get('momentum'))
  plot(os.path.join(workdir, 'results.png'), results)
  # the nets the numbers are measured on: with distilled.npz, a re-check needs nothing else
  # (scripts/recheck_application.py)
  app.save_pool(os.path.join(workdir, 'test_nets.npz'), test_pool,
                {'source': source.name, 'model': config.model.name,
                 'kind': config.pretrain.kind})
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)


def _baselines(config, distiller, train_pool, test_pool, x_train, y_train, val_idx,
               pool_idx, objective, after, metric):
  """Same-budget real-image baselines, each with its lr tuned on held-out images.

  distill_adapt: random real and k-means target images, true labels. distill_attack:
  random real images, the attacked class's labelled as the target (the poisoning
  baseline). The lr maximises the objective's accuracy on the val images for the first
  eval.tune_nets nets of the training pool (never the test nets).
  """
  d, e = config.distill, config.eval
  adapt = config.task == 'distill_adapt'
  methods = ('random_real', 'kmeans') if adapt else ('random_real',)
  tune = app.take(train_pool, np.arange(min(e.tune_nets, app.pool_size(train_pool))))
  x_val, y_val = x_train[val_idx], objective(y_train[val_idx])
  hard = np.asarray(distiller.fixed_labels)
  ys = jax.nn.one_hot(objective(hard), distiller.num_classes)
  rows, tuned = {}, {}
  for method in methods:
    imgs = baselines.per_class_images(method, x_train[pool_idx], y_train[pool_idx],
                                      distiller.num_classes,
                                      d.images_per_class_per_step * d.steps, seed=config.seed)
    xs = jnp.asarray(baselines.arrange_like_distilled(imgs, d.steps,
                                                      d.images_per_class_per_step))
    best = None
    for lr in e.baseline_lrs:
      lrs = jnp.full((distiller.total_steps,), lr, jnp.float32)
      trained = distiller.train_nets(tune, xs, ys, lrs, None)
      val = float((app.predict(distiller.apply, trained, x_val) == y_val[None]).mean())
      if best is None or val > best[1]:
        best = (lr, val)
    lrs = jnp.full((distiller.total_steps,), best[0], jnp.float32)
    rows[method] = metric(after(test_pool, xs, ys, lrs, None))
    tuned[method] = {'lr': float(best[0]), 'val_objective_acc': best[1]}
  return rows, tuned


# ---------------------------------------------------------------- the outputs

LABELS = {'before': 'no adaptation', 'distilled': 'distilled (ours)',
          'random_real': 'random real', 'kmeans': 'k-means', 'full_target': 'full target'}


def summary(results):
  lines = []
  adapt = results['task'] == 'distill_adapt'
  for name, r in results['rows'].items():
    label = LABELS[name] if adapt else {'before': 'trained nets'}.get(name, LABELS[name])
    if adapt:
      lines.append(f'  {label:18s} {100 * r["acc_mean"]:6.2f} +/- {100 * r["acc_std"]:.2f} %')
    else:
      lines.append(f'  {label:18s} attack success {100 * r["attack_success_mean"]:6.2f} '
                   f'+/- {100 * r["attack_success_std"]:.2f} %, other classes '
                   f'{100 * r["other_acc_mean"]:6.2f} +/- {100 * r["other_acc_std"]:.2f} %')
  if adapt:
    head = (f'{results["source"]} -> {results["target"]}, {results["pretrained"]} pretrained '
            f'{results["model"]}, {results["images"]} distilled images, '
            f'{results["inner_steps"]} steps; test accuracy over {results["test_nets"]} '
            'test nets:')
    paper = results.get('paper')
    tail = ('the paper: ' + f'{100 * paper["test_acc"]:.1f}' +
            ('' if paper['std'] is None else f' +/- {100 * paper["std"]:.1f}') + ' %'
            ) if paper else 'the paper reports no number for this setting'
  else:
    at = results['attack']
    head = (f'{results["target"]}: class {at["attack_class"]} -> {at["target_class"]} on '
            f'{results["pretrained"]} trained {results["model"]}, {results["images"]} '
            f'distilled images, {results["inner_steps"]} steps; over {results["test_nets"]} '
            'test nets:')
    tail = 'the paper reports its attack on CIFAR-10 (configs/applications.py:attack_cifar10)'
  return '\n'.join([head] + lines + [tail])


def plot(path, results):
  """Bars with the test nets' std: accuracy per method (adapt), or attack success and
  the other classes' accuracy per method (attack)."""
  rows = results['rows']
  names = list(rows)
  adapt = results['task'] == 'distill_adapt'
  keys = ['acc'] if adapt else ['attack_success', 'other_acc']
  fig = metrics_lib.figure((1.3 * len(names) + 2, 3.2))
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / len(keys)
  for k, key in enumerate(keys):
    means = [100 * rows[n][f'{key}_mean'] for n in names]
    stds = [100 * rows[n][f'{key}_std'] for n in names]
    xs = np.arange(len(names)) + (k - (len(keys) - 1) / 2) * width
    ax.bar(xs, means, width, yerr=stds, capsize=3,
           label={'acc': 'test accuracy', 'attack_success':
                  f'class {results.get("attack", {}).get("attack_class")} called '
                  f'{results.get("attack", {}).get("target_class")}',
                  'other_acc': 'other classes correct'}[key])
  if adapt and results.get('paper'):
    ax.axhline(100 * results['paper']['test_acc'], color='k', ls='--', lw=1,
               label='the paper (distilled)')
  ax.set_xticks(np.arange(len(names)))
  ax.set_xticklabels([LABELS[n] if adapt or n != 'before' else 'trained nets'
                      for n in names], fontsize=8)
  ax.set_ylabel('%'), ax.set_ylim(0, 100)
  ax.legend(fontsize=7)
  if adapt:
    ax.set_title(f'{results["source"]} -> {results["target"]} ({results["pretrained"]} '
                 f'pretrained, {results["test_nets"]} test nets)', fontsize=9)
  else:
    ax.set_title(f'poisoning {results["target"]} ({results["pretrained"]} trained nets)',
                 fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
