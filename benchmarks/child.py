"""Runs one benchmark configuration in a child process, so that its peak RSS is its own;
times a call (`timed`); loads a preset of configs/ (`load_config`).

The benchmark scripts call themselves with `FLAG JSON` and print one JSON line last;
this module is found on sys.path because the scripts are run as `python benchmarks/X.py`.
"""

import json
import os
import statistics
import subprocess
import sys
import time


def run_child(script, flag, kw, env=None):
  """Runs `python SCRIPT FLAG JSON(kw)`; returns its last stdout line, parsed as JSON.
  `env`: environment variables set for the child only (e.g. XLA_FLAGS, which jax reads
  once at start). Exits with the child's stderr tail if the child fails."""
  out = subprocess.run([sys.executable, os.path.abspath(script), flag, json.dumps(kw)],
                       capture_output=True, text=True,
                       env=None if env is None else dict(os.environ, **env))
  if out.returncode:
    sys.exit(f'{flag} {json.dumps(kw)} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def timed(call, repeats):
  """(seconds of the first call, median seconds of `repeats` more): the first holds the
  compilation where `call` runs a jitted function (which must block until done)."""
  t = time.perf_counter()
  call()
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    call()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def load_config(name, preset):
  """configs/NAME.py:preset, loaded by path as `main --config=` does."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(f'{name}_config',
                                                os.path.join(root, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)
