"""Steady-state seconds per edge-popup train step, timed as the real loop runs (no block
per step); used by scripts/gpu_session.py to size the epoch budget.

  python scripts/edge_popup_probe.py DEPTH masked|dense STEPS
"""
import json, sys, time
import jax, numpy as np
from awesome_jax import edge_popup, train as train_lib
from configs import edge_popup as ep_cfg

depth, mode, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = ep_cfg.get_config('conv4' if mode == 'masked' else 'conv4_dense')
c.model.depth = depth
model = edge_popup.build_model(c.model, 10)
trainer = train_lib.Trainer(model, c.train, (32, 32, 3), 39000)
state = trainer.init_state(jax.random.key(0))
rng = np.random.default_rng(0)
xs = rng.normal(size=(4096, 32, 32, 3)).astype(np.float32)
ys = rng.integers(0, 10, 4096)
key = jax.random.key(1)
t0 = time.time()
for i in range(20):
  j = (i * 128) % 3968
  state, met = trainer.train_step(state, xs[j:j + 128], ys[j:j + 128], jax.random.fold_in(key, i))
jax.block_until_ready(state)
compile_s = time.time() - t0
t0 = time.time()
for i in range(steps):
  j = (i * 128) % 3968
  state, met = trainer.train_step(state, xs[j:j + 128], ys[j:j + 128], jax.random.fold_in(key, i))
  if i % 50 == 49:
    float(met['loss'])
jax.block_until_ready(state)
print(json.dumps({'depth': depth, 'mode': mode, 'step_s': (time.time() - t0) / steps,
                  'warmup_s': compile_s}))
