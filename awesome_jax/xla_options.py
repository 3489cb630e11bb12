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
