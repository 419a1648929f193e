"""Mutants of the files guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

NONFINITE_CPU = ["tests/test_nonfinite.py::test_cpu_kernel_flags_every_channel"]
NONFINITE_CUDA = ["tests/test_nonfinite.py::test_cuda_kernel_flags_every_channel_under_simulator"]

MUTANTS = {
    # The kernels' non-finite flag (issue 29): each weakening misses some channel or value.
    "cpu-nonfinite-nan-only": (
        "kernels/cpu.py", "        bad |= (v - v) != 0\n", "        bad |= v != v\n",
        NONFINITE_CPU, "CPU: the residual add flags NaN only, not +-inf"),
    "cpu-nonfinite-last-channel-skipped": (
        "kernels/cpu.py", "        bad |= (v - v) != 0\n", "        bad |= ((v - v) != 0) and o < OUT - 1\n", NONFINITE_CPU,
        "CPU: the residual add's finiteness check skips the last channel"),
    "cpu-nonfinite-comparison-flipped": (
        "kernels/cpu.py", "    return not bad\n", "    return bad\n", NONFINITE_CPU,
        "CPU: the finiteness check flipped (finite cells flagged, non-finite ones not)"),
    "cpu-nonfinite-wrong-sample": (
        "kernels/cpu.py", "            nonfinite[k] = 1 + ys[i] // height\n", "            nonfinite[k] = 1\n",
        NONFINITE_CPU, "CPU: a non-finite cell is blamed on sample 0, whatever its sample"),
    "cuda-nonfinite-nan-only": (
        "kernels/cuda.py",
        "            check = float32(state[cell + 1 + o]) * float32(0.0)  # NaN when the value is NaN or inf\n",
        "            check = float32(state[cell + 1 + o])\n"
        "            check = check if check != check else float32(0.0)\n",
        NONFINITE_CUDA, "CUDA: the residual add flags NaN only (not +-inf) in the first channel of each pair"),
    "cuda-nonfinite-second-of-pair-unchecked": (
        "kernels/cuda.py", "                check += float32(state[cell + 2 + o]) * float32(0.0)\n",
        "                pass\n", NONFINITE_CUDA,
        "CUDA: the second channel of each pair of the residual add is never checked"),
    "cuda-nonfinite-comparison-flipped": (
        "kernels/cuda.py", "            if check != 0:\n                bad[0]",
        "            if check == 0:\n                bad[0]",
        NONFINITE_CUDA, "CUDA: the finiteness check flipped (finite cells flagged, non-finite ones not)"),
    "cuda-nonfinite-wrong-sample": (
        "kernels/cuda.py", "                bad[0] = 1 + base_b // height", "                bad[0] = 1",
        NONFINITE_CUDA,
        "CUDA: a non-finite cell is blamed on sample 0, whatever its sample"),
    # Values checked after every cast (issue 22, item 9).
    "weights-finite-check-removed": (
        "fastca/weights.py",
        "            if not np.all(np.isfinite(arr)):  # after the cast: 1e39 in float64 is inf in float32\n",
        "            if False:\n", ["tests/test_weights.py::test_validation"],
        "weights: NaN or inf weights are accepted"),
    "weights-finite-check-before-cast": (
        "fastca/weights.py",
        "            if not np.all(np.isfinite(arr)):  # after the cast: 1e39 in float64 is inf in float32\n",
        "            if not np.all(np.isfinite(np.asarray(getattr(self, key)))):\n",
        ["tests/test_trust.py::test_weights_checked_after_the_float32_cast"],
        "weights: finiteness checked before the float32 cast (1e39 in float64 becomes inf)"),
    "state-finite-check-before-cast": (
        "fastca/_checks.py",
        "    if not np.all(np.isfinite(out)):  # after the cast: 1e300 in float64 is inf in float32\n",
        "    if not np.all(np.isfinite(state)):\n", ["tests/test_trust.py::test_state_checked_after_the_cast"],
        "state: finiteness checked before the cast (a float64 1e300 runs as inf)"),
    "noise-overflow-unchecked": (
        "fastca/_checks.py", "    if value > limit:\n", "    if False:\n",
        ["tests/test_trust.py::test_noise_and_fire_rate_are_checked_and_named"],
        "noise std whose draws overflow the storage type is accepted (then blamed on the model)"),
    # Every array a kernel indexes checked against the state (issue 22, item 3).
    "targets-handle-shape-unchecked": (
        "fastca/simulation.py", "        if not fits:\n", "        if False:\n",
        ["tests/test_trust.py::test_targets_handle_of_another_simulation_is_refused"],
        "Simulation: a targets handle of another simulation's shape, batch or backend is accepted"),
    "metrics-targets-shape-unchecked": (
        "fastca/metrics.py", "    if targets.shape != tuple(shape):\n", "    if False:\n",
        ["tests/test_trust.py::test_metrics_check_the_arrays_their_kernels_index"],
        "metrics.counts: a target map of another shape is indexed out of bounds"),
    # Scalars read from files are type-checked (issue 22, items 10 and 15); files must be regular (item 12).
    "distill-threshold-type-unchecked": (
        "fastca/distill.py",
        "                values = _field(tensor, (\"floatVal\",), list)\n"
        "                if len(values) != 1 or isinstance(values[0], bool)"
        " or not isinstance(values[0], (int, float)):\n",
        "                values = tensor[\"floatVal\"]\n"
        "                if len(values) < 1:\n",
        ["tests/test_weights.py::test_distill_loader_checks_every_value"],
        "distill: floatVal \"0.5\" (a string) is read as its first character: alive threshold 0.0"),
    "weights-scalar-type-unchecked": (
        "fastca/weights.py", "    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):\n",
        "    if False:\n", ["tests/test_weights.py::test_scalar_fields_are_type_checked"],
        "NCAWeights: fire_rate=\"0.5\" or True accepted as a number"),
    "weights-npy-shape-unchecked": (
        "fastca/weights.py", "    if tuple(got_shape) != shape:\n", "    if False:\n",
        ["tests/test_weights.py::test_malformed_members_name_the_file"],
        "weights file: a member's declared shape is not checked (fire_rate as an array)"),
    "weights-non-regular-file-read": (
        "fastca/weights.py", "        if not stat.S_ISREG(info.st_mode):\n", "        if False:\n",
        ["tests/test_weights.py::test_load_refuses_a_pipe_or_a_folder"],
        "loaders: a device, pipe or folder is opened and read (/dev/zero hangs)"),
    "cuda-device-state-unchecked": (
        "fastca/backends/numba_cuda.py", "            if _count_outside(state.reshape(state.size), -big, big):",
        "            if False:", ["tests/cuda/test_cuda_kernel.py::test_device_input_is_checked_on_the_device"],
        "CUDA: a device state input with NaN or inf (or past float16's range) is taken as it is"),
    "cuda-device-check-one-short": (
        "kernels/cuda.py", "    while i < values.size:\n", "    while i < values.size - 1:\n",
        ["tests/cuda/test_cuda_kernel.py::test_device_input_is_checked_on_the_device"],
        "CUDA: the device input check stops one element short (the last channel of the last cell)"),
    "numba-fresh-cache-is-folder-exists": (
        "fastca/_numba_setup.py", '    existed = folder.is_dir() and any(folder.rglob("*.nbi"))\n',
        "    existed = folder.exists()\n",
        ["tests/test_numba_setup.py::test_an_existing_but_empty_cache_folder_still_counts_as_a_first_run"],
        "cache: an existing but empty cache folder is taken for a warm cache (no 'compiling' message)"),
}
