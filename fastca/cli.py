"""Command line: ``fastca demo`` and ``fastca simulate`` (also ``python -m fastca ...``)."""

import argparse
import json
import os
import sys
import time

import numpy as np

from . import backends

CHECKPOINTS = (1, 10, 25, 50, 100)
MAX_SIDE = 20000  #: largest world or image side the CLI accepts
MAX_FPS = 100  #: animation frames per second at most (a GIF's frame delay is in 1/100 s)
MODEL_HELP = "weights .npz, Distill .json, or an embedded model: fastca-mnist (default), distill-2020"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _model(path):
    import fastca

    if path is None:
        return fastca.pretrained()
    if path in fastca.PRETRAINED:
        return fastca.pretrained(path)
    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path}")
    if path.endswith(".json"):
        return fastca.load_distill_model(path)
    return fastca.NCAWeights.load(path)


def _digits():
    """Test digits: the full MNIST test set when $FASTCA_MNIST_DIR is set, else the embedded sample."""
    import fastca

    try:
        return fastca.data.load_mnist("test")
    except FileNotFoundError:
        return fastca.data.sample_digits()


def _check_out(folder, names=()):
    """Create the output folder and test-write a file there before any work is done; refuse output
    ``names`` (and their partial files) that exist there as folders (a run would fail at its end)."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".fastca-write-test-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
        os.remove(probe)
    except OSError as exc:
        raise CLIError(f"cannot write to the output folder {folder!r}: {exc.strerror or exc}") from None
    for name in names:
        path = os.path.join(folder, name)
        for p in (path, f"{path}.partial{os.path.splitext(name)[1]}"):
            if os.path.isdir(p):
                raise CLIError(f"the output {p!r} exists as a folder: remove it or choose another --out")


def _available_memory():
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: Bytes per cell of a run: the state (80), the backend's buffers, the frame before it is enlarged,
#: colouring and per-digit metrics temporaries (measured: about 170 at 1000x1000 and 2000x2000).
MEMORY_PER_CELL = 200
#: Enlarged frames alive at once: the frame, its enlarging, the GIF encoder's palette image and LZW
#: copies, the MP4 crop and the final picture (measured: about 6 at --scale 8).
MEMORY_FRAMES = 7
MEMORY_PER_STEP = 100  #: per-step curves and their JSON
#: The MP4 encoder's memory (ffmpeg's libx264: its look-ahead and its threads' frames) per pixel of a
#: frame (measured on 2 cores: about 210 bytes a pixel at 2048x2048; more cores, more threads).
MEMORY_MP4_PER_PIXEL = 250


def _memory_need(height, width, scale, steps):
    """(bytes a run needs without the MP4 encoder, bytes of one enlarged frame): see _check_memory."""
    cells = height * width
    frame_bytes = cells * 3 * scale * scale
    return cells * MEMORY_PER_CELL + MEMORY_FRAMES * frame_bytes + steps * MEMORY_PER_STEP, frame_bytes


def _check_memory(height, width, scale, steps=0):
    """Refuse, with the numbers, a run whose state, maps, frame buffers (enlarged ``scale`` times)
    and per-step curves would not fit in memory. Frames are streamed to the files, so their
    number does not count; the few copies of one enlarged frame do. (The MP4 encoder's memory is
    checked by :class:`_Animations`, which leaves the MP4 out when it does not fit.)"""
    need, frame_bytes = _memory_need(height, width, scale, steps)
    have = _available_memory()
    if have is not None and need > 0.8 * have:
        raise CLIError(f"this run needs about {need / 2**30:.1f} GiB (state, maps and frames of "
                       f"{frame_bytes / 2**20:.0f} MiB at --scale {scale}) but {have / 2**30:.1f} GiB are available; "
                       f"use a smaller world or a smaller --scale")


def _check_frames(height, width, scale):
    """Refuse an animation whose GIF frames (``scale`` pixels a cell) would pass GIF's size limit."""
    from fastca import viz

    error = viz.animation_size_error(".gif", height * scale, width * scale)
    if error:
        raise CLIError(f"the animation cannot be written: {error}; use --scale "
                       f"{max(1, viz.GIF_MAX_SIDE // max(height, width))} or less")


def _check_size(height, width, args):
    """Everything a world's size decides, before the world is built: memory, then the GIF's limit."""
    _check_memory(height, width, args.scale, args.steps)
    _check_frames(height, width, args.scale)


