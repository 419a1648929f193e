"""``fastca play``: a local web page where digits are drawn and the cells classify them, or the Growing
NCA grows from seeds and regrows what is cut (offline)."""

from .. import backends
from .options import CLIError, add_backend


def add_parser(subparsers):
    pl = subparsers.add_parser("play", help="a local web page: draw digits and watch the cells classify them, or plant "
                                            "Growing NCA seeds, cut and watch them regrow (offline)")
    pl.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; any other address lets "
                         "everyone who can reach it drive the server, with a warning)")
    pl.add_argument("--port", type=int, default=8765)
    pl.add_argument("--model", default="fastca-mnist",
                    help="the model a new tab starts with (the page switches between them): fastca-mnist (default) "
                         "or distill-2020, digits the cells classify; growing-gecko, the Growing NCA (a click plants "
                         "a seed, the eraser cuts, the cut regrows)")
    add_backend(pl)
    pl.add_argument("--size", type=int, default=None,
                    help="world side in cells: 28, 56, 72, 96, 128, 256, 512 or 1024 (default: 56 for the digit "
                         "models, fitted to the window, so that a digit drawn a quarter to half of it tall has the "
                         "MNIST scale the model learned; 96 for growing-gecko, room for a few geckos)")
    pl.add_argument("--open", action="store_true", help="open the page in the default browser")
    pl.add_argument("--max-sessions", type=int, default=4,
                    help="tabs served at once (default 4); the next one is refused with a message")
    pl.add_argument("--max-cells", type=int, default=2 * 1024 * 1024,
                    help="cells of all the tabs' worlds together (default 2097152: two 1024x1024 worlds)")


def run(args):
    from fastca.play import DEFAULT_SIZES, MODELS, SIZES, serve

    if args.model not in MODELS:
        raise CLIError(f"--model must be one of {', '.join(MODELS)}, got {args.model!r}")
    if args.size is None:
        args.size = DEFAULT_SIZES[MODELS[args.model]]
    if args.size not in SIZES:
        raise CLIError(f"--size must be one of {', '.join(map(str, SIZES))}, got {args.size}")
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
