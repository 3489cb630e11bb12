"""The notebook helpers of the stylization study (awesome_jax/notebook.py), on tiny inputs."""

import os

import numpy as np
import pytest
from PIL import Image

from awesome_jax import data
from awesome_jax import notebook
from awesome_jax import stylize


def test_tiny_shapes_are_two_colour_shapes_each_a_function_of_seed_and_index():
  shapes = notebook.tiny_shapes(6, size=24, seed=3)
  assert shapes['x'].shape == (6, 24, 24, 3) and shapes['x'].dtype == np.uint8
  assert list(shapes['y']) == [0, 1, 2, 0, 1, 2]
  assert shapes['classes'] == ('disc', 'square', 'triangle')
  np.testing.assert_array_equal(notebook.tiny_shapes(2, size=24, seed=3)['x'],
                                shapes['x'][:2])
  assert not np.array_equal(notebook.tiny_shapes(2, size=24, seed=4)['x'], shapes['x'][:2])
  for image in shapes['x']:
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) == 2  # a shape on a background
    assert 0.05 < counts.min() / counts.sum() < 0.5
    assert np.abs(colours[0].astype(int) - colours[1]).max() >= 60  # visible


def test_as_content_gives_uint8_rgb_arrays_and_class_names():
  dataset = data.make_synthetic(num_classes=3, shape=(4, 4, 1), n_train=6, n_test=3)
  content = notebook.as_content(dataset, 'test')
  assert content['x'].shape == (3, 4, 4, 3) and content['x'].dtype == np.uint8
  np.testing.assert_array_equal(content['x'][..., 0],
                                np.round(dataset.x_test[..., 0] * 255).astype(np.uint8))
  np.testing.assert_array_equal(content['y'], dataset.y_test)
  assert content['classes'] == ('0', '1', '2')
  assert notebook.as_content(dataset, classes='abc')['classes'] == ('a', 'b', 'c')


def test_image_folder_writes_the_writers_names_keeps_what_exists_and_stops_at_limit(
    tmp_path):
  content = notebook.tiny_shapes(5, size=16)
  folder = notebook.image_folder(content, str(tmp_path), 'test', limit=4)
  assert folder == os.path.join(str(tmp_path), 'test')
  items = stylize.list_content(folder)
  assert [(c, os.path.basename(p)) for c, p in items] == [
      ('disc', '000000.png'), ('disc', '000003.png'), ('square', '000001.png'),
      ('triangle', '000002.png')]
  np.testing.assert_array_equal(stylize.read_rgb(items[1][1]), content['x'][3])
  kept = os.path.join(folder, 'disc', '000000.png')
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(kept)
  notebook.image_folder(content, str(tmp_path), 'test')  # finishes: the 5th image only
  assert stylize.read_rgb(kept).max() == 0
  assert os.path.exists(os.path.join(folder, 'square', '000004.png'))
  assert not [f for _, _, fs in os.walk(folder) for f in fs if f.startswith('.')]
  # the folder's copy has the names that write_stylized gives the arrays themselves
  styles = stylize.textures(2, 16, seed=0)
  stylize.write_stylized(folder, styles, str(tmp_path / 'a'), progress=False)
  stylize.write_stylized(content, styles, str(tmp_path / 'b'), split='test', progress=False)
  names = lambda root: sorted(os.path.relpath(os.path.join(d, f), root)
                              for d, _, fs in os.walk(root) for f in fs)
  assert names(str(tmp_path / 'a')) == names(str(tmp_path / 'b'))


def test_image_grid_takes_uint8_float_grey_and_ragged_rows(tmp_path):
  path = str(tmp_path / 'figs' / 'grid.png')
  rows = [np.zeros((3, 8, 8, 3), np.uint8),
          [np.full((8, 8, 3), 2.0), np.full((12, 12, 1), 0.5)]]
  assert notebook.image_grid(path, rows, ['a', 'b'], ['x', 'y', 'z'], 'title') == path
  with Image.open(path) as im:
    assert im.format == 'PNG' and min(im.size) > 50


def test_before_after_takes_the_classes_in_turn_and_names_a_missing_copy(tmp_path,
                                                                        monkeypatch):
  content = notebook.tiny_shapes(6, size=16)
  folder = notebook.image_folder(content, str(tmp_path / 'content'), 'test')
  styles = stylize.textures(2, 16, seed=0)
  stylize.write_stylized(folder, styles, str(tmp_path / 'fourier'), progress=False)
  path = str(tmp_path / 'before_after.png')
  stylized = {'Fourier': str(tmp_path / 'fourier' / 'test')}
  assert notebook.before_after(path, folder, stylized, n=4) == path
  assert os.path.getsize(path) > 0
  grids = []
  monkeypatch.setattr(notebook, 'image_grid', lambda *args: grids.append(args))
  notebook.before_after(path, folder, stylized, n=4)
  _, rows, row_names, col_names, _ = grids[0]
  assert row_names == ['content', 'Fourier']
  assert col_names == ['disc', 'square', 'triangle', 'disc']
  np.testing.assert_array_equal(rows[0][3], content['x'][3])  # disc 000003.png
  assert rows[1][3].shape == (16, 16, 3)
  monkeypatch.undo()
  os.remove(tmp_path / 'fourier' / 'test' / 'square' / '000001.png')
  with pytest.raises(ValueError, match='stylized image .*000001.png'):
    notebook.before_after(path, folder, stylized, n=4)
