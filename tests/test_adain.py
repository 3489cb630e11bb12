"""AdaIN (models/adain.py) and stylized-dataset writing (stylize.py), on tiny shapes."""

import os
import tarfile

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from awesome_jax import stylize as st
from awesome_jax.models import adain
from tests.torch_files import save_legacy

TINY = (8, 8, 16, 16)


@pytest.fixture(scope='module')
def tiny_vars():
  """Tiny networks, He-uniform kernels (torch's default init lets relu4_1 fade)."""
  return adain.init(0, TINY, gain=np.sqrt(6.0))


def _one_line(excinfo, *words):
  msg = str(excinfo.value)
  assert '\n' not in msg, msg
  for w in words:
    assert w in msg, (w, msg)


# --- the AdaIN op and the networks -------------------------------------------------------

def test_adain_takes_style_statistics_with_unbiased_std():
  rng = np.random.default_rng(0)
  content = rng.normal(1.0, 2.0, (2, 5, 6, 4)).astype(np.float32)
  style = rng.normal(-3.0, 0.5, (2, 3, 7, 4)).astype(np.float32) * np.arange(1, 5)
  out = np.asarray(adain.adain(content, style))
  np.testing.assert_allclose(out.mean(axis=(1, 2)), style.mean(axis=(1, 2)), atol=1e-4)
  # 30 pixels: the biased std would be off by sqrt(30/29), ~1.7%
  np.testing.assert_allclose(out.std(axis=(1, 2), ddof=1), style.std(axis=(1, 2), ddof=1),
                             rtol=1e-4)
  c_mean, c_var = content.mean((1, 2), keepdims=True), content.var((1, 2), ddof=1,
                                                                   keepdims=True)
  s_mean, s_var = style.mean((1, 2), keepdims=True), style.var((1, 2), ddof=1,
                                                               keepdims=True)
  want = (content - c_mean) / np.sqrt(c_var + 1e-5) * np.sqrt(s_var + 1e-5) + s_mean
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_encoder_features_and_ceil_mode_pooling(tiny_vars):
  enc_vars, _ = tiny_vars
  x = np.random.default_rng(1).random((2, 17, 17, 3)).astype(np.float32)
  feats = adain.encode(enc_vars, x)
  assert list(feats) == list(adain.FEATURES)
  assert {k: v.shape for k, v in feats.items()} == {
      'relu1_1': (2, 17, 17, 8), 'relu2_1': (2, 9, 9, 8), 'relu3_1': (2, 5, 5, 16),
      'relu4_1': (2, 3, 3, 16)}
  pooled = np.asarray(adain._max_pool_ceil(jnp.arange(9.0).reshape(1, 3, 3, 1)))
  np.testing.assert_array_equal(pooled[0, ..., 0], [[4, 5], [7, 8]])


def test_alpha_zero_gives_content_features_back(tiny_vars):
  enc_vars, dec_vars = tiny_vars
  rng = np.random.default_rng(2)
  content = rng.random((2, 16, 16, 3)).astype(np.float32)
  style = rng.random((1, 24, 24, 3)).astype(np.float32)
  feats = adain.encode(enc_vars, content)['relu4_1']
  np.testing.assert_array_equal(adain.target_features(enc_vars, content, style, 0.0), feats)
  stylized = adain.target_features(enc_vars, content, style, 1.0)
  assert np.abs(stylized - feats).max() > 1e-3
  out0 = adain.stylize(enc_vars, dec_vars, content, style, alpha=0.0)
  other = adain.stylize(enc_vars, dec_vars, content, 1 - style, alpha=0.0)
  np.testing.assert_array_equal(out0, other)     # alpha 0: the style plays no part
  out1 = adain.stylize(enc_vars, dec_vars, content, style, alpha=1.0)
  assert out1.shape == (2, 16, 16, 3) and np.isfinite(out1).all()
  assert np.abs(out1 - out0).max() > 1e-4


