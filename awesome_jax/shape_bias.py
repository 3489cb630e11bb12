"""Cue-conflict evaluation (Geirhos et al. 2019) and error consistency (Geirhos et al.
2020; Tuli et al. 2021), for human decision CSVs and any model.

Observers are `Trials`: one row per trial with the stimulus key (e.g.
`airplane1-bicycle2.png`), its shape class, texture class and the response (one of the
16 categories, or 'na'). Read and write them in the model-vs-human CSV format
`subj,session,trial,rt,object_response,category,condition,imagename`.

Bad input (a file that is not an image, a malformed mapping, a CSV that does not parse)
raises `StimulusError` with one line naming the file; responses that are neither a
category nor 'na' print a warning line with their counts (`strict=True` rejects them).

Rules (written into every report):
* 16-class forced choice: a model's 1000 ImageNet probabilities become 16 by the mean
  over each category's ImageNet classes, then argmax.
* shape bias = shape hits / (shape hits + texture hits), over trials whose shape class
  differs from their texture class; other responses count for neither.
* error consistency: over the trials both observers saw (matched by stimulus), a trial
  is correct when the response is the shape class; Cohen's kappa of the two
  correct/wrong sequences against what their accuracies predict.
"""

import collections
import csv
import dataclasses
import json
import os
import re
import sys

import numpy as np

CATEGORIES = ('airplane', 'bear', 'bicycle', 'bird', 'boat', 'bottle', 'car', 'cat',
              'chair', 'clock', 'dog', 'elephant', 'keyboard', 'knife', 'oven', 'truck')
RESPONSES = CATEGORIES + ('na',)  # 'na': no answer (in the human CSVs)
CSV_FIELDS = ('subj', 'session', 'trial', 'rt', 'object_response', 'category',
              'condition', 'imagename')
_MAPPING_PATH = os.path.join(os.path.dirname(__file__), 'resources',
                             'imagenet_16_categories.json')


class StimulusError(ValueError):
  """A stimulus or decision file that does not follow the expected naming/format."""


# ------------------------------------------------------------------ mapping


def load_mapping(path=None):
  """{category: [ImageNet indices]}; the shipped WordNet table unless `path` given.

  The file is `{"categories": {cat: {"imagenet_indices": [...]}}}` (as the shipped one)
  or `{cat: [...]}`; anything else raises StimulusError naming the entry.
  """
  path = path or _MAPPING_PATH
  try:
    with open(path) as f:
      table = json.load(f)
  except OSError as e:
    raise StimulusError(f'mapping {path}: cannot read ({e.strerror or e})') from None
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise StimulusError(f'mapping {path}: not JSON ({e})') from None
  return mapping_from_table(table, f'mapping {path}')


def mapping_from_table(table, source='mapping'):
  """The checked {category: [indices]} of a parsed mapping JSON (see load_mapping)."""
  form = ('expected {"categories": {"<category>": {"imagenet_indices": [<0..999>, ...]}}} '
          'or {"<category>": [<0..999>, ...]}')
  if isinstance(table, dict) and 'categories' in table:
    table, where = table['categories'], 'categories.'
  else:
    where = ''
  if not isinstance(table, dict) or not table:
    raise StimulusError(f'{source}: {where or "the file"} is not a non-empty object; {form}')
  mapping = {}
  for cat, v in table.items():
    entry = f'{where}{cat}' + ('.imagenet_indices' if isinstance(v, dict) else '')
    idx = v.get('imagenet_indices') if isinstance(v, dict) else v
    if not isinstance(idx, list):
      got = 'missing' if idx is None else f'{json.dumps(idx)[:40]} is not a list'
      raise StimulusError(f'{source}: {entry}: {got}; {form}')
    mapping[cat] = idx
  check_mapping(mapping, source=source)
  return mapping


