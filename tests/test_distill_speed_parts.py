"""The outer step's faster pieces compute what the plain ones do: the chunked real-batch
loss (`distill.real_loss`), LeNet's transposed-patch convolution, the outer step's XLA
compile options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awesome_jax import data, distill, models
from awesome_jax.models.small import MatmulConv, conv_as_matmul, conv_as_matmul_t
from configs import distill as distill_configs


def lenet_problem(n=50, seed=0):
  model = models.build('lenet', 10, (28, 28, 1))
  params = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))['params']
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, n), jnp.int32)
  return (lambda p, a: model.apply({'params': p}, a)), params, x, y


@pytest.mark.parametrize('chunk', [16, 25])  # 4 chunks of 13 (the last padded); 2 of 25
def test_chunked_real_loss_equals_whole_batch_in_value_and_gradient(chunk):
  apply_fn, params, x, y = lenet_problem()
  whole = lambda p: distill.real_loss(apply_fn, p, x, y, 0)
  chunked = lambda p: distill.real_loss(apply_fn, p, x, y, chunk)
  (l0, a0), g0 = jax.jit(jax.value_and_grad(whole, has_aux=True))(params)
  (l1, a1), g1 = jax.jit(jax.value_and_grad(chunked, has_aux=True))(params)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  assert float(a1) == float(a0)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # the value alone (no custom VJP forward) too
  np.testing.assert_allclose(jax.jit(chunked)(params)[0], l0, rtol=1e-6)


def tiny_distiller(**distill_fields):
  c = distill_configs.get_config('tiny')
  c.data.name = 'synthetic'
  for k, v in distill_fields.items():
    c.distill[k] = v
  ds = data.make_synthetic(num_classes=4, shape=(8, 8, 1), n_train=256, n_test=256, seed=0)
  d = distill.Distiller(c, ds)
  x = ds.normalize(ds.x_train)
  state = d.init_state(jax.random.key(0), x, ds.y_train)
  return d, state, jnp.asarray(x[:60]), jnp.asarray(ds.y_train[:60])


def test_meta_gradient_with_real_chunks_equals_whole_batch():
  """n_inits 2 (vmapped), learned labels and momentum, 60 real images in chunks of 25
  (the last padded): the meta-gradient of every learned tensor is the whole batch's."""
  with jax.enable_x64(True):
    d, state, rx, ry = tiny_distiller(steps=2, epochs=2, n_inits=2, learn_labels=True,
                                      momentum=0.5, learn_momentum=True)
    f64 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), t)
    learned = f64(state['learned'])
    p0 = f64(jax.vmap(d.init_params)(jax.random.split(jax.random.key(2), 2)))
    rx = rx.astype(jnp.float64)
    grads = {}
    for chunk in (0, 25):
      d.real_chunk = chunk
      grads[chunk] = jax.jit(jax.value_and_grad(d.loss_fn, has_aux=True))(learned, p0, rx, ry)
  (l0, a0), g0 = grads[0]
  (l1, a1), g1 = grads[25]
  np.testing.assert_allclose(l1, l0, rtol=1e-12)
  np.testing.assert_allclose(a1, a0, rtol=1e-6)  # the whole batch's mean is float32
  for name in g0:
    np.testing.assert_allclose(g1[name], g0[name], rtol=1e-9, atol=1e-14)


def test_distiller_chunks_the_real_batch_on_cpu_for_nets_without_xla_convs():
  on_cpu = jax.default_backend() == 'cpu'
  for name, kwargs, chunks in (('mlp', {}, True), ('lenet', {}, True),  # matmul convs
                               ('lenet', {'conv_impl': 'xla'}, False)):  # nn.Conv: slow
    c = distill_configs.get_config('tiny')                              # in the loop
    c.model.name = name
    c.model.kwargs.update(kwargs)
    ds = data.Dataset('fake', np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.int32),
                      np.zeros((1, 28, 28, 1), np.float32), np.zeros(1, np.int32), 10,
                      (0.0,), (1.0,))
    d = distill.Distiller(c, ds)
    assert d.real_chunk == (distill.REAL_CHUNK if on_cpu and chunks else 0), (name, kwargs)


@pytest.mark.parametrize('shape,kernel,padding,stride', [
    ((2, 12, 12, 3), (5, 5, 3, 4), 2, 1),
    ((3, 14, 14, 6), (5, 5, 6, 16), 0, 1),   # LeNet's second conv
    ((2, 12, 11, 1), (3, 3, 1, 6), 0, 2),    # stride 2, odd width
    ((2, 9, 9, 6), (1, 1, 6, 5), 0, 1),
])
def test_transposed_patch_conv_equals_conv_as_matmul(shape, kernel, padding, stride):
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), kernel)
  r = jax.random.normal(jax.random.key(2), conv_as_matmul(x, w, padding, stride).shape)

  @jax.jit
  def out_and_grads(x, w):
    outs = [conv(x, w, padding, stride) for conv in (conv_as_matmul_t, conv_as_matmul)]
    grads = [jax.grad(lambda x, w, conv=conv: jnp.sum(r * conv(x, w, padding, stride) ** 2),
                      argnums=(0, 1))(x, w) for conv in (conv_as_matmul_t, conv_as_matmul)]
    return outs, grads

  (y_t, y_m), (g_t, g_m) = out_and_grads(x, w)
  np.testing.assert_allclose(y_t, y_m, rtol=1e-5, atol=1e-4)
  for a, b in zip(g_t, g_m):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_lenet_equals_its_xla_port_and_the_untransposed_convs():
  """LeNet (now transposed-patch convs) against nn.Conv + nn.max_pool and against
  MatmulConv(transposed_patches=False), in outputs and in second derivatives
  (the inner loop's meta-gradient)."""
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), (3, 28, 28, 1))
  fast = models.build('lenet', 10, (28, 28, 1))
  params = fast.init(jax.random.key(1), x)['params']
  xla = models.build('lenet', 10, (28, 28, 1), conv_impl='xla')
  renamed = {k.replace('MatmulConv_', 'Conv_'): v for k, v in params.items()}
  np.testing.assert_allclose(jax.jit(fast.apply)({'params': params}, x),
                             jax.jit(xla.apply)({'params': renamed}, x), rtol=1e-4, atol=1e-5)
  conv = MatmulConv(6, (5, 5), padding=2)
  conv_t = MatmulConv(6, (5, 5), padding=2, transposed_patches=True)
  cp = conv.init(jax.random.key(2), x)

  def second_order(m):  # d/dx of the gradient's norm: what the meta-gradient needs
    g = lambda x: jax.grad(lambda p: jnp.sum(nn.relu(m.apply(p, x)) ** 2))(cp)
    return jax.grad(lambda x: sum(jnp.sum(a ** 2) for a in jax.tree_util.tree_leaves(g(x))))(x)

  want = jax.jit(second_order, static_argnums=0)(conv)
  np.testing.assert_allclose(jax.jit(second_order, static_argnums=0)(conv_t), want, rtol=1e-4,
                             atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_outer_step_compiler_options_compile_and_change_nothing():
  options = distill.outer_step_compiler_options()
  if jax.default_backend() == 'cpu':
    assert options == {'xla_cpu_use_fusion_emitters': False}
  d, state, rx, ry = tiny_distiller(steps=2, epochs=2)
  _, m_opt = d.outer_step(state, rx, ry, jax.random.key(0))
  _, m_plain = jax.jit(d._outer_step)(state, rx, ry, jax.random.key(0))
  for k in m_plain:
    np.testing.assert_allclose(m_opt[k], m_plain[k], rtol=1e-5)
