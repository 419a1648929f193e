"""The CPU kernel allocates nothing per cell, block or row (Numba's runtime allocation counters).

Numba's parallel launch itself makes a fixed number of small bookkeeping allocations per
call; the test checks that the count per step is the same whether no cell or thousands
of cells update, on a small and on a ten-times larger batch.
"""

import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np
import fastca
from fastca.backends.base import Params
from fastca.backends.numba_cpu import NumbaCPU
from numba.core.runtime import rtsys

model = fastca.pretrained()
for n_digits in (4, 40):
    for fire_rate in (0.0, 0.5):
        state = fastca.initial_state(fastca.data.sample_digits()[0][:n_digits])
        runner = NumbaCPU(model, state.reshape((1,) + state.shape[-3:]) if state.ndim == 3 else state, Params(0, fire_rate, 0.02, 0.1))
        runner.step(0)  # compile / load from cache
        before = rtsys.get_allocation_stats()
        for t in range(1, 6):
            runner.step(t)
        after = rtsys.get_allocation_stats()
        print("ALLOC", n_digits, fire_rate, after.alloc - before.alloc, int(np.any(state[..., 1:] != 0)))
"""


def test_cpu_step_allocations_do_not_depend_on_the_work():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "NUMBA_NRT_STATS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line.split()[1:] for line in p.stdout.splitlines() if line.startswith("ALLOC")]
    assert len(rows) == 4
    counts = {int(r[2]) for r in rows}
    assert len(counts) == 1, f"allocations depend on the work: {rows}"
    assert counts.pop() <= 5 * 20, rows  # a few per parallel launch, not per cell or block
    assert [r[3] for r in rows] == ["0", "1", "0", "1"], "updates did (not) happen as expected"