@pytest.mark.parametrize('alpha', [-0.1, 1.5])
def test_alpha_outside_unit_interval(tiny_vars, alpha):
  x = np.zeros((1, 16, 16, 3), np.float32)
  with pytest.raises(ValueError) as e:
    adain.stylize(*tiny_vars, x, x, alpha=alpha)
  _one_line(e, 'alpha', '[0, 1]')
  with pytest.raises(ValueError) as e:
    st.fourier_swap(x[0], x[0], alpha)
  _one_line(e, 'alpha', '[0, 1]')


def test_decoder_train_step_lowers_the_loss_without_recompiling(tiny_vars):
  enc_vars, dec_vars = tiny_vars
  rng = np.random.default_rng(3)
  content = rng.random((2, 16, 16, 3)).astype(np.float32)
  style = rng.random((2, 16, 16, 3)).astype(np.float32) ** 3
  opt = optax.adam(3e-3)
  state = adain.init_train_state(dec_vars, opt)
  losses = []
  for _ in range(4):
    state, metrics = adain.train_step(state, enc_vars, content, style, opt)
    losses.append(float(metrics['loss']))
    assert np.isclose(metrics['loss'], metrics['content'] + 10 * metrics['style'])
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert adain.train_step._cache_size() == 1


# --- converter ---------------------------------------------------------------------------

# nn.Sequential indices and torch shapes of pytorch-AdaIN's convs (real widths)
VGG_CONVS = {0: (3, 3, 1), 2: (64, 3, 3), 5: (64, 64, 3), 9: (128, 64, 3),
             12: (128, 128, 3), 16: (256, 128, 3), 19: (256, 256, 3), 22: (256, 256, 3),
             25: (256, 256, 3), 29: (512, 256, 3), 32: (512, 512, 3)}  # 32: past relu4_1
DECODER_CONVS = {1: (256, 512, 3), 5: (256, 256, 3), 8: (256, 256, 3), 11: (256, 256, 3),
                 14: (128, 256, 3), 18: (128, 128, 3), 21: (64, 128, 3), 25: (64, 64, 3),
                 28: (3, 64, 3)}


def _sequential_state(convs, seed):
  rng = np.random.default_rng(seed)
  state = {}
  for index, (o, i, k) in convs.items():
    state[f'{index}.weight'] = rng.normal(size=(o, i, k, k)).astype(np.float32)
    state[f'{index}.bias'] = rng.normal(size=(o,)).astype(np.float32)
  return state


@pytest.fixture(scope='module')
def torch_files(tmp_path_factory):
  d = tmp_path_factory.mktemp('adain_weights')
  vgg, dec = _sequential_state(VGG_CONVS, 0), _sequential_state(DECODER_CONVS, 1)
  save_legacy(d / 'vgg_normalised.pth', vgg)
  save_legacy(d / 'decoder.pth', dec)
  return d, vgg, dec


def test_converter_round_trip(torch_files):
  d, vgg, dec = torch_files
  enc_vars, dec_vars = adain.from_torch(d / 'vgg_normalised.pth', d / 'decoder.pth')
  assert adain.ENCODER_INDICES == (0, 2, 5, 9, 12, 16, 19, 22, 25, 29)
  assert adain.DECODER_INDICES == tuple(DECODER_CONVS)
  for variables, state, indices in ((enc_vars, vgg, adain.ENCODER_INDICES),
                                    (dec_vars, dec, adain.DECODER_INDICES)):
    assert sorted(variables['params']) == sorted(f'conv_{i}' for i in indices)
    for i in indices:
      p = variables['params'][f'conv_{i}']
      np.testing.assert_array_equal(p['kernel'], state[f'{i}.weight'].transpose(2, 3, 1, 0))
      np.testing.assert_array_equal(p['bias'], state[f'{i}.bias'])
  assert adain.widths_of(enc_vars) == adain.VGG_WIDTHS
  back = adain.to_torch_state(dec_vars)
  assert list(back) == list(dec)
  # the converted tree is the one the models build
  for variables, shapes in zip((enc_vars, dec_vars), adain.param_shapes()):
    assert {k: (p['kernel'].shape, p['bias'].shape)
            for k, p in variables['params'].items()} == shapes


