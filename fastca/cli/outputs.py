"""What a run that writes pictures needs (demo, simulate): the memory estimate and the animation's size
limits checked before any work, the image loader, the animation files and the final outputs."""

import json
import os

import numpy as np

from .options import MAX_SIDE, CLIError

CHECKPOINTS = (1, 10, 25, 50, 100)


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
#: Bytes per cell of each channel past the MNIST model's 20 (a described model's state): three float32
#: copies at most (the planted state, the simulation's and its step buffer)
MEMORY_PER_CHANNEL = 12
#: Enlarged frames alive at once: the frame, its enlarging, the GIF encoder's palette image and LZW
#: copies, the MP4 crop and the final picture (measured: about 6 at --scale 8).
MEMORY_FRAMES = 7
MEMORY_PER_STEP = 100  #: per-step curves and their JSON
#: The MP4 encoder's memory (ffmpeg's libx264: its look-ahead and its threads' frames) per pixel of a
#: frame (measured on 2 cores: about 210 bytes a pixel at 2048x2048; more cores, more threads).
MEMORY_MP4_PER_PIXEL = 250


def _memory_need(height, width, scale, steps, channels=20):
    """(bytes a run needs without the MP4 encoder, bytes of one enlarged frame): see _check_memory."""
    cells = height * width
    frame_bytes = cells * 3 * scale * scale
    per_cell = MEMORY_PER_CELL + MEMORY_PER_CHANNEL * max(0, channels - 20)
    return cells * per_cell + MEMORY_FRAMES * frame_bytes + steps * MEMORY_PER_STEP, frame_bytes


def _check_memory(height, width, scale, steps=0, channels=20):
    """Refuse, with the numbers, a run whose state (of ``channels`` channels), maps, frame buffers
    (enlarged ``scale`` times) and per-step curves would not fit in memory. Frames are streamed to
    the files, so their number does not count; the few copies of one enlarged frame do. (The MP4
    encoder's memory is checked by :class:`_Animations`, which leaves the MP4 out when it does not fit.)"""
    need, frame_bytes = _memory_need(height, width, scale, steps, channels)
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


def _check_size(height, width, args, channels=20):
    """Everything a world's size decides, before the world is built: memory, then the GIF's limit."""
    _check_memory(height, width, args.scale, args.steps, channels)
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


def _mp4_memory_error(height, width, scale, steps, channels=20):
    """Why the MP4 encoder would not fit in memory next to the run, or None."""
    have = _available_memory()
    encoder = MEMORY_MP4_PER_PIXEL * height * width * scale * scale
    need = _memory_need(height, width, scale, steps, channels)[0] + encoder
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
    is written before the first frame. ``others``: the run's other output names, checked with the
    animations' by :func:`_check_out`; ``channels``: the state's, for the memory estimate."""

    OTHER_OUTPUTS = ("final.png", "curves.png", "metrics.json")

    def __init__(self, out, scale, fps, size, steps=0, prefix="", others=OTHER_OUTPUTS, channels=20):
        from fastca import viz

        h, w = size
        _check_frames(h, w, scale)
        self.out = out
        self.paths = [os.path.join(out, f"{prefix}animation.gif")]
        self.notes = []
        if viz.ffmpeg_available():
            error = (viz.animation_size_error(".mp4", h * scale, w * scale)
                     or _mp4_memory_error(h, w, scale, steps, channels))
            if error:
                self.notes.append(f"no {prefix}animation.mp4: {error}")
            else:
                self.paths.append(os.path.join(out, f"{prefix}animation.mp4"))
        self.names = [os.path.basename(p) for p in self.paths] + [prefix + n for n in others]
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
    written.append(_write_json(os.path.join(out, f"{prefix}metrics.json"), metrics))
    return written


def _write_json(path, data):
    """Write ``data`` as JSON to ``path`` atomically (``path``.partial.json, removed on failure); returns ``path``."""
    from fastca import viz

    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)

    viz._atomic(path, write_json)
    return path


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
