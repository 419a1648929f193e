"""CUDA tests: collected only in their own pytest process, under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, see tests/test_cuda_sim.py) or on a real GPU (FASTCA_CUDA_TESTS=1),
so the simulator switch never leaks into the other tests."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("FASTCA_CUDA_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
elif os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    collect_ignore = ["test_cuda_gpu.py"]  # real-GPU checks: far too slow for the simulator
