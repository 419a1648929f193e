"""Mutants of the distributed guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

T = "tests/test_zarr_trust.py::"
LOCK_THREADS = [T + "test_a_second_run_is_refused_while_the_first_runs_and_the_first_keeps_its_bits"]
LOCK_PROCESS = [T + "test_two_processes_on_one_store_the_second_is_refused_naming_the_first"]
LOCK_DEAD = [T + "test_a_dead_runs_lock_is_broken_only_on_request"]
LOCK_RELEASED = [T + "test_the_lock_is_released_when_the_run_fails"]
MISSING = [T + "test_a_missing_chunk_is_refused_before_the_round_writes_anything[first]",
           T + "test_a_missing_chunk_is_refused_before_the_round_writes_anything[last]"]
MISSING_LAST = [T + "test_a_missing_chunk_is_refused_before_the_round_writes_anything[last]"]
TRUNCATED = [T + "test_a_truncated_chunk_is_a_one_line_error_naming_it"]
CHECKSUM = [T + "test_a_chunk_changed_in_place_fails_its_checksum"]
PROVENANCE = [T + "test_a_resumed_run_must_have_the_stores_world_and_tiles"]
CLI_DIGITS = [T + "test_cli_resume_uses_the_digits_the_store_was_made_from"]
CLI_OPTIONS = [T + "test_cli_options_are_checked_before_any_work"]
ATTRS = T + "test_edited_or_damaged_attributes_are_refused"
D_ROUNDS = "fastca/distributed/rounds.py"
D_LOCK = "fastca/distributed/lock.py"
D_STORE = "fastca/distributed/store.py"
D_RUN = "fastca/distributed/out_of_core.py"
C = "fastca/cli/distributed.py"

MUTANTS = {
    # item 4: one run per store
    "dist-lock-skipped": (
        D_RUN, "    with store_lock(store, break_lock):\n        return _zarr_run_locked(",
        "    if True:  # no lock\n        return _zarr_run_locked(", LOCK_THREADS,
        "zarr_run takes no lock: a second run on the store writes under the first"),
    "dist-lock-owner-state-inverted": (
        D_LOCK, 'return "alive" if _pid_alive(owner["pid"]) else "dead"',
        'return "dead" if _pid_alive(owner["pid"]) else "alive"', LOCK_PROCESS,
        "the stale check is inverted: a live owner is taken for dead (and its lock broken on request)"),
    "dist-lock-live-owner-broken": (
        D_LOCK, '        if state == "alive" or not break_lock:\n', "        if not break_lock:\n", LOCK_PROCESS,
        "break_lock breaks the lock of a run that is still running on this host"),
    "dist-lock-never-broken": (
        D_LOCK, "        _break(path, seen)\n", "        pass\n", LOCK_DEAD,
        "break_lock does not remove a dead run's lock: the store stays locked for good"),
    "dist-lock-not-released": (
        D_LOCK, "                _release(store, text)\n", "                pass\n", LOCK_RELEASED,
        "the lock is not released when the run ends (or fails): the next run is refused"),
    # item 5 (and 15): every chunk a round reads was written
    "dist-chunks-unchecked-before-round": (
        D_RUN, "        _verify_chunks(src_path, record)  # before the round writes anything: every chunk it reads is "
        "there\n", "", MISSING,
        "a round starts without checking its chunks: the older state is overwritten before a missing chunk is found"),
    "dist-chunks-last-unchecked": (
        D_STORE, '    for i, (coords, _) in enumerate(_grid(record["shape"], record["chunks"])):\n',
        '    for i, (coords, _) in enumerate(list(_grid(record["shape"], record["chunks"]))[:-1]):\n', MISSING_LAST,
        "the chunk check stops one chunk short: the last chunk is never checked"),
    "dist-chunk-size-unchecked": (
        D_STORE, "    if got != size:\n", "    if False:\n", TRUNCATED,
        "a chunk file's size is not compared with the recorded one: a truncated chunk is a decoding traceback"),
    "dist-chunk-crc-unchecked": (
        D_STORE, "    if crc is not None and zlib.crc32(raw) != crc:\n", "    if False:\n", CHECKSUM,
        "a task does not check its chunk's CRC-32: other bits of the same size are read as the state"),
    "dist-fill-zero": (
        D_STORE, "dtype=dtype, fill_value=np.nan,", "dtype=dtype, fill_value=0,", MISSING,
        "the fill value is 0 again: a chunk that is not there reads as dead cells"),
    # item 6: provenance and the record's attributes
    "dist-tiles-unchecked": (
        D_RUN, '        if record["tiles"] != _tiles_hash(tiles):\n', "        if False:\n", PROVENANCE,
        "a resumed run's tiles are not compared with the store's: metrics against another digit pool"),
    "dist-world-unchecked": (
        D_RUN, '    if world is not None and world != record["world"]:\n', "    if False:\n", PROVENANCE,
        "a resumed run's world is not compared with the recorded provenance"),
    "dist-cli-digits-not-rederived": (
        C, 'source = recorded.get("digits") if b == 1', 'source = "auto" if b == 1', CLI_DIGITS,
        "fastca distributed resumes with whatever digits are there, not the ones the store was made from"),
    "dist-cli-digits-hash-unchecked": (
        C, '            if not new and digits["digits_sha256"] != recorded.get("digits_sha256"):\n',
        "            if False:\n", CLI_DIGITS,
        "fastca distributed does not compare the digits' hash with the recorded one (no clear message)"),
    "dist-attr-types-unchecked": (
        D_STORE, "        if not _is_int(attrs.get(k)) or attrs[k] < 0:\n", "        if False:\n",
        [ATTRS + "[step-string]"],
        "the record's step (seed, halo) is not checked for type: a string step is a TypeError or worse"),
    "dist-attr-step-unchecked": (
        D_STORE, '    if attrs["step"] != attrs["previous_step"] + attrs["halo"]:\n', "    if False:\n",
        [ATTRS + "[step-huge]"], "the record's step is not checked against the round that made it"),
    "dist-attr-shape-unchecked": (
        D_STORE, "    if list(arr.shape) != shape or list(arr.chunks) != chunks:\n", "    if False:\n",
        [ATTRS + "[shape-halved]"],
        "the array's shape is not compared with the record: an edited shape halves the world"),
    "dist-attr-digest-unchecked": (
        D_STORE, '    if attrs.get("digest") != _digest(attrs):\n', "    if False:\n",
        [ATTRS + "[step-consistent-edit]"],
        "the record's checksum is not checked: a consistent edit of the step is believed"),
    "dist-attr-chunk-list-unchecked": (
        D_STORE, "        if not _int_list(attrs.get(k), n):\n", "        if False:\n", [ATTRS + "[chunk-list]"],
        "the record's chunk list is not checked against the array's chunk count"),
    # item 14: options checked before any work
    "dist-cli-window-after-work": (
        C, "        _check_window(args.window, h, w)\n        tiles = world = gray = None\n",
        "        tiles = world = gray = None\n", CLI_OPTIONS,
        "--window is checked only when the pictures are drawn, after every round ran"),
    "dist-cli-workers-negative": (
        C, "    if args.workers < 0:\n", "    if args.workers < -100:\n", CLI_OPTIONS,
        "--workers -3 is accepted"),
    "dist-cli-world-ignored-on-resume": (
        C, "            if args.world is not None and tuple(args.world) != (h, w):\n", "            if False:\n",
        CLI_OPTIONS, "--world is ignored silently on a resume"),
    "dist-cli-chunk-ignored-on-resume": (
        C, "            if args.chunk is not None and (args.chunk, args.chunk) != tuple(record[\"chunks\"][1:3]):\n",
        "            if False:\n", CLI_OPTIONS, "--chunk is ignored silently on a resume"),
    "dist-halo-numpy-refused": (
        D_ROUNDS, "    if not _is_int(halo) or halo < 1:\n",
        "    if not isinstance(halo, int) or isinstance(halo, bool) or halo < 1:\n",
        [T + "test_simulate_and_zarr_run_accept_numpy_integers"], "fd.simulate(halo=np.int64(5)) is refused again"),
}
