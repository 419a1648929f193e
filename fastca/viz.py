"""Pictures and videos of the automaton: colouring, animations, accuracy/agreement plots."""

import os
import struct

import numpy as np

from . import spec
from .errors import InputError, RunError

#: Digit colours of the article's notebook (digits 0..9), then "undecided" (an alive cell
#: without a label, see spec.label_of: black) and the background (white). RGB uint8.
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
UNDECIDED = spec.N_CLASSES  #: the label rule's "undecided"
BACKGROUND = 11
GIF_MAX_SIDE = 65535  #: GIF stores widths and heights in 16 bits
MP4_MAX_SIDE = 16384  #: the largest side libx264 encodes (H.264 through ffmpeg); MP4 sides are also even, >= 2


def animation_size_error(ext, height, width):
    """Why an animation of frames ``height`` x ``width`` (after enlarging) cannot be written as ``ext``
    (".gif" or ".mp4"), or None when it can."""
    if ext == ".gif" and not (1 <= height <= GIF_MAX_SIDE and 1 <= width <= GIF_MAX_SIDE):
        return f"GIF frames are at most {GIF_MAX_SIDE} pixels a side, these would be {width}x{height}"
    if ext == ".mp4" and not (2 <= height <= MP4_MAX_SIDE and 2 <= width <= MP4_MAX_SIDE):
        return f"MP4 (H.264) frames are 2..{MP4_MAX_SIDE} pixels a side, these would be {width}x{height}"
    return None


def colorize(state, alive_threshold=spec.ALIVE_THRESHOLD):
    """RGB picture of a state, as in the article: each alive cell in its class colour.

    state: (H, W, 20) or (B, H, W, 20) float. Returns uint8 (H, W, 3) or (B, H, W, 3).
    Alive cells take the colour of their label (black when undecided: all class channels
    negative, or any NaN or inf), shaded by their gray value over a white background; dead
    cells show their faint gray value over white.
    """
    state = np.asarray(state)
    if state.ndim not in (3, 4) or state.shape[-1] != spec.CHANNELS:
        raise InputError(f"state must be (H, W, 20) or (B, H, W, 20), got shape {state.shape}")
    gray = state[..., spec.GRAY].astype(np.float32)
    _, label = spec.class_labels(state[..., spec.CLASS_START:])  # UNDECIDED (N_CLASSES) when none
    alive = spec.is_alive(gray, np.float32(alive_threshold))
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
    """Write frames (a sequence of (H, W, 3) uint8) as an animated GIF or an MP4, by the path's suffix.

    MP4 needs ffmpeg through the ``imageio-ffmpeg`` package (or PyAV). Written frame by frame
    (see :class:`AnimationWriter`) and atomically: no partial file is left behind on failure.
    """
    with AnimationWriter(path, fps=fps) as writer:  # no frames: ValueError on close
        for frame in frames:
            writer.add(frame)