def check_mapping(mapping, num_classes=1000, source='mapping'):
  """Every index an integer in [0, num_classes), none in two categories, none empty."""
  seen = {}
  for cat, idx in mapping.items():
    if not len(idx):
      raise StimulusError(f'{source}: category {cat!r} has no classes')
    for i in idx:
      if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise StimulusError(f'{source}: {cat!r} has index {i!r}, not an integer')
      if not 0 <= i < num_classes:
        raise StimulusError(f'{source}: {cat!r} has index {i} outside 0..{num_classes - 1}')
      if i in seen:
        where = f'twice in {cat!r}' if seen[i] == cat else f'in both {seen[i]!r} and {cat!r}'
        raise StimulusError(f'{source}: index {i} is {where}')
      seen[i] = cat


def check_mapping_classes(mapping, classes, source='mapping'):
  """Every stimulus class (shape or texture) is a mapping category, and every mapping
  category is one of CATEGORIES; otherwise decisions would silently score nothing."""
  missing = sorted(set(classes) - set(mapping))
  extra = sorted(set(mapping) - set(CATEGORIES))
  if missing or extra:
    raise StimulusError(
        f'{source}: its categories differ from the stimuli\'s classes: ' +
        '; '.join(f'{what}: {", ".join(names)}' for what, names in (
            ('in the stimuli but not in the mapping', missing),
            ('in the mapping but not one of the 16 categories', extra)) if names))


def decisions_from_probs(probs, mapping=None):
  """(N, 1000) softmax probabilities -> N category names (mean over each category's
  classes, then argmax over the categories in sorted order)."""
  mapping = mapping or load_mapping()
  cats = sorted(mapping)
  probs = np.asarray(probs)
  scores = np.stack([probs[:, mapping[c]].mean(axis=1) for c in cats], axis=1)
  return [cats[i] for i in scores.argmax(axis=1)]


# ------------------------------------------------------------------ stimuli


_NAME = re.compile(r'^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$')
_SINGLE = re.compile(r'^([a-z]+)(\d+)\.png$')


def parse_stimulus(name, categories=CATEGORIES):
  """-> (stimulus key, shape class, texture class) from a stimulus file name.

  Cue-conflict: 'airplane1-bicycle2.png' (shape airplane, texture bicycle); edges and
  silhouettes: 'airplane1.png' (shape = texture = airplane). A human CSV's names carry a
  trial prefix ('0001_s5n_s01_0_bird_00_bird3-bird2.png'), which is dropped.
  """
  key = os.path.basename(name).split('_')[-1]
  m, single = _NAME.match(key), _SINGLE.match(key)
  if m:
    shape, texture = m.group(1), m.group(3)
  elif single:
    shape = texture = single.group(1)
  else:
    raise StimulusError(f'{name}: expected a name like airplane1-bicycle2.png '
                        '(<shape class><n>-<texture class><n>.png) or airplane1.png')
  for cls in (shape, texture):
    if cls not in categories:
      raise StimulusError(f'{name}: unknown class {cls!r}; allowed: {", ".join(categories)}')
  return key, shape, texture


def list_stimuli(directory, categories=CATEGORIES):
  """Sorted (path, key, shape, texture) of the cue-conflict PNGs in `<shape>/<name>.png`."""
  if not os.path.isdir(directory):
    raise StimulusError(f'{directory}: not a directory of cue-conflict stimuli')
  out = []
  for cls in sorted(os.listdir(directory)):
    folder = os.path.join(directory, cls)
    if not os.path.isdir(folder) or cls.startswith('.'):  # .ipynb_checkpoints, ...
      continue
    if cls not in categories:
      raise StimulusError(f'{folder}: unknown class folder; allowed: {", ".join(categories)}')
    pngs = [f for f in sorted(os.listdir(folder))
            if f.lower().endswith('.png') and not f.startswith('.')]  # macOS ._ files
    if not pngs:
      raise StimulusError(f'{folder}: empty class folder (no .png stimuli)')
    for fname in pngs:
      key, shape, texture = parse_stimulus(fname, categories)
      if shape != cls:
        raise StimulusError(f'{os.path.join(folder, fname)}: shape class {shape!r} '
                            f'but stored under {cls!r}/')
      out.append((os.path.join(folder, fname), key, shape, texture))
  if not out:
    raise StimulusError(f'{directory}: no PNG stimuli under <class>/')
  return out


