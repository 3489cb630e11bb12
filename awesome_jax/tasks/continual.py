"""The continual-learning task of `main`: a stream of tasks learnt one after the other,
with no memory, a memory of random real exemplars, or a distilled memory of each past
task (`awesome_jax.continual` is the method).

`run(config, workdir)` trains each memory kind of config.memory.kind in WORKDIR/<kind>/
(the same learner init, batches and stream for all) and writes:
  WORKDIR/<kind>/   checkpoints/ (one per finished stage: a task learnt, or a task's memory
                    built), distill_checkpoints/ (inside a task's distillation, every
                    memory.distill.checkpoint_every outer steps; removed once the task's
                    memory is saved), metrics.jsonl + TensorBoard events, results.json
                    (accuracy matrix, average accuracy, forgetting, backward transfer),
                    memory.npz and memory.png (random and distilled)
  WORKDIR/          results.json (every kind side by side) and accuracy.png (per-task test
                    accuracy vs tasks seen, one panel per kind, and the average accuracy
                    over the tasks seen, one line per kind)
A run killed and started again with the same command resumes at the stage (or outer
step) it had reached and ends with the same numbers as one that never stopped.

Several processes (awesome_jax/distributed.py): every process runs the whole stream (the
same numbers; the learner and the distillation are not split over them), only process 0
writes the files above; the checkpoints go through orbax from all processes, as host
(numpy) copies of the state, which orbax takes from process 0.
"""

import json
import os
import shutil
import time

import jax
import numpy as np

from awesome_jax import checkpoint as ckpt_lib
from awesome_jax import continual
from awesome_jax import data as data_lib
from awesome_jax import distill as distill_lib
from awesome_jax import distributed
from awesome_jax import metrics as metrics_lib
from awesome_jax import models
from awesome_jax.tasks import distill as distill_tasks

ConfigError = distill_lib.ConfigError

# (image shape, classes) of each dataset `data.load` knows: checks without reading data
KNOWN_DATA = {'mnist': ((28, 28, 1), 10), 'cifar10': ((32, 32, 3), 10),
              'usps': ((16, 16, 1), 10), 'digits': ((8, 8, 1), 10),
              'synthetic': ((8, 8, 1), 4)}


# ---------------------------------------------------------------- the config


def memory_kinds(kind):
  """('none', ...) named by memory.kind: one kind, a comma list of them, or 'all'."""
  names = continual.MEMORY_KINDS if kind == 'all' else tuple(
      k.strip() for k in str(kind).split(','))
  if not names or any(k not in continual.MEMORY_KINDS for k in names) or len(
      set(names)) != len(names):
    raise ConfigError(f'memory.kind={kind!r}: unknown; allowed: '
                      f'{", ".join(continual.MEMORY_KINDS)}, a comma list of them '
                      '(each once), or all')
  return names


def _int_at_least(name, value, least):
  if isinstance(value, bool) or not isinstance(value, int) or value < least:
    raise ConfigError(f'{name}={value!r}: must be an integer >= {least}')


