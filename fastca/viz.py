"""Pictures and videos of the automaton: colouring, animations, accuracy/agreement plots."""

import os

import numpy as np

from . import spec

#: Digit colours of the article's notebook (digits 0..9), then "undecided" (an alive cell
#: whose class channels are all negative: black) and the background (white). RGB uint8.
PALETTE = np.array(
    [
        [128, 0, 0],
        [230, 25, 75],
        [70, 240, 240],
        [210, 245, 60],
        [250, 190, 190],
        [170, 110, 40],
        [170, 255, 195],
        [165, 163, 159],
        [0, 128, 128],
        [128, 128, 0],
        [0, 0, 0],
        [255, 255, 255],
    ],
    dtype=np.uint8,
)
UNDECIDED = 10
BACKGROUND = 11


def colorize(state, alive_threshold=spec.ALIVE_THRESHOLD):
    """RGB picture of a state, as in the article: each alive cell in its class colour.

    state: (H, W, 20) or (B, H, W, 20) float. Returns uint8 (H, W, 3) or (B, H, W, 3).
    Alive cells take the colour of their label (black when all class channels are
    negative), shaded by their gray value over a white background; dead cells show
    their faint gray value over white.
    """
    state = np.asarray(state)
    if state.ndim not in (3, 4) or state.shape[-1] != spec.CHANNELS:
        raise ValueError(f"state must be (H, W, 20) or (B, H, W, 20), got shape {state.shape}")
    gray = state[..., spec.GRAY].astype(np.float32)
    classes = state[..., spec.CLASS_START:]
    label = np.argmax(classes, axis=-1)
    label = np.where(classes.max(axis=-1) < 0, UNDECIDED, label)
    alive = gray > np.float32(alive_threshold)
    colour = np.where(alive[..., None], PALETTE[label].astype(np.float32), 0.0)
    white = np.float32(255)
    g = np.clip(gray, 0, 1)[..., None]
    return np.round(white + g * (colour - white)).astype(np.uint8)


def tile_batch(images, cols=None, pad=2, value=255):
    """Arrange a batch (B, H, W, 3) into one (rows*(H+pad)-pad, cols*(W+pad)-pad, 3) picture."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, images.shape[3]), value, images.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = images[i]
    return out


def upscale(image, factor):
    """Nearest-neighbour enlargement of an (H, W, 3) picture by an integer factor."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def save_png(image, path):
    """Write an (H, W, 3) uint8 picture as PNG (atomically)."""
    import imageio.v3 as iio

    _atomic(path, lambda tmp: iio.imwrite(tmp, image, extension=".png"))


def save_animation(frames, path, fps=10):
    """Write frames (a list of (H, W, 3) uint8) as an animated GIF or an MP4, by the path's suffix.

    MP4 needs ffmpeg through the ``imageio-ffmpeg`` package. Written atomically: no
    partial file is left behind on failure.
    """
    import imageio.v3 as iio

    if len(frames) == 0:
        raise ValueError("no frames to save")
    ext = os.path.splitext(os.fspath(path))[1].lower()
    stack = np.stack(frames)
    if ext == ".gif":
        _atomic(path, lambda tmp: iio.imwrite(tmp, stack, extension=".gif", duration=1000 / fps, loop=0))
    elif ext == ".mp4":
        # even sizes for the H.264 encoder
        h, w = stack.shape[1] // 2 * 2, stack.shape[2] // 2 * 2
        _atomic(path, lambda tmp: iio.imwrite(tmp, stack[:, :h, :w], extension=".mp4", fps=fps, plugin="pyav")
                if _has_pyav() else _write_ffmpeg(tmp, stack[:, :h, :w], fps))
    else:
        raise ValueError(f"animation path must end in .gif or .mp4, got {path!r}")


def ffmpeg_available():
    """True when MP4 output can be written (imageio-ffmpeg installed)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except Exception:
        return False


def plot_curves(curves, path, title=None, mutation_step=None,
                ylabels=("per-cell accuracy (%)", "total agreement (%)")):
    """Plot per-step accuracy and agreement in the style of the article's figures.

    curves: {name: (accuracy (steps,), agreement (steps,))} in percent. Writes a PNG with
    two panels (``ylabels``) against the step, with a dashed line at ``mutation_step``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for name, (acc, agr) in curves.items():
        steps = np.arange(1, len(acc) + 1)
        axes[0].plot(steps, acc, label=name, lw=1.5)
        axes[1].plot(steps, agr, label=name, lw=1.5)
    for ax, what in zip(axes, ylabels):
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if mutation_step:
            ax.axvline(mutation_step, color="gray", ls="--", lw=1)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _has_pyav():
    try:
        import av  # noqa: F401

        return True
    except ImportError:
        return False


def _write_ffmpeg(path, stack, fps):
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(path, stack.shape[2:0:-1], fps=fps, macro_block_size=1,
                                         output_params=["-f", "mp4"])
    writer.send(None)
    for frame in stack:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def _atomic(path, write):
    """Run ``write(tmp_path)`` then rename onto ``path``; remove the temporary file on failure."""
    path = os.fspath(path)
    tmp = f"{path}.partial{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
