"""``fastca train``: a model trained with the article's recipe (the torch reference)."""

import os
import sys
import time

import numpy as np

from .options import CLIError, _check_out, add_data, add_seed


def add_parser(subparsers):
    tr = subparsers.add_parser("train", help="train a model with the article's recipe (torch reference)")
    tr.add_argument("--recipe", choices=("mnist", "growing"), default="mnist",
                    help="mnist: self-classifying digits (default); growing: the Growing NCA's regenerating "
                         "experiment (--target IMAGE or --emoji CHAR; see fastca.growing)")
    tr.add_argument("--target", default=None, help="growing: the target picture (RGBA; resized to 40x40)")
    tr.add_argument("--emoji", default=None, help="growing: an emoji drawn with fonts-noto-color-emoji (the gecko is U+1F98E)")
    tr.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; on a busy machine 1 can be much faster than 2)")
    tr.add_argument("--log", default=None, help="growing: a file that gets one line per iteration (default OUT/train.log)")
    add_data(tr)
    tr.add_argument("--iterations", type=int, default=None, help="default 100000 (mnist), 8000 (growing)")
    tr.add_argument("--batch", type=int, default=None, help="samples per iteration (default 16)")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    tr.add_argument("--decay-at", default=None, help="iterations where the learning rate drops x0.1 (default 30000,70000)")
    add_seed(tr, "random seed in 0..2**64-1 (default 0; a resume keeps its checkpoint's)", default=None)
    tr.add_argument("--device", default="cpu",
                    help="cpu or cuda (either recipe; a --resume may change it: checkpoints load on any machine)")
    tr.add_argument("--out", default="fastca-train", help="folder for checkpoint.pt and model.npz")
    tr.add_argument("--checkpoint-every", type=int, default=None, help="default 1000 (mnist), 100 (growing)")
    tr.add_argument("--resume", action="store_true",
                    help="continue from OUT/checkpoint.pt (the same recipe; --lr may only be lowered)")
    tr.add_argument("--overwrite", action="store_true", help="replace a run already in OUT (refused without it)")
    tr.add_argument("--limit", type=int, default=None, help="use only the first N training digits")
    tr.add_argument("--dense", action="store_true",
                    help="dense CA steps on the CPU too (default: sparse on the CPU, an equal function; dense on a GPU)")
    tr.add_argument("--no-graph", action="store_true",
                    help="on a GPU (either recipe), run iterations eagerly instead of replaying a CUDA graph")
    tr.add_argument("--time-limit", type=float, default=None,
                    help="stop after this many seconds with a checkpoint (continue later with --resume)")


def _decay(text):
    try:
        return tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise CLIError(f"--decay-at must be comma-separated iterations, got {text!r}") from None


