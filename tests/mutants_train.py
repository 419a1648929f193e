"""Mutants of the train guards, merged into tests/mutants.py.

Same format: name -> (file, original, mutated, tests, what).
"""

T = "tests/test_train.py::"
GPU = "tests/test_growing_gpu.py::"  # the Growing recipe's CUDA-graph path, checked on the CPU
TAMPERED = T + "test_tampered_checkpoint_is_refused_naming_file_and_field"
CLI = T + "test_train_cli_two_iterations_then_resume_and_conflicts"  # needs MNIST (skips without: then survives)

# train(): the folder check first, then the trainer (it validates the digits, loads a checkpoint), then the run
_TRAIN_START = (
    "    lr_given = config is not None or \"lr\" in kwargs  # a default config's lr would silently change a "
    "resumed run's\n"
    "    config = config or TrainConfig(**kwargs)\n"
    "    ckpt = os.path.join(out_dir, \"checkpoint.pt\") if out_dir else None\n"
    "    if resume:\n"
    "        options = {name: getattr(config, name) for name in RUN_OPTIONS}\n"
    "        if lr_given:\n"
    "            options[\"lr\"] = config.lr  # Trainer.resume accepts it only if it is not higher\n"
    "        trainer = Trainer.resume(ckpt, images, labels, **options)\n"
    "    else:\n"
    "        trainer = Trainer(images, labels, config)\n"
    "        for name in RUN_FILES if out_dir and overwrite else ():\n"
    "            if os.path.exists(os.path.join(out_dir, name)):\n"
    "                os.remove(os.path.join(out_dir, name))\n"
)
_TRAIN_CHECK = "    check_run_folder(out_dir, resume, overwrite)\n"
_TRAIN_RUN = "    trainer.run(out_dir, progress=progress, time_limit=time_limit)\n"

# cmd_train: the folder check, the resume recipe check, then the MNIST files are read
_CLI_CHECK = (
    "    try:  # a new run must not overwrite another, a resume needs a checkpoint: before any work\n"
    "        check_run_folder(args.out, args.resume, args.overwrite)\n"
    "    except (FileExistsError, FileNotFoundError) as exc:\n"
    "        raise CLIError(str(exc).replace(\" (resume=True)\", \"\").replace(\" (overwrite=True)\", \"\")) from None\n"
)
_CLI_LOAD = "    images, labels = fastca.data.load_mnist(\"train\", args.data)\n"
_CLI_RECIPE = (
    '    recipe = {"lr": args.lr, "batch": args.batch, "seed": args.seed, "decay_at": args.decay_at}\n'
    '    if args.resume:\n'
    '        from fastca.train import checkpoint_config\n'
    '\n'
    '        saved = checkpoint_config(os.path.join(args.out, "checkpoint.pt"))\n'
    '        asked = {k: v for k, v in recipe.items() if v is not None}\n'
    '        asked["decay_at"] = _decay(asked["decay_at"]) if "decay_at" in asked else None\n'
    '        lower_lr = "lr" in asked and asked["lr"] < saved["lr"]  # allowed: the schedule continues from it\n'
    '        conflicts = [f"--{k.replace(\'_\', \'-\')} {asked[k]} (checkpoint: {saved[k]})" for k in asked\n'
    '                     if asked[k] is not None and tuple(np.atleast_1d(asked[k])) != tuple(np.atleast_1d(saved[k]))\n'
    '                     and not (k == "lr" and lower_lr)]\n'
    '        if conflicts:\n'
    '            raise CLIError("--resume continues the checkpoint\'s recipe, and may only lower --lr; these options "\n'
    '                           "differ from it: " + ", ".join(conflicts) + ". Drop them, or train into a new --out")\n'
    '        recipe = {k: asked["lr"] if k == "lr" and lower_lr else saved[k] for k in recipe}\n'
    '    else:\n'
    '        recipe = {"lr": 1e-3 if args.lr is None else args.lr, "batch": 16 if args.batch is None else args.batch,\n'
    '                  "seed": 0 if args.seed is None else args.seed,\n'
    '                  "decay_at": _decay("30000,70000" if args.decay_at is None else args.decay_at)}\n'
)

