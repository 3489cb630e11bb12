"""AdaIN decoder training (stylize_train.py, `stylize train-decoder`), on tiny shapes."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from awesome_jax import stylize as st
from awesome_jax import stylize_train as tr
from awesome_jax.models import adain, efficientnet_lite

TINY = (8, 8, 16, 16)


@pytest.fixture(scope='module')
def tiny():
  """A tiny VGG-layout net with He-uniform random encoder weights."""
  return adain.vgg_net(TINY), adain.init(0, TINY, gain=np.sqrt(6.0))[0]


@pytest.fixture
def content_dir(tmp_path):
  """train/<class>/*.png: 2 classes x 4 smooth images of 20x24 (not square: crops)."""
  rng = np.random.default_rng(0)
  for c in ('cat', 'dog'):
    (tmp_path / 'train' / c).mkdir(parents=True)
    for i in range(4):
      small = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
      Image.fromarray(small).resize((24, 20), Image.BILINEAR).save(
          tmp_path / 'train' / c / f'{i}.png')
  return str(tmp_path / 'train')


def _train(workdir, net, enc_vars, content, **kw):
  args = dict(steps=6, size=16, batch=4, seed=3, lr=3e-3, n_textures=8, ckpt_every=2,
              sample_every=100, n_samples=2, progress=False)
  args.update(kw)
  return tr.train_decoder(str(workdir), net, enc_vars, content, **args)


def test_training_lowers_the_loss_on_a_fixed_batch(tiny, content_dir, tmp_path):
  net, enc_vars = tiny
  out = _train(tmp_path / 'w', net, enc_vars, content_dir, steps=25, ckpt_every=100)
  c, s = tr.Batches(content_dir, '', 16, 8, 3, n_textures=8)(-1)
  before = adain.init_decoder(net, enc_vars, 3)['params']
  loss0 = float(adain.net_loss(before, net, enc_vars, c, s)[0])
  loss1 = float(adain.net_loss(out['params'], net, enc_vars, c, s)[0])
  assert np.isfinite(loss1) and loss1 < 0.7 * loss0, (loss0, loss1)
  for name in ('loss_curve.png', 'samples.png', 'results.json', 'config.json'):
    assert os.path.getsize(tmp_path / 'w' / name) > 0, name
  results = json.loads((tmp_path / 'w' / 'results.json').read_text())
  assert results['steps'] == 25 and results['final_loss'] == out['metrics']['loss']
  rows = [json.loads(l) for l in open(tmp_path / 'w' / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == list(range(1, 26))


def test_resume_continues_at_the_saved_step_with_the_same_result(tiny, content_dir,
                                                                  tmp_path):
  net, enc_vars = tiny
  whole = _train(tmp_path / 'whole', net, enc_vars, content_dir)
  # killed after 3 steps: the checkpoint of step 2 survives, step 3 is lost
  cut = _train(tmp_path / 'cut', net, enc_vars, content_dir, limit=3)
  assert cut['step'] == 3
  resumed = _train(tmp_path / 'cut', net, enc_vars, content_dir)
  assert resumed['start_step'] == 2 and resumed['step'] == 6
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed['params'], whole['params'])
  read = lambda w: [json.loads(l) for l in open(tmp_path / w / 'metrics.jsonl')]
  drop_time = lambda rows: [{k: v for k, v in r.items() if k != 'wall_s'} for r in rows]
  assert drop_time(read('cut')) == drop_time(read('whole'))   # steps 1..6, once each
  with pytest.raises(ValueError) as e:   # a different run in the same workdir
    _train(tmp_path / 'cut', net, enc_vars, content_dir, batch=2)
  assert '--batch' in str(e.value) and '\n' not in str(e.value)


def test_lite0_cut_encoder_matches_the_full_net_and_the_decoder_inverts_its_shape():
  # the net's first 3 stages (+ head): the same names and shapes as the full net there
  model = efficientnet_lite.EfficientNetLite(stages=efficientnet_lite.LITE0_STAGES[:3])
  full = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32))
  net = adain.lite0_net()
  enc_vars = adain.lite0_cut_variables(full)
  assert '_blocks_5' not in full['params'] and '_conv_head' not in enc_vars['params']
  x = np.random.default_rng(0).random((2, 40, 48, 3)).astype(np.float32)
  feats = jax.jit(net.encoder.apply)(enc_vars, x)
  assert {k: v.shape for k, v in feats.items()} == {
      'stem': (2, 20, 24, 32), 'block0': (2, 20, 24, 16), 'block2': (2, 10, 12, 24),
      'block4': (2, 5, 6, 40)}
  assert net.content_layer == 'block4' and net.stride == 8
  _, inter = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                               mutable=['intermediates']))(
                                                   full, efficientnet_lite.preprocess(x * 255))
  np.testing.assert_allclose(feats['block4'],
                             inter['intermediates']['_blocks_4']['__call__'][0],
                             rtol=1e-4, atol=1e-4)
  dec_vars = adain.init_decoder(net, enc_vars, 0)
  assert adain.net_stylize(net, enc_vars, dec_vars, x, x[:1]).shape == (2, 40, 48, 3)
  # an odd size comes back rounded up to the stride (checked on shapes alone)
  odd = jax.ShapeDtypeStruct((2, 36, 44, 3), np.float32)
  assert jax.eval_shape(adain._net_stylize, net, enc_vars, dec_vars, odd, odd,  # pylint: disable=protected-access
                        np.float32(0.5)).shape == (2, 40, 48, 3)
  net2, rand_vars = tr.load_encoder('efficientnet_lite0:random')
  assert net2 == net
  assert jax.tree_util.tree_structure(rand_vars) == jax.tree_util.tree_structure(enc_vars)


def test_cli_trains_then_writes_a_stylized_set_with_the_decoder(content_dir, tmp_path,
                                                                capsys):
  work = str(tmp_path / 'w')
  assert st.main(['train-decoder', '--content', content_dir, '--style', '', '--encoder', 'vgg:random',
                  '--workdir', work, '--steps', '2', '--size', '16', '--batch', '2',
                  '--n_textures', '3', '--sample_every', '1']) == 0
  assert json.loads(capsys.readouterr().out.strip().replace("'", '"'))['step'] == 2
  results = json.loads(open(os.path.join(work, 'results.json')).read())
  assert "--style ''" in results['command'] and results['config']['encoder'] == 'vgg:random'
  styles = tmp_path / 'styles'
  styles.mkdir()
  for i, t in enumerate(st.textures(2, 16, 0)):
    Image.fromarray(t).save(styles / f'{i}.png')
  assert st.main(['dataset', '--content', content_dir, '--style', str(styles), '--out',
                  str(tmp_path / 'out'), '--decoder_ckpt', work, '--size', '16']) == 0
  written = sorted(os.listdir(tmp_path / 'out' / 'train' / 'cat'))
  assert written == [f'{i}.png' for i in range(4)]
  assert st.read_rgb(tmp_path / 'out' / 'train' / 'cat' / '0.png').shape == (16, 16, 3)


def test_bad_inputs_give_one_line_errors_naming_the_flag(content_dir, tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  flat = tmp_path / 'flat'
  flat.mkdir()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / 'a.png')
  train = lambda *a: st.main(['train-decoder', '--content', content_dir, '--workdir',
                              str(tmp_path / 'w'), '--encoder', 'efficientnet_lite0:random',
                              *a])
  cases = [
      (lambda: train('--style', str(tmp_path / 'empty')), ('--style', 'no images')),
      (lambda: train('--style', str(tmp_path / 'nowhere')), ('--style', 'does not exist')),
      (lambda: train('--content', str(flat)), ('--content', 'no class subfolders')),
      (lambda: train('--encoder', 'resnet50'),
       ('--encoder', 'unknown', 'vgg:PATH', 'efficientnet_lite0[:PATH]')),
      (lambda: train('--encoder', 'vgg'), ('--encoder', 'vgg:PATH', 'vgg:random')),
      (lambda: train('--encoder', f'vgg:{tmp_path / "missing.pth"}'),
       ('missing.pth', 'not found')),
      (lambda: train('--size', '20'), ('--size', 'multiple of 8')),
      (lambda: st.main(['dataset', '--content', content_dir, '--style', str(flat),
                        '--out', str(tmp_path / 'o'), '--method', 'fourier',
                        '--alpha', '1.5']), ('--alpha', '[0, 1]')),
      (lambda: st.main(['dataset', '--content', content_dir, '--style', str(flat),
                        '--out', str(tmp_path / 'o')]), ('--decoder_ckpt', '--vgg')),
      (lambda: st.main(['dataset', '--content', content_dir, '--style', str(flat),
                        '--out', str(tmp_path / 'o'), '--decoder_ckpt',
                        str(tmp_path / 'empty')]), ('--decoder_ckpt', 'config.json')),
  ]
  for run, words in cases:
    capsys.readouterr()
    assert run() == 2, words
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err, err
    for w in words:
      assert w in err, (w, err)
  assert not os.path.exists(tmp_path / 'o')