def run(args):
    import fastca
    from fastca.train import TrainConfig, check_run_folder, train

    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.recipe == "growing":
        return _run_growing(args)
    if args.target is not None or args.emoji is not None:
        raise CLIError("--target and --emoji belong to --recipe growing")
    args.iterations = 100_000 if args.iterations is None else args.iterations
    args.checkpoint_every = 1000 if args.checkpoint_every is None else args.checkpoint_every
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
    from fastca.train import check_device

    check_device(args.device)  # before any work: CUDA missing here is a one-line error, not a traceback
    _check_out(args.out)
    try:  # a new run must not overwrite another, a resume needs a checkpoint: before any work
        check_run_folder(args.out, args.resume, args.overwrite)
    except (FileExistsError, FileNotFoundError) as exc:
        raise CLIError(str(exc).replace(" (resume=True)", "").replace(" (overwrite=True)", "")) from None
    recipe = {"lr": args.lr, "batch": args.batch, "seed": args.seed, "decay_at": args.decay_at}
    if args.resume:
        from fastca.train import checkpoint_config

        saved = checkpoint_config(os.path.join(args.out, "checkpoint.pt"))
        asked = {k: v for k, v in recipe.items() if v is not None}
        asked["decay_at"] = _decay(asked["decay_at"]) if "decay_at" in asked else None
        lower_lr = "lr" in asked and asked["lr"] < saved["lr"]  # allowed: the schedule continues from it
        conflicts = [f"--{k.replace('_', '-')} {asked[k]} (checkpoint: {saved[k]})" for k in asked
                     if asked[k] is not None and tuple(np.atleast_1d(asked[k])) != tuple(np.atleast_1d(saved[k]))
                     and not (k == "lr" and lower_lr)]
        if conflicts:
            raise CLIError("--resume continues the checkpoint's recipe, and may only lower --lr; these options "
                           "differ from it: " + ", ".join(conflicts) + ". Drop them, or train into a new --out")
        recipe = {k: asked["lr"] if k == "lr" and lower_lr else saved[k] for k in recipe}
    else:
        recipe = {"lr": 1e-3 if args.lr is None else args.lr, "batch": 16 if args.batch is None else args.batch,
                  "seed": 0 if args.seed is None else args.seed,
                  "decay_at": _decay("30000,70000" if args.decay_at is None else args.decay_at)}
    images, labels = fastca.data.load_mnist("train", args.data)
    if args.limit is not None:
        images, labels = images[: args.limit], labels[: args.limit]
    config = TrainConfig(iterations=args.iterations, batch=recipe["batch"], seed=recipe["seed"], device=args.device,
                         checkpoint_every=args.checkpoint_every, lr=recipe["lr"], sparse=False if args.dense else None,
                         cuda_graph=not args.no_graph, decay_at=tuple(recipe["decay_at"]))
    print(f"fastca train: {len(images)} training digits, {config.iterations} iterations, batch {config.batch}, "
          f"lr {config.lr:g}, device {config.device}, seed {config.seed}; checkpoints in {args.out}", flush=True)
    t0 = time.perf_counter()
    weights, trainer = train(images, labels, config, out_dir=args.out, resume=args.resume, overwrite=args.overwrite,
                             time_limit=args.time_limit, progress=sys.stderr.isatty())
    print(f"trained to iteration {trainer.iteration} in {time.perf_counter() - t0:.0f} s; "
          f"last loss {trainer.losses[-1] if trainer.losses else float('nan'):.4f}; wrote {args.out}/model.npz")
    return 0


def _run_growing(args):
    """``fastca train --recipe growing``: the Growing NCA's regenerating experiment (fastca.growing)."""
    from fastca import growing

    if (args.target is None) == (args.emoji is None):
        raise CLIError("--recipe growing needs one of --target IMAGE or --emoji CHAR")
    for name in ("limit", "data", "batch", "decay_at"):
        if getattr(args, name) is not None:
            raise CLIError(f"--{name.replace('_', '-')} is not an option of --recipe growing")
    from fastca.train import check_device

    check_device(args.device)  # before any work: CUDA missing here is a one-line error
    _check_out(args.out)
    try:
        growing.check_run_folder(args.out, args.resume, args.overwrite)
    except (FileExistsError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    target = growing.target_for(emoji=args.emoji, image=args.target)
    options = {"iterations": args.iterations, "checkpoint_every": args.checkpoint_every,
               "sparse": False if args.dense else None, "device": args.device, "cuda_graph": not args.no_graph}
    if args.resume:
        saved = growing.load_checkpoint(os.path.join(args.out, "checkpoint.pt"))["config"]
        if args.seed is not None and args.seed != saved["seed"]:
            raise CLIError(f"--resume continues the checkpoint's recipe: --seed {args.seed} (checkpoint: "
                           f"{saved['seed']}); drop it, or train into a new --out")
        if args.lr is not None and args.lr > saved["lr"]:
            raise CLIError(f"--resume may only lower --lr ({args.lr:g} > checkpoint's {saved['lr']:g})")
        options = {k: v for k, v in options.items() if v is not None}
    else:
        options = {k: v for k, v in options.items() if v is not None}
        if args.seed is not None:
            options["seed"] = args.seed
    log = args.log or os.path.join(args.out, "train.log")
    print(f"fastca train --recipe growing: target {args.target or repr(args.emoji)}; device {args.device}; "
          f"checkpoints in {args.out}, one line per iteration in {log}", flush=True)
    t0 = time.perf_counter()
    nca, trainer = growing.train(target, out_dir=args.out, resume=args.resume, overwrite=args.overwrite,
                                 progress=sys.stderr.isatty(), time_limit=args.time_limit, log_path=log, lr=args.lr,
                                 **options)
    print(f"trained to iteration {trainer.iteration} in {time.perf_counter() - t0:.0f} s; last loss "
          f"{trainer.losses[-1] if trainer.losses else float('nan'):.5f}; wrote {args.out}/model.npz")
    return 0