def _load_image(path, check=None):
    """An image file as uint8 gray (H, W), white digits on black as in MNIST.

    Levels are scaled to [0, 1] by the image's own depth: 8-bit images by 255, 16-bit ones
    (Pillow modes "I;16*", e.g. 16-bit PNG) by 65535, 32-bit integer ones (mode "I") by the
    smallest of 255, 65535 and 2**32 - 1 that holds their largest value; float images (mode "F",
    e.g. float TIFF) are taken as they are when already in [0, 1], else stretched linearly from
    their own minimum and maximum (a constant one is black); so are integer images with negative
    values. Colour images are converted to luminance; a light background (mean above half) is
    inverted so that strokes are bright. Cells brighter than 0.1 (26/255) are alive.
    ``check(height, width)`` runs after the header is read, before the pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    from fastca.data import alive_mask

    if not os.path.isfile(path):
        raise CLIError(f"image file not found: {path}")
    Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE  # sizes are checked below, before decoding
    try:
        with Image.open(path) as im:
            if im.width > MAX_SIDE or im.height > MAX_SIDE:
                raise CLIError(f"image {path} is {im.width}x{im.height}; at most {MAX_SIDE}x{MAX_SIDE} cells")
            if check is not None:
                check(im.height, im.width)
            gray = _gray_levels(im, path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CLIError(f"not a readable image: {path} ({type(exc).__name__})") from None
    if gray.size == 0:
        raise CLIError(f"empty image: {path}")
    if gray.mean() > 127:
        gray = 255 - gray
    if not alive_mask(gray).any():
        raise CLIError(f"image has no alive cell (no pixel brighter than 0.1 after conversion): {path}")
    return gray


def _gray_levels(im, path):
    """A Pillow image's gray levels as uint8, scaled by its own depth or range (see :func:`_load_image`)."""
    if im.mode not in ("F", "I") and not im.mode.startswith("I;16"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    levels = np.asarray(im).astype(np.float64)  # (a 16-bit big-endian array converts by value too)
    if levels.size == 0:
        return np.zeros(levels.shape, np.uint8)
    if not np.isfinite(levels).all():
        raise CLIError(f"image has NaN or infinite pixels: {path}")
    lo, hi = float(levels.min()), float(levels.max())
    if im.mode == "F" or lo < 0:
        if lo < 0 or hi > 1:  # not already in [0, 1]: stretched from its own range
            levels = (levels - lo) / (hi - lo) if hi > lo else np.zeros_like(levels)
    elif im.mode.startswith("I;16"):
        levels /= 65535.0
    else:  # 32-bit integers: the smallest usual depth that holds the largest value
        levels /= next(top for top in (255.0, 65535.0, 2.0**32 - 1) if hi <= top)
    return np.round(np.clip(levels, 0, 1) * 255).astype(np.uint8)


def _mp4_memory_error(height, width, scale, steps):
    """Why the MP4 encoder would not fit in memory next to the run, or None."""
    have = _available_memory()
    encoder = MEMORY_MP4_PER_PIXEL * height * width * scale * scale
    need = _memory_need(height, width, scale, steps)[0] + encoder
    if have is not None and need > 0.8 * have:
        return (f"its encoder would need about {encoder / 2**30:.1f} GiB more ({need / 2**30:.1f} GiB in all, "
                f"{have / 2**30:.1f} GiB available)")
    return None


class _Animations:
    """The run's animation files (GIF, and MP4 when ffmpeg is available), written frame by frame
    while the world runs: pass ``add`` as run_world's ``on_frame``. Files appear only when the
    run ends without an error. ``size``: the world's (height, width) in cells; a GIF past its size
    limit is refused here (a CLIError, before any work); an MP4 past H.264's size limit, or whose
    encoder would not fit in memory next to the run, is left out with a line in ``notes``. Nothing
    is written before the first frame."""

    OTHER_OUTPUTS = ("final.png", "curves.png", "metrics.json")

    def __init__(self, out, scale, fps, size, steps=0, prefix=""):
        from fastca import viz

        h, w = size
        _check_frames(h, w, scale)
        self.out = out
        self.paths = [os.path.join(out, f"{prefix}animation.gif")]
        self.notes = []
        if viz.ffmpeg_available():
            error = viz.animation_size_error(".mp4", h * scale, w * scale) or _mp4_memory_error(h, w, scale, steps)
            if error:
                self.notes.append(f"no {prefix}animation.mp4: {error}")
            else:
                self.paths.append(os.path.join(out, f"{prefix}animation.mp4"))
        self.names = [os.path.basename(p) for p in self.paths] + [prefix + n for n in self.OTHER_OUTPUTS]
        self.writers = [viz.AnimationWriter(p, fps=fps, scale=scale) for p in self.paths]

    def add(self, frame):
        for writer in self.writers:
            writer.add(frame)

    def __enter__(self):
        os.makedirs(self.out, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        for writer in self.writers:
            writer.__exit__(exc_type, exc, tb)


def _write_outputs(out, run, scale, metrics, prefix=""):
    """Write the final picture, the accuracy/agreement curves and the metrics JSON."""
    from fastca import viz

    os.makedirs(out, exist_ok=True)
    written = []
    png = os.path.join(out, f"{prefix}final.png")
    viz.save_png(viz.upscale(run.frames[-1], scale), png)
    written.append(png)
    curves = os.path.join(out, f"{prefix}curves.png")
    viz.plot_curves({metrics.get("model", "model"): (run.accuracy, run.digit_agreement)}, curves,
                    mutation_step=metrics.get("mutation_step"),
                    ylabels=("per-cell accuracy (%)", "digits whose cells agree (%)"))
    written.append(curves)
    path = os.path.join(out, f"{prefix}metrics.json")

    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)

    viz._atomic(path, write_json)  # metrics.json.partial.json, removed on failure
    written.append(path)
    return written


def _metrics_json(run, args, extra):
    return {
        **extra,
        "steps": args.steps,
        "seed": args.seed,
        "backend": args.backend,
        "accuracy": [_num(a) for a in run.accuracy],  # null where there is no target
        "digit_agreement": [_num(a) for a in run.digit_agreement],
        "frame_steps": run.frame_steps,
        "events": run.events,
        "digits": [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in d.items()} for d in run.digits],
    }


