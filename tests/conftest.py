import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The classic threefry stream in tests (and the subprocesses they start): XLA:CPU compiles
# each partitionable-threefry draw in ~2 s (jax 0.10; 0.4-0.6 s classic), and op-by-op
# inits draw once per layer shape. Runs outside the tests keep JAX's default stream.
os.environ.setdefault('JAX_THREEFRY_PARTITIONABLE', 'false')