def test_converter_names_the_first_mismatching_key(torch_files, tmp_path):
  d, vgg, dec = torch_files
  bad = dict(vgg)
  bad['9.weight'] = bad['9.weight'][:, :32]
  bad['12.weight'] = bad['12.weight'][:64]
  save_legacy(tmp_path / 'bad.pth', bad)
  with pytest.raises(ValueError) as e:
    adain.from_torch(tmp_path / 'bad.pth', d / 'decoder.pth')
  _one_line(e, "'9.weight'", '(128, 32, 3, 3)', '(128, 64, 3, 3)')
  assert '12.weight' not in str(e.value)
  missing = {k: v for k, v in dec.items() if k != '21.bias'}
  save_legacy(tmp_path / 'dec.pth', missing)
  with pytest.raises(ValueError) as e:
    adain.from_torch(d / 'vgg_normalised.pth', tmp_path / 'dec.pth')
  _one_line(e, "'21.bias'", '(64,)', 'missing')
  # the decoder file given as the encoder: the first key already differs
  with pytest.raises(ValueError) as e:
    adain.from_torch(d / 'decoder.pth', d / 'decoder.pth')
  _one_line(e, "'0.weight'")


# --- textures and the Fourier swap -------------------------------------------------------

def test_textures_deterministic_under_a_seed():
  a, b, c = st.textures(6, 24, seed=0), st.textures(6, 24, seed=0), st.textures(6, 24, 1)
  assert a.dtype == np.uint8 and a.shape == (6, 24, 24, 3)
  np.testing.assert_array_equal(a, b)
  assert all(np.abs(a[i].astype(int) - c[i]).mean() > 5 for i in range(6))
  assert all(np.abs(a[i].astype(int) - a[i + 1]).mean() > 5 for i in range(5))
  assert all(x.std() > 5 for x in a)            # not flat
  for kind in st.TEXTURE_KINDS:                 # each kind makes a valid image
    x = kind(np.random.default_rng(0), 16)
    assert x.shape == (16, 16, 3) and np.isfinite(x).all() and x.std() > 0


def test_fourier_swap_keeps_content_phase_takes_style_amplitude():
  rng = np.random.default_rng(4)
  content, style = rng.random((2, 12, 10, 3))
  out = st.fourier_swap(content, style, 1.0)
  assert out.shape == content.shape and out.dtype == np.float64
  f_out, f_c, f_s = (np.fft.fft2(x, axes=(0, 1)) for x in (out, content, style))
  np.testing.assert_allclose(np.abs(f_out), np.abs(f_s), atol=1e-9)
  # same phase: f_out / |f_out| == f_c / |f_c|
  np.testing.assert_allclose(f_out / np.abs(f_out), f_c / np.abs(f_c), atol=1e-9)
  assert np.abs(out - content).max() > 0.05
  np.testing.assert_allclose(st.fourier_swap(content, style, 0.0), content, atol=1e-12)
  half = np.fft.fft2(st.fourier_swap(content, style, 0.5), axes=(0, 1))
  np.testing.assert_allclose(np.abs(half), (np.abs(f_c) + np.abs(f_s)) / 2, atol=1e-9)


def _max_channel_std(x):
  return np.asarray(x, np.float64).reshape(-1, 3).std(0).max()


def _smooth_content(rng, n, size):
  """n (size, size, 3) uint8 content images: smooth shapes, as photos are at low size."""
  return np.stack([st.texture(int(rng.integers(1 << 30)), 0, size) for _ in range(n)])


def test_textures_made_at_the_content_size():
  styles = st.Textures(5, seed=3)
  assert len(styles) == 5
  for k in range(5):
    np.testing.assert_array_equal(styles.fit(k, 32, 32), st.texture(3, k, 32))
  # not square: made at the longer side, its centre (no resampling), the same each time
  wide = styles.fit(2, 12, 20)
  assert wide.shape == (12, 20, 3) and wide.dtype == np.uint8
  np.testing.assert_array_equal(wide, st.texture(3, 2, 20)[4:16])
  np.testing.assert_array_equal(wide, st.Textures(5, seed=3).fit(2, 12, 20))
  assert np.abs(styles.fit(2, 32, 32).astype(int) - st.Textures(5, 4).fit(2, 32, 32)).mean() > 5
  with pytest.raises(ValueError):
    styles.fit(5, 8, 8)
  with pytest.raises(ValueError):
    st.Textures(0, seed=3)