def _num(value):
    """A float rounded for JSON, or None for NaN (JSON has no NaN)."""
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None


def _print_checkpoints(run, steps, extra=()):
    print(f"{'step':>6} {'accuracy %':>11} {'digits agreeing %':>18}")
    for step in sorted({c for c in (*CHECKPOINTS, *extra, steps) if 1 <= c <= steps}):
        print(f"{step:>6} {run.accuracy[step - 1]:>11.1f} {run.digit_agreement[step - 1]:>18.1f}")


def cmd_demo(args):
    import fastca
    from fastca.world import World, run_world

    if not 1 <= args.rows <= 16 or not 1 <= args.cols <= 16:
        raise CLIError(f"--rows and --cols must be in 1..16, got {args.rows} and {args.cols}")
    if args.steps < 2:
        raise CLIError(f"--steps must be >= 2, got {args.steps}")
    backends.resolve(args.backend)
    _check_size(28 * args.rows, 28 * args.cols, args)
    animations = _Animations(args.out, args.scale, args.fps, (28 * args.rows, 28 * args.cols), args.steps)
    _check_out(args.out, animations.names)
    model = _model(args.model)
    images, labels = fastca.data.sample_digits()
    world = World.from_digits(images, labels, 28 * args.rows, 28 * args.cols, seed=args.seed)
    half = args.steps // 2
    print(f"fastca demo: model {model.name!r}; a {args.rows}x{args.cols}-digit MNIST world "
          f"({28 * args.rows}x{28 * args.cols} cells) of embedded test digits; {args.steps} steps, every digit "
          f"replaced at step {half}; backend {args.backend}, seed {args.seed}")
    for note in animations.notes:
        print(note)
    t0 = time.perf_counter()
    with animations:
        run = run_world(model, world, args.steps, events=[{"step": half, "type": "replace_all"}], seed=args.seed,
                        backend=args.backend, frame_every=args.frame_every, progress=sys.stderr.isatty(),
                        on_frame=animations.add)
    elapsed = time.perf_counter() - t0
    _print_checkpoints(run, args.steps, (half, half + 1, half + 25, half + 50))
    written = animations.paths + _write_outputs(
        args.out, run, args.scale, _metrics_json(run, args, {"model": model.name, "mutation_step": half,
                                                             "world": [28 * args.rows, 28 * args.cols]}))
    print(f"simulated in {elapsed:.1f} s; wrote: " + ", ".join(written))
    return 0


