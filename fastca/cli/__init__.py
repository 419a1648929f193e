"""Command line: ``fastca demo``, ``simulate``, ``train``, ``eval``, ``distributed`` and ``play`` (also
``python -m fastca ...``).

One module per command, each with ``add_parser(subparsers)`` and ``run(args)``; the option groups
several commands share, :class:`CLIError` and the shared checks are in :mod:`fastca.cli.options`,
the memory estimate, image loader and output writing of demo and simulate in :mod:`fastca.cli.outputs`.
Commands import their heavy dependencies (torch, aiohttp, dask) only when they run.
"""

import argparse
import sys

from . import demo, distributed, evaluate, play, simulate, train
from .options import CLIError, check_numbers

#: the commands, in the order ``fastca --help`` lists them
COMMANDS = {"demo": demo, "simulate": simulate, "train": train, "distributed": distributed, "play": play,
            "eval": evaluate}


def _parser():
    parser = argparse.ArgumentParser(prog="fastca", description="Fast neural cellular automata (self-classifying MNIST).")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv=None):
    """Entry point of the ``fastca`` console script."""
    args = _parser().parse_args(argv)
    try:
        check_numbers(args)  # numbers every command shares, checked before anything is read, written or printed
        return COMMANDS[args.command].run(args)
    except (CLIError, ValueError, TypeError, RuntimeError, OSError, FloatingPointError, MemoryError) as exc:
        print(f"fastca: error: {exc}", file=sys.stderr)
        return 2