def _positive(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ConfigError(f'{name}={value!r}: must be > 0')


def task_classes(config, num_classes):
  """The number of classes in each task of the stream."""
  s = config.stream
  return s.classes_per_task if s.name == 'split' else num_classes


def check(config, data_shape=None, num_classes=None):
  """Raises ConfigError naming the field if the config is impossible.

  Without data (`main --dry_run`) the dataset's shape and classes come from KNOWN_DATA;
  `run` checks again with the loaded dataset's.
  """
  if config.data.name not in KNOWN_DATA and data_shape is None:
    raise ConfigError(f'data.name={config.data.name!r}: unknown; allowed: '
                      f'{", ".join(KNOWN_DATA)}')
  if data_shape is None:
    data_shape, num_classes = KNOWN_DATA[config.data.name]
  s, t, m = config.stream, config.train, config.memory
  if s.name not in continual.STREAMS:
    raise ConfigError(f'stream.name={s.name!r}: unknown; allowed: '
                      f'{", ".join(continual.STREAMS)}')
  _int_at_least('stream.num_tasks', s.num_tasks, 1)
  _int_at_least('stream.train_per_task', s.train_per_task, 0)
  if s.name == 'split':
    _int_at_least('stream.classes_per_task', s.classes_per_task, 1)
    if s.num_tasks * s.classes_per_task > num_classes:
      raise ConfigError(
          f'stream.num_tasks={s.num_tasks}: {s.num_tasks} tasks of '
          f'stream.classes_per_task={s.classes_per_task} classes need '
          f'{s.num_tasks * s.classes_per_task} classes but {config.data.name} has '
          f'{num_classes}; allowed: num_tasks <= {num_classes // s.classes_per_task}')
  if t.optimizer not in continual.OPTIMIZERS:
    raise ConfigError(f'train.optimizer={t.optimizer!r}: unknown; allowed: '
                      f'{", ".join(continual.OPTIMIZERS)}')
  _positive('train.lr', t.lr)
  if not (isinstance(t.momentum, (int, float)) and 0 <= t.momentum < 1):
    raise ConfigError(f'train.momentum={t.momentum!r}: must be in [0, 1) (0 = plain SGD)')
  for name in ('epochs', 'batch_size', 'replay_batch_size'):
    _int_at_least(f'train.{name}', t[name], 1)
  _int_at_least('eval.batch_size', config.eval.batch_size, 1)
  kinds = memory_kinds(m.kind)
  classes = task_classes(config, num_classes)
  if set(kinds) - {'none'}:
    if isinstance(m.per_task, bool) or not isinstance(m.per_task, int) or (
        m.per_task < classes):
      raise ConfigError(
          f'memory.per_task={m.per_task!r}: must be an integer >= {classes}, the classes '
          f'of a task (at least one image of each), for memory.kind={m.kind!r}')
  if 'distilled' in kinds:
    check_distill(m.distill, m.per_task, classes)
  if config.model.name not in models.REGISTRY:  # the zoo's nets carry batch statistics
    raise ConfigError(f'model.name={config.model.name!r}: unknown here; allowed: '
                      f'{", ".join(models.REGISTRY)} (nets without batch norm)')
  try:
    models.build(config.model.name, num_classes, data_shape, **config.model.kwargs)
  except models.ModelError as err:
    raise ConfigError(f'{err} (data.name={config.data.name!r})') from None
  except TypeError as err:  # a kwarg the model does not have
    raise ConfigError(f'model.kwargs={config.model.kwargs.to_dict()!r}: {err}') from None


def check_distill(d, per_task, classes):
  """Raises ConfigError naming the memory.distill field that is impossible."""
  for name in ('steps', 'epochs', 'n_inits', 'batch_size', 'checkpoint_every',
               'log_every'):
    _int_at_least(f'memory.distill.{name}', d[name], 1)
  _int_at_least('memory.distill.outer_steps', d.outer_steps, 0)
  _int_at_least('memory.distill.eval_nets', d.eval_nets, 0)
  _positive('memory.distill.lr', d.lr)
  _positive('memory.distill.init_lr', d.init_lr)
  if d.image_init not in distill_lib.IMAGE_INITS:
    raise ConfigError(f'memory.distill.image_init={d.image_init!r}: unknown; allowed: '
                      f'{", ".join(distill_lib.IMAGE_INITS)}')
  if per_task % d.steps or per_task // d.steps < classes:
    raise ConfigError(
        f'memory.distill.steps={d.steps}: must divide memory.per_task={per_task} into '
        f'inner batches of at least {classes} images (one of each class of a task); '
        f'allowed: a divisor of {per_task} <= {per_task // classes}')


# ------------------------------------------------------------------- the run


def stages(kind, num_tasks):
  """[('train', 0), ('memory', 0), ('train', 1), ...]: what each checkpoint follows.
  No memory stages without a memory, and none after the last task (never replayed)."""
  out = []
  for k in range(num_tasks):
    out.append(('train', k))
    if kind != 'none' and k < num_tasks - 1:
      out.append(('memory', k))
  return out


def run(config, workdir):
  """Runs every memory kind of the config on one stream; returns the combined results."""
  check(config)
  dataset = data_lib.load(config.data.name, config.data.source, config.data.data_dir,
                          config.data.tfds_data_dir)
  check(config, dataset.shape, dataset.num_classes)
  s = config.stream
  tasks = continual.make_stream(
      dataset.normalize(dataset.x_train), dataset.y_train, dataset.normalize(dataset.x_test),
      dataset.y_test, dataset.num_classes, s.name, s.num_tasks, s.classes_per_task,
      s.train_per_task, config.seed, s.identity_first)
  learner, distiller = build(config, dataset.shape, dataset.num_classes)
  per_kind = {}
  for kind in memory_kinds(config.memory.kind):
    per_kind[kind] = run_kind(config, kind, dataset, tasks, learner, distiller,
                              os.path.join(workdir, kind))
  results = {'dataset': dataset.name, 'model': config.model.name, 'stream': s.name,
             'num_tasks': len(tasks), 'task_classes': [list(t.classes) for t in tasks],
             'memory_per_task': config.memory.per_task, 'kinds': per_kind}
  if distributed.is_writer():
    plot_accuracy(os.path.join(workdir, 'accuracy.png'), per_kind,
                  f'{s.name} {dataset.name}, {config.model.name}, '
                  f'{config.memory.per_task} memory images per past task')
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  print(summary_table(results))
  return results


_BUILT = {}  # the last build's key and (learner, distiller)


def build(config, shape, num_classes):
  """(Learner, MemoryDistiller) of the config. Another run in the same process with the
  same model, train and memory.distill fields (a notebook, a sweep over seeds or memory
  kinds, a resumed run) gets the same two back: their jitted steps compile once."""
  key = json.dumps([config.model.to_dict(), config.train.to_dict(),
                    config.memory.distill.to_dict(), list(shape), num_classes],
                   sort_keys=True)
  if _BUILT.get('key') != key:
    model = models.build(config.model.name, num_classes, shape, **config.model.kwargs)
    learner = continual.Learner(model, shape, config.train, num_classes)
    distiller = continual.MemoryDistiller(learner.apply, learner.init_params, shape,
                                          num_classes, config.memory.distill)
    _BUILT.update(key=key, value=(learner, distiller))
  return _BUILT['value']


def run_kind(config, kind, dataset, tasks, learner, distiller, workdir):
  """The stream with memory `kind`, resuming from workdir's checkpoints; its results."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  num_tasks, num_classes = len(tasks), dataset.num_classes
  per_task = 0 if kind == 'none' else config.memory.per_task
  plan = stages(kind, num_tasks)
  state = {'stage': np.zeros((), np.int32),
           'params': learner.init_params(jax.random.key(config.seed)),
           'acc': np.full((num_tasks, num_tasks), np.nan, np.float32)}
  if per_task:
    state['memory'] = continual.empty_memory(num_tasks * per_task, dataset.shape,
                                             num_classes)
  if kind == 'distilled':
    d = config.memory.distill
    state['distill'] = {'lrs': np.zeros((num_tasks, d.steps * d.epochs), np.float32),
                        'fresh_acc': np.full((num_tasks,), np.nan, np.float32)}
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  if checkpointer.latest_step() is not None:
    state = jax.tree_util.tree_map(np.asarray, checkpointer.restore(state))
    print(f'{kind}: resumed after stage {int(state["stage"])} of {len(plan)} in {workdir}')
  writer = metrics_lib.MetricWriter(workdir)
  test_sets = [t.test_set() for t in tasks]
  t0 = time.time()
  for stage in range(int(state['stage']), len(plan)):
    what, k = plan[stage]
    state = dict(state)
    if what == 'train':
      x, y = tasks[k].train_set()
      bar = tqdm(total=learner.steps_per_task(len(x)), disable=not config.progress_bar,
                 desc=f'{kind}: task {k + 1}/{num_tasks}, learn')
      params, loss = learner.train_task(state['params'], x, y, state.get('memory'),
                                        per_task * k, continual.seed_of(config.seed, 3, k),
                                        bar)
      bar.close()
      row = [learner.accuracy(params, xt, yt, config.eval.batch_size) for xt, yt in test_sets]
      acc = np.array(state['acc'])
      acc[k] = row
      state.update(params=params, acc=acc)
      writer.write(k + 1, {'train/loss': loss, 'eval/avg_acc_seen': np.mean(row[:k + 1]),
                           **{f'eval/acc_task{j}': a for j, a in enumerate(row)}})
    elif kind == 'random':
      x, y = tasks[k].train_set()
      mx, my = continual.random_exemplars(x, y, tasks[k].classes, per_task,
                                          np.random.default_rng(
                                              continual.seed_of(config.seed, 4, k)))
      state['memory'] = continual.write_slot(state['memory'], k, mx,
                                             np.eye(num_classes, dtype=np.float32)[my])
    else:
      mx, targets, lrs, fresh = distill_task(config, tasks[k], distiller, learner,
                                             writer, workdir)
      state['memory'] = continual.write_slot(state['memory'], k, mx, targets)
      info = {name: np.array(a) for name, a in state['distill'].items()}
      info['lrs'][k], info['fresh_acc'][k] = lrs, fresh
      state['distill'] = info
    state['stage'] = np.asarray(stage + 1, np.int32)
    # host copies: orbax saves no process's own (host-local) device arrays, numpy ones once
    checkpointer.save(stage + 1, ckpt_lib.host(state))
    # its own checkpoints are spent (every process has closed them: the save waits for all)
    if what == 'memory' and kind == 'distilled' and distributed.is_writer():
      shutil.rmtree(distill_dir(workdir, k), ignore_errors=True)
      if not os.listdir(distill_dir(workdir)):
        os.rmdir(distill_dir(workdir))
  checkpointer.close()
  writer.close()

  results = {'memory_kind': kind, 'memory_per_task': per_task,
             **continual.summary(state['acc']), 'seconds_this_run': time.time() - t0}
  if per_task and kind == 'distilled':
    results['distilled_fresh_net_acc'] = [
        None if np.isnan(a) else float(a) for a in state['distill']['fresh_acc'][:-1]]
  if distributed.is_writer():  # every process has the numbers, process 0 writes them
    if per_task:
      save_memory(workdir, kind, state, tasks, dataset, config)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  return results


def distill_dir(workdir, k=None):
  """Where the distillation of task k checkpoints (k=None: the folder of all tasks)."""
  folder = os.path.join(workdir, 'distill_checkpoints')
  return folder if k is None else os.path.join(folder, f'task{k}')


def distill_task(config, task, distiller, learner, writer, workdir):
  """Distils task `task` (resuming from its own checkpoints); returns (images, targets,
  lrs, mean test accuracy on the task of fresh nets trained on the set, or nan)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  d, k = config.memory.distill, task.index
  x, y = task.train_set()
  labels = distiller.fixed_labels(task.classes, config.memory.per_task)
  state = distiller.init_state(jax.random.key(continual.seed_of(config.seed, 5, k)),
                               labels, x, y)
  checkpointer = ckpt_lib.Checkpointer(distill_dir(workdir, k), max_to_keep=1)
  if checkpointer.latest_step() is not None:
    # as host arrays: the restored device arrays' placement would compile the step anew
    state = jax.tree_util.tree_map(np.asarray, checkpointer.restore(state))
    print(f'distilled: task {k + 1}, resumed at outer step {int(state["step"])}')
  batches = data_lib.EpochBatches(x, y, d.batch_size, continual.seed_of(config.seed, 6, k))
  base_key = jax.random.key(continual.seed_of(config.seed, 7, k))
  start = int(state['step'])
  bar = tqdm(range(start, d.outer_steps), initial=start, total=d.outer_steps,
             desc=f'distilled: task {k + 1}, distil', disable=not config.progress_bar)
  for step in bar:
    real_x, real_y = batches(step)
    state, m = distiller.outer_step(state, labels, real_x, real_y,
                                    jax.random.fold_in(base_key, step))
    done = step + 1
    if done % d.log_every == 0 or done == d.outer_steps:
      distill_tasks.log_outer_step(
          writer, bar, done, m, prefix=f'distill/task{k}/', where=f' of task {k}',
          advice='lower memory.distill.lr or memory.distill.init_lr')
    if done % d.checkpoint_every == 0 or done == d.outer_steps:
      checkpointer.save(done, ckpt_lib.host(state))
  bar.close()
  checkpointer.close()
  images, targets, lrs = distiller.memory(state, labels)
  fresh = float('nan')
  if d.eval_nets:
    x_test, y_test = task.test_set()
    nets = distiller.train_fresh(state, labels,
                                 jax.random.key(continual.seed_of(config.seed, 8, k)),
                                 d.eval_nets)
    fresh = float(np.mean([
        learner.accuracy(jax.tree_util.tree_map(lambda a, i=i: a[i], nets), x_test, y_test,
                         config.eval.batch_size) for i in range(d.eval_nets)]))
    writer.write(d.outer_steps, {f'distill/task{k}/fresh_net_acc': fresh})
  return images, targets, lrs, fresh


# ---------------------------------------------------------------- outputs


def save_memory(workdir, kind, state, tasks, dataset, config):
  """memory.npz (every past task's images, targets, ...) and memory.png (a grid)."""
  per_task = config.memory.per_task
  stored = len(tasks) - 1  # the last task's memory is never built
  if not stored:
    return
  n = stored * per_task
  x = np.asarray(state['memory']['x'][:n])
  targets = np.asarray(state['memory']['y'][:n])
  task_of = np.repeat(np.arange(stored), per_task)
  perms = [t.perm for t in tasks[:stored]]
  if kind == 'distilled':  # the classes they were learnt for (targets may be soft)
    d = config.memory.distill
    hard_labels = np.concatenate([
        continual.distilled_labels(t.classes, per_task, d.steps).reshape(-1)
        for t in tasks[:stored]]).astype(np.int32)
  else:
    hard_labels = np.argmax(targets, -1).astype(np.int32)
  payload = dict(
      images=dataset.denormalize(x),             # (N, H, W, C) pixels as replayed, ~[0, 1]
      images_normalized=x,                        # what the net saw
      targets=targets,                            # (N, K) replay target distributions
      hard_labels=hard_labels,                    # (N,) the class each image stands for
      task=task_of,                               # (N,) the task each image remembers
      mean=np.asarray(dataset.mean, np.float32), std=np.asarray(dataset.std, np.float32),
      normalization=np.array('x_normalized = (pixels - mean) / std'),
      kind=np.array(kind), stream=np.array(config.stream.name),
      dataset=np.array(dataset.name), model=np.array(config.model.name))
  if config.stream.name == 'permuted':  # the pixel order of each task
    size = dataset.shape[0] * dataset.shape[1]
    payload['permutations'] = np.stack([np.arange(size) if p is None else p for p in perms])
  if kind == 'distilled':
    payload['lrs'] = np.asarray(state['distill']['lrs'][:stored])  # (tasks, T) inner lrs
    payload['label_encoding'] = np.array(
        'soft: softmax(learned logits)' if config.memory.distill.learn_labels else 'one-hot')
  path = os.path.join(workdir, 'memory.npz')
  np.savez(path + '.tmp.npz', **payload)
  os.replace(path + '.tmp.npz', path)
  images = np.concatenate([continual.unpermute(payload['images'][task_of == k], perms[k])
                           for k in range(stored)])
  save_grid(os.path.join(workdir, 'memory.png'), images, payload['hard_labels'], task_of,
            f'{kind} memory' + (' (shown unpermuted)' if 'permutations' in payload else ''))


def save_grid(path, images, labels, task_of, title, columns=20):
  """PNG: each task's images in rows of at most `columns` (one mosaic), the class of
  each image in its corner and the task at the left of its rows."""
  rows = []  # (task, indices) of each mosaic row
  for k in np.unique(task_of):
    idx = np.flatnonzero(task_of == k)
    rows += [(k, idx[i:i + columns]) for i in range(0, len(idx), columns)]
  cols = min(columns, max(len(r) for _, r in rows))
  h, w, c = images.shape[1:]
  pad = 2
  mosaic = np.ones((len(rows) * (h + pad), cols * (w + pad), c), np.float32)
  for r, (_, idx) in enumerate(rows):
    for j, i in enumerate(idx):
      mosaic[r * (h + pad):r * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = images[i]
  mosaic = np.clip(mosaic, 0, 1)
  fig = metrics_lib.figure((cols * 0.6 + 1.0, len(rows) * 0.6 + 0.6))
  ax = fig.subplots()
  ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap='gray', vmin=0, vmax=1,
            interpolation='nearest')
  for r, (k, idx) in enumerate(rows):
    for j, i in enumerate(idx):
      ax.text(j * (w + pad), r * (h + pad), str(int(labels[i])), color='tab:red',
              fontsize=5, va='top')
  ax.set_yticks([r * (h + pad) + h / 2 for r in range(len(rows))])
  ax.set_yticklabels([f'task {k + 1}' for k, _ in rows], fontsize=6)
  ax.set_xticks([])
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def plot_accuracy(path, per_kind, title):
  """One panel per memory kind: test accuracy on each task vs tasks seen (from the
  task's own stage on); a last panel: average accuracy over the tasks seen, per kind."""
  kinds = list(per_kind)
  fig = metrics_lib.figure((3.2 * (len(kinds) + 1), 3.2))
  axes = fig.subplots(1, len(kinds) + 1, squeeze=False)[0]
  for ax, kind in zip(axes, kinds):
    acc = np.asarray(per_kind[kind]['accuracy_matrix'])
    seen = np.arange(1, len(acc) + 1)
    for j in range(len(acc)):
      ax.plot(seen[j:], 100 * acc[j:, j], marker='.', label=f'task {j + 1}')
    ax.set_title(f'memory: {kind}', fontsize=9)
    ax.set_xlabel('tasks seen'), ax.set_ylabel('test accuracy (%)')
    ax.set_xticks(seen), ax.set_ylim(-2, 102), ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  ax = axes[-1]
  for kind in kinds:
    seen_avg = per_kind[kind]['average_accuracy_seen']
    ax.plot(np.arange(1, len(seen_avg) + 1), [100 * a for a in seen_avg], marker='o',
            label=f'{kind} ({100 * seen_avg[-1]:.1f})')
  ax.set_title('average over tasks seen', fontsize=9)
  ax.set_xlabel('tasks seen'), ax.set_ylabel('accuracy (%)')
  ax.set_xticks(np.arange(1, len(seen_avg) + 1))
  ax.set_ylim(-2, 102), ax.grid(alpha=0.3), ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def summary_table(results):
  lines = [f'{results["stream"]} {results["dataset"]}, {results["num_tasks"]} tasks, '
           f'{results["model"]}:',
           f'  {"memory":10s} {"avg acc":>8s} {"forgetting":>11s} {"BWT":>7s}']
  for kind, r in results['kinds'].items():
    lines.append(f'  {kind:10s} {100 * r["average_accuracy"]:7.2f}% '
                 f'{100 * r["mean_forgetting"]:10.2f}% {100 * r["backward_transfer"]:6.2f}%')
  return '\n'.join(lines)
