"""``fastca distributed``: a huge MNIST world in a Zarr store on disk, run in rounds with Dask (out of core)."""

import os
import time

import numpy as np

from .options import CLIError, _check_out, _model, add_model, add_seed


def add_parser(subparsers):
    dist = subparsers.add_parser(
        "distributed", help="a huge MNIST world in Zarr on disk, run in rounds with Dask (out of core)")
    dist.add_argument("--store", required=True, help="Zarr folder of the run (created, or resumed when it holds one)")
    dist.add_argument("--world", type=int, nargs=2, metavar=("H", "W"), help="world size (needed for a new store)")
    dist.add_argument("--chunk", type=int, default=None,
                      help="chunk side in cells of a new store (default 2048; a resumed run keeps its store's)")
    dist.add_argument("--halo", type=int, default=16, help="steps per round = halo cells (default 16)")
    dist.add_argument("--steps", type=int, required=True, help="run until this step")
    dist.add_argument("--storage", default="float16", help="float16 (default) or float32")
    add_seed(dist)
    add_model(dist)
    dist.add_argument("--workers", type=int, default=0,
                      help="Dask worker processes on this machine (default 0: this process, one chunk at a time)")
    dist.add_argument("--window", type=int, nargs=4, metavar=("Y", "X", "H", "W"), default=None,
                      help="the window of the final world drawn to window.png (default: 512x512 in the centre)")
    dist.add_argument("--break-lock", action="store_true",
                      help="break the store's lock when the run that holds it is no longer running")


def run(args):
    try:
        import dask
    except ImportError:
        raise CLIError("fastca distributed needs dask and zarr: pip install 'fastca[distributed]'") from None
    from fastca import distributed as fd

    # every option is checked before any work (and before the store's lock is taken)
    if args.steps < 0 or args.halo < 1 or (args.chunk is not None and args.chunk < args.halo):
        raise CLIError("--steps must be >= 0, --halo >= 1 and --chunk >= --halo")
    if args.storage not in ("float16", "float32"):
        raise CLIError(f"--storage must be float16 or float32, got {args.storage!r}")
    if args.workers < 0:
        raise CLIError(f"--workers must be >= 0 (0: this process, one chunk at a time), got {args.workers}")
    if args.world is not None and min(args.world) < 1:
        raise CLIError(f"--world H W must be >= 1, got {args.world[0]} {args.world[1]}")
    if args.window is not None and min(args.window[2:]) < 1:
        raise CLIError(f"--window Y X H W needs H and W >= 1, got {' '.join(map(str, args.window))}")
    model = _mnist_weights(_model(args.model))
    _check_out(args.store)
    with fd.store_lock(args.store, break_lock=args.break_lock):  # held until the pictures are drawn
        record = fd.stored_record(args.store)
        new = record is None
        if new:
            if args.world is None:
                raise CLIError(f"{args.store} holds no run yet: give --world H W")
            h, w = args.world
            chunk = 2048 if args.chunk is None else args.chunk
            source = "auto"
        else:
            b, h, w, _ = record["shape"]
            if args.world is not None and tuple(args.world) != (h, w):
                raise CLIError(f"--world {args.world[0]} {args.world[1]}: {args.store} holds a {h}x{w} world, which a "
                               f"resumed run keeps (leave --world out, or use a new --store)")
            chunk = record["chunks"][1]
            if args.chunk is not None and (args.chunk, args.chunk) != tuple(record["chunks"][1:3]):
                raise CLIError(f"--chunk {args.chunk}: {args.store} is stored in {record['chunks'][1]}x"
                               f"{record['chunks'][2]} chunks (leave --chunk out)")
            recorded = record.get("world") or {}
            source = recorded.get("digits") if b == 1 and recorded.get("kind") == "mnist-world" else None
        _check_window(args.window, h, w)
        tiles = world = gray = None
        if source is not None:
            try:
                images, labels, digits = fd.mnist_digits(source)
            except FileNotFoundError as exc:
                raise CLIError(f"{args.store} was made from the MNIST test set, which is not here: {exc}") from None
            if not new and digits["digits_sha256"] != recorded.get("digits_sha256"):
                raise CLIError(f"{args.store} was made from {source} digits with hash {recorded.get('digits_sha256')}; "
                               f"these have hash {digits['digits_sha256']}: the targets would differ")
            # the digits' layout is rebuilt from the seed on a resume (cheap: the tile index, not the world)
            gray, index, labels = fd.mnist_world(h, w, (chunk, chunk), images=images, labels=labels, seed=args.seed)
            tiles = fd.MnistTiles(index, labels)
            world = {"kind": "mnist-world", **digits, "seed": args.seed, "height": h, "width": w}
        if not new:
            gray = None
        print(f"fastca distributed: {'new run' if new else 'resuming ' + fd.describe(args.store)} in {args.store}; "
              f"until step {args.steps}, halo {args.halo}, chunks {chunk}, {args.storage}", flush=True)
        if not new and tiles is None:
            print("  (no MNIST digits recorded with this store: no accuracy per round)", flush=True)
        t0 = time.perf_counter()
        if args.workers > 0:  # a local cluster: its client becomes dask's scheduler
            from distributed import Client, LocalCluster

            scheduler = Client(LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None))
            threads = 1
        else:  # this process, one chunk at a time, each kernel on every core
            scheduler, threads = dask.config.set(scheduler="synchronous"), None
        with scheduler:
            state, t = fd.zarr_run(model, args.store, args.steps, gray=gray, halo=args.halo, seed=args.seed,
                                   storage=args.storage, threads=threads,
                                   progress=lambda msg: print("  " + msg, flush=True), tiles=tiles, world=world)
            _distributed_pictures(state, args, model)
    print(f"reached step {t} in {time.perf_counter() - t0:.0f} s; wrote {args.store}/window.png and overview.png")
    return 0


def _mnist_weights(model):
    """The model of a distributed run: the self-classifying MNIST weights (fastca.distributed.zarr_run takes
    only those so far)."""
    import fastca

    if not isinstance(model, fastca.NCAWeights):
        raise CLIError(f"fastca distributed runs the self-classifying MNIST weights only so far (fastca-mnist, "
                       f"distill-2020 or an MNIST weights file); model {model.name!r} is a "
                       f"{model.description.name!r} description")
    return model


def _check_window(window, h, w):
    """--window Y X H W must lie inside the h x w world (checked before any work)."""
    if window is None:
        return
    y, x, wh, ww = window
    if not (0 <= y and 0 <= x and wh >= 1 and ww >= 1 and y + wh <= h and x + ww <= w):
        raise CLIError(f"--window {y} {x} {wh} {ww} must lie inside the {h}x{w} world")


def _distributed_pictures(state, args, model):
    """window.png (a window of the final world, cell for cell) and overview.png (about 1024 pixels wide)."""
    from fastca import viz

    _, h, w, _ = state.shape
    _check_window(args.window, h, w)
    y, x, wh, ww = args.window or (max(0, h // 2 - 256), max(0, w // 2 - 256), min(h, 512), min(w, 512))
    window = np.asarray(state[0, y : y + wh, x : x + ww].compute(), np.float32)
    viz.save_png(viz.colorize(window, model.alive_threshold), os.path.join(args.store, "window.png"))
    stride = max(1, -(-max(h, w) // 1024))
    overview = np.asarray(state[0, ::stride, ::stride].compute(), np.float32)
    viz.save_png(viz.colorize(overview, model.alive_threshold), os.path.join(args.store, "overview.png"))