# name: (file, original text, mutated text, tests to run, what the bug is)
MUTANTS = {
    "train-overwrite-refusal-removed": (
        "fastca/train.py", "        if existing:\n            raise FileExistsError(",
        "        if False:\n            raise FileExistsError(",
        [T + "test_train_refuses_to_overwrite_a_run_before_any_work"],
        "train: a new run silently overwrites the checkpoint and model of the run already in its folder"),
    "train-overwrite-check-after-work": (
        "fastca/train.py", _TRAIN_CHECK + _TRAIN_START + _TRAIN_RUN, _TRAIN_START + _TRAIN_CHECK + _TRAIN_RUN,
        [T + "test_train_refuses_to_overwrite_a_run_before_any_work"],
        "train: the existing-run check comes after the trainer is built (the digits checked, a checkpoint loaded)"),
    "cli-overwrite-refusal-removed": (
        "fastca/cli/train.py", "        check_run_folder(args.out, args.resume, args.overwrite)\n    except",
        "        pass\n    except", [CLI],
        "fastca train: the CLI does not check for an existing run (the library's refusal comes after the data "
        "is read, as a traceback)"),
    "cli-overwrite-check-after-load": (
        "fastca/cli/train.py", _CLI_CHECK + _CLI_RECIPE + _CLI_LOAD, _CLI_RECIPE + _CLI_LOAD + _CLI_CHECK, [CLI],
        "fastca train: the existing-run check comes after the MNIST files are read (the work before the refusal)"),
    "train-sane-checkpoint-check-removed": (
        "fastca/train.py",
        "        problem = self.divergence()\n        if problem:\n"
        "            raise NonFiniteError(self._diverged(",
        "        problem = None\n        if problem:\n            raise NonFiniteError(self._diverged(",
        [T + "test_diverging_run_keeps_the_last_sane_checkpoint_and_resumes_with_a_lower_lr",
         T + "test_a_run_diverging_at_once_writes_nothing"],
        "train: a checkpoint is written whatever the weights (the iteration-1 checkpoint of --lr 1e20 holds 1e20)"),
    "train-weight-bound-flipped": (
        "fastca/train.py", "        if not biggest <= MAX_WEIGHT:\n", "        if not biggest >= MAX_WEIGHT:\n",
        [T + "test_save_refuses_weights_beyond_the_limit_and_non_finite_losses"],
        "train: the weight bound compared the wrong way (sane checkpoints refused, diverged ones written)"),
    "train-weight-bound-nan-blind": (
        "fastca/train.py", "        if not biggest <= MAX_WEIGHT:\n", "        if biggest > MAX_WEIGHT:\n",
        [T + "test_save_refuses_weights_beyond_the_limit_and_non_finite_losses"],
        "train: a NaN weight passes the bound (NaN > limit is false)"),
    "train-recent-loss-check-removed": (
        "fastca/train.py", "        if not np.all(np.isfinite(recent)):\n", "        if False:\n",
        [T + "test_save_refuses_weights_beyond_the_limit_and_non_finite_losses"],
        "train: a checkpoint is written although a loss since the last one was not finite"),
    "resume-lr-raise-accepted": (
        "fastca/train.py", "        if \"lr\" in changed and config.lr < saved.lr:\n",
        "        if \"lr\" in changed:\n",
        [T + "test_resume_may_lower_the_lr_but_not_raise_it_or_change_the_recipe"],
        "resume: a higher learning rate is accepted too (the run that diverged can be made to diverge again)"),
    "train-resume-default-lr-lowers": (
        "fastca/train.py", "        if lr_given:\n", "        if True:\n",
        [T + "test_a_resume_without_a_learning_rate_keeps_the_checkpoints"],
        "train(resume=True): a default config's learning rate replaces the checkpoint's (silently lowered)"),
    "cli-lr-raise-accepted": (
        "fastca/cli/train.py", "        lower_lr = \"lr\" in asked and asked[\"lr\"] < saved[\"lr\"]",
        "        lower_lr = \"lr\" in asked", [CLI],
        "fastca train --resume: a higher --lr is no longer refused (and silently not applied)"),
    "resume-recipe-change-accepted": (
        "fastca/train.py", "if f.name not in RUN_OPTIONS and getattr(config, f.name)",
        "if f.name == \"lr\" and getattr(config, f.name)",
        [T + "test_resume_may_lower_the_lr_but_not_raise_it_or_change_the_recipe"],
        "resume: recipe overrides other than lr (pool, seed, ...) are accepted against the checkpoint's pool"),
    "resume-other-digits-accepted": (
        "fastca/train.py", 'if "data" in ckpt and ckpt["data"] != trainer.data:',
        'if "data" in ckpt and ckpt["data"]["digits"] != trainer.data["digits"]:',
        ["tests/test_train.py::test_resume_with_other_training_digits_is_refused"],
        "resume: other training digits of the same count (the checkpoint's data record) are accepted"),
    "ckpt-data-record-unchecked": (
        "fastca/train.py", "            and record[\"digits\"] >= 1 and isinstance(record[\"sha256\"], str)",
        "            and isinstance(record[\"sha256\"], str)",
        ["tests/test_train.py::test_a_checkpoint_without_a_data_record_still_resumes"],
        "checkpoint loader: a data record whose digit count is not a positive integer is accepted"),
    "ckpt-unknown-key-check-removed": (
        "fastca/train.py", "    if unknown:\n        raise InputError(f\"{path}: unknown checkpoint entries",
        "    if False:\n        raise InputError(f\"{path}: unknown checkpoint entries", [TAMPERED + "[extra-key]"],
        "checkpoint loader: entries it does not know are accepted"),
    "ckpt-unknown-config-field-check-removed": (
        "fastca/train.py", "    if unknown:\n        raise _Refused(\"config\"",
        "    if False:\n        raise _Refused(\"config\"",
        [TAMPERED + "[config-unknown]"], "checkpoint loader: config fields it does not know are accepted"),
    "ckpt-type-check-removed": (
        "fastca/train.py",
        "        if not isinstance(ckpt.get(key), kind) or (kind is int and isinstance(ckpt[key], bool)):\n",
        "        if key not in ckpt:\n",
        [TAMPERED + "[iteration-str]", T + "test_bad_checkpoints_are_refused"],
        "checkpoint loader: entries of the wrong type are accepted (a str iteration: a TypeError later)"),
    "ckpt-bool-as-int": (
        "fastca/train.py", " or (kind is int and isinstance(ckpt[key], bool)):\n", ":\n",
        [TAMPERED + "[version-bool]"], "checkpoint loader: True is taken as the number 1 (version, iteration)"),
    "ckpt-pool-size-check-removed": (
        "fastca/train.py", "(cfg.pool, None, None, spec.CHANNELS)", "(None, None, None, spec.CHANNELS)",
        [TAMPERED + "[pool-of-2]", TAMPERED + "[config-pool]"],
        "checkpoint loader: a pool of another size than the config's is accepted (an IndexError in training)"),
    "ckpt-dtype-check-removed": (
        "fastca/train.py", "    if t.dtype != dtype or t.layout != torch.strided:\n",
        "    if t.layout != torch.strided:\n", [TAMPERED + "[pool-float64]"],
        "checkpoint loader: tensors of another dtype are accepted"),
    "ckpt-model-bound-check-removed": (
        "fastca/train.py", "    problem = _weights_problem(model)\n", "    problem = None\n",
        [TAMPERED + "[model-diverged]"],
        "checkpoint loader: a diverged model (1e20 weights) is accepted and resumed"),
    "ckpt-optimizer-shape-check-removed": (
        "fastca/train.py",
        "            _tensor(s[key], torch.float32, shapes[i], \"optimizer\", f\"state {i} {key!r}\")\n",
        "            pass\n", [TAMPERED + "[optimizer-shape]"],
        "checkpoint loader: optimizer moments of the wrong shape are accepted (a RuntimeError at the first step)"),
    "ckpt-iteration-losses-check-removed": (
        "fastca/train.py", "    if iteration < 0 or len(losses) != iteration:\n", "    if False:\n",
        [TAMPERED + "[losses-extra]"], "checkpoint loader: an iteration that is not the number of losses"),
    "ckpt-numpy-rng-check-removed": (
        "fastca/train.py", "        np.random.PCG64().state = ckpt[\"numpy_rng\"]\n", "        pass\n",
        [TAMPERED + "[numpy-rng-state]"], "checkpoint loader: a broken numpy generator state (a TypeError on resume)"),
    "resume-pool-digit-size-check-removed": (
        "fastca/train.py", "        if tuple(ckpt[\"pool\"].shape[1:3]) != trainer.images.shape[1:]:\n",
        "        if False:\n",
        [T + "test_checkpoint_for_other_digits_is_refused"],
        "resume: a pool of 28x28 states resumed with digits of another size"),
    "growing-graph-one-step-too-many": (
        "fastca/growing.py", "x = torch.where(k < n, self.step(x, fires[k]), x)",
        "x = torch.where(k <= n, self.step(x, fires[k]), x)", [GPU + "test_masked_rollout_equals_the_n_step_rollout"],
        "growing, GPU: the graph's masked rollout keeps step n too (n + 1 steps where n were drawn)"),
    "growing-graph-step-count-unset": (
        "fastca/growing.py", "        static_n.fill_(n_steps)\n", "",
        [GPU + "test_graph_iteration_with_a_stand_in_graph_equals_the_eager_one"],
        "growing, GPU: the step count is not written before a replay (the graph keeps the capture's n = 0)"),
}
