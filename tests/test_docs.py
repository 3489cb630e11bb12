"""Every command in README.md and RESULTS.md still parses and passes the config checks.

`python -m awesome_jax.main ...` lines are parsed the way main parses them (absl flags +
ml_collections config files with --config.FIELD overrides) and given to their task's
data-free check (the same one `--dry_run` runs); scripts named there must exist; pip
extras named there must be declared in setup.cfg. The runs themselves need the data in
../shared and minutes to hours, so they are not run here.
"""

import configparser
import os
import re
import shlex
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ('README.md', 'RESULTS.md')


def commands(doc):
  """Shell commands of the ```bash blocks of `doc` (continuations joined, comments cut)."""
  with open(os.path.join(ROOT, doc)) as f:
    text = f.read()
  out = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      line = line.split(' #')[0].strip()
      if line and not line.startswith('#'):
        out.extend(part.strip() for part in line.split('&&'))
  return out


ALL = [(doc, cmd) for doc in DOCS for cmd in commands(doc)]
MAIN = [(doc, cmd) for doc, cmd in ALL if cmd.startswith('python -m awesome_jax.main')]


def parse(cmd):
  """The config that `cmd` would run with (parsed as main parses it)."""
  argv = shlex.split(cmd)[2:]  # drop 'python -m'; argv[0] = awesome_jax.main
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=fv, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'workdir', flag_values=fv)
  flags.DEFINE_bool('dry_run', False, 'dry run', flag_values=fv)
  cwd = os.getcwd()
  os.chdir(ROOT)  # config paths are relative to the repository root
  try:
    fv(argv)
  finally:
    os.chdir(cwd)
  assert fv.workdir, f'{cmd}: no --workdir'
  return fv.config


def test_docs_have_commands():
  assert len(MAIN) >= 5  # the extraction itself works


@pytest.mark.parametrize('doc,cmd', MAIN, ids=[f'{d}:{i}' for i, (d, _) in enumerate(MAIN)])
def test_main_command_passes_its_config_checks(doc, cmd):
  from awesome_jax import tasks
  config = parse(cmd)
  _, check = tasks.get(config.task)
  check(config)


def test_scripts_named_in_docs_exist():
  for doc, cmd in ALL:
    parts = shlex.split(cmd)
    if parts[0] == 'python' and parts[1].endswith('.py'):
      assert os.path.isfile(os.path.join(ROOT, parts[1])), f'{doc}: {parts[1]} missing'


def test_pip_extras_named_in_docs_are_declared():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  extras = set(cfg['options.extras_require'])
  for doc, cmd in ALL:
    for extra in re.findall(r"\.\[([\w,-]+)\]", cmd):
      for name in extra.split(','):
        assert name in extras, f'{doc}: extra [{name}] not in setup.cfg ({sorted(extras)})'


def test_dry_run_checks_without_touching_the_workdir(tmp_path):
  workdir = tmp_path / 'run'
  base = [sys.executable, '-m', 'awesome_jax.main', '--config=configs/distill.py',
          f'--workdir={workdir}', '--dry_run']
  ok = subprocess.run(base, cwd=ROOT, capture_output=True, text=True)
  assert ok.returncode == 0 and 'config OK: task distill' in ok.stdout, ok.stderr
  bad = subprocess.run(base + ['--config.eval.select=best'], cwd=ROOT, capture_output=True,
                       text=True)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: eval.select='best'")
  assert not workdir.exists()


def config_fields():
  """Every dotted field path of the default config of each configs/*.py file, and the
  open sections (empty by default, any key allowed, e.g. model.kwargs)."""
  import importlib
  import ml_collections
  paths, open_sections = set(), set()

  def walk(prefix, node):
    for key, value in node.items():
      path = f'{prefix}{key}'
      paths.add(path)
      if isinstance(value, ml_collections.ConfigDict):
        if not value.keys():
          open_sections.add(path + '.')
        walk(path + '.', value)

  for name in sorted(os.listdir(os.path.join(ROOT, 'configs'))):
    if name.endswith('.py') and not name.startswith('_'):
      walk('', importlib.import_module(f'configs.{name[:-3]}').get_config())
  return paths, tuple(open_sections)


def test_config_fields_named_in_docs_exist():
  # prose such as `data.stimuli_root` or `model.arch=resnet18|resnet50`: the field must be
  # in some config (commands are checked by parsing them, above)
  fields, open_sections = config_fields()
  sections = {p.split('.')[0] for p in fields if '.' in p}
  unknown = []
  files = ('.py', '.md', '.json', '.csv', '.png', '.npz', '.cfg', '.ipynb', '.jsonl')
  for doc in DOCS:
    with open(os.path.join(ROOT, doc)) as f:
      prose = re.sub(r'```.*?```', '', f.read(), flags=re.S)
    for token in re.findall(r'`(?:--config\.)?([a-z_0-9]+(?:\.[a-z_0-9]+)+)(?:=[^`]*)?`', prose):
      if (token.split('.')[0] in sections and not token.endswith(files) and
          token not in fields and not token.startswith(open_sections)):
        unknown.append(f'{doc}: `{token}`')
  assert not unknown, f'not config fields: {unknown}'
