"""XLA:CPU compiler options that this codebase's jitted steps ask for, where XLA has them."""

import functools

import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=None)
def cpu_only(**options):
  """`options` (a dict for jax.jit's compiler_options) on the CPU backend where this XLA
  knows them; None off CPU, or where compiling a small matmul with them fails (a later
  XLA may rename or drop an option: the caller then compiles without it)."""
  if jax.default_backend() != 'cpu':
    return None
  try:
    jax.jit(lambda a: a @ a, compiler_options=options).lower(
        jnp.zeros((2, 2), jnp.float32)).compile()
  except Exception:  # pylint: disable=broad-except
    return None
  return dict(options)


# XLA:CPU without its YNNPACK fusions: dots and convolutions on XLA's own Eigen kernels
NO_YNN = {'xla_cpu_experimental_ynn_fusion_type': ''}


def no_ynn():
  """`cpu_only(**NO_YNN)`: the options of the zoo's forward pass (`models/zoo.py`) and of
  the classify task's training step, where jaxlib 0.10.2's default YNNPACK fusions were
  slower (2-core Intel Xeon CPU @ 2.80GHz, 2026-12-01: the ResNet-20 step 1.09 -> 0.97 s,
  the CIFAR ViT's the same, `benchmarks/classify_speed.py`; the zoo: models/zoo.py)."""
  return cpu_only(**NO_YNN)