def check_images(paths):
  """Opens and verifies every image (header and PNG checksums, no pixel decode: about
  0.2 ms a stimulus); raises StimulusError naming the first file that is not a readable
  image, and how many more there are."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  bad = []
  for p in paths:
    try:
      with Image.open(p) as img:
        img.verify()
    except Image.UnidentifiedImageError:
      bad.append((p, 'not an image file'))
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports a bad checksum as SyntaxError
      bad.append((p, f'broken image: {e}'))
  if bad:
    more = (f' (and {len(bad) - 1} more: {", ".join(os.path.basename(p) for p, _ in bad[1:4])}'
            f'{", ..." if len(bad) > 4 else ""})' if len(bad) > 1 else '')
    raise StimulusError(f'{bad[0][0]}: {bad[0][1]}{more}')


# ------------------------------------------------------------------ trials


@dataclasses.dataclass
class Trials:
  """One observer's trials; all fields are equal-length numpy arrays of str."""
  observer: str
  key: np.ndarray
  shape: np.ndarray
  texture: np.ndarray
  response: np.ndarray

  def __post_init__(self):
    for f in ('key', 'shape', 'texture', 'response'):
      setattr(self, f, np.asarray(getattr(self, f), dtype=str))

  def __len__(self):
    return len(self.key)

  @classmethod
  def from_decisions(cls, observer, stimulus_names, responses):
    parsed = [parse_stimulus(n) for n in stimulus_names]
    return cls(observer, [p[0] for p in parsed], [p[1] for p in parsed],
               [p[2] for p in parsed], list(responses))


def read_decisions_csv(path, strict=False):
  """Reads a model-vs-human decision CSV (one observer) into Trials.

  Responses other than the 16 categories and 'na' count as neither shape nor texture:
  a warning line gives their counts, or with `strict` they raise StimulusError.
  """
  try:
    with open(path, newline='') as f:
      reader = csv.DictReader(f)
      rows = list(reader)
  except OSError as e:
    raise StimulusError(f'{path}: cannot read ({e.strerror or e})') from None
  except UnicodeDecodeError:
    raise StimulusError(f'{path}: not a text CSV (not UTF-8)') from None
  except csv.Error as e:
    raise StimulusError(f'{path}: not a CSV (line {reader.line_num}: {e})') from None
  if not rows:
    raise StimulusError(f'{path}: no trials')
  missing = set(CSV_FIELDS) - set(rows[0])
  if missing:
    raise StimulusError(f'{path}: missing columns {sorted(missing)}; expected '
                        f'{",".join(CSV_FIELDS)}')
  for i, r in enumerate(rows):
    if None in r or None in r.values():  # too many or too few fields
      n = sum(v is not None for k, v in r.items() if k is not None) + len(r.get(None, []))
      raise StimulusError(f'{path}: data row {i + 1} has {n} fields, expected '
                          f'{len(reader.fieldnames)}')
  try:
    trials = Trials.from_decisions(rows[0]['subj'], [r['imagename'] for r in rows],
                                   [r['object_response'] for r in rows])
  except StimulusError as e:
    raise StimulusError(f'{path}: {e}') from None
  bad = [r for r, s in zip(rows, trials.shape) if r['category'] != s]
  if bad:
    raise StimulusError(f'{path}: trial {bad[0]["trial"]}: category {bad[0]["category"]!r} '
                        f'is not the shape class of {bad[0]["imagename"]}')
  check_responses(trials, path, strict)
  return trials