class AnimationWriter:
    """An animated GIF or MP4 (by the path's suffix) written one frame at a time, so a long run
    holds one frame in memory, not all of them.

    ``add(frame)``: an (H, W, 3) uint8 picture, every frame the same size, enlarged ``scale``
    times. The file appears under its name (atomically) when the writer closes without an
    error; otherwise, whatever failed (an encoder, the final rename onto a name that is a
    folder), the partial file is removed. Use as a context manager, or call :meth:`close` /
    :meth:`abort`. GIF frames are quantised to 256 colours each (Pillow's encoder, one local
    palette per frame), at most GIF_MAX_SIDE pixels a side; MP4 is H.264 through ffmpeg, sides
    cropped to even, at most MP4_MAX_SIDE (a larger first frame is a ValueError before any file
    is opened, see :func:`animation_size_error`).
    """

    def __init__(self, path, fps=10, scale=1):
        self.path = os.fspath(path)
        self.ext = os.path.splitext(self.path)[1].lower()
        if self.ext not in (".gif", ".mp4"):
            raise InputError(f"animation path must end in .gif or .mp4, got {path!r}")
        if not (fps > 0 and int(scale) == scale and scale >= 1):
            raise InputError(f"fps must be > 0 and scale an int >= 1, got {fps!r}, {scale!r}")
        self.fps, self.scale = fps, int(scale)
        self.tmp = f"{self.path}.partial{self.ext}"
        self.frames = 0
        self._size = None
        self._out = None  # the GIF file, or the ffmpeg / PyAV writer

    def add(self, frame):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"a frame must be (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
        if self._size is None:
            error = animation_size_error(self.ext, frame.shape[0] * self.scale, frame.shape[1] * self.scale)
            if error:
                raise InputError(f"cannot write {self.path}: {error}")
        frame = upscale(frame, self.scale)
        if self._size is None:
            self._size = frame.shape[:2]
            try:
                self._open()
            except BaseException:
                self.abort()
                raise
        elif frame.shape[:2] != self._size:
            raise InputError(f"every frame must be {self._size}, got {frame.shape[:2]}")
        try:
            if self.ext == ".gif":
                self._out.write(_gif_frame(frame, round(100 / self.fps)))
            else:
                h, w = self._size[0] // 2 * 2, self._size[1] // 2 * 2  # even sides for H.264
                self._send(np.ascontiguousarray(frame[:h, :w]))
        except BaseException:
            self.abort()
            raise
        self.frames += 1

    def _open(self):
        h, w = self._size
        if self.ext == ".gif":
            self._out = open(self.tmp, "wb")
            # header, logical screen without a global palette, loop forever (NETSCAPE2.0)
            self._out.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0)
                            + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")
        elif ffmpeg_available():
            import imageio_ffmpeg

            self._out = imageio_ffmpeg.write_frames(self.tmp, (w // 2 * 2, h // 2 * 2), fps=self.fps,
                                                    macro_block_size=1, output_params=["-f", "mp4"])
            self._out.send(None)
            self._send = self._out.send
        elif _has_pyav():
            import imageio.v3 as iio

            self._out = iio.imopen(self.tmp, "w", plugin="pyav")
            self._out.init_video_stream("libx264", fps=self.fps)
            self._send = self._out.write_frame
        else:
            raise RunError("MP4 output needs ffmpeg: pip install 'fastca[video]'")

    def close(self):
        """Finish the file and move it under its name (on failure, nothing is left behind)."""
        if self._out is None:
            raise InputError("no frames to save")
        try:
            if self.ext == ".gif":
                self._out.write(b"\x3b")  # trailer
            self._out.close()
            self._out = None
            if self.ext == ".mp4" and not os.path.getsize(self.tmp):  # ffmpeg failed (its messages are above)
                raise RunError(f"ffmpeg wrote no video for {self.path}")
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Drop the partial file."""
        try:
            if self._out is not None:
                self._out.close()
        finally:
            self._out = None
            _remove_file(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _gif_frame(frame, delay_cs):
    """One GIF frame record (graphic control extension, image descriptor with a local palette,
    LZW data) for an (H, W, 3) uint8 frame: Pillow encodes it as a one-frame GIF, whose global
    palette becomes the frame's local one."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(buf, format="GIF")
    b = buf.getvalue()
    flags = b[10]
    table = b[13 : 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)]
    pos = 13 + len(table)
    while b[pos] == 0x21:  # skip Pillow's own extensions
        pos += 2
        while b[pos]:
            pos += b[pos] + 1
        pos += 1
    if b[pos] != 0x2C:
        raise RunError("unexpected GIF layout from Pillow")
    desc = bytearray(b[pos : pos + 10])
    if not desc[9] & 0x80:  # give the frame the global palette as its own
        desc[9] = (desc[9] & 0x70) | 0x80 | (flags & 7)
        body = bytes(desc) + table + b[pos + 10 : -1]
    else:
        body = b[pos:-1]
    gce = b"\x21\xf9\x04\x04" + struct.pack("<H", max(delay_cs, 1)) + b"\x00\x00"  # keep the frame, no transparency
    return gce + body


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


def _atomic(path, write):
    """Run ``write(tmp_path)`` then rename onto ``path``; remove the temporary file on failure."""
    path = os.fspath(path)
    tmp = f"{path}.partial{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        _remove_file(tmp)


def _remove_file(path):
    """Remove ``path`` if it is a file (never a folder that happens to have its name)."""
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)