def cmd_simulate(args):
    from fastca.world import World, load_events, run_world, validate_events

    sources = [args.image is not None, args.mnist_index is not None, args.world is not None]
    if sum(sources) != 1:
        raise CLIError("give exactly one of --image FILE, --mnist-index N, --world H W")
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    if args.label is not None and (args.image is None or not 0 <= args.label <= 9):
        raise CLIError(f"--label is the digit 0..9 drawn in --image, got {args.label}"
                       + ("" if args.image is not None else " without --image"))
    if args.world is not None:
        h, w = args.world
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise CLIError(f"--world H W must be in 1..{MAX_SIDE}, got {h} {w}")
        _check_size(h, w, args)
    if args.mnist_index is not None:
        images, labels = _digits()
        if not 0 <= args.mnist_index < len(images):
            raise CLIError(f"--mnist-index must be in 0..{len(images) - 1}, got {args.mnist_index}")
        _check_size(28, 28, args)
    backends.resolve(args.backend)  # an unknown or unusable backend fails before any output
    events = load_events(args.events) if args.events else []
    if args.image is not None:  # memory and frame size from the header, before the pixels are decoded
        gray = _load_image(args.image, check=lambda h, w: _check_size(h, w, args))
    model = _model(args.model)
    if args.image is not None:
        targets = np.full(gray.shape, -1 if args.label is None else args.label, np.int16)  # -1: no target
        world = World(gray, targets, np.zeros((1, 1), np.int64), *_digits())
        what = f"image {args.image} ({gray.shape[0]}x{gray.shape[1]})"
    elif args.mnist_index is not None:
        world = World.from_digits(images[args.mnist_index: args.mnist_index + 1],
                                  labels[args.mnist_index: args.mnist_index + 1], 28, 28)
        world.images, world.labels = images, labels
        what = f"MNIST test digit {args.mnist_index} (label {labels[args.mnist_index]})"
    else:
        images, labels = _digits()
        world = World.from_digits(images, labels, h, w, seed=args.seed)
        what = f"MNIST world {h}x{w}"
    validate_events(events, world, args.steps)  # every event checked (and its cost bounded) before step 1
    animations = _Animations(args.out, args.scale, args.fps, world.gray.shape, args.steps)
    _check_out(args.out, animations.names)
    print(f"fastca simulate: {what}; model {model.name!r}; {args.steps} steps; backend {args.backend}, seed {args.seed}")
    for note in animations.notes:
        print(note)
    with animations:
        run = run_world(model, world, args.steps, events=events, seed=args.seed, backend=args.backend,
                        frame_every=args.frame_every, progress=None, on_frame=animations.add)
    _print_checkpoints(run, args.steps)
    written = animations.paths + _write_outputs(args.out, run, args.scale,
                                                _metrics_json(run, args, {"model": model.name, "input": what}))
    print("wrote: " + ", ".join(written))
    return 0


def cmd_train(args):
    import fastca
    from fastca.train import TrainConfig, check_run_folder, train

    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
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


def cmd_distributed(args):
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
    _check_out(args.store)
    model = _model(args.model)
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