def check_responses(trials, source, strict=False):
  """Counts responses that are neither a category nor 'na': a warning line on stderr,
  or StimulusError if `strict`."""
  unknown = collections.Counter(str(r) for r in trials.response if r not in RESPONSES)
  if not unknown:
    return
  message = (f'{source}: {sum(unknown.values())} of {len(trials)} responses are not a '
             'category or \'na\': ' +
             ', '.join(f'{label!r} x{n}' for label, n in unknown.most_common()))
  if strict:
    raise StimulusError(message + ' (strict labels)')
  print(f'warning: {message}; they count as neither shape nor texture '
        '(strict_labels rejects them)', file=sys.stderr)


def read_observers(directory, strict=False):
  """{observer: Trials} of every CSV in `directory` (one file per observer/session,
  sessions of one observer concatenated); `strict` as in read_decisions_csv."""
  if not os.path.isdir(directory):
    raise StimulusError(f'{directory}: not a directory of decision CSVs')
  out = {}
  for fname in sorted(os.listdir(directory)):
    if fname.endswith('.csv') and not fname.startswith('.'):
      t = read_decisions_csv(os.path.join(directory, fname), strict)
      if t.observer in out:
        o = out[t.observer]
        t = Trials(t.observer, *(np.concatenate([getattr(o, f), getattr(t, f)])
                                 for f in ('key', 'shape', 'texture', 'response')))
      out[t.observer] = t
  if not out:
    raise StimulusError(f'{directory}: no .csv files')
  return out


def write_decisions_csv(path, trials, session=1, condition='0'):
  """Writes Trials in the model-vs-human format (rt is NaN for models)."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(CSV_FIELDS)
    for i in range(len(trials)):
      w.writerow([trials.observer, session, i + 1, 'NaN', trials.response[i], trials.shape[i],
                  condition, trials.key[i]])


# ------------------------------------------------------------------ metrics


def shape_bias(trials):
  """Shape bias and its counts over cue-conflict trials (shape class != texture class)."""
  conflict = trials.shape != trials.texture
  correct = int(np.sum(trials.response == trials.shape))
  shape_hits = int(np.sum(conflict & (trials.response == trials.shape)))
  texture_hits = int(np.sum(conflict & (trials.response == trials.texture)))
  n = int(conflict.sum())
  return {
      # undefined (nan) without conflict trials answered by shape or texture
      'shape_bias': (shape_hits / (shape_hits + texture_hits) if shape_hits + texture_hits
                     else float('nan')),
      'shape_acc': shape_hits / max(n, 1),    # fraction of conflict trials answered by shape
      'texture_acc': texture_hits / max(n, 1),
      'shape_hits': shape_hits, 'texture_hits': texture_hits,
      'conflict_trials': n, 'excluded_same_class_trials': int(len(trials) - n),
      'accuracy': correct / max(len(trials), 1),  # response = shape class, all trials
      'trials': int(len(trials)),
  }


def shape_bias_per_class(trials, categories=CATEGORIES):
  """{category: shape bias over conflict trials whose shape class is that category}."""
  out = {}
  for c in categories:
    sel = trials.shape == c
    sub = Trials(trials.observer, trials.key[sel], trials.shape[sel], trials.texture[sel],
                 trials.response[sel])
    out[c] = shape_bias(sub)['shape_bias']
  return out


def pool(observers, name='pooled'):
  """Concatenates several observers' trials into one (e.g. all humans)."""
  obs = list(observers)
  return Trials(name, *(np.concatenate([getattr(o, f) for o in obs])
                        for f in ('key', 'shape', 'texture', 'response')))


def _matched(a, b):
  ia = {k: i for i, k in enumerate(a.key)}
  common = [k for k in b.key if k in ia]
  ib = {k: i for i, k in enumerate(b.key)}
  if not common:
    raise StimulusError(f'observers {a.observer!r} and {b.observer!r} share no stimuli')
  ra = np.array([a.response[ia[k]] for k in common])
  rb = np.array([b.response[ib[k]] for k in common])
  truth = np.array([a.shape[ia[k]] for k in common])
  return ra, rb, truth


