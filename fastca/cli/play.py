"""``fastca play``: a local web page where digits are drawn and the cells classify them (offline)."""

from .. import backends
from .options import CLIError, add_backend


def add_parser(subparsers):
    pl = subparsers.add_parser("play", help="a local web page: draw digits and watch the cells classify them (offline)")
    pl.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; any other address lets "
                         "everyone who can reach it drive the server, with a warning)")
    pl.add_argument("--port", type=int, default=8765)
    pl.add_argument("--model", default="fastca-mnist", help="embedded model: fastca-mnist or distill-2020")
    add_backend(pl)
    pl.add_argument("--size", type=int, default=56,
                    help="world side in cells: 28, 56, 128, 256, 512 or 1024 (default 56: fitted to the window, a "
                         "digit drawn a quarter to half of it tall has the MNIST scale the model learned)")
    pl.add_argument("--open", action="store_true", help="open the page in the default browser")
    pl.add_argument("--max-sessions", type=int, default=4,
                    help="tabs served at once (default 4); the next one is refused with a message")
    pl.add_argument("--max-cells", type=int, default=2 * 1024 * 1024,
                    help="cells of all the tabs' worlds together (default 2097152: two 1024x1024 worlds)")


def run(args):
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