def test_textured_style_never_gives_a_flat_fourier_output():
  """Textures made at the content's size keep their detail; made at 256 and resized to
  32 px, fine gratings are averaged away and the swap (which takes the style's amplitude,
  so its per-channel std) comes out near flat."""
  content = _smooth_content(np.random.default_rng(0), 8, 32)
  styles = st.Textures(60, seed=0)
  for k in range(60):
    style = styles.fit(k, 32, 32)
    for c in content:
      out = st._to_uint8(st.fourier_swap(c / 255.0, style / 255.0, 1.0))
      assert _max_channel_std(out) >= 5, (k, _max_channel_std(out))
  resized = [st._resize(st.texture(0, k, 256), 32, 32) for k in range(60)]
  flat = [k for k, s in enumerate(resized) if _max_channel_std(st._to_uint8(
      st.fourier_swap(content[0] / 255.0, s / 255.0, 1.0))) < 5]
  assert len(flat) >= 3                         # the old recipe's failure, for the record


def test_writer_with_textures_at_the_content_size(tmp_path, tiny_vars):
  rng = np.random.default_rng(8)
  data = {'x': _smooth_content(rng, 4, 16), 'y': np.array([0, 1, 0, 1])}
  styles = st.Textures(3, seed=5)
  for method, variables in (('fourier', None), ('adain', tiny_vars)):
    result = st.write_stylized(data, styles, tmp_path / method, method, seed=5, alpha=0.9,
                               variables=variables, progress=False)
    assert result['written'] == 4
    stylize = st.make_stylizer(method, 0.9, variables)
    for i in range(4):
      want = stylize(data['x'][i], st.texture(5, st.style_index(5, i, 3), 16))
      got = st.read_rgb(tmp_path / method / 'train' / str(i % 2) / f'{i:06d}.png')
      np.testing.assert_array_equal(got, want)


# --- the stylized-dataset writer ---------------------------------------------------------

def _image_folders(root):
  rng = np.random.default_rng(5)
  content = root / 'train'
  for c, n in (('cat', 3), ('dog', 2)):
    (content / c).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (12, 14, 3), np.uint8)).save(
          content / c / f'{c}{i}.jpg' if i % 2 else content / c / f'{c}{i}.png')
  styles = root / 'styles'
  (styles / 'sub').mkdir(parents=True)
  for i, x in enumerate(st.textures(3, 20, seed=9)):
    Image.fromarray(x).save(styles / ('sub' if i == 2 else '') / f's{i}.png')
  return content, styles


def _files(folder):
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      path = os.path.join(root, f)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, folder)] = fh.read()
  return out


def test_writer_resumed_run_gives_identical_files(tmp_path):
  content, styles = _image_folders(tmp_path)
  full = st.write_stylized(content, styles, tmp_path / 'a', 'fourier', seed=3, alpha=0.8,
                           tar=True, progress=False)
  assert full['total'] == full['written'] == 5 and full['skipped'] == 0
  a = _files(tmp_path / 'a' / 'train')
  assert sorted(a) == sorted(['cat/cat0.png', 'cat/cat1.png', 'cat/cat2.png',
                              'dog/dog0.png', 'dog/dog1.png'])
  # each output is the swap with the style that (seed, index) picks
  paths = st.list_styles(styles)
  c = st.read_rgb(content / 'cat' / 'cat1.jpg')
  s = st._resize(st.read_rgb(paths[st.style_index(3, 1, 3)]), 12, 14)
  want = st._to_uint8(st.fourier_swap(c / 255.0, s / 255.0, 0.8))
  np.testing.assert_array_equal(st.read_rgb(tmp_path / 'a' / 'train' / 'cat' / 'cat1.png'),
                                want)
  with tarfile.open(full['tar']) as tar:
    assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(
        f'train/{k}' for k in a)
  again = st.write_stylized(content, styles, tmp_path / 'a', 'fourier', seed=3, alpha=0.8,
                            progress=False)
  assert again['written'] == 0 and again['skipped'] == 5   # each image written once

  part = st.write_stylized(content, styles, tmp_path / 'b', 'fourier', seed=3, alpha=0.8,
                           tar=True, limit=2, progress=False)
  assert part['written'] == 2 and part['tar'] is None
  assert len(_files(tmp_path / 'b')) == 2
  stale = tmp_path / 'b' / 'train' / 'dog' / '.dog0.png.tmp'   # a kill mid-write
  stale.write_bytes(b'half a png')
  rest = st.write_stylized(content, styles, tmp_path / 'b', 'fourier', seed=3, alpha=0.8,
                           tar=True, progress=False)
  assert rest['written'] == 3 and rest['skipped'] == 2
  assert _files(tmp_path / 'b' / 'train') == a
  with open(full['tar'], 'rb') as f1, open(rest['tar'], 'rb') as f2:
    assert f1.read() == f2.read()
  other = st.write_stylized(content, styles, tmp_path / 'c', 'fourier', seed=4, alpha=0.8,
                            progress=False)
  assert other['written'] == 5 and _files(tmp_path / 'c' / 'train') != a