def error_consistency(a, b):
  """Cohen's kappa of two observers' correct/wrong trials (Geirhos et al. 2020).

  kappa = (c_obs - c_exp) / (1 - c_exp), c_obs = fraction of shared trials where both
  are right or both wrong, c_exp = p_a p_b + (1 - p_a)(1 - p_b).
  """
  ra, rb, truth = _matched(a, b)
  ca, cb = ra == truth, rb == truth
  c_obs = float(np.mean(ca == cb))
  pa, pb = float(ca.mean()), float(cb.mean())
  c_exp = pa * pb + (1 - pa) * (1 - pb)
  kappa = (c_obs - c_exp) / (1 - c_exp) if c_exp < 1 else float('nan')
  return {'kappa': kappa, 'c_obs': c_obs, 'c_exp': c_exp, 'acc_a': pa, 'acc_b': pb,
          'trials': int(len(truth))}


def class_error_distribution(trials, categories=CATEGORIES):
  """Tuli et al.'s class-wise errors: fraction of all errors made on each true class."""
  wrong = trials.response != trials.shape
  counts = np.array([np.sum(wrong & (trials.shape == c)) for c in categories], float)
  return counts / max(counts.sum(), 1)


def confusion_error_distribution(trials, categories=CATEGORIES):
  """Tuli et al.'s inter-class errors: (true, response) pairs of the errors that chose a
  category, as a normalised 16x16 matrix with a zero diagonal."""
  index = {c: i for i, c in enumerate(categories)}
  m = np.zeros((len(categories), len(categories)))
  for s, r in zip(trials.shape, trials.response):
    if r != s and r in index:
      m[index[s], index[r]] += 1
  return m / max(m.sum(), 1)


def jensen_shannon_distance(p, q):
  """sqrt of the Jensen-Shannon divergence (base 2, so in [0, 1]) of two distributions."""
  p = np.asarray(p, float).ravel()
  q = np.asarray(q, float).ravel()
  if p.sum() <= 0 or q.sum() <= 0:  # an observer without errors has no distribution
    return float('nan')
  p, q = p / p.sum(), q / q.sum()
  m = (p + q) / 2

  def kl(x, y):
    nz = x > 0
    return float(np.sum(x[nz] * np.log2(x[nz] / y[nz])))
  return float(np.sqrt(max(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0)))


def compare_to_humans(model, humans):
  """Kappa vs each human, and JS distances of the error distributions to pooled humans."""
  pooled = pool(humans.values(), 'humans')
  kappas = {h: error_consistency(model, t)['kappa'] for h, t in humans.items()}
  return {
      'kappa_per_human': kappas,
      'kappa_mean': float(np.mean(list(kappas.values()))),
      'js_class_errors': jensen_shannon_distance(class_error_distribution(model),
                                                 class_error_distribution(pooled)),
      'js_interclass_errors': jensen_shannon_distance(
          confusion_error_distribution(model), confusion_error_distribution(pooled)),
  }


def human_summary(humans):
  """Pooled and per-subject shape bias, and the mean human-human kappa."""
  per = {h: shape_bias(t)['shape_bias'] for h, t in humans.items()}
  defined = [v for v in per.values() if not np.isnan(v)]
  names = sorted(humans)
  pair_kappas = [error_consistency(humans[a], humans[b])['kappa']
                 for i, a in enumerate(names) for b in names[i + 1:]]
  return {
      'pooled': shape_bias(pool(humans.values())),
      'per_subject_shape_bias': per,
      'shape_bias_range': [min(defined), max(defined)] if defined else None,
      'human_human_kappa_mean': float(np.mean(pair_kappas)) if pair_kappas else float('nan'),
      'human_human_pairs': len(pair_kappas),
  }