def cmd_play(args):
    import fastca
    from fastca.play import SIZES, serve

    if args.size not in SIZES:
        raise CLIError(f"--size must be one of {', '.join(map(str, SIZES))}, got {args.size}")
    if args.model not in fastca.PRETRAINED:
        raise CLIError(f"--model must be one of {', '.join(fastca.PRETRAINED)}, got {args.model!r}")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.max_sessions < 1:
        raise CLIError(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if args.max_cells < args.size**2:
        raise CLIError(f"--max-cells must hold at least one --size {args.size} world ({args.size**2} cells), "
                       f"got {args.max_cells}")
    try:
        backends.resolve(args.backend)
        serve(host=args.host, port=args.port, size=args.size, model=args.model, backend=args.backend,
              open_browser=args.open, max_sessions=args.max_sessions, max_cells=args.max_cells)
    except OSError as exc:  # e.g. the port is taken
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:  # Ctrl-C before the server is up (serve handles it later)
        print("fastca play: stopped", flush=True)
    return 0


def _decay(text):
    try:
        return tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise CLIError(f"--decay-at must be comma-separated iterations, got {text!r}") from None


def cmd_eval(args):
    import fastca
    from fastca.evaluate import evaluate

    if args.digits is not None and args.digits < 1:
        raise CLIError(f"--digits must be >= 1, got {args.digits}")
    if args.half < 1:
        raise CLIError(f"--half must be >= 1, got {args.half}")
    info = backends.resolve(args.backend)
    if args.storage not in info.storages:
        raise CLIError(f"--storage must be one of {', '.join(info.storages)} with backend {info.name}, "
                       f"got {args.storage!r}")
    _check_out(args.out, ("curves.csv", "evaluation.json", "curves.png"))
    model = _model(args.model)
    images, labels = fastca.data.load_mnist("test", args.data)
    if args.digits is not None:
        images, labels = images[: args.digits], labels[: args.digits]
    print(f"fastca eval: model {model.name!r}, {len(images)} test digits, {args.half} + {args.half} steps, "
          f"backend {args.backend}, seed {args.seed}, storage {args.storage}")
    ev = evaluate(model, images, labels, half=args.half, backend=args.backend, seed=args.seed, progress=None,
                  storage=args.storage)
    written = ev.save(args.out)
    print(ev.table_line())
    print("wrote: " + ", ".join(written))
    return 0


BACKEND_HELP = "auto (the fastest usable here) or one of: " + ", ".join(backends.names())


def _parser():
    parser = argparse.ArgumentParser(prog="fastca", description="Fast neural cellular automata (self-classifying MNIST).")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, steps, out):
        p.add_argument("--steps", type=int, default=steps, help=f"steps to run (default {steps})")
        p.add_argument("--backend", default="auto", help=BACKEND_HELP)
        p.add_argument("--seed", type=int, default=0, help="random seed in 0..2**64-1 (fire masks, noise, layouts, events)")
        p.add_argument("--out", default=out, help=f"output folder (default {out})")
        p.add_argument("--model", default=None, help=MODEL_HELP)
        p.add_argument("--frame-every", type=int, default=2, help="steps between animation frames (default 2)")
        p.add_argument("--scale", type=int, default=2, help="pixels per cell in pictures (default 2)")
        p.add_argument("--fps", type=int, default=15, help=f"animation frames per second, 1..{MAX_FPS} (default 15)")

    demo = sub.add_parser("demo", help="run the embedded model on an MNIST world of embedded digits, offline")
    common(demo, 200, "fastca-out")
    demo.add_argument("--rows", type=int, default=6, help="digit rows of the world (default 6)")
    demo.add_argument("--cols", type=int, default=10, help="digit columns of the world (default 10)")
    sim = sub.add_parser("simulate", help="run on an image, an MNIST digit or an MNIST world; write animation + metrics")
    common(sim, 100, "fastca-out")
    sim.add_argument("--image", help="PNG/JPEG/TIFF of any size, 8- or 16-bit or float (converted to gray, scaled by "
                                     "its own depth or range; light backgrounds inverted)")
    sim.add_argument("--label", type=int, default=None, help="the digit drawn in --image, for accuracy")
    sim.add_argument("--mnist-index", type=int, help="index of an MNIST test digit")
    sim.add_argument("--world", type=int, nargs=2, metavar=("H", "W"), help="a canvas of test digits")
    sim.add_argument("--events", help="JSON event list or file (see fastca.world)")
    tr = sub.add_parser("train", help="train a model with the article's recipe (torch reference)")
    tr.add_argument("--data", default=None, help="folder of the MNIST .gz files (default $FASTCA_MNIST_DIR)")
    tr.add_argument("--iterations", type=int, default=100_000)
    tr.add_argument("--batch", type=int, default=None, help="samples per iteration (default 16)")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    tr.add_argument("--decay-at", default=None, help="iterations where the learning rate drops x0.1 (default 30000,70000)")
    tr.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--out", default="fastca-train", help="folder for checkpoint.pt and model.npz")
    tr.add_argument("--checkpoint-every", type=int, default=1000)
    tr.add_argument("--resume", action="store_true",
                    help="continue from OUT/checkpoint.pt (the same recipe; --lr may only be lowered)")
    tr.add_argument("--overwrite", action="store_true", help="replace a run already in OUT (refused without it)")
    tr.add_argument("--limit", type=int, default=None, help="use only the first N training digits")
    tr.add_argument("--dense", action="store_true",
                    help="dense CA steps on the CPU too (default: sparse on the CPU, an equal function; dense on a GPU)")
    tr.add_argument("--no-graph", action="store_true", help="on a GPU, run iterations eagerly instead of a CUDA graph")
    tr.add_argument("--time-limit", type=float, default=None,
                    help="stop after this many seconds with a checkpoint (continue later with --resume)")
    dist = sub.add_parser("distributed", help="a huge MNIST world in Zarr on disk, run in rounds with Dask (out of core)")
    dist.add_argument("--store", required=True, help="Zarr folder of the run (created, or resumed when it holds one)")
    dist.add_argument("--world", type=int, nargs=2, metavar=("H", "W"), help="world size (needed for a new store)")
    dist.add_argument("--chunk", type=int, default=None,
                      help="chunk side in cells of a new store (default 2048; a resumed run keeps its store's)")
    dist.add_argument("--halo", type=int, default=16, help="steps per round = halo cells (default 16)")
    dist.add_argument("--steps", type=int, required=True, help="run until this step")
    dist.add_argument("--storage", default="float16", help="float16 (default) or float32")
    dist.add_argument("--seed", type=int, default=0)
    dist.add_argument("--model", default=None, help=MODEL_HELP)
    dist.add_argument("--workers", type=int, default=0,
                      help="Dask worker processes on this machine (default 0: this process, one chunk at a time)")
    dist.add_argument("--window", type=int, nargs=4, metavar=("Y", "X", "H", "W"), default=None,
                      help="the window of the final world drawn to window.png (default: 512x512 in the centre)")
    dist.add_argument("--break-lock", action="store_true",
                      help="break the store's lock when the run that holds it is no longer running")
    pl = sub.add_parser("play", help="a local web page: draw digits and watch the cells classify them (offline)")
    pl.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; any other address lets "
                         "everyone who can reach it drive the server, with a warning)")
    pl.add_argument("--port", type=int, default=8765)
    pl.add_argument("--model", default="fastca-mnist", help="embedded model: fastca-mnist or distill-2020")
    pl.add_argument("--backend", default="auto", help=BACKEND_HELP)
    pl.add_argument("--size", type=int, default=256, help="world side in cells: 28, 56, 128, 256, 512 or 1024")
    pl.add_argument("--open", action="store_true", help="open the page in the default browser")
    pl.add_argument("--max-sessions", type=int, default=4,
                    help="tabs served at once (default 4); the next one is refused with a message")
    pl.add_argument("--max-cells", type=int, default=2 * 1024 * 1024,
                    help="cells of all the tabs' worlds together (default 2097152: two 1024x1024 worlds)")
    ev = sub.add_parser("eval", help="the article's evaluation protocol on the MNIST test set")
    ev.add_argument("--model", default=None, help=MODEL_HELP)
    ev.add_argument("--data", default=None, help="folder of the MNIST .gz files (default $FASTCA_MNIST_DIR)")
    ev.add_argument("--digits", type=int, default=None, help="only the first N test digits (default all)")
    ev.add_argument("--half", type=int, default=200, help="steps before and after the mutation (default 200)")
    ev.add_argument("--backend", default="auto", help=BACKEND_HELP)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--storage", default="float32", help="float32 or float16 state storage (where the backend has it)")
    ev.add_argument("--out", default="fastca-eval")
    return parser


def main(argv=None):
    """Entry point of the ``fastca`` console script."""
    args = _parser().parse_args(argv)
    try:
        # numbers every command shares, checked before anything is read, written or printed
        for name in ("frame_every", "scale", "fps"):
            if getattr(args, name, 1) < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if getattr(args, "fps", 1) > MAX_FPS:
            raise CLIError(f"--fps must be in 1..{MAX_FPS} (GIF frame delays are whole 1/100 s), got {args.fps}")
        seed = getattr(args, "seed", None)
        if seed is not None and not 0 <= seed < 2**64:
            raise CLIError(f"--seed must be an integer in 0..2**64-1, got {seed}")
        commands = {"demo": cmd_demo, "simulate": cmd_simulate, "train": cmd_train, "eval": cmd_eval, "play": cmd_play,
                    "distributed": cmd_distributed}
        return commands[args.command](args)
    except (CLIError, ValueError, TypeError, RuntimeError, OSError, FloatingPointError, MemoryError) as exc:
        print(f"fastca: error: {exc}", file=sys.stderr)
        return 2