def test_writer_adain_on_arrays(tmp_path, tiny_vars):
  rng = np.random.default_rng(6)
  data = {'x': rng.integers(0, 256, (3, 16, 16, 3), np.uint8), 'y': np.array([1, 0, 1]),
          'classes': ['a', 'b']}
  result = st.write_stylized(data, st.textures(2, 16, 0), tmp_path, 'adain', split='test',
                             variables=tiny_vars, progress=False)
  assert result['written'] == 3
  assert sorted(_files(tmp_path / 'test')) == ['a/000001.png', 'b/000000.png',
                                               'b/000002.png']
  out = st.read_rgb(tmp_path / 'test' / 'b' / '000002.png')
  style = st.textures(2, 16, 0)[st.style_index(0, 2, 2)]
  want = adain.stylize(*tiny_vars, data['x'][2:3] / np.float32(255),
                       style[None] / np.float32(255), 1.0)
  np.testing.assert_array_equal(out, st._to_uint8(want[0]))
  with pytest.raises(ValueError) as e:
    st.write_stylized(data, st.textures(2, 16, 0), tmp_path, 'adain', progress=False)
  _one_line(e, 'variables')


def test_writer_bad_inputs(tmp_path):
  content, styles = _image_folders(tmp_path)
  (tmp_path / 'empty').mkdir()
  run = lambda c=content, s=styles, **kw: st.write_stylized(c, s, tmp_path / 'o', 'fourier',
                                                            progress=False, **kw)
  cases = [
      (dict(s=tmp_path / 'empty'), ('style folder', 'no images')),
      (dict(s=tmp_path / 'nowhere'), ('style folder', 'does not exist')),
      (dict(c=content / 'cat'), ('content folder', 'no class subfolders')),
      (dict(alpha=1.5), ('alpha', '[0, 1]')),
  ]
  for kwargs, words in cases:
    with pytest.raises(ValueError) as e:
      run(**kwargs)
    _one_line(e, *words)
  (tmp_path / 'broken').mkdir()
  (tmp_path / 'broken' / 'x.jpg').write_bytes(b'not a jpeg')
  with pytest.raises(ValueError) as e:
    run(s=tmp_path / 'broken')
  _one_line(e, 'style image', 'x.jpg', 'unreadable')
  assert st.main(['dataset', '--content', str(content), '--style', str(tmp_path / 'empty'),
                  '--out', str(tmp_path / 'o'), '--method', 'fourier']) == 2


def test_textures_command_writes_the_seeded_images(tmp_path):
  assert st.main(['textures', '--out', str(tmp_path), '--n', '3', '--size', '16',
                  '--seed', '7']) == 0
  files = sorted(os.listdir(tmp_path))
  assert files == [f'texture_7_{i:06d}.png' for i in range(3)]
  np.testing.assert_array_equal(np.stack([st.read_rgb(tmp_path / f) for f in files]),
                                st.textures(3, 16, 7))
