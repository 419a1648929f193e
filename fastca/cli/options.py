"""What several commands share: :class:`CLIError`, the option groups declared once, the checks of the
shared numbers, the model and digits a command reads, and the output folder's check."""

import os

from .. import backends

MAX_SIDE = 20000  #: largest world or image side the CLI accepts
MAX_FPS = 100  #: animation frames per second at most (a GIF's frame delay is in 1/100 s)
MODEL_HELP = "weights .npz, Distill .json, or an embedded model: fastca-mnist (default), distill-2020"
BACKEND_HELP = "auto (the fastest usable here) or one of: " + ", ".join(backends.names())
SEED_HELP = "random seed in 0..2**64-1 (fire masks, noise, layouts, events)"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def add_backend(p):
    """--backend: auto or a backend's name."""
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)


def add_seed(p, help=None):
    """--seed, default 0 (checked by :func:`check_numbers`)."""
    p.add_argument("--seed", type=int, default=0, help=help)


def add_model(p):
    """--model: a weights file, a Distill model or an embedded model (read by :func:`_model`)."""
    p.add_argument("--model", default=None, help=MODEL_HELP)


def add_data(p):
    """--data: the folder of the MNIST files (train, eval)."""
    p.add_argument("--data", default=None, help="folder of the MNIST .gz files (default $FASTCA_MNIST_DIR)")


def add_run_options(p, steps, out):
    """The options of a run that writes an animation (demo, simulate): steps, backend, seed, output
    folder, model and the pictures' frame interval, scale and frame rate."""
    p.add_argument("--steps", type=int, default=steps, help=f"steps to run (default {steps})")
    add_backend(p)
    add_seed(p, SEED_HELP)
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    add_model(p)
    p.add_argument("--frame-every", type=int, default=2, help="steps between animation frames (default 2)")
    p.add_argument("--scale", type=int, default=2, help="pixels per cell in pictures (default 2)")
    p.add_argument("--fps", type=int, default=15, help=f"animation frames per second, 1..{MAX_FPS} (default 15)")


def check_numbers(args):
    """The numbers every command shares, checked before anything is read, written or printed."""
    for name in ("frame_every", "scale", "fps"):
        if getattr(args, name, 1) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if getattr(args, "fps", 1) > MAX_FPS:
        raise CLIError(f"--fps must be in 1..{MAX_FPS} (GIF frame delays are whole 1/100 s), got {args.fps}")
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed < 2**64:
        raise CLIError(f"--seed must be an integer in 0..2**64-1, got {seed}")


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
