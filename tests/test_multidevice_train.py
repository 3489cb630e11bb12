"""The supervised trainer with train.shard=True on 8 fake CPU devices, on 2 processes, and
the multi-host start-up decision of awesome_jax/distributed.py.

As in tests/test_multidevice.py, each device check runs in a fresh `python -c` with
XLA_FLAGS=--xla_force_host_platform_device_count=8 and prints JSON. 8 devices must give
the 1-device result up to float32 summation order (the mean over the batch, the gradient
and the batch-norm statistics are summed across devices): rtol 1e-5, atol 1e-6.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from awesome_jax import distributed
from tests.test_multidevice import one_line_errors, result, run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 8
RTOL, ATOL = 1e-5, 1e-6

# For the task argv[1] (classify or edge_popup), a few steps of its tiny net (both with
# batch norm) without and with train.shard, from the same init, batches and keys; prints the
# params, batch_stats, last metrics and the accuracy on 100 test images (100 = 12 * 8 + 4:
# the eval batch is padded to 104); and with shard, how many devices hold the state, the
# compiles.
COMPARE = r'''
import json, sys
import jax, numpy as np
from awesome_jax import checkpoint, data, train
from awesome_jax.tasks import classify, edge_popup
from configs import classify as classify_configs, edge_popup as edge_popup_configs
assert jax.device_count() == 8

def leaves(tree):
  return {checkpoint.path_name(p): np.asarray(v).tolist()
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}

def compare(build, t, dataset, steps):
  x_train, x_test = dataset.normalize(dataset.x_train), dataset.normalize(dataset.x_test)
  batches = data.EpochBatches(x_train, dataset.y_train, t.batch_size, 0)
  out = {}
  for shard in (False, True):
    t.shard = shard
    trainer = train.Trainer(build(), t, dataset.shape, total_steps=10)
    state = trainer.init_state(jax.random.key(0), fast_rng_compile=True)
    for step in range(steps):
      state, m = trainer.train_step(state, *batches(step),
                                    jax.random.fold_in(jax.random.key(1), step))
    out['eight' if shard else 'one'] = {
        'params': leaves(state['params']), 'batch_stats': leaves(state['batch_stats']),
        'metrics': {k: float(v) for k, v in m.items()},
        'test_acc': trainer.accuracy(trainer.variables(state), x_test[:100],
                                     dataset.y_test[:100], batch_size=100)}
  out['sharded_over'] = min(len(leaf.sharding.device_set)
                            for leaf in jax.tree_util.tree_leaves(state))
  out['compiles'] = trainer.train_step.jitted._cache_size()
  return out

if sys.argv[1] == 'classify':
  c = classify_configs.get_config('tiny')  # a ResNet with batch norm, crop + flip
  dataset = classify.load_data(c.data)
  out = compare(lambda: classify.build_model(c.model.name, c.model.kwargs.to_dict(),
                                             dataset.num_classes, dataset.shape),
                c.train, dataset, 2)
else:
  e = edge_popup_configs.get_config('tiny')  # masked Conv2; with non-affine batch norm
  e.model.norm = 'batchnorm'
  dataset = data.load('synthetic')
  out = compare(lambda: edge_popup.build_model(e.model, dataset.num_classes), e.train,
                dataset, 3)
print('RESULT ' + json.dumps(out))
'''

# Prints the TrainConfigError of the data-free check and of the Trainer, one line each.
BAD_BATCH = r'''
from awesome_jax import train
from awesome_jax.tasks import classify
from configs import classify as classify_configs
config = classify_configs.get_config('tiny')
config.train.shard = True
config.train.batch_size = 100
model = classify.build_model(config.model.name, config.model.kwargs.to_dict(), 4, (32, 32, 3))
for check in (lambda: classify.check(config),
              lambda: train.Trainer(model, config.train, (32, 32, 3), total_steps=10)):
  try:
    check()
    print('NO ERROR')
  except train.TrainConfigError as e:
    print('ERROR ' + repr(str(e)))
'''


def assert_trees_close(eight, one, what):
  assert sorted(eight) == sorted(one), what
  for name in one:
    np.testing.assert_allclose(np.array(eight[name]), np.array(one[name]), rtol=RTOL,
                               atol=ATOL, err_msg=f'{what}/{name}')


@pytest.mark.parametrize('task', ['classify', 'edge_popup'])
def test_eight_devices_train_as_one(task):
  r = result(run_python(COMPARE, task))
  assert r['sharded_over'] == DEVICES  # the state is replicated on all 8
  assert r['compiles'] == 1  # every step after the first reuses the compiled step
  one, eight = r['one'], r['eight']
  assert_trees_close(eight['params'], one['params'], 'params')
  # the batch-norm statistics are those of the global batch: per-device statistics would
  # give the same mean but another variance (the spread of the 8 shard means is missing)
  assert_trees_close(eight['batch_stats'], one['batch_stats'], 'batch_stats')
  for name in one['metrics']:
    np.testing.assert_allclose(eight['metrics'][name], one['metrics'][name], rtol=RTOL,
                               atol=ATOL, err_msg=name)
  assert eight['test_acc'] == one['test_acc']  # the padded rows count as wrong


def test_batch_not_divisible_by_the_devices_is_a_one_line_error():
  for message in one_line_errors(BAD_BATCH):
    assert message == ("train.batch_size=100: must be divisible by the 8 devices of the "
                       "'data' mesh (train.shard=True)")


# ------------------------------------------------------------ the multi-host decision

@pytest.mark.parametrize('environ,expected', [
    ({}, None),
    ({'HOME': '/root', 'PATH': '/usr/bin'}, None),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234', 'JAX_NUM_PROCESSES': '4',
      'JAX_PROCESS_ID': '3'},
     {'coordinator_address': '10.0.0.1:1234', 'num_processes': 4, 'process_id': 3}),
    # the rest detected by jax (e.g. from Slurm or the TPU VM metadata)
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, {'coordinator_address': '10.0.0.1:1234'}),
    ({'JAX_COORDINATOR_ADDRESS': ''}, None),
    ({'TPU_WORKER_HOSTNAMES': 'w-0,w-1,w-2,w-3', 'TPU_WORKER_ID': '1'}, {}),
    ({'TPU_WORKER_HOSTNAMES': 'localhost', 'TPU_WORKER_ID': '0'}, None),  # one host
    ({'TPU_PROCESS_ADDRESSES': '10.0.0.1:8476,10.0.0.2:8476'}, {}),
    ({'MEGASCALE_COORDINATOR_ADDRESS': '10.0.0.1'}, {}),
    ({'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '2',
      'SLURM_PROCID': '1', 'SLURM_LOCALID': '0'}, {}),
    ({'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n1', 'SLURM_NTASKS': '1',
      'SLURM_PROCID': '0', 'SLURM_LOCALID': '0'}, None),  # a one-task Slurm job
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, None),  # salloc shell: no job step
    ({'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.96.0.1:34911',
      'OMPI_COMM_WORLD_SIZE': '2'}, {}),
    ({'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.96.0.1:34911',
      'OMPI_COMM_WORLD_SIZE': '1'}, None),
])
def test_distributed_starts_only_under_a_multi_process_launcher(environ, expected):
  calls = []
  got = distributed.maybe_initialize(environ, initialize=lambda **kw: calls.append(kw))
  assert got == expected
  assert calls == ([] if expected is None else [expected])


def test_a_single_process_writes():
  assert distributed.is_writer()  # process 0 of 1


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_train_as_one_device(tmp_path):
  """The classify task through main on 2 processes x 4 CPU devices (jax.distributed on
  localhost, started by main from JAX_COORDINATOR_ADDRESS): each feeds its half of every
  batch, orbax writes the checkpoints together, process 0 alone the other files; the
  weights equal a 1-device run's."""
  args = ['--config=configs/classify.py:tiny', '--config.train.max_steps=2']
  # JAX's default random stream (conftest picks the classic one for compile speed): the
  # sharded draws of a multi-process step are what it is for
  default = dict(os.environ, JAX_PLATFORMS='cpu', JAX_THREEFRY_PARTITIONABLE='true')
  env = dict(default, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}', JAX_NUM_PROCESSES='2')
  cmd = lambda workdir, *more: [sys.executable, '-m', 'awesome_jax.main',
                                f'--workdir={workdir}', *args, *more]
  procs = [subprocess.Popen(cmd(tmp_path / 'two', '--config.train.shard=True'), cwd=ROOT,
                            env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  single = subprocess.run(cmd(tmp_path / 'one'), cwd=ROOT, capture_output=True, text=True,
                          env=default, timeout=300)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  last = lambda out: out.strip().splitlines()[-1]
  assert last(outs[0]) == last(outs[1]) == last(single.stdout)  # 'tiny: test acc ...'
  two = tmp_path / 'two'
  assert os.listdir(two / 'checkpoints') == ['2']  # the last step's
  assert len([f for f in os.listdir(two) if f.startswith('events.out')]) == 1
  lines = lambda workdir: [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert len(lines(two)) == len(lines(tmp_path / 'one'))  # written once, by process 0
  with np.load(two / 'params.npz') as a, np.load(tmp_path / 'one' / 'params.npz') as b:
    assert sorted(a.files) == sorted(b.files)
    for name in b.files:
      np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=ATOL, err_msg=name)
