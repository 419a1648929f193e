"""What several commands share: :class:`CLIError`, the option groups declared once (``--model``,
``--backend``, ``--seed``, ``--data``), the checks of the shared numbers, the model and digits a
command reads, and the output folder's check."""

import contextlib
import os

from .. import backends
from ..errors import FastcaError

MAX_SIDE = 20000  #: largest world or image side the CLI accepts
MAX_FPS = 100  #: animation frames per second at most (a GIF's frame delay is in 1/100 s)
MODEL_HELP = ("an embedded model (fastca-mnist (default), distill-2020, growing-gecko), a Distill .json, an MNIST "
              "weights .npz or a model file saved by fastca.NCA.save")
BACKEND_HELP = "auto (the fastest usable here) or one of: " + ", ".join(backends.names())
SEED_HELP = "random seed in 0..2**64-1 (fire masks, noise, layouts, events)"


class CLIError(FastcaError):
    """A user error found by the command line: printed as one line, exit status 2."""


def add_backend(p):
    """--backend: auto or a backend's name."""
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)


def add_seed(p, help=SEED_HELP, default=0):
    """--seed (checked by :func:`check_numbers`); ``default`` None lets a command tell "not given" apart."""
    p.add_argument("--seed", type=int, default=default, help=help)


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
    add_seed(p)
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
    """The model of ``--model``: an embedded name, a Distill .json, or a model file (MNIST weights or a
    description saved by :meth:`fastca.NCA.save`, told apart by :func:`fastca.load_model`)."""
    import fastca

    if path is None:
        return fastca.pretrained()
    if path in fastca.PRETRAINED or path in fastca.PRETRAINED_NCA:
        return fastca.pretrained(path)
    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path} (embedded models: "
                       f"{', '.join([*fastca.PRETRAINED, *fastca.PRETRAINED_NCA])})")
    with user_input():  # the loaders' one-line refusal of a malformed file
        return fastca.load_distill_model(path) if path.endswith(".json") else fastca.load_model(path)


def mnist_lacks(model):
    """What ``model`` lacks of the self-classifying MNIST layout the digit commands read (20 channels,
    the digit's gray in a static alive channel 0, a readout of 10 class channels 10..19): a list of
    phrases, empty for an MNIST model."""
    from ..model import MNIST

    d = model.description
    lacks = []
    if d.readout is None:
        lacks.append("a readout (class channels)")
    elif d.readout != MNIST.readout:
        lacks.append(f"10 class channels 10..19 (its readout: {d.readout.classes} classes from channel "
                     f"{d.readout.start})")
    if d.alive.rule != "static" or d.alive.channel != MNIST.alive.channel:
        lacks.append("a static gray channel 0 to write the digits into (its alive rule: "
                     f"{d.alive.rule}{'' if d.alive.rule == 'none' else f' on channel {d.alive.channel}'})")
    if d.channels != MNIST.channels:
        lacks.append(f"20 channels (it has {d.channels})")
    return lacks


def is_mnist(model):
    """Whether ``model`` has the self-classifying MNIST layout: see :func:`mnist_lacks`."""
    return not mnist_lacks(model)


def require_mnist(model, use):
    """``model``, or a one-line CLIError naming it and what it lacks of the MNIST layout that ``use``
    (e.g. "fastca eval", "--mnist-index") needs: see :func:`mnist_lacks`."""
    lacks = mnist_lacks(model)
    if lacks:
        listed = ", ".join(lacks[:-1]) + " and " + lacks[-1] if len(lacks) > 1 else lacks[0]
        raise CLIError(f"{use} needs a self-classifying MNIST model; model {model.name!r} lacks {listed}")
    return model


@contextlib.contextmanager
def user_input():
    """Reading a file the user named (a model, an event list): a ValueError of the parsers under the
    library's own checks (NumPy, JSON, zip) says the file is malformed, a user error: a CLIError."""
    try:
        yield
    except FastcaError:
        raise
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def resolve_backend(name):
    """The backend of ``--backend`` (its BackendInfo), before any output: an unknown name or a backend not
    usable here raises a FastcaError (InputError, RunError)."""
    return backends.resolve(name)


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
