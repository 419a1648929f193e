"""The CPU kernel allocates nothing inside the step loop (Numba's runtime allocation counters)."""

import subprocess
import sys

SCRIPT = r"""
import numpy as np
import fastca
from fastca.backends import NumbaCPU
from numba.core.runtime import rtsys

model = fastca.pretrained()
images = fastca.data.sample_digits()[0][:4]
state = fastca.initial_state(images)
runner = NumbaCPU(model, state, 0, 0.5, 0.02, 0.1)
runner.step(0)  # compile / load from cache
before = rtsys.get_allocation_stats()
for t in range(1, 6):
    runner.step(t)
after = rtsys.get_allocation_stats()
print("ALLOC", after.alloc - before.alloc, "UPDATED", int(np.any(state[..., 1:] != 0)))
"""


def test_cpu_step_allocates_nothing():
    env_run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                             env={**__import__("os").environ, "NUMBA_NRT_STATS": "1"})
    assert env_run.returncode == 0, env_run.stderr[-2000:]
    line = [x for x in env_run.stdout.splitlines() if x.startswith("ALLOC")][-1].split()
    assert line[3] == "1", "the steps changed nothing: the check would be vacuous"
    assert int(line[1]) == 0, f"{line[1]} Numba allocations in 5 steps"
