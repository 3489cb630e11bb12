"""The shape-bias task: evaluate a model on the cue-conflict stimuli against humans.

`run(config, workdir)` writes to workdir: decisions_<model>.csv (model-vs-human format),
results.json (shape bias, shape/texture accuracy, per-class shape bias, kappa vs each
human, JS distances of the error distributions, the human reference numbers, the rules
and preprocessing used), shape_bias.png (the Geirhos figure) and kappa.png.
"""

import json
import os
import time

import jax
import numpy as np

from awesome_jax import shape_bias as sb


def load_images(paths, size=224):
  """uint8 (N, size, size, 3); stimuli are 224x224 already (resized if not)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = []
  for p in paths:
    img = Image.open(p).convert('RGB')
    if img.size != (size, size):
      img = img.resize((size, size), Image.BILINEAR)
    out.append(np.asarray(img))
  return np.stack(out)


def model_fn_from_config(config):
  """(name, fn: uint8 NHWC images -> ImageNet logits) for config.model."""
  from awesome_jax import models  # pylint: disable=g-import-not-at-top
  from awesome_jax.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  if config.model.name != 'efficientnet_lite0':
    raise models.ModelError(f'model.name={config.model.name!r}: unknown; allowed: '
                            'efficientnet_lite0')
  norm = config.model.normalization
  if norm not in efficientnet_lite.NORMALIZATION:
    raise models.ModelError(f'model.normalization={norm!r}: unknown; allowed: '
                            f'{", ".join(efficientnet_lite.NORMALIZATION)}')
  model, variables = efficientnet_lite.load_lite0(config.model.weights or None)
  apply = jax.jit(lambda x: model.apply(variables, efficientnet_lite.preprocess(x, norm)))
  return config.model.name, apply


def evaluate_model(logits_fn, stimuli, batch_size=64, progress=True):
  """Softmax probabilities of `logits_fn` on every stimulus, in batches."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  probs = []
  for i in tqdm(range(0, len(stimuli), batch_size), desc='cue-conflict', disable=not progress):
    x = load_images([s[0] for s in stimuli[i:i + batch_size]])
    probs.append(np.asarray(jax.nn.softmax(logits_fn(x), axis=-1)))
  return np.concatenate(probs)


def run(config, workdir, logits_fn=None):
  """Shape bias and human comparison of config.model (or of `logits_fn`)."""
  stimuli = sb.list_stimuli(config.data.stimuli_dir)
  humans = sb.read_observers(config.data.human_dir) if config.data.human_dir else {}
  mapping = sb.load_mapping(config.mapping or None)
  if logits_fn is None:
    name, logits_fn = model_fn_from_config(config)
  else:
    name = config.model.name
  t0 = time.time()
  probs = evaluate_model(logits_fn, stimuli, config.batch_size, config.progress_bar)
  seconds = time.time() - t0
  trials = sb.Trials.from_decisions(name, [s[1] for s in stimuli],
                                    sb.decisions_from_probs(probs, mapping))
  sb.write_decisions_csv(os.path.join(workdir, f'decisions_{name}.csv'), trials)
  results = {
      'model': name, 'stimuli': len(stimuli),
      'preprocessing': {'size': 224, 'normalization': config.model.normalization},
      'rules': ('16-class forced choice by mean softmax probability over each category\'s '
                'ImageNet classes; shape bias over trials with shape != texture class; '
                'kappa with correct = response is the shape class, over shared stimuli'),
      **sb.shape_bias(trials),
      'per_class_shape_bias': sb.shape_bias_per_class(trials),
      'eval_seconds': seconds, 'images_per_second': len(stimuli) / seconds,
  }
  if humans:
    results['vs_humans'] = sb.compare_to_humans(trials, humans)
    results['humans'] = sb.human_summary(humans)
    plot_shape_bias(os.path.join(workdir, 'shape_bias.png'), {name: trials}, humans)
    plot_kappa(os.path.join(workdir, 'kappa.png'), {name: results['vs_humans']},
               results['humans']['human_human_kappa_mean'])
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  print(f'{name}: shape bias {results["shape_bias"]:.3f} (shape acc {results["shape_acc"]:.3f},'
        f' texture acc {results["texture_acc"]:.3f}) over {results["conflict_trials"]} '
        'conflict trials' + (f'; kappa vs humans {results["vs_humans"]["kappa_mean"]:.3f}'
                             if humans else ''))
  return results


def plot_shape_bias(path, models, humans, categories=sb.CATEGORIES):
  """The Geirhos et al. figure: per-category fraction of shape decisions (bottom axis)
  vs texture decisions (top); humans as red circles, each model its own marker,
  averages as vertical lines."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  markers = ['s', 'D', '^', 'v', 'P', 'X', '*']
  fig, ax = plt.subplots(figsize=(5, 7))
  ys = np.arange(len(categories))[::-1]
  observers = [('humans', sb.pool(humans.values()), 'o', 'red')] if humans else []
  observers += [(n, t, markers[i % len(markers)], f'C{i}') for i, (n, t) in
                enumerate(models.items())]
  for name, trials, marker, color in observers:
    per = sb.shape_bias_per_class(trials, categories)
    ax.scatter([per[c] for c in categories], ys, marker=marker, s=50,
               facecolors='none' if name == 'humans' else color, edgecolors=color, label=name)
    ax.axvline(sb.shape_bias(trials)['shape_bias'], color=color, lw=1.5, alpha=0.7)
  ax.set_yticks(ys)
  ax.set_yticklabels(categories)
  ax.set_xlim(-0.02, 1.02)
  ax.set_xlabel('fraction of "shape" decisions')
  top = ax.secondary_xaxis('top', functions=(lambda v: 1 - v, lambda v: 1 - v))
  top.set_xlabel('fraction of "texture" decisions')
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.09), ncol=3, fontsize=8)
  ax.grid(axis='x', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_kappa(path, comparisons, human_human_kappa=None):
  """Bar chart of each model's mean kappa vs the humans (dots: each human)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(comparisons)
  fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 4))
  means = [comparisons[n]['kappa_mean'] for n in names]
  ax.bar(range(len(names)), means, color=[f'C{i}' for i in range(len(names))], alpha=0.7)
  for i, n in enumerate(names):
    vals = list(comparisons[n]['kappa_per_human'].values())
    ax.scatter(np.full(len(vals), i), vals, color='k', s=10, zorder=3)
  if human_human_kappa is not None:
    ax.axhline(human_human_kappa, color='red', ls='--', label='human-human')
    ax.legend(fontsize=8)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=20)
  ax.set_ylabel("error consistency (Cohen's kappa)")
  ax.axhline(0, color='gray', lw=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
