"""Baselines for distilled data with the same budget: random real images, per-class
means, per-class k-means centroids. Each is trained with the distilled set's step
layout (steps x epochs, same images per step) and one fixed lr tuned on held-out data.
"""

import jax
import jax.numpy as jnp
import numpy as np

from awesome_jax import distill as distill_lib

METHODS = ('random_real', 'class_means', 'kmeans')


def kmeans(x, k, iters=30, seed=0):
  """Lloyd's k-means with k-means++ seeding. x (N, D) -> centroids (k, D)."""
  rng = np.random.default_rng(seed)
  x = np.asarray(x, np.float64)
  centers = [x[rng.integers(len(x))]]
  for _ in range(1, k):
    d2 = np.min(((x[:, None, :] - np.asarray(centers)[None]) ** 2).sum(-1), axis=1)
    centers.append(x[rng.choice(len(x), p=d2 / d2.sum())])
  centers = np.asarray(centers)
  for _ in range(iters):
    d2 = (x ** 2).sum(1)[:, None] - 2 * x @ centers.T + (centers ** 2).sum(1)[None]
    assign = np.argmin(d2, axis=1)
    for j in range(k):
      members = x[assign == j]
      if len(members):
        centers[j] = members.mean(0)
  return centers


def per_class_images(method, x, y, num_classes, per_class, seed=0):
  """(num_classes, per_class, H, W, C) images chosen by `method` from (x, y)."""
  rng = np.random.default_rng(seed)
  out = []
  for c in range(num_classes):
    xc = x[y == c]
    if method == 'random_real':
      out.append(xc[rng.choice(len(xc), per_class, replace=False)])
    elif method == 'class_means':  # means of `per_class` disjoint random parts
      parts = np.array_split(rng.permutation(len(xc)), per_class)
      out.append(np.stack([xc[p].mean(0) for p in parts]))
    elif method == 'kmeans':
      flat = xc.reshape(len(xc), -1)
      out.append(kmeans(flat, per_class, seed=seed + c).reshape((per_class,) + xc.shape[1:]))
    else:
      raise ValueError(f'baseline {method!r}: unknown; allowed: {", ".join(METHODS)}')
  return np.stack(out).astype(np.float32)


def arrange_like_distilled(images, steps, per_step_per_class):
  """(K, steps*p, ...) per-class images -> (steps, K*p, ...) with the distilled layout:
  step s holds, for each class in order, p images."""
  k = images.shape[0]
  x = images.reshape((k, steps, per_step_per_class) + images.shape[2:])
  x = np.moveaxis(x, 1, 0)  # (steps, K, p, ...)
  return x.reshape((steps, k * per_step_per_class) + images.shape[2:])


def evaluate_all(distiller, x_train, y_train, x_test, y_test, config):
  """{method: {lr, val_acc, test_acc_mean, test_acc_std}} for every baseline."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  d, e = config.distill, config.eval
  bar = tqdm(total=len(METHODS) * (len(e.baseline_lrs) + 1), desc='baselines',
             disable=not config.get('progress_bar', False))
  val_idx, pool_idx = distill_lib.split_val(len(x_train), e.val_size, config.seed)
  pool_x, pool_y = x_train[pool_idx], y_train[pool_idx]
  per_class = d.images_per_class_per_step * d.steps
  ys = jax.nn.one_hot(distiller.fixed_labels, distiller.num_classes)
  tune_inits = distiller.eval_inits(None if d.random_init else _state_stub(distiller, config),
                                    e.tune_inits, e.seed + 1)
  test_inits = distiller.eval_inits(None if d.random_init else _state_stub(distiller, config),
                                    e.num_inits, e.seed)
  # the distilled set's inner optimizer: with distill.momentum > 0 the baselines train
  # with that momentum too (a learned momentum starts from it)
  beta = distill_lib.momentum_of({}, d.momentum)
  results = {}
  for method in METHODS:
    imgs = per_class_images(method, pool_x, pool_y, distiller.num_classes, per_class,
                            seed=config.seed)
    xs = jnp.asarray(arrange_like_distilled(imgs, d.steps, d.images_per_class_per_step))
    best = None
    for lr in e.baseline_lrs:
      lrs = jnp.full((distiller.total_steps,), lr, jnp.float32)
      val = distiller.train_and_test(tune_inits, xs, ys, lrs, x_train[val_idx],
                                     y_train[val_idx], momentum=beta).mean()
      if best is None or val > best[1]:
        best = (lr, val)
      bar.update()
    lrs = jnp.full((distiller.total_steps,), best[0], jnp.float32)
    accs = distiller.train_and_test(test_inits, xs, ys, lrs, x_test, y_test, momentum=beta)
    bar.update()
    results[method] = {'lr': float(best[0]), 'val_acc': float(best[1]),
                       'momentum': float(d.momentum),
                       'test_acc_mean': float(accs.mean()), 'test_acc_std': float(accs.std()),
                       'eval_nets': int(len(accs))}
  bar.close()
  return results


def _state_stub(distiller, config):
  """The fixed init the distilled data was made for (same key as Distiller.init_state)."""
  _, k_net = jax.random.split(jax.random.key(config.seed))
  return {'init_params': jax.tree_util.tree_map(lambda a: a[None],
                                                distiller.init_params(k_net))}
