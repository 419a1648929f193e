"""``fastca eval``: the article's evaluation protocol on the MNIST test set."""

from .options import (CLIError, _check_out, _model, add_backend, add_data, add_model, add_seed, require_mnist,
                      resolve_backend)


def add_parser(subparsers):
    ev = subparsers.add_parser("eval", help="the article's evaluation protocol on the MNIST test set")
    add_model(ev)
    add_data(ev)
    ev.add_argument("--digits", type=int, default=None, help="only the first N test digits (default all)")
    ev.add_argument("--half", type=int, default=200, help="steps before and after the mutation (default 200)")
    add_backend(ev)
    add_seed(ev)
    ev.add_argument("--storage", default="float32", help="float32 or float16 state storage (where the backend has it)")
    ev.add_argument("--out", default="fastca-eval")


def run(args):
    import fastca
    from fastca.evaluate import evaluate

    if args.digits is not None and args.digits < 1:
        raise CLIError(f"--digits must be >= 1, got {args.digits}")
    if args.half < 1:
        raise CLIError(f"--half must be >= 1, got {args.half}")
    info = resolve_backend(args.backend)
    if args.storage not in info.storages:
        raise CLIError(f"--storage must be one of {', '.join(info.storages)} with backend {info.name}, "
                       f"got {args.storage!r}")
    model = require_mnist(_model(args.model), "fastca eval")
    _check_out(args.out, ("curves.csv", "evaluation.json", "curves.png"))
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
