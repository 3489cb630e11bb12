"""awesome_jax: what neural networks learn from data, in JAX/Flax."""
