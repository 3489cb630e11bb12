"""Entry point: `python -m awesome_jax.main --config=configs/distill.py --workdir=DIR`.

Picks the task named by `config.task` (the table in `awesome_jax/tasks/__init__.py`), saves the config in the workdir and runs it.
Bad configs and bad data end with one line naming the field or file (exit code 2).
`--dry_run` checks the config's fields (no data, no workdir written) and exits.
Under a multi-host launcher (a TPU pod slice, Slurm, mpirun, JAX_COORDINATOR_ADDRESS), the
same command runs on every host: jax.distributed is started first and only process 0
writes files (awesome_jax/distributed.py).
"""

import json
import os
import sys

from absl import app
from absl import logging
from absl import flags
from ml_collections import config_flags

from awesome_jax import distributed
from awesome_jax import tasks

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (FILE.py[:preset]).')
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and outputs go.')
flags.DEFINE_bool('dry_run', False, 'Only check the config (no data read, nothing written).')
flags.mark_flags_as_required(['config', 'workdir'])




def user_errors():
  from awesome_jax import checkpoint, data, distill, distilled_io, models, pretrained, shape_bias, supermask, train  # pylint: disable=g-import-not-at-top
  return (checkpoint.ResumeMismatchError, data.DataError, distill.ConfigError,
          distilled_io.DistilledFileError, models.ModelError,
          pretrained.CheckpointFormatError, shape_bias.StimulusError,
          supermask.SupermaskConfigError, train.TrainConfigError)


def parse_flags(argv):
  """absl's flag parsing, but a bad --config file, preset or override field ends with one
  line naming it (exit code 2), not a traceback."""
  try:
    args = FLAGS(argv)
    getattr(FLAGS.config, 'task', None)  # a config file that failed to load raises on use
    return args
  except flags.Error as e:  # bad preset, bad value, unknown flag: the last line says which
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = lines[-1] if lines else type(e).__name__
    if message.startswith(('ValueError: ', 'KeyError: ')):
      message = message.split(': ', 1)[1]  # the config file's own message
  except SyntaxError as e:  # the config file is not valid Python: where, not a traceback
    message = (f'--config: {e.filename}, line {e.lineno}: {e.msg}' +
               (f'\n    {e.text.rstrip()}' if e.text else ''))
  except OSError as e:  # the config file cannot be read
    message = '--config: ' + [line.strip() for line in str(e).splitlines() if line.strip()][-1]
  except (AttributeError, KeyError) as e:  # an override names no field of the config
    while e.args and isinstance(e.args[0], BaseException):  # ml_collections wraps a KeyError
      e = e.args[0]
    key, *hint = str(e.args[0] if e.args else e).splitlines()
    key = key.strip('\'"')
    flag = next((a.split('=')[0] for a in argv if a.startswith('--config.') and key in a), key)
    message = f'{flag}: no such config field' + (f' ({" ".join(hint)})' if hint else '')
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config, workdir = FLAGS.config, FLAGS.workdir
  if config.task not in tasks.TASKS:
    sys.exit(f'error: config.task={config.task!r}: unknown; allowed: '
             f'{", ".join(tasks.TASKS)}')
  run, check = tasks.get(config.task)
  if FLAGS.dry_run:
    try:
      check(config)
    except user_errors() as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    print(f'config OK: task {config.task} (--dry_run: no data read, {workdir} untouched)')
    return
  distributed.maybe_initialize(os.environ)  # before the first use of a device
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  if distributed.is_writer():
    if os.path.exists(path):  # a restart: keep the config the run last ran with
      os.replace(path, os.path.join(workdir, 'config.prev.json'))
    with open(path, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  print(config)
  try:
    run(config, workdir)
  except user_errors() as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
