"""Command line: ``fastca demo``, ``simulate``, ``train``, ``eval``, ``distributed`` and ``play`` (also
``python -m fastca ...``).

One module per command, each with ``add_parser(subparsers)`` and ``run(args)``; the option groups
several commands share, :class:`CLIError` and the shared checks are in :mod:`fastca.cli.options`,
the memory estimate, image loader and output writing of demo and simulate in :mod:`fastca.cli.outputs`,
simulate's run on planted seeds (models that grow) in :mod:`fastca.cli.seeded`.
Commands import their heavy dependencies (torch, aiohttp, dask) only when they run.

Errors: a :class:`fastca.errors.FastcaError` (:class:`CLIError` is one) is the user's mistake and
prints as one line, exit status 2; so do the environment's refusals (OSError, MemoryError). Any
other exception is a bug and keeps its traceback.
"""

import argparse
import sys

from . import demo, distributed, evaluate, play, simulate, train
from ..errors import FastcaError
from .options import CLIError, check_numbers  # noqa: F401 (CLIError: fastca.cli.CLIError, as before)

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
    # One line and exit 2 for the user's mistakes (FastcaError) and for the machine's refusals:
    # OSError (a file the user named that is missing or unreadable, a full disk, a port taken) and
    # MemoryError (a world past this machine's memory: the estimate checked first is approximate).
    # Any other exception is a bug in fastca: it keeps its traceback.
    try:
        check_numbers(args)  # numbers every command shares, checked before anything is read, written or printed
        return COMMANDS[args.command].run(args)
    except (FastcaError, OSError, MemoryError) as exc:
        print(f"fastca: error: {_message(exc)}", file=sys.stderr)
        return 2


def _message(exc):
    """The error's message; an empty MemoryError (Python raises them bare) says what it is."""
    text = str(exc)
    if isinstance(exc, MemoryError):
        return f"out of memory ({text})" if text else "out of memory"
    return text or type(exc).__name__
