"""The tasks `main` runs, one module per study: `config.task` names one of `TASKS`.

Each task is a pair `(run(config, workdir), check(config))`: `run` does the work and
writes its outputs to the workdir (resuming from its checkpoints), `check` validates the
config without reading data (what `main --dry_run` calls). The methods themselves are
library modules beside this package: `distill`, `baselines`, `supermask`, `shape_bias`,
`stylize`.

| task | study | module |
|---|---|---|
| distill | dataset distillation (Wang et al. 2018) | tasks/distill.py |
| distill_eval | train fresh nets on a saved distilled set | tasks/distill.py |
| distill_adapt | distil a set that adapts pretrained nets to a new domain | tasks/applications.py |
| distill_attack | distil a set that poisons well-trained nets | tasks/applications.py |
| edge_popup | subnetworks of random nets (Ramanujan et al. 2020) | tasks/edge_popup.py |
| edge_popup_sweep | edge-popup over a grid of keep fractions and inits | tasks/edge_popup.py |
| classify | train a CIFAR ResNet or ViT (or fine-tune one), then its cue-conflict shape bias (Tuli et al. 2021) | tasks/classify.py |
| shape_bias | cue-conflict shape bias vs humans (Geirhos et al. 2019; Tuli et al. 2021) | tasks/shape_bias.py |
| continual | continual learning with distilled images as the memory of past tasks | tasks/continual.py |
| stylize | a stylized copy of a dataset, each image once with a seeded random style (Geirhos et al. 2019) | tasks/stylize.py |
"""

import importlib

# task name -> (module under awesome_jax.tasks, run function, check function)
TASKS = {
    'distill': ('distill', 'run', 'check_config'),
    'distill_eval': ('distill', 'evaluate_saved', 'check_eval_config'),
    'distill_adapt': ('applications', 'run', 'check'),
    'distill_attack': ('applications', 'run', 'check'),
    'edge_popup': ('edge_popup', 'run', 'check'),
    'edge_popup_sweep': ('edge_popup', 'sweep', 'check_sweep'),
    'shape_bias': ('shape_bias', 'run', 'check'),
    'classify': ('classify', 'run', 'check'),
    'continual': ('continual', 'run', 'check'),
    'stylize': ('stylize', 'run', 'check'),
}


def get(name):
  """(run, check) of task `name`; imports only that task's module."""
  module_name, run, check = TASKS[name]
  module = importlib.import_module(f'awesome_jax.tasks.{module_name}')
  return getattr(module, run), getattr(module, check)
